#!/usr/bin/env bash
# Compare supermq with mosquitto, nats-server's MQTT listener and rumqttd on this machine.
#
#   bench/compare.sh [--rounds N] [--out FILE | --stdout] [--quick]
#
# Builds supermq (cargo build --release --locked, honouring CARGO_TARGET_DIR), installs the
# peers when missing (mosquitto and nats-server from apt, rumqttd with cargo install into
# $PEERS_DIR), starts all four on free loopback ports from a private temporary directory, and
# runs the same scenarios against each with `supermq bench`, interleaved: every round runs
# every scenario against every broker in turn (the broker order rotates from round to round),
# so slow drift of the machine spreads over all of them. It then prints one table of medians
# (and writes it as Markdown, to paste into docs/BENCHMARKS.md), with supermq's ratio to the
# best peer and to mosquitto, lost messages and the CPU used by the load generator and by
# the broker. A broker that cannot run a scenario (refused, connection reset, timed out) is
# shown as n/a with the reason; the run goes on.
#
# Environment:
#   ROUNDS=3               rounds (medians over them)
#   BROKERS="supermq mosquitto nats rumqttd"   which brokers, in this order in the table
#   SCENARIOS="q0 q1"      run only these scenarios, of: q0 q1 q2 fanin100 fanin1000
#                          fanout100 latency conns (see scenario_list below)
#   PEERS_DIR=target/peers where rumqttd is installed (bin/rumqttd), relative to the repository
#   CARGO_TARGET_DIR       where supermq is built (default target)
#   BENCH_TIMEOUT=150      seconds before one bench run is abandoned (counted as n/a)
#   OUT=FILE               the Markdown table (default bench/results-DATE.md); OUT=- : stdout
#   QUIET_BUDGET=240       seconds the run may spend, in all, waiting for the machine to be
#                          quiet (at most QUIET_CORES=0.3 cores busy) before each scenario
#   QUICK=1                a smoke run: a tenth of the messages, 1000 connections, 1 round
#                          (unless ROUNDS or --rounds says otherwise)
#   KEEP_WORK=1            keep the temporary directory (configurations, logs, raw output)
#
# Other processes on the machine are never touched: only the brokers this script started
# (tracked by pid) are stopped, on exit.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The command as given, with the settings that came from the environment, for the report.
COMMAND_LINE="bench/compare.sh${*:+ $*}"
for var in BENCH_TIMEOUT QUICK QUIET_BUDGET SCENARIOS BROKERS ROUNDS PEERS_DIR CARGO_TARGET_DIR; do
    if [ -n "${!var+set}" ]; then COMMAND_LINE="$var=${!var} $COMMAND_LINE"; fi
done
HELPER="$ROOT/bench/compare.py"
ROUNDS_GIVEN=${ROUNDS:+1}
ROUNDS=${ROUNDS:-3}
BROKERS=${BROKERS:-"supermq mosquitto nats rumqttd"}
SCENARIOS=${SCENARIOS:-}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150}
QUIET_BUDGET=${QUIET_BUDGET:-240}
QUIET_CORES=${QUIET_CORES:-0.3}
QUICK=${QUICK:-0}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/bench/results-$STAMP.md}

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; ROUNDS_GIVEN=1; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; ROUNDS_GIVEN=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --stdout) OUT=-; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ] && [ -z "$ROUNDS_GIVEN" ]; then ROUNDS=1; fi
case "$ROUNDS" in ''|*[!0-9]*|0) echo "compare.sh: ROUNDS must be a positive number" >&2; exit 2 ;; esac

abs() { case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
PEERS_DIR=$(abs "${PEERS_DIR:-target/peers}")
TARGET_DIR=$(abs "${CARGO_TARGET_DIR:-target}")
SUPERMQ="$TARGET_DIR/release/supermq"

say() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { say "compare.sh: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# The scenarios: id, label, metric(s) taken from the bench's JSON line, bench arguments.
# 64-byte payloads (the bench's default) throughout.

scale() { if [ "$QUICK" = 1 ]; then echo $(( $1 / 10 )); else echo "$1"; fi; }
CONNS=$([ "$QUICK" = 1 ] && echo 1000 || echo 10000)

scenario_list() {
    local t=$'\t'
    cat <<EOF
q0${t}1→1 QoS0${t}recv_rate${t}--pubs 1 --subs 1 -n $(scale 500000) -q 0
q1${t}1→1 QoS1${t}recv_rate${t}--pubs 1 --subs 1 -n $(scale 200000) -q 1
q2${t}1→1 QoS2${t}recv_rate${t}--pubs 1 --subs 1 -n $(scale 100000) -q 2
fanin100${t}fan-in 100→1 QoS1${t}recv_rate${t}--pubs 100 --subs 1 -n $(scale 2000) -q 1 --shared-topic
fanin1000${t}fan-in 1000→1 QoS1 (micro-mq-3 shape)${t}recv_rate${t}--pubs 1000 --subs 1 -n $(scale 1000) -q 1 --shared-topic
fanout100${t}fan-out 1→100 QoS0${t}recv_rate${t}--pubs 1 --subs 100 -n $(scale 20000) -q 0 --shared-topic
latency${t}latency 1→1 QoS1 at 5k msg/s${t}p50_us,p99_us${t}--pubs 1 --subs 1 --rate 5000 -n $(scale 25000) -q 1
conns${t}idle connections ($CONNS), memory per connection${t}bytes_per_conn${t}conns -n $CONNS --keep-alive 300
EOF
}

# ---------------------------------------------------------------------------------------------
# Temporary directory, processes we started, cleanup

WORK=$(mktemp -d -t supermq-compare.XXXXXX) || die "mktemp failed"
declare -A PID PORT
STARTED_PIDS=()

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v python3 >/dev/null || die "python3 is needed (for free ports and the table)"
command -v timeout >/dev/null || die "timeout (coreutils) is needed"

# ---------------------------------------------------------------------------------------------
# Build supermq, install the peers

say "building supermq (cargo build --release --locked, target $TARGET_DIR)"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked) >&2 ||
    die "cargo build failed"
[ -x "$SUPERMQ" ] || die "no $SUPERMQ after the build"
# A private copy: a rebuild in the same target directory during the run changes nothing here.
cp "$SUPERMQ" "$WORK/supermq-bin" || die "cannot copy $SUPERMQ"
SUPERMQ="$WORK/supermq-bin"

APT_UPDATED=0
apt_install() {
    local package=$1
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { say "cannot install $package: not root, no sudo"; return 1; }
        SUDO=sudo
    else
        SUDO=
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO apt-get update -qq >&2 && APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package" >&2
}

wants() { case " $BROKERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if wants mosquitto && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    say "installing mosquitto (apt)"
    apt_install mosquitto || say "mosquitto could not be installed: its column will be n/a"
fi
if wants nats && ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    say "installing nats-server (apt)"
    apt_install nats-server || say "nats-server could not be installed: its column will be n/a"
fi
RUMQTTD="$PEERS_DIR/bin/rumqttd"
if wants rumqttd && [ ! -x "$RUMQTTD" ]; then
    say "installing rumqttd 0.20 into $PEERS_DIR (cargo install, a few minutes, once)"
    cargo install rumqttd --version '^0.20' --locked --root "$PEERS_DIR" >&2 ||
        cargo install rumqttd --version '^0.20' --root "$PEERS_DIR" >&2 ||
        say "rumqttd could not be installed: its column will be n/a"
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)

# Every connection is a file descriptor, in the bench and in the broker (they inherit ours).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((CONNS + 200)) ]; then
    say "open-files limit is $NOFILE: the $CONNS-connection scenario will fail (raise ulimit -n)"
fi

# ---------------------------------------------------------------------------------------------
# Brokers

free_port() { # a free loopback port, never one this run already picked
    local port
    touch "$WORK/ports"
    # shellcheck disable=SC2046
    port=$(python3 "$HELPER" free-port $(cat "$WORK/ports")) || die "no free port"
    echo "$port" >>"$WORK/ports"
    echo "$port"
}

wait_port() { # pid port: until the port accepts a connection (or the process died)
    local pid=$1 port=$2 i
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

configure() { # broker: writes its configuration (once) and picks its port(s)
    local broker=$1 dir="$WORK/$1"
    mkdir -p "$dir"
    [ -n "${PORT[$broker]:-}" ] && return 0
    PORT[$broker]=$(free_port)
    case "$broker" in
        supermq)
            printf '[mqtt]\ntcp = "127.0.0.1:%s"\n\n[log]\nlevel = "warn"\n' "${PORT[$broker]}" \
                >"$dir/supermq.conf" ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "${PORT[$broker]}" \
                >"$dir/mosquitto.conf" ;;
        nats)
            mkdir -p "$dir/jetstream"
            cat >"$dir/nats.conf" <<EOF
server_name: supermq_compare
listen: "127.0.0.1:$(free_port)"
jetstream { store_dir: "$dir/jetstream" }
mqtt { listen: "127.0.0.1:${PORT[$broker]}" }
EOF
            ;;
        rumqttd)
            "$RUMQTTD" generate-config >"$dir/generated.toml" 2>"$dir/generate.err" || return 1
            python3 "$HELPER" rumqttd-config "$dir/generated.toml" "$dir/rumqttd.toml" \
                "${PORT[$broker]}" "$(free_port)" "$(free_port)" "$(free_port)" || return 1 ;;
    esac
}

start_broker() { # broker: (re)starts it; sets PID[broker], or empties it when it cannot run
    local broker=$1 dir="$WORK/$1" pid
    [ -n "${PID[$broker]:-}" ] && stop_pid "${PID[$broker]}"
    PID[$broker]=
    configure "$broker" || { say "$broker: no configuration"; return 1; }
    case "$broker" in
        supermq)
            [ -x "$SUPERMQ" ] || return 1
            # The default configuration apart from the listener and the log level: no
            # SUPERMQ_* variable from the caller's environment.
            env $(compgen -e | grep '^SUPERMQ_' | sed 's/^/-u /') \
                "$SUPERMQ" -c "$dir/supermq.conf" >>"$dir/log" 2>&1 &
            pid=$! ;;
        mosquitto)
            [ -x "$MOSQUITTO" ] || return 1
            "$MOSQUITTO" -c "$dir/mosquitto.conf" >>"$dir/log" 2>&1 &
            pid=$! ;;
        nats)
            [ -x "$NATS" ] || return 1
            "$NATS" -c "$dir/nats.conf" >>"$dir/log" 2>&1 &
            pid=$! ;;
        rumqttd)
            [ -x "$RUMQTTD" ] || return 1
            "$RUMQTTD" -q -c "$dir/rumqttd.toml" >>"$dir/log" 2>&1 &
            pid=$! ;;
    esac
    STARTED_PIDS+=("$pid")
    if ! wait_port "$pid" "${PORT[$broker]}"; then
        say "$broker did not start listening on 127.0.0.1:${PORT[$broker]}; log:"
        tail -5 "$dir/log" >&2
        stop_pid "$pid"
        return 1
    fi
    PID[$broker]=$pid
}

version_of() {
    case "$1" in
        supermq) echo "$("$SUPERMQ" --version 2>&1 | head -1) (commit $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown), release build)" ;;
        mosquitto) "$MOSQUITTO" -h 2>&1 | head -1 ;;
        nats) "$NATS" --version 2>&1 | head -1 ;;
        rumqttd) "$RUMQTTD" --version 2>&1 | head -1 ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# One run

# How busy the rest of the machine was during a run: the CPU ticks (USER_HZ) all processes
# spent in user and system mode, minus the broker's; the bench's own time (from `time`) is
# taken off in compare.py. Other sessions or builds on the machine show up here.
TIMEFORMAT='%3R %3U %3S'
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4; exit}' /proc/stat; }
pid_ticks() { # utime + stime of a process, 0 when gone
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) }
    echo "$stat" | awk '{print $12 + $13}'
}
measure_start() {
    MEASURE_BUSY=$(busy_ticks)
    MEASURE_BROKER=$(pid_ticks "${PID[$broker]}")
}
measure_end() {
    local busy broker_ticks
    busy=$(busy_ticks)
    broker_ticks=$(pid_ticks "${PID[$broker]}")
    OTHER_TICKS=$(( busy - MEASURE_BUSY - (broker_ticks - MEASURE_BROKER) ))
}

# The machine may be shared (builds, other benchmarks): before each scenario, wait until the
# whole machine has been nearly idle for 2 s, within a budget of QUIET_BUDGET seconds for the
# whole run; the `other` CPU column shows what was left.
QUIET_LEFT=$QUIET_BUDGET
wait_quiet() {
    local before after cores waited=0
    while :; do
        before=$(busy_ticks)
        sleep 2
        after=$(busy_ticks)
        cores=$(awk -v d=$((after - before)) 'BEGIN {printf "%.2f", d / 200}')
        if awk -v c="$cores" -v q="$QUIET_CORES" 'BEGIN {exit !(c <= q)}'; then break; fi
        if [ "$QUIET_LEFT" -le 0 ]; then
            say "machine busy ($cores cores used by others), quiet-wait budget spent: going on"
            break
        fi
        [ "$waited" = 0 ] && say "machine busy ($cores cores used by others): waiting"
        waited=$((waited + 2))
        QUIET_LEFT=$((QUIET_LEFT - 2))
    done
    [ "$waited" -gt 0 ] && say "waited ${waited} s for a quiet machine ($cores cores busy)"
    return 0
}

RUNS="$WORK/runs.jsonl"
: >"$RUNS"

run_one() { # broker scenario-id round bench-args
    local broker=$1 sid=$2 round=$3 args=$4 out err rc note=
    OTHER_TICKS=
    out="$WORK/raw/$sid.$broker.$round.out"
    err="$WORK/raw/$sid.$broker.$round.err"
    mkdir -p "$WORK/raw"
    : >"$out"; : >"$err"
    # Idle-connection memory is measured on a freshly started broker: what earlier scenarios
    # left in its allocator would otherwise hide part of the growth.
    if [ "${args%% *}" = conns ] || [ -z "${PID[$broker]:-}" ] ||
        ! kill -0 "${PID[$broker]}" 2>/dev/null; then
        if [ -n "${PID[$broker]:-}" ] && ! kill -0 "${PID[$broker]}" 2>/dev/null; then
            say "$broker had exited; restarting it"
        fi
        start_broker "$broker" || true
    fi
    if [ -z "${PID[$broker]:-}" ]; then
        note="broker did not start"
        rc=1
    elif [ "${args%% *}" = conns ]; then
        if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((CONNS + 200)) ]; then
            note="open-files limit $NOFILE < $((CONNS + 200))"
            rc=1
        else
            measure_start
            # shellcheck disable=SC2086
            { time timeout -k 5 "$BENCH_TIMEOUT" "$SUPERMQ" bench ${args} --json \
                -h 127.0.0.1 -p "${PORT[$broker]}" --pid "${PID[$broker]}" >"$out" 2>"$err"; } \
                2>"$out.time"
            rc=$?
            measure_end
        fi
    else
        measure_start
        # shellcheck disable=SC2086
        { time timeout -k 5 "$BENCH_TIMEOUT" "$SUPERMQ" bench ${args} --format json --quiet \
            --scenario "$sid" -h 127.0.0.1 -p "${PORT[$broker]}" \
            --broker-pid "${PID[$broker]}" >"$out" 2>"$err"; } 2>"$out.time"
        rc=$?
        measure_end
    fi
    if [ -z "$note" ] && [ "$rc" != 0 ] && [ "$broker" = nats ] &&
        grep -q 'QoS=2 not supported' "$WORK/nats/log" 2>/dev/null && [[ " $args " == *" -q 2 "* ]]; then
        note="no QoS 2 in nats-server's MQTT: it resets the connection (log: publish QoS=2 not supported)"
    fi
    if [ -z "$note" ] && [ -n "${PID[$broker]:-}" ] && ! kill -0 "${PID[$broker]}" 2>/dev/null; then
        note="broker exited during the run"
        PID[$broker]=
    fi
    python3 "$HELPER" record --broker "$broker" --scenario "$sid" --round "$round" \
        --rc "$rc" --out "$out" --err "$err" ${note:+--note "$note"} \
        ${OTHER_TICKS:+--other-ticks "$OTHER_TICKS" --time-file "$out.time"} >>"$RUNS"
    tail -1 "$RUNS" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
res = r["result"] or {}
parts = []
for key, fmt in (("recv_rate", "{:,.0f} msg/s"), ("p50_us", "p50 {:,.0f} µs"),
                 ("p99_us", "p99 {:,.0f} µs"), ("lost", "lost {:,}"),
                 ("bytes_per_conn", "{:,.0f} B/conn")):
    if res.get(key) is not None:
        parts.append(fmt.format(res[key]))
if res.get("client_cpu") is not None and res.get("broker_cpu") is not None:
    parts.append("cpu {:.2f}+{:.2f}".format(res["client_cpu"], res["broker_cpu"]))
print("   ", r["scenario"], r["broker"], "round", r["round"], ":",
      ", ".join(parts) if not r["error"] else "n/a (" + r["error"] + ")")
' >&2
}

# ---------------------------------------------------------------------------------------------
# Main

SCEN_FILE="$WORK/scenarios.tsv"
if [ -n "$SCENARIOS" ]; then
    scenario_list | awk -F'\t' -v want=" $SCENARIOS " 'index(want, " " $1 " ")' >"$SCEN_FILE"
else
    scenario_list >"$SCEN_FILE"
fi
[ -s "$SCEN_FILE" ] || die "no scenario selected (SCENARIOS=$SCENARIOS)"

read -r -a BROKER_LIST <<<"$BROKERS"
for broker in "${BROKER_LIST[@]}"; do
    case "$broker" in supermq|mosquitto|nats|rumqttd) ;; *) die "unknown broker $broker" ;; esac
    if start_broker "$broker"; then
        say "$broker: pid ${PID[$broker]}, 127.0.0.1:${PORT[$broker]} — $(version_of "$broker")"
    else
        say "$broker: could not be started; its column will be n/a"
    fi
done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
    # rotate the broker order: A B C D, then B C D A, ...
    n=${#BROKER_LIST[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${BROKER_LIST[$(((i + round - 1) % n))]}"); done
    say "round $round/$ROUNDS (order: ${order[*]})"
    while IFS=$'\t' read -r sid label metrics args; do
        wait_quiet
        for broker in "${order[@]}"; do
            run_one "$broker" "$sid" "$round" "$args"
        done
    done <"$SCEN_FILE"
done
T1=$(date +%s)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

HEADER="$WORK/header.md"
{
    echo "Command: \`$COMMAND_LINE\` (ROUNDS=$ROUNDS$([ "$QUICK" = 1 ] && echo ", QUICK=1"))  "
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'), benchmark time $((T1 - T0)) s (of which $((QUIET_BUDGET - QUIET_LEFT)) s waiting for a quiet machine)  "
    echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)  "
    echo "Load average before / after: $LOAD_BEFORE / $LOAD_AFTER  "
    for broker in "${BROKER_LIST[@]}"; do
        echo "- $broker: $(version_of "$broker")"
    done
    echo
    echo "Scenarios (\`supermq bench\` arguments; 64-byte payloads):"
    echo
    while IFS=$'\t' read -r sid label metrics args; do
        echo "- $label: \`supermq bench $args\`"
    done <"$SCEN_FILE"
} >"$HEADER"

TABLE="$WORK/table.md"
python3 "$HELPER" table "$RUNS" "$SCEN_FILE" "$BROKERS" --header "$HEADER" >"$TABLE" ||
    die "could not build the table (raw runs in $RUNS)"

if [ "$OUT" = - ]; then
    cat "$TABLE"
else
    cp "$TABLE" "$OUT"
    cp "$RUNS" "${OUT%.md}.jsonl"
    # the summary (without the per-run details) on the terminal too
    sed '/<details>/,$d' "$TABLE"
    say "table written to $OUT (raw runs: ${OUT%.md}.jsonl)"
fi
say "done: $((T1 - T0)) s of benchmarks, $SECONDS s in all (build included), ROUNDS=$ROUNDS"
