#!/usr/bin/env bash
# Start-up time of `herald serve` on a SQLite store holding 1,000,000 events:
# from process start to the first 200 from /readyz. Loopback only; bounded.
#
#   bash bench/startup.sh [events]      (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
secret=startup-bench-secret-0123456789abcdef
port=18790
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

cargo build --release -q -p herald-server
herald=target/release/herald
token=$($herald token --jwt-secret "$secret" --sub bench --publish '*' --ttl 1h)

wait_ready() {
  for _ in $(seq 1 3000); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/readyz" && return 0
    sleep 0.001
  done
  echo "herald did not become ready" >&2; return 1
}

echo "filling $dir with $events events (batches of 10000 over 100 topics)…"
$herald serve --listen 127.0.0.1:$port --data-dir "$dir" --jwt-secret "$secret" --retention-events 1000000 \
  --max-body-bytes 4000000 --log warn &
wait_ready
python3 - "$events" > "$dir/batch.json" <<'PY'
import json, sys
print(json.dumps([{"topic": f"t{i % 100}", "data": "x" * 100} for i in range(10000)]))
PY
filled=0
started=$(date +%s%N)
while [ "$filled" -lt "$events" ]; do
  curl -fs -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
       --data-binary "@$dir/batch.json" "http://127.0.0.1:$port/publish"
  filled=$((filled + 10000))
  [ $((filled % 100000)) -eq 0 ] && echo "  $filled events" >&2
done
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "filled in ${elapsed_ms} ms ($(( events * 1000 / (elapsed_ms + 1) )) events/s through batch publishes)"
kill -TERM %1; wait %1 || true
ls -la "$dir"/herald.db* | awk '{print "  " $5 " bytes  " $9}'

times=()
for run in 1 2 3 4 5; do
  t0=$(date +%s%N)
  $herald serve --listen 127.0.0.1:$port --data-dir "$dir" --jwt-secret "$secret" --retention-events 1000000 --log warn &
  wait_ready
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000000 )))
  kill -TERM %1; wait %1 || true
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
echo "start-up to ready with $events stored events, 5 runs (ms): $sorted"
echo "median: $(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p) ms"
