#!/usr/bin/env python3
"""Helper of bench/compare.sh: free ports, rumqttd's configuration, run records, the table.

    compare.py free-port [TAKEN...]          a free loopback TCP port, not one of TAKEN
    compare.py rumqttd-config IN OUT V4 V5 PROM WS
                                             rumqttd's generated configuration on loopback
                                             ports, without its [console] section
    compare.py record --broker B --scenario S --round R --rc RC --out F --err F [--note N]
                                             one run as a JSON line (stdout)
    compare.py table RUNS.jsonl SCENARIOS.tsv BROKERS [--header FILE]
                                             the comparison as Markdown (stdout)

Only the standard library is used.
"""

import json
import random
import re
import socket
import statistics
import sys

# ---------------------------------------------------------------------------------------------
# ports


def free_port(taken):
    """A port that 127.0.0.1 can bind now, below the ephemeral range (32768-60999 by default)
    so that no outgoing connection of the bench can be holding it later."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        if str(port) in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    sys.exit("compare.py: no free port found between 20000 and 32000")


# ---------------------------------------------------------------------------------------------
# rumqttd


def rumqttd_config(source, target, v4, v5, prometheus, ws):
    """Sets the listen address of [v4.1], [v5.1], [prometheus] and [ws.1] and drops the
    [console] section (with the commented-out lines that follow it)."""
    ports = {"v4.1": v4, "v5.1": v5, "prometheus": prometheus, "ws.1": ws}
    section = None
    seen = set()
    out = []
    with open(source, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        header = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
        if header:
            section = header.group(1).strip()
        if section == "console":
            continue
        if section in ports and re.match(r"^\s*listen\s*=", line):
            line = f'listen = "127.0.0.1:{ports[section]}"'
            seen.add(section)
        out.append(line)
    missing = {"v4.1", "prometheus"} - seen
    if missing:
        sys.exit(f"compare.py: rumqttd's generated configuration has no {sorted(missing)} listen")
    with open(target, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


# ---------------------------------------------------------------------------------------------
# one run


def last_json_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip().startswith("{")]
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def last_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def record(args):
    opts = dict(zip(args[::2], args[1::2]))
    rc = int(opts["--rc"])
    result = last_json_line(opts["--out"])
    error = None
    if opts.get("--note"):
        error = opts["--note"]
    elif rc == 124 or rc == 137:
        error = "timed out"
    elif rc != 0 or result is None:
        error = f"exit {rc}: {last_line(opts['--err']) or 'no output'}"
        result = None
    # cores the rest of the machine used during the run (see measure_end in compare.sh)
    other_cpu = None
    if opts.get("--other-ticks") and opts.get("--time-file"):
        try:
            with open(opts["--time-file"], encoding="utf-8") as f:
                real, user, system = (float(x) for x in f.read().split()[-3:])
            if real > 0:
                other = int(opts["--other-ticks"]) / 100.0 - user - system
                other_cpu = round(max(other, 0.0) / real, 2)
        except (OSError, ValueError):
            pass
    print(
        json.dumps(
            {
                "broker": opts["--broker"],
                "other_cpu": other_cpu,
                "scenario": opts["--scenario"],
                "round": int(opts["--round"]),
                "rc": rc,
                "error": error,
                "result": result if error is None else None,
            },
            separators=(",", ":"),
        )
    )


# ---------------------------------------------------------------------------------------------
# the table

LOWER_IS_BETTER = {"p50_us", "p99_us", "bytes_per_conn"}


def fmt_value(metric, value):
    if value is None:
        return "n/a"
    if metric in ("p50_us", "p99_us"):
        return f"{value / 1000:.2f} ms" if value >= 10000 else f"{value:,.0f} µs"
    if metric == "bytes_per_conn":
        return f"{value / 1024:.1f} KiB"
    # three significant digits: 1.06M, 152k, 53.1k, 1.42k, 93
    for scale, suffix in ((1e6, "M"), (1e3, "k"), (1, "")):
        if value >= scale or scale == 1:
            scaled = value / scale
            digits = 0 if scaled >= 100 or scale == 1 else (1 if scaled >= 10 else 2)
            return f"{scaled:.{digits}f}{suffix}"


def ratio(metric, ours, theirs):
    """supermq's ratio, oriented so that >= 1.0 always means supermq is better."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return theirs / ours if metric in LOWER_IS_BETTER else ours / theirs


def fmt_ratio(value):
    if value is None:
        return "n/a"
    return f"{value:.0f}×" if value >= 100 else f"{value:.1f}×" if value >= 10 else f"{value:.2f}×"


def table(argv):
    runs_path, scenarios_path, brokers = argv[0], argv[1], argv[2].split()
    header_path = argv[argv.index("--header") + 1] if "--header" in argv else None
    runs = []
    with open(runs_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    # id, label, metric(s), bench arguments
    scenarios = []
    with open(scenarios_path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                sid, label, metrics, bench_args = line.rstrip("\n").split("\t")
                scenarios.append((sid, label, metrics.split(","), bench_args))
    rounds = max((r["round"] for r in runs), default=0)
    peers = [b for b in brokers if b != "supermq"]

    notes = []  # footnotes: why a cell is n/a

    def note(text):
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1

    def cell_runs(sid, broker):
        return [r for r in runs if r["scenario"] == sid and r["broker"] == broker]

    def median_of(sid, broker, key):
        values = [
            r["result"][key]
            for r in cell_runs(sid, broker)
            if r["result"] is not None and r["result"].get(key) is not None
        ]
        return (statistics.median(values), len(values)) if values else (None, 0)

    def failure(sid, broker):
        errors = [r["error"] for r in cell_runs(sid, broker) if r["error"]]
        return errors[0] if errors else None

    out = []
    if header_path:
        with open(header_path, encoding="utf-8") as f:
            out.append(f.read().rstrip("\n"))
        out.append("")

    # --- main table
    out.append(
        f"Median of {rounds} interleaved round(s). Throughput: delivered msg/s (higher is better); "
        "latency and memory: lower is better. Ratios are oriented so that ≥ 1.00× means supermq "
        "is better: supermq ÷ peer for throughput, peer ÷ supermq for latency and memory."
    )
    out.append("")
    cols = ["scenario"] + brokers
    if "supermq" in brokers and peers:
        cols += ["supermq ÷ best peer"]
    if "supermq" in brokers and "mosquitto" in brokers:
        cols += ["supermq ÷ mosquitto"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
    for sid, label, metrics, _ in scenarios:
        for metric in metrics:
            name = label
            if metric == "p50_us":
                name = f"{label}: p50"
            elif metric == "p99_us":
                name = f"{label}: p99"
            row = [name]
            values = {}
            for broker in brokers:
                value, count = median_of(sid, broker, metric)
                values[broker] = value
                total = len(cell_runs(sid, broker))
                if value is None:
                    why = failure(sid, broker)
                    row.append(f"n/a [{note(why)}]" if why else "—")
                else:
                    text = fmt_value(metric, value)
                    if count < total:
                        text += f" ({count}/{total})"
                    row.append(text)
            if "supermq ÷ best peer" in cols:
                peer_values = [values[p] for p in peers if values[p] is not None]
                if peer_values:
                    best = min(peer_values) if metric in LOWER_IS_BETTER else max(peer_values)
                    best_peer = [p for p in peers if values[p] == best][0]
                    r = ratio(metric, values["supermq"], best)
                    row.append(f"{fmt_ratio(r)} ({best_peer})" if r is not None else "n/a")
                else:
                    row.append("n/a")
            if "supermq ÷ mosquitto" in cols:
                row.append(fmt_ratio(ratio(metric, values["supermq"], values["mosquitto"])))
            out.append("| " + " | ".join(row) + " |")
    out.append("")

    # --- loss and CPU
    out.append(
        "Lost messages (worst round; of the expected deliveries), duplicates, and CPU in cores "
        "(median; `cpu C + B`: C = the load generator, B = the broker, over the busy time of "
        "the run, from the bench's JSON line; `other`: cores used by every other process on "
        "the machine (other sessions, builds, kernel threads) during the whole bench run, from "
        "/proc/stat — a noise indicator):"
    )
    out.append("")
    out.append("| scenario | " + " | ".join(brokers) + " |")
    out.append("|---|" + "|".join(["---:"] * len(brokers)) + "|")
    for sid, label, metrics, _ in scenarios:
        if metrics == ["bytes_per_conn"]:
            continue
        row = [label]
        for broker in brokers:
            ok = [r["result"] for r in cell_runs(sid, broker) if r["result"] is not None]
            if not ok:
                why = failure(sid, broker)
                row.append(f"n/a [{note(why)}]" if why else "—")
                continue
            worst = max(ok, key=lambda res: res.get("lost", 0))
            lost, expected = worst.get("lost", 0), worst.get("expected", 0)
            dup = max(res.get("dup", 0) for res in ok)
            if lost:
                text = f"**lost {lost:,}** ({100.0 * lost / max(expected, 1):.1f}%)"
            else:
                text = "0 lost"
            if dup:
                text += f", {dup:,} dup"
            client, _ = median_of(sid, broker, "client_cpu")
            brk, _ = median_of(sid, broker, "broker_cpu")
            if client is not None and brk is not None:
                text += f"; cpu {client:.2f} + {brk:.2f}"
            others = [r["other_cpu"] for r in cell_runs(sid, broker)
                      if r.get("other_cpu") is not None]
            if others:
                text += f" (other {statistics.median(others):.2f})"
            row.append(text)
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    others = [r["other_cpu"] for r in runs if r.get("other_cpu") is not None]
    if others:
        out.append(
            f"Other processes used {statistics.median(others):.2f} cores (median over the "
            f"{len(others)} runs; max {max(others):.2f}) of the machine's CPUs while the "
            "benches ran."
        )
        out.append("")
    if notes:
        for i, text in enumerate(notes, 1):
            out.append(f"[{i}] {text}  ")
        out.append("")

    # --- every run, for the record
    out.append("<details><summary>Every run</summary>")
    out.append("")
    out.append(
        "Published msg/s is the rate the broker accepted (and, at QoS 1/2, acknowledged) the "
        "publications; delivered msg/s the rate the subscribers received them. Latencies of "
        "the unthrottled runs are queueing delays under full load, not the broker's latency."
    )
    out.append("")
    out.append("| scenario | broker | round | published msg/s | delivered msg/s | p50 µs | p99 µs | lost | cpu client + broker | other cpu | bytes/conn | error |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for sid, label, metrics, _ in scenarios:
        for broker in brokers:
            for r in sorted(cell_runs(sid, broker), key=lambda r: r["round"]):
                res = r["result"] or {}

                def num(key, fmt="{:,.0f}"):
                    v = res.get(key)
                    return "" if v is None else fmt.format(v)

                cpu = ""
                if res.get("client_cpu") is not None and res.get("broker_cpu") is not None:
                    cpu = f"{res['client_cpu']:.2f} + {res['broker_cpu']:.2f}"
                out.append(
                    f"| {sid} | {broker} | {r['round']} | {num('pub_rate')} | {num('recv_rate')} | "
                    f"{num('p50_us')} | "
                    f"{num('p99_us')} | {num('lost')} | {cpu} | "
                    f"{'' if r.get('other_cpu') is None else format(r['other_cpu'], '.2f')} | "
                    f"{num('bytes_per_conn')} | "
                    f"{(r['error'] or '').replace('|', '/')} |"
                )
    out.append("")
    out.append("</details>")
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "free-port":
        print(free_port(set(rest)))
    elif command == "rumqttd-config":
        rumqttd_config(*rest)
    elif command == "record":
        record(rest)
    elif command == "table":
        table(rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
