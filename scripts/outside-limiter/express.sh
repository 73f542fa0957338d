#!/usr/bin/env bash
# Check reqwest-polite, nothing configured, against express-rate-limit on loopback: fixed
# windows of 10 per 2 s anchored at each window's first hit, announced in IETF draft-6, -7, -8
# headers and in legacy X-RateLimit-* (epoch reset), whole-second resets all. Needs node and
# npm; installs express and express-rate-limit into a temporary directory (never the repo).
# Ports 18093-18096 must be free. OUTSIDE_LIMITER: another build of the example. ROUNDS as in
# nginx.sh. "used": the best time the windows allow (the first window opens at the first
# request: (ceil(n / 10) - 1) windows) over the span between the first and last accepted.
set -euo pipefail
requests=${REQUESTS:-50}
dir=$(mktemp -d)
here=$(cd "$(dirname "$0")" && pwd)
(cd "$dir" && npm init -y > /dev/null && npm install --silent express express-rate-limit > /dev/null)
mkdir -p "$dir/logs"
LOG_DIR="$dir/logs" NODE_PATH="$dir/node_modules" node "$here/express.js" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  curl -s -o /dev/null http://127.0.0.1:18096/stats && break
  kill -0 $server 2>/dev/null || { echo "node did not start" >&2; exit 1; }
  sleep 0.1
done
cd "$here/../.."
cargo build --release --example outside_limiter -q
run=${OUTSIDE_LIMITER:-${CARGO_TARGET_DIR:-target}/release/examples/outside_limiter}

seen() { # log
  awk -v n="$requests" '
    $2 == 200 { ok++; if (ok == 1) first = $1; last = $1 }
    $2 == 429 { refused++ }
    END {
      best = (int((n + 9) / 10) - 1) * 2
      span = last - first
      used = span > 0 ? 100 * best / span : 0
      printf "    server saw: %d accepted, %d refused (429), %.2f s from the first to the last accepted, %.1f%% of the best %d s\n", ok, refused, span, used, best
    }' "$1"
  : > "$1"
}

port=18093
for dialect in draft-6 draft-7 draft-8 legacy; do
  for round in ${ROUNDS:-1 2 3}; do
    echo "== express-rate-limit 10 per 2 s, $dialect headers, $requests at once, nothing configured, round $round"
    $run "http://127.0.0.1:$port" "$requests" defaults 5 > /dev/null; seen "$dir/logs/$dialect.log"
    sleep 2.1 # the window the run left open ends
  done
  port=$((port + 1))
done
