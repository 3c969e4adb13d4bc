#!/usr/bin/env bash
# Server memory per idle event stream over plain HTTP/1.1, HTTPS/HTTP/1.1
# (one TLS connection per stream) and HTTPS/HTTP/2 (100 streams per
# connection), with `herald-bench idle-tls` as the client, a fresh Herald
# (memory store) per run, runs alternating.
#
#   bench/idle_tls.sh                  # N=5000 streams, 3 runs of each
#   N=2000 REPS=1 bench/idle_tls.sh    # a smoke run
#
# The certificate is made here by `openssl` under a throwaway authority.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/certificate.sh

N=${N:-5000}
REPS=${REPS:-3}
SECRET=herald-bench-idle-tls-secret-at-least-32-bytes
cargo build --release -p herald-server -p herald-bench
bin=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d "${TMPDIR:-/tmp}/herald-idle-tls.XXXXXX")
pid=""
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

make_certificate "$work" "idle-tls"
token=$("$bin/herald" token --jwt-secret "$SECRET" --sub bench --subscribe '*' --ttl 1h | tail -1)

for rep in $(seq 1 "$REPS"); do
    for protocol in plain h1 h2; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        tls=(--tls-cert "$work/server.pem" --tls-key "$work/server.key")
        [[ $protocol == plain ]] && tls=()
        "$bin/herald" serve --memory --listen "127.0.0.1:$port" --jwt-secret "$SECRET" --log warn \
            --max-connections 20000 --max-streams-per-ip 20000 "${tls[@]}" >"$work/herald.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
            curl -s -k -o /dev/null "https://127.0.0.1:$port/healthz" && break
            curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
            sleep 0.1
        done
        sleep 0.5
        echo -n "run $rep: "
        HERALD_BENCH_TOKEN=$token timeout 120 "$bin/herald-bench" idle-tls --addr "127.0.0.1:$port" \
            --ca "$work/ca.pem" --protocol "$protocol" -n "$N" --server-pid "$pid"
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    done
done
