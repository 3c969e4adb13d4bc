#!/usr/bin/env bash
# Herald against Nchan, side by side, on this machine's loopback.
#
#   bench/compare.sh                       # every scenario, 3 runs each
#   bench/compare.sh --runs 1 --scenarios fanout,publish
#   bench/compare.sh --json /tmp/compare.json --markdown /tmp/compare.md
#
# Installs nginx-light and libnginx-mod-nchan from Debian if missing, builds
# the release binaries, then runs `herald-bench compare` (see
# `target/release/herald-bench compare --help`): each run starts a fresh
# server (Herald --memory, Herald SQLite, nginx+Nchan from bench/nchan.conf),
# alternating A B C A B C, and prints the median per scenario with the
# Herald/Nchan ratios. Load goes to 127.0.0.1 only; every run has a deadline.
# Several Herald nodes on one Redis, against one node: scripts/bench-cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $nginx_bin || ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y nginx-light libnginx-mod-nchan
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
fi

cargo build --release -p herald-server -p herald-bench

exec target/release/herald-bench compare \
    --herald target/release/herald \
    --nginx "$nginx_bin" \
    --nchan-conf bench/nchan.conf \
    "$@"
