#!/usr/bin/env bash
# Check reqwest-polite against nginx's own `limit_req` (a leaky bucket judged to the millisecond,
# burst 0, bare 429s), on loopback. Needs the nginx binary (Debian: apt-get install nginx-light).
# The limited location serves a file: a `return` would answer before `limit_req` runs.
# The counts are nginx's: its access log, one line per request that reached it. ROUNDS="1 2"
# sets the rounds of the configured runs (three by default). Ports 18090 and 18091 must be free.
set -euo pipefail
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "nginx not found: apt-get install -y nginx-light" >&2; exit 1; }
dir=$(mktemp -d)
mkdir -p "$dir/logs" "$dir/tmp" "$dir/www"
echo ok > "$dir/www/index.html"
chmod -R a+rX "$dir" # the workers run as an unprivileged user
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  log_format timed '\$msec \$status';
  limit_req_zone \$server_port zone=slow:1m rate=10r/s;
  limit_req_zone \$server_port zone=fast:1m rate=200r/s;
  limit_req_status 429;
  server {
    listen 127.0.0.1:18090;
    access_log $dir/logs/10.log timed;
    location / { limit_req zone=slow; root $dir/www; }
    location /reset/ { access_log off; return 200; }
    location /stats { access_log off; return 200 "(counts below, from nginx's log)"; }
  }
  server {
    listen 127.0.0.1:18091;
    access_log $dir/logs/200.log timed;
    location / { limit_req zone=fast; root $dir/www; }
    location /reset/ { access_log off; return 200; }
    location /stats { access_log off; return 200 "(counts below, from nginx's log)"; }
  }
}
CONF
"$nginx" -p "$dir" -c "$dir/nginx.conf" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
# wait (at most 5 s) until both ports answer: a port already taken makes nginx exit
for _ in $(seq 50); do
  if curl -s -o /dev/null http://127.0.0.1:18090/reset/ && curl -s -o /dev/null http://127.0.0.1:18091/reset/; then
    break
  fi
  kill -0 $server 2>/dev/null || { echo "nginx did not start: $(cat "$dir/logs/error.log")" >&2; exit 1; }
  sleep 0.1
done
cd "$(dirname "$0")/../.."
cargo build --release --example outside_limiter -q
run=${OUTSIDE_LIMITER:-${CARGO_TARGET_DIR:-target}/release/examples/outside_limiter} # OUTSIDE_LIMITER: another build of it

# what nginx saw since the log was truncated: accepted, refused, and the share of the rate the
# accepted requests used between the first and the last accepted one
seen() { # log rate
  awk -v rate="$2" '
    $2 == 200 { ok++; if (!first) first = $1; last = $1 }
    $2 == 429 { refused++ }
    END {
      span = last - first
      used = span > 0 ? 100 * (ok - 1) / (rate * span) : 0
      printf "    nginx saw: %d accepted, %d refused (429), %.1f%% of %d/s used between the first and last accepted\n", ok, refused, used, rate
    }' "$1"
  : > "$1"
}

for round in ${ROUNDS:-1 2 3}; do
  echo "== nginx limit_req 10r/s burst 0, round $round"
  $run http://127.0.0.1:18090 100 quota 10; seen "$dir/logs/10.log" 10
  echo "== nginx limit_req 200r/s burst 0, round $round"
  $run http://127.0.0.1:18091 1000 quota 200; seen "$dir/logs/200.log" 200
  echo "== nginx limit_req 200r/s burst 0, the quota on a port-less host_limit, round $round"
  $run http://127.0.0.1:18091 1000 host-quota 200; seen "$dir/logs/200.log" 200
done
echo "== nginx limit_req 10r/s burst 0, nothing configured (learning from bare 429s)"
$run http://127.0.0.1:18090 50 defaults; seen "$dir/logs/10.log" 10
