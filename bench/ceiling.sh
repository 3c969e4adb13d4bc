#!/usr/bin/env bash
# Herald beside the machine's ceiling: `../shared/tools/limit`'s `blast` (a
# minimal SSE fan-out server: frames encoded once, one coalesced write per
# wake-up) and the same client for both (`sink`, publisher `pubhttp`), runs
# alternating so both see the same machine (its scripts/compare_http.sh).
#
#   bench/ceiling.sh                     # cases A D Idle, 3 runs each
#   CASES="A" REPS=1 bench/ceiling.sh    # a smoke run
#
# Herald runs on SQLite in a fresh temp data dir for every run, with the
# limits raised for 1,000 (and, for Idle, 15,000) streams from 127.0.0.1.
# Cases (100-byte payloads, one topic): A = N=1,000 at max rate
# (deliveries/s, every event checked), D = N=1,000 × 1,000 events/s for 10 s
# (latency), Idle = 15,000 idle streams (server RSS per stream). The table
# is compare_http.sh's (compare_summarize.py); a run counts only if nothing else used
# the CPU (retried otherwise). LIMIT= points at the tools, LIMIT_TARGET= at
# their build, HERALD= at another herald binary, OUT= keeps the results.
# PEERS="nchan" also runs nginx+Nchan (bench/nchan.conf, installed from
# Debian if missing) through the same tool, beside its own ceiling runs;
# results go to OUT/nchan. (Pushpin's publish API takes its own JSON, which
# the tool's publisher cannot send: it is in bench/compare.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT=$(realpath "${LIMIT:-../shared/tools/limit}")
LIMIT_TARGET=${LIMIT_TARGET:-/tmp/limit-target}
CASES=${CASES:-A D Idle}
REPS=${REPS:-3}
PEERS=${PEERS:-}
SECRET=herald-bench-ceiling-secret-at-least-32-bytes

if [[ -z ${HERALD:-} ]]; then
    cargo build --release -p herald-server
    HERALD=${CARGO_TARGET_DIR:-target}/release/herald
fi
HERALD=$(realpath "$HERALD")
CARGO_TARGET_DIR=$LIMIT_TARGET cargo build --release --manifest-path "$LIMIT/Cargo.toml"

work=$(mktemp -d "${TMPDIR:-/tmp}/herald-ceiling.XXXXXX")
out=${OUT:-$work/results}
cleanup() {
    for stop in "$work"/*-stop; do
        [[ -x $stop ]] && "$stop"
    done
    [[ -n ${OUT:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Writes $work/NAME-start, which runs SETUP and then COMMAND in the
# background (its pid in $work/NAME-pid) and returns once HEALTH_URL
# answers, and $work/NAME-stop, which sends SIGNAL and waits for the exit.
server_scripts() {
    local name=$1 setup=$2 command=$3 health=$4 signal=$5
    cat >"$work/$name-start" <<SCRIPT
#!/usr/bin/env bash
$setup
$command </dev/null >"$work/$name.log" 2>&1 &
echo \$! >"$work/$name-pid"
for _ in \$(seq 1 100); do
    curl -fs "$health" >/dev/null && exit 0
    sleep 0.1
done
echo "$name did not start; see $work/$name.log" >&2
exit 1
SCRIPT
    cat >"$work/$name-stop" <<SCRIPT
#!/usr/bin/env bash
pid=\$(cat "$work/$name-pid" 2>/dev/null) || exit 0
kill -$signal "\$pid" 2>/dev/null
for _ in \$(seq 1 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "\$pid" 2>/dev/null || true
rm -f "$work/$name-pid"
SCRIPT
    chmod +x "$work/$name-start" "$work/$name-stop"
}

port=$(free_port)
token=$("$HERALD" token --jwt-secret "$SECRET" --sub bench --publish '*' --subscribe '*' --ttl 24h | tail -1)
# Started fresh for every run.
server_scripts herald "rm -rf '$work/data'" \
    "'$HERALD' serve --listen 127.0.0.1:$port --data-dir '$work/data' --jwt-secret '$SECRET' --log warn \
    --max-connections 20000 --max-streams-per-ip 20000" \
    "http://127.0.0.1:$port/healthz" TERM

CARGO_TARGET_DIR=$LIMIT_TARGET "$LIMIT/scripts/compare_http.sh" --name herald \
    --start "$work/herald-start" --stop "$work/herald-stop" --pids "cat $work/herald-pid" \
    --sub-url "http://127.0.0.1:$port/topics/{topic}/events" \
    --pub-url "http://127.0.0.1:$port/topics/{topic}/events" \
    --pub-header "Authorization: Bearer $token" --sub-header "Authorization: Bearer $token" \
    --content-type application/json --json-field data \
    --cases "$CASES" --reps "$REPS" --out "$out"

[[ " $PEERS " == *" nchan "* ]] || exit 0

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $nginx_bin || ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    echo "installing nginx-light and libnginx-mod-nchan from Debian" >&2
    sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -q && $sudo apt-get install -y -q nginx-light libnginx-mod-nchan
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
fi
nport=$(free_port)
prefix=$work/nginx
server_scripts nchan \
    "rm -rf '$prefix'; mkdir -p '$prefix/logs'; sed 's#__PREFIX__#$prefix#g; s#__PORT__#$nport#g' '$PWD/bench/nchan.conf' >'$prefix/nginx.conf'" \
    "'$nginx_bin' -p '$prefix' -c '$prefix/nginx.conf'" \
    "http://127.0.0.1:$nport/" QUIT
# The master and its workers: CPU and memory are summed over all of them.
CARGO_TARGET_DIR=$LIMIT_TARGET "$LIMIT/scripts/compare_http.sh" --name nchan \
    --start "$work/nchan-start" --stop "$work/nchan-stop" \
    --pids "pid=\$(cat $work/nchan-pid); echo \$pid; pgrep -P \$pid" \
    --sub-url "http://127.0.0.1:$nport/sub/{topic}" \
    --pub-url "http://127.0.0.1:$nport/pub?id={topic}" \
    --cases "$CASES" --reps "$REPS" --out "$out/nchan"
