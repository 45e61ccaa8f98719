#!/usr/bin/env bash
# What authentication and an ACL cost: 1→1 QoS 1 against supermq without [auth], and against
# supermq with a password file and a 1,000-line ACL, interleaved, medians over ROUNDS rounds.
#
#   bench/auth.sh            ROUNDS=5 N=200000 by default
#
# Both brokers are the release build (cargo build --release --locked, honouring
# CARGO_TARGET_DIR), on free loopback ports, started from a private temporary directory. The
# ACL is 489 `user` sections of one rule each, 20 patterns (which every client's rules
# include) and the bench user's own section last; the bench's clients log in with an
# argon2id password written by `supermq passwd`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
N=${N:-200000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/supermq

(cd "$ROOT" && cargo build --release --locked --quiet)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

"$BIN" passwd -c -b "$WORK/passwd" bench bench-password >/dev/null
{
    echo "# 1,000 lines: 489 users with a rule each, 20 patterns, the bench user last"
    # (No `| head`: with pipefail, the loop's SIGPIPE when head has enough failed the script.)
    for i in $(seq 1 489); do
        echo "user user$i"
        echo "topic readwrite tenants/user$i/#"
    done
    for i in $(seq 1 20); do
        echo "pattern readwrite devices/%c/sensor$i/#"
    done
    echo "user bench"
    echo "topic readwrite bench/#"
} >"$WORK/acl"

start() { # name, extra TOML
    local port
    port=$(free_port)
    printf '[mqtt]\ntcp = "127.0.0.1:%s"\n[http]\nlisten = ""\n[log]\nlevel = "warn"\n%s\n' "$port" "$2" >"$WORK/$1.toml"
    "$BIN" -c "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    echo "$port $!"
}

read -r OPEN_PORT OPEN_PID < <(start open "")
read -r AUTH_PORT AUTH_PID < <(start auth "$(printf '[auth]\nallow_anonymous = false\npassword_file = "%s"\nacl_file = "%s"' "$WORK/passwd" "$WORK/acl")")
PIDS+=("$OPEN_PID" "$AUTH_PID")
echo "ACL: $(wc -l <"$WORK/acl") lines; broker pids open=$OPEN_PID auth=$AUTH_PID"

run() { # port, pid, extra args
    "$BIN" bench -p "$1" --pubs 1 --subs 1 -n "$N" -q 1 -t bench/auth --broker-pid "$2" --format json "${@:3}" 2>/dev/null | tail -n 1
}

: >"$WORK/open.jsonl"
: >"$WORK/auth.jsonl"
for round in $(seq "$ROUNDS"); do
    run "$OPEN_PORT" "$OPEN_PID" >>"$WORK/open.jsonl"
    run "$AUTH_PORT" "$AUTH_PID" -u bench -P bench-password >>"$WORK/auth.jsonl"
    echo "round $round done" >&2
done

python3 - "$WORK/open.jsonl" "$WORK/auth.jsonl" "$ROUNDS" "$N" <<'EOF'
import json, statistics, sys
def load(path):
    return [json.loads(line) for line in open(path) if line.strip()]
open_runs, auth_runs = load(sys.argv[1]), load(sys.argv[2])
def median(runs, key):
    return statistics.median(r[key] for r in runs)
print(f"1→1 QoS 1, {sys.argv[4]} messages, {sys.argv[3]} interleaved rounds, medians")
print("| supermq | recv msg/s | broker cores | broker CPU s per million | lost |")
print("|---|---|---|---|---|")
for run in open_runs + auth_runs:
    run["cpu_per_million"] = run["broker_cpu"] * run["recv_secs"] / run["received"] * 1e6
for name, runs in (("no [auth]", open_runs), ("password + 1,000-line ACL", auth_runs)):
    lost = sum(r["lost"] for r in runs)
    print(f"| {name} | {median(runs, 'recv_rate'):,.0f} | {median(runs, 'broker_cpu'):.2f} "
          f"| {median(runs, 'cpu_per_million'):.2f} | {lost} |")
cpu = median(auth_runs, "cpu_per_million") / median(open_runs, "cpu_per_million")
print(f"CPU per delivery with auth / without: {cpu:.1%}")
ratio = median(auth_runs, "recv_rate") / median(open_runs, "recv_rate")
print(f"with auth / without: {ratio:.1%} (each round: " + ", ".join(
    f"{a['recv_rate'] / o['recv_rate']:.0%}" for o, a in zip(open_runs, auth_runs)) + ")")
EOF
