#!/usr/bin/env bash
# Cross-node throughput on the local three-node cluster of cluster/ (docs/BENCHMARKS.md,
# "Cross-node with route acknowledgements"): per round, same-node and cross-node 4→1 runs at
# QoS 1 and 0 with the default `cluster.acks = "cluster"`, then cross-node QoS 1 with
# `acks = "local"`; the cluster is restarted before each mode. Prints one line per run and the
# medians over ROUNDS rounds, with each node's CPU seconds per million deliveries (from /proc),
# so that a rate can be read apart from the three nodes and the bench sharing the cores.
#
#   bench/cross.sh            ROUNDS=3 N=100000 by default
#
# Uses the release build (honouring CARGO_TARGET_DIR), or BROKER_BIN (not built: for a
# before/after of two builds), and the loopback ports of cluster/ (MQTT 1883-1885, routes
# 9991-9993), which must be free.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
N=${N:-100000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BROKER_BIN:-$TARGET/release/supermq}

[ -n "${BROKER_BIN:-}" ] || (cd "$ROOT" && cargo build --release --locked --quiet)
trap '"$ROOT/cluster/cluster.sh" stop >/dev/null 2>&1 || true' EXIT
RESULTS=$(mktemp)

restart() { # acks mode
    "$ROOT/cluster/cluster.sh" stop >/dev/null 2>&1 || true
    SUPERMQ_CLUSTER_ACKS=$1 BROKER_BIN=$BIN "$ROOT/cluster/cluster.sh" start >/dev/null
    sleep 2
}

# CPU seconds (user + system) each node has used so far, space-separated, node1 first.
node_cpu() {
    for node in node1 node2 node3; do
        python3 -c '
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))' "$(cat "$ROOT/cluster/run/$node.pid")"
    done | paste -sd' '
}

run() { # label subscriber-port qos
    local before out after
    before=$(node_cpu)
    out=$("$BIN" bench --pub-host 127.0.0.1:1883 --sub-host "127.0.0.1:$2" --pubs 4 --subs 1 \
        -n "$N" -q "$3" --shared-topic 2>/dev/null | tail -1)
    after=$(node_cpu)
    echo "$out" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
before, after = map(float, sys.argv[2].split()), map(float, sys.argv[3].split())
# CPU seconds per million deliveries of each node: node1 has the publishers, the subscriber is
# on the port the label says.
delivered = max(d["received"], 1)
per_node = [f"{1e6 * (a - b) / delivered:.2f}" for b, a in zip(before, after)]
print(sys.argv[1], int(d["recv_rate"]), d["lost"], d["dup"], d["p99_us"], *per_node)
' "$1" "$before" "$after" | tee -a "$RESULTS"
}

echo "run rate lost dup p99_us node1_cpu_s_per_M node2_cpu_s_per_M node3_cpu_s_per_M"
for _ in $(seq "$ROUNDS"); do
    restart cluster
    run same-q1 1883 1
    run cross-q1 1884 1
    run cross-q0 1884 0
    run same-q0 1883 0
    restart local
    run cross-q1-local 1884 1
done
python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
cpu = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, rate, lost, dup, _, *per_node = line.split()
    runs[label].append((int(rate), int(lost), int(dup)))
    cpu[label].append([float(c) for c in per_node])
median = {k: statistics.median(r for r, _, _ in v) for k, v in runs.items()}
for label, values in runs.items():
    nodes = " / ".join(f"{statistics.median(c[i] for c in cpu[label]):.2f}" for i in range(3))
    print(f"median {label}: {median[label]:.0f} msg/s, lost {sum(l for _, l, _ in values)}, "
          f"dup {sum(d for _, _, d in values)}, CPU s per million deliveries node1/2/3 {nodes}")
print(f"cross/same QoS 1: {median['cross-q1'] / median['same-q1']:.0%}, "
      f"QoS 0: {median['cross-q0'] / median['same-q0']:.0%}; "
      f"acks=cluster/acks=local: {median['cross-q1'] / median['cross-q1-local']:.0%}")
PY
rm -f "$RESULTS"
