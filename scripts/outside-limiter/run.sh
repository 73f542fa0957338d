#!/usr/bin/env bash
# Check reqwest-polite against an outside server-side limiter we do not ship: Flask-Limiter
# (moving and fixed windows, 10 per second), on loopback. Needs Python 3 and PyPI.
set -euo pipefail
cd "$(dirname "$0")"
venv="${TMPDIR:-/tmp}/reqwest-polite-flask"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q flask flask-limiter
"$venv/bin/python" app.py 18080 moving-window "10 per second" >/dev/null 2>&1 &
moving=$!
"$venv/bin/python" app.py 18081 fixed-window "10 per second" >/dev/null 2>&1 &
fixed=$!
trap 'kill $moving $fixed' EXIT
sleep 2
cd ../..
cargo build --release --example outside_limiter -q
run=target/release/examples/outside_limiter
for port in 18080 18081; do
  echo "== Flask-Limiter $([ $port = 18080 ] && echo moving-window || echo fixed-window), 10 per second"
  $run http://127.0.0.1:$port 60 quota 10
  $run http://127.0.0.1:$port 60 defaults
done
echo "== outage"
$run http://127.0.0.1:18080 0 outage
