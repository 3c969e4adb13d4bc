#!/usr/bin/env bash
# Fan-out and paced latency over plain HTTP/1.1, HTTPS/HTTP/1.1 (one TLS
# connection per stream) and HTTPS/HTTP/2 (100 streams per connection), in
# one session, runs alternating, with `herald-bench run` as the client; then
# the idle memory per stream of each (bench/idle_tls.sh).
#
#   bench/tls.sh                                   # 3 runs of each case and transport
#   REPS=1 FANOUT_EVENTS=2000 PACED_SECONDS=2 IDLE=0 bench/tls.sh   # a smoke run
#   HERALD=/tmp/herald-before TRANSPORTS="plain h2" bench/tls.sh    # another server build
#
# Cases (N=1,000 subscribers of one topic, 100-byte payloads, K=8 publishing
# connections, a fresh Herald with the memory store, keeping every event of
# the run, per run):
#   fanout = FANOUT_EVENTS events (default 20,000) as fast as they are
#            acknowledged: deliveries/s, every event checked;
#   paced  = 1,000 events/s for PACED_SECONDS (default 10): latency.
# The subscribers run on CLIENT_THREADS runtime threads (default 1), the
# publishers on one of their own.
# Publishers speak the streams' scheme: plain HTTP/1.1 to the plain server,
# HTTPS/1.1 to the HTTPS one (a Herald with --tls-cert serves HTTPS on every
# --listen address; a plain one beside it would only redirect). The table
# gives medians and each TLS transport's ratio to plain; OUT= keeps every
# run's JSON report. The certificate is made here by `openssl` under a
# throwaway authority. Loopback only; every run has a deadline.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/certificate.sh

REPS=${REPS:-3}
FANOUT_EVENTS=${FANOUT_EVENTS:-20000}
PACED_SECONDS=${PACED_SECONDS:-10}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
IDLE=${IDLE:-1}
CLIENT_THREADS=${CLIENT_THREADS:-1}
TRANSPORTS=${TRANSPORTS:-plain h1 h2}
SECRET=herald-bench-tls-secret-at-least-32-bytes
cargo build --release -p herald-server -p herald-bench
bin=${CARGO_TARGET_DIR:-target}/release
# HERALD= runs another build of the server (an A/B comparison).
herald=${HERALD:-$bin/herald}

work=$(mktemp -d "${TMPDIR:-/tmp}/herald-tls.XXXXXX")
out=${OUT:-$work/results}
mkdir -p "$out"
pid=""
cleanup() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    [[ -n ${OUT:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

make_certificate "$work" "tls bench"
token=$("$bin/herald" token --jwt-secret "$SECRET" --sub bench --publish '*' --subscribe '*' --ttl 24h | tail -1)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a fresh Herald for TRANSPORT; sets pid and base (the URL root).
start_herald() {
    local transport=$1 port scheme=http tls=()
    port=$(free_port)
    if [[ $transport != plain ]]; then
        scheme=https
        tls=(--tls-cert "$work/server.pem" --tls-key "$work/server.key")
    fi
    # The store keeps every event of a run: a reader the publishers outrun
    # catches up rather than getting herald.gap (history_trimmed), so the
    # figure is the fan-out's, not the retention's.
    "$herald" serve --memory --listen "127.0.0.1:$port" --jwt-secret "$SECRET" --log warn \
        --retention-events $((FANOUT_EVENTS + PACED_SECONDS * 1000)) \
        --max-connections 20000 --max-streams-per-ip 20000 "${tls[@]}" >"$work/herald.log" 2>&1 &
    pid=$!
    base=$scheme://localhost:$port
    for _ in $(seq 1 100); do
        curl -fs --cacert "$work/ca.pem" -o /dev/null "$base/healthz" && return 0
        sleep 0.1
    done
    echo "herald did not start; its log:" >&2
    cat "$work/herald.log" >&2
    exit 1
}

stop_herald() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# One run of CASE over TRANSPORT, its report in $out/CASE-TRANSPORT-REP.json.
run_case() {
    local case=$1 transport=$2 rep=$3 load
    case $case in
        fanout) load=(--events "$FANOUT_EVENTS") ;;
        paced) load=(--events $((PACED_SECONDS * 1000)) --rate 1000) ;;
    esac
    start_herald "$transport"
    local url=$base/topics/bench/events
    # The tool stops itself at --timeout; `timeout` is the backstop.
    if ! HERALD_BENCH_TOKEN=$token timeout 200 "$bin/herald-bench" run -u "$url" -p "$url" --ca "$work/ca.pem" \
        --transport "$transport" --threads "$CLIENT_THREADS" -n "$SUBSCRIBERS" -k 8 "${load[@]}" --id-order --settle 1s \
        --timeout 150s --drain-timeout 30s --server-pid "$pid" --label "$case $transport $rep" --quiet \
        --json "$out/$case-$transport-$rep.json" >"$work/run.txt"; then
        cat "$work/run.txt" >&2
        echo "run $case $transport $rep failed (its report is kept in the table's run count)" >&2
    fi
    stop_herald
    python3 - "$out/$case-$transport-$rep.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d, s = r["delivery"], r["server"] or {}
print(f'{r["label"]:>16}: {d["deliveries_per_second"] / 1e6:5.2f} M/s, p50 {d["latency"]["p50_ms"]:7.2f} ms, '
      f'p99 {d["latency"]["p99_ms"]:7.2f} ms, server cpu {s.get("cpu_seconds", 0):5.2f} s, '
      f'client cpu {r["client_cpu_seconds"]:5.2f} s, {"ok" if r["ok"] else "FAILED"}')
PY
}

for rep in $(seq 1 "$REPS"); do
    for case in fanout paced; do
        for transport in $TRANSPORTS; do
            run_case "$case" "$transport" "$rep"
        done
    done
done

echo
echo "Medians of $REPS runs (N=$SUBSCRIBERS, one topic, 100-byte payloads, K=8; fanout $FANOUT_EVENTS events at max rate, paced 1,000/s for $PACED_SECONDS s):"
python3 - "$out" "$REPS" $TRANSPORTS <<'PY'
import json, statistics, sys
from pathlib import Path

out, reps, transports = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
names = {"plain": "HTTP/1.1", "h1": "HTTPS/1.1", "h2": "HTTPS/2 (100 streams a connection)"}

def runs(case, transport):
    reports = [json.load(open(p)) for p in sorted(out.glob(f"{case}-{transport}-*.json"))]
    return [r for r in reports if r["ok"]], len(reports)

def median(values):
    return statistics.median(values) if values else float("nan")

rows = {}
for case in ("fanout", "paced"):
    for t in transports:
        ok, total = runs(case, t)
        rate = [r["delivery"]["deliveries_per_second"] for r in ok]
        cpu = [r["server"]["cpu_seconds"] for r in ok]
        rows[case, t] = {
            "runs": f"{len(ok)}/{total}",
            "rate": median(rate),
            "rate_range": (min(rate), max(rate)) if rate else (float("nan"),) * 2,
            "p50": median([r["delivery"]["latency"]["p50_ms"] for r in ok]),
            "p99": median([r["delivery"]["latency"]["p99_ms"] for r in ok]),
            "cpu": median(cpu),
            # Server CPU per delivery: what the transport costs the server,
            # whatever the client (on the same cores) spent.
            "ns": median([r["server"]["cpu_seconds"] / r["delivery"]["delivered"] * 1e9 for r in ok]),
            "client_cpu": median([r["client_cpu_seconds"] for r in ok]),
        }

print("| case | transport | clean runs | deliveries/s (range) | p50 | p99 | server CPU | server ns/delivery | client CPU | deliveries/s vs plain | server ns/delivery vs plain |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for case in ("fanout", "paced"):
    base = rows.get((case, "plain"))
    for t in transports:
        r = rows[case, t]
        lo, hi = r["rate_range"]
        vs = f'{r["rate"] / base["rate"]:.2f}×' if base and t != "plain" else ""
        cost = f'{r["ns"] / base["ns"]:.2f}×' if base and t != "plain" else ""
        print(f'| {case} | {names[t]} | {r["runs"]} | {r["rate"] / 1e6:.2f} M ({lo / 1e6:.2f}–{hi / 1e6:.2f}) | '
              f'{r["p50"]:.2f} ms | {r["p99"]:.2f} ms | {r["cpu"]:.2f} s | {r["ns"]:.0f} | {r["client_cpu"]:.2f} s | {vs} | {cost} |')

base = rows.get(("fanout", "plain"))
if base:
    print()
    for t in transports:
        if t == "plain":
            continue
        ratio = rows["fanout", t]["rate"] / base["rate"]
        verdict = "met" if ratio >= 0.7 else "MISSED"
        print(f'target "TLS costs at most 30% of plain fan-out throughput", {names[t]}: {ratio:.2f}× of plain: {verdict}')
PY

if [[ $IDLE != 0 ]]; then
    echo
    echo "Idle memory per stream (bench/idle_tls.sh, N=${IDLE_N:-5000}, target ≤ 8 KiB over HTTPS):"
    N=${IDLE_N:-5000} REPS=$REPS bench/idle_tls.sh
fi
