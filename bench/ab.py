#!/usr/bin/env python3
"""Before/after: the same scenarios against several supermq builds (or settings), interleaved.

    bench/ab.py NAME=BINARY[:THREADS] ... [--rounds N] [--scenarios q0,q1,...]

Each NAME=BINARY is one column: a supermq binary (build the commits you compare first, e.g.
with `git worktree add` and `cargo build --release`), with `[node] threads = THREADS` when
given (else the binary's default). Every round runs every scenario against every column in
turn, each against a freshly started broker on a free loopback port (HTTP and $SYS off, so
only the broker's own work is measured), so slow drift of the machine spreads over all of
them. The load generator is one `supermq bench` for all (`--bench`, default: the last
column's binary). Prints each
run, then the medians: delivered msg/s, the broker's CPU seconds per million deliveries (from
/proc), and p50/p99/p99.9 latency for the latency scenario; `conns` reports bytes of broker
RSS per idle connection. Only the standard library is used; Linux only (/proc).
"""

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SCENARIOS = {
    "q0": "--pubs 1 --subs 1 -n 500000 -q 0",
    "q1": "--pubs 1 --subs 1 -n 200000 -q 1",
    "q2": "--pubs 1 --subs 1 -n 100000 -q 2",
    "fanin100": "--pubs 100 --subs 1 -n 2000 -q 1 --shared-topic",
    "fanin1000": "--pubs 1000 --subs 1 -n 1000 -q 1 --shared-topic",
    "fanout100": "--pubs 1 --subs 100 -n 20000 -q 0 --shared-topic",
    "latency": "--pubs 1 --subs 1 --rate 5000 -n 25000 -q 1",
    "conns": "conns -n 10000 --keep-alive 300",
}
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_for(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port}")


def run(column, scenario, bench, work):
    name, binary, threads = column
    port = free_port()
    conf = os.path.join(work, f"{name}.conf")
    text = f'[mqtt]\ntcp = "127.0.0.1:{port}"\n[http]\nlisten = ""\n[sys]\ninterval_secs = 0\n'
    text += '[log]\nlevel = "warn"\n'
    if threads:
        text += f"[node]\nthreads = {threads}\n"
    with open(conf, "w") as f:
        f.write(text)
    broker = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(port)
        args = shlex.split(SCENARIOS[scenario]) + ["-p", str(port)]
        if scenario == "conns":
            args += ["--pid", str(broker.pid)]
        before = cpu_seconds(broker.pid)
        out = subprocess.run([bench, "bench"] + args, capture_output=True, text=True,
                             timeout=300).stdout
        used = cpu_seconds(broker.pid) - before
        result = json.loads(out.strip().splitlines()[-1])
        result["cpu_per_million"] = (1e6 * used / result["received"]
                                     if result.get("received") else None)
        return result
    finally:
        broker.kill()
        broker.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("columns", nargs="+", help="NAME=BINARY[:THREADS]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bench", help="the supermq binary whose bench is the load generator")
    parser.add_argument("--scenarios", default="q0,q1,q2,fanin100,fanout100,latency,conns")
    args = parser.parse_args()
    columns = []
    for spec in args.columns:
        name, _, rest = spec.partition("=")
        binary, _, threads = rest.partition(":")
        columns.append((name, os.path.abspath(binary), threads))
    scenarios = args.scenarios.split(",")
    bench = os.path.abspath(args.bench) if args.bench else columns[-1][1]
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(1, args.rounds + 1):
            # The column order rotates from round to round.
            shift = (round_ - 1) % len(columns)
            for scenario in scenarios:
                for column in columns[shift:] + columns[:shift]:
                    r = run(column, scenario, bench, work)
                    results.setdefault((scenario, column[0]), []).append(r)
                    if scenario == "conns":
                        what = f"{r['bytes_per_conn']} B/conn"
                    else:
                        what = (f"{r['recv_rate']:,.0f} msg/s, {r['cpu_per_million']:.2f} s/M, "
                                f"p99 {r['p99_us']:,.0f} µs, lost {r['lost']}, dup {r['dup']}")
                    print(f"round {round_} {scenario} {column[0]}: {what}", flush=True)

    def median(scenario, name, key):
        values = [r[key] for r in results[(scenario, name)] if r.get(key) is not None]
        return statistics.median(values) if values else None

    print(f"\nMedians of {args.rounds} rounds:\n")
    names = [c[0] for c in columns]
    print("| scenario | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for scenario in scenarios:
        if scenario == "conns":
            cells = [f"{median(scenario, n, 'bytes_per_conn'):,.0f} B" for n in names]
        elif scenario == "latency":
            cells = [f"{median(scenario, n, 'p50_us'):,.0f} / {median(scenario, n, 'p99_us'):,.0f}"
                     f" / {median(scenario, n, 'p999_us'):,.0f} µs "
                     f"({median(scenario, n, 'cpu_per_million'):.1f} s/M)" for n in names]
        else:
            cells = [f"{median(scenario, n, 'recv_rate') / 1000:,.0f}k "
                     f"({median(scenario, n, 'cpu_per_million'):.2f} s/M)" for n in names]
        print(f"| {scenario} | " + " | ".join(cells) + " |")
    lost = sum(r.get("lost") or 0 for rs in results.values() for r in rs)
    dup = sum(r.get("dup") or 0 for rs in results.values() for r in rs)
    print(f"\nLost in all runs: {lost}; duplicates: {dup}.")
    return 1 if lost or dup else 0


if __name__ == "__main__":
    sys.exit(main())
