#!/usr/bin/env bash
# Check reqwest-polite against HAProxy's stick-table limit, on loopback: `http_req_rate(1s)`
# tracked per source before the deny, so refused requests count against the client too, and a
# bare 429 beyond RATE per second (20 by default). Needs the haproxy binary (Debian:
# apt-get install haproxy). The counts are HAProxy's own, from its log (`%Ts.%ms %ST` per
# request to /). ROUNDS="1 2 3" sets the rounds of ours with defaults (three by default); then
# reqwest-retry once. Port 18092 must be free. OUTSIDE_LIMITER: another build of the example.
set -euo pipefail
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$haproxy" ] || { echo "haproxy not found: apt-get install -y haproxy" >&2; exit 1; }
rate=${RATE:-20}
requests=${REQUESTS:-200}
dir=$(mktemp -d)
cat > "$dir/haproxy.cfg" <<CONF
global
  log stdout format raw local0
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend limited
  bind 127.0.0.1:18092
  log global
  log-format "%Ts.%ms %ST"
  stick-table type ip size 100k expire 30s store http_req_rate(1s)
  http-request set-log-level silent if { path_beg /reset/ } || { path /stats }
  http-request return status 200 content-type text/plain string "(counts below, from haproxy's log)" if { path_beg /reset/ } || { path /stats }
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt $rate }
  http-request return status 200 content-type text/plain string "ok"
CONF
"$haproxy" -f "$dir/haproxy.cfg" >> "$dir/log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  curl -s -o /dev/null http://127.0.0.1:18092/reset/ && break
  kill -0 $server 2>/dev/null || { echo "haproxy did not start: $(cat "$dir/log")" >&2; exit 1; }
  sleep 0.1
done
cd "$(dirname "$0")/../.."
cargo build --release --example outside_limiter -q
run=${OUTSIDE_LIMITER:-${CARGO_TARGET_DIR:-target}/release/examples/outside_limiter}

# what haproxy logged after line $1: accepted, refused, and the share of the rate the accepted
# requests used between the first and the last accepted one
seen() { # from-line
  tail -n +"$(($1 + 1))" "$dir/log" | awk -v rate="$rate" '
    $2 == 200 { ok++; if (ok == 1) first = $1; last = $1 }
    $2 == 429 { refused++ }
    END {
      span = last - first
      used = span > 0 ? 100 * (ok - 1) / (rate * span) : 0
      printf "    haproxy saw: %d accepted, %d refused (429), %.1f%% of %d/s used between the first and last accepted\n", ok, refused, used, rate
    }'
}

for round in ${ROUNDS:-1 2 3}; do
  echo "== haproxy http_req_rate(1s) > $rate/s denied, $requests at once, nothing configured, round $round"
  from=$(wc -l < "$dir/log"); $run http://127.0.0.1:18092 "$requests" defaults "$rate"; seen "$from"
  sleep 2 # the stick table's rate decays
done
echo "== haproxy http_req_rate(1s) > $rate/s denied, $requests at once, reqwest-retry"
from=$(wc -l < "$dir/log"); $run http://127.0.0.1:18092 "$requests" reqwest-retry; seen "$from"
