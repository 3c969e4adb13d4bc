#!/usr/bin/env bash
# Profiles a release `herald` under load: `perf record -e cpu-clock` on the
# server process while `herald-bench run` drives it, then the top symbols.
#
#   bench/profile.sh fanout            # N=1,000 subscribers, max-rate publishes, --memory
#   bench/profile.sh publish           # no subscribers, K=32 publishers, --memory
#   STORE=sqlite bench/profile.sh publish
#
# Needs `perf` (Debian: apt-get install -y linux-perf) and the release
# binaries (cargo build --release -p herald-server -p herald-bench).
# Loopback only; the server is stopped (by its pid) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:-fanout}
store=${STORE:-memory}
port=${PORT:-18950}
out=${OUT:-/tmp/herald-perf-$scenario-$store}
secret=profile-secret-of-at-least-32-bytes-long
herald=${HERALD:-target/release/herald}
bench=target/release/herald-bench

work=$(mktemp -d)
store_args=(--memory)
if [[ $store == sqlite ]]; then store_args=(--data-dir "$work/data"); fi

"$herald" serve --listen "127.0.0.1:$port" "${store_args[@]}" --jwt-secret "$secret" --log warn \
    --max-connections 19000 --max-streams-per-ip 19000 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$("$herald" token --sub profile --publish '*' --subscribe '*' --jwt-secret "$secret")
url="http://127.0.0.1:$port/topics/bench/events"

case $scenario in
    fanout) args=(run -u "$url" -p "$url" -n 1000 -m ${M:-4000} -k ${K:-16}) ;;
    publish) args=(publish -p "$url" -m 40000 -k 32) ;;
    *) echo "unknown scenario $scenario (fanout, publish)" >&2; exit 2 ;;
esac

perf record -e cpu-clock -F 999 -g -p "$pid" -o "$out.data" 2>"$out.perf.log" &
perf_pid=$!
sleep 0.5
"$bench" "${args[@]}" --token "$token" --server-pid "$pid" --timeout 120s -q || true
kill -INT $perf_pid
wait $perf_pid || true
perf report -i "$out.data" --no-children --sort symbol -g none --percent-limit 0.7 --stdio 2>/dev/null | grep -E "^ +[0-9]" | cut -c1-150 > "$out.txt"
perf report -i "$out.data" --no-children --sort dso -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10 >> "$out.txt"
cat "$out.txt"
