#!/bin/sh
# Starts or stops a three-node supermq cluster on this machine's loopback ports.
#
#   cluster/cluster.sh start    build (release) and start node1..node3 in the background
#   cluster/cluster.sh stop     stop them with SIGTERM (graceful), then wait
#   cluster/cluster.sh status   show which nodes run
#
# MQTT: node1 127.0.0.1:1883, node2 :1884, node3 :1885; routes on :9991-9993.
# Logs and pid files go to cluster/run/. BROKER_BIN overrides the binary to run (skipping the
# build); it is not called SUPERMQ_BIN because the broker would take a SUPERMQ_ variable for a
# configuration override, and refuse it.
#
# The cluster secret: SUPERMQ_CLUSTER_SECRET if set (at least 16 characters), otherwise a random
# one generated on the first start and kept in cluster/run/secret (readable by you only), so
# the nodes of every later start agree. No secret is shipped in the node files: one everybody
# can read in this repository would keep nobody out.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
run="$here/run"
bin=${BROKER_BIN:-"$here/../target/release/supermq"}

running() {
    [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null
}

start() {
    if [ -z "${BROKER_BIN:-}" ]; then
        (cd "$here/.." && cargo build --release --quiet)
    fi
    mkdir -p "$run"
    if [ -z "${SUPERMQ_CLUSTER_SECRET:-}" ]; then
        if [ ! -s "$run/secret" ]; then
            (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$run/secret")
            echo "generated a cluster secret in $run/secret"
        fi
        SUPERMQ_CLUSTER_SECRET=$(cat "$run/secret")
        export SUPERMQ_CLUSTER_SECRET
    fi
    for node in node1 node2 node3; do
        if running "$node"; then
            echo "$node already running (pid $(cat "$run/$node.pid"))"
            continue
        fi
        "$bin" -c "$here/$node.conf" >"$run/$node.log" 2>&1 &
        echo $! >"$run/$node.pid"
        echo "$node started (pid $!, log $run/$node.log)"
    done
}

stop() {
    for node in node1 node2 node3; do
        if running "$node"; then
            kill -TERM "$(cat "$run/$node.pid")"
        fi
    done
    for node in node1 node2 node3; do
        # Shutdown takes at most 5 s; wait a little longer, then give up loudly.
        tries=0
        while running "$node" && [ $tries -lt 70 ]; do
            sleep 0.1
            tries=$((tries + 1))
        done
        if running "$node"; then
            echo "$node did not stop (pid $(cat "$run/$node.pid"))" >&2
        else
            rm -f "$run/$node.pid"
            echo "$node stopped"
        fi
    done
}

status() {
    for node in node1 node2 node3; do
        if running "$node"; then
            echo "$node running (pid $(cat "$run/$node.pid"))"
        else
            echo "$node stopped"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
