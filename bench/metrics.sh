#!/usr/bin/env bash
# What observability costs a busy node: 1→1 QoS 1 against one node with the HTTP listener on
# (scraped every 5 s, as a Prometheus would every 15) and the $SYS tree on, and against one
# with both off, in ABBA order over ROUNDS rounds; prints each run's delivery rate and broker
# CPU per delivery, then the medians (docs/BENCHMARKS.md, "What observability costs").
#
#   bench/metrics.sh            ROUNDS=3 N=1000000 by default; MQTT port 1883 must be free
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
N=${N:-1000000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/supermq
(cd "$ROOT" && cargo build --release --locked --quiet)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
HTTP_PORT=11899
printf '[mqtt]\ntcp = "127.0.0.1:1883"\n[http]\nlisten = ""\n[sys]\ninterval_secs = 0\n[log]\nlevel = "warn"\n' >"$WORK/off.toml"
printf '[mqtt]\ntcp = "127.0.0.1:1883"\n[http]\nlisten = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n' "$HTTP_PORT" >"$WORK/on.toml"

run() { # mode
    "$BIN" -c "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    local pid=$! scraper=
    sleep 0.7
    if [ "$1" = on ]; then
        (while kill -0 "$pid" 2>/dev/null; do
            curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >/dev/null || true
            sleep 5
        done) &
        scraper=$!
    fi
    "$BIN" bench --port 1883 --pubs 1 --subs 1 -n "$N" -q 1 --broker-pid "$pid" 2>/dev/null | tail -1 |
        python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
print(sys.argv[1], int(d["recv_rate"]), round(d["broker_cpu"] * 1e6 / d["received"], 3), d["lost"])' "$1" |
        tee -a "$WORK/results"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; fi
}

echo "mode rate cpu_us_per_delivery lost"
for _ in $(seq "$ROUNDS"); do
    run on
    run off
    run off
    run on
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for mode in ("off", "on"):
    rates = [int(r[1]) for r in rows if r[0] == mode]
    cpu = [float(r[2]) for r in rows if r[0] == mode]
    print(f"median {mode}: {statistics.median(rates):.0f} msg/s, {statistics.median(cpu):.3f} µs CPU/delivery")
on = statistics.median(int(r[1]) for r in rows if r[0] == "on")
off = statistics.median(int(r[1]) for r in rows if r[0] == "off")
print(f"on/off: {on / off:.1%}")
PY
