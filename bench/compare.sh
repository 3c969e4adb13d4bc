#!/usr/bin/env bash
# Herald against Nchan and Pushpin, side by side, on this machine's loopback.
#
#   bench/compare.sh                       # every scenario, 3 runs each
#   bench/compare.sh --runs 1 --scenarios fanout,publish
#   bench/compare.sh --servers herald-sqlite,pushpin --runs 1
#   bench/compare.sh --json /tmp/compare.json --markdown /tmp/compare.md
#
# Installs nginx-light, libnginx-mod-nchan and pushpin from Debian if
# missing, builds the release binaries, then runs `herald-bench compare` (see
# `target/release/herald-bench compare --help`): each run starts a fresh
# server (Herald --memory, Herald SQLite, nginx+Nchan from bench/nchan.conf,
# Pushpin from bench/pushpin.conf with herald-bench's own GRIP origin),
# alternating A B C D A B C D, and prints the median per scenario with the
# Herald/Nchan and Herald/Pushpin ratios. Load goes to 127.0.0.1 only; every
# run has a deadline. Pushpin runs without a service manager: its runner
# starts condure, zurl, the proxy and the handler under a temp directory.
# Several Herald nodes on one Redis, against one node: scripts/bench-cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $nginx_bin || ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    missing+=(nginx-light libnginx-mod-nchan)
fi
pushpin_bin=$(command -v pushpin || echo /usr/bin/pushpin)
if [[ ! -x $pushpin_bin || ! -e /usr/lib/pushpin/internal.conf ]] || ! command -v zurl >/dev/null; then
    missing+=(pushpin)
fi
if ((${#missing[@]} > 0)); then
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    pushpin_bin=$(command -v pushpin || echo /usr/bin/pushpin)
fi

cargo build --release -p herald-server -p herald-bench
target_dir=${CARGO_TARGET_DIR:-target}

exec "$target_dir/release/herald-bench" compare \
    --herald "$target_dir/release/herald" \
    --nginx "$nginx_bin" \
    --nchan-conf bench/nchan.conf \
    --pushpin "$pushpin_bin" \
    --pushpin-conf bench/pushpin.conf \
    --pushpin-internal-conf /usr/lib/pushpin/internal.conf \
    "$@"
