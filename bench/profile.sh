#!/usr/bin/env bash
# Profiles a release `herald` under load: `perf record -e cpu-clock` on the
# server process while `herald-bench run` drives it, then the top symbols.
#
#   bench/profile.sh fanout            # N=1,000 subscribers, max-rate publishes, --memory
#   bench/profile.sh publish           # no subscribers, K=32 publishers, --memory
#   STORE=sqlite bench/profile.sh publish
#   TRANSPORT=h2 bench/profile.sh fanout   # over HTTPS: h1 or h2 (herald-bench run --transport)
#
# Needs `perf` (Debian: apt-get install -y linux-perf) and the release
# binaries (cargo build --release -p herald-server -p herald-bench, in
# CARGO_TARGET_DIR if set). For call graphs, build herald with
# RUSTFLAGS="-C force-frame-pointers=yes" and point HERALD= at it.
# Loopback only; the server is stopped (by its pid) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/certificate.sh

scenario=${1:-fanout}
store=${STORE:-memory}
port=${PORT:-18950}
out=${OUT:-/tmp/herald-perf-$scenario-$store}
secret=profile-secret-of-at-least-32-bytes-long
transport=${TRANSPORT:-plain}
herald=${HERALD:-${CARGO_TARGET_DIR:-target}/release/herald}
bench=${CARGO_TARGET_DIR:-target}/release/herald-bench

work=$(mktemp -d)
store_args=(--memory --retention-events 100000)
if [[ $store == sqlite ]]; then store_args=(--data-dir "$work/data"); fi
scheme=http tls=() client_tls=()
if [[ $transport != plain ]]; then
    make_certificate "$work" "profile"
    scheme=https tls=(--tls-cert "$work/server.pem" --tls-key "$work/server.key")
    client_tls=(--ca "$work/ca.pem" --transport "$transport")
fi

"$herald" serve --listen "127.0.0.1:$port" "${store_args[@]}" --jwt-secret "$secret" --log warn \
    --max-connections 19000 --max-streams-per-ip 19000 "${tls[@]}" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -fsS --cacert "$work/ca.pem" "$scheme://localhost:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$("$herald" token --sub profile --publish '*' --subscribe '*' --jwt-secret "$secret")
url="$scheme://localhost:$port/topics/bench/events"

case $scenario in
    fanout) args=(run -u "$url" -p "$url" "${client_tls[@]}" -n 1000 -m ${M:-4000} -k ${K:-16}) ;;
    publish) args=(publish -p "$url" "${client_tls[@]}" -m 40000 -k 32) ;;
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
