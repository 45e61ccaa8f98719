#!/usr/bin/env python3
"""Compare supermq with mosquitto, nats-server's MQTT listener and rumqttd on this machine.

    bench/compare.py [--rounds N] [--out FILE | --stdout] [--quick] [--persistence]

Builds supermq (cargo build --release --locked, honouring CARGO_TARGET_DIR), installs the
peers when missing (mosquitto and nats-server from apt, rumqttd with cargo install into
$PEERS_DIR), starts all four on free loopback ports, each from its own directory in a private
temporary directory, and runs the same scenarios against each with `supermq bench`,
interleaved: every round runs every scenario against every broker in turn (the broker order
rotates from round to round), so slow drift of the machine spreads over all of them. It then
prints one table of medians (and writes it as Markdown, for docs/BENCHMARKS.md), with
supermq's ratio to the best peer and to mosquitto, the broker's CPU per delivered message, lost
messages and the CPU used by the load generator and by the broker. A broker that cannot run a
scenario (refused, connection reset, timed out) is shown as n/a with the reason; the run goes
on.

--persistence compares persistence instead: QoS 1 to persistent subscriber sessions (`supermq
bench --persistent`) against supermq with its storage in memory (`supermq`), on disk with each
durability (`supermq-immediate`, `supermq-batched`: [storage] dir in the broker's temporary
directory), mosquitto with `persistence true` (`mosquitto-persist`; it writes its database only
on autosave and at shutdown, so during a run everything it holds is in memory) and nats-server,
whose MQTT QoS 1 always goes through a JetStream file store. The table's ratios are then
supermq-immediate and supermq-batched to nats, and supermq-immediate to supermq in memory.

Environment (the flags above override ROUNDS, OUT, QUICK and PERSISTENCE):
  ROUNDS=3               rounds (medians over them)
  BROKERS="supermq mosquitto nats rumqttd"   which brokers, in this order in the table, of
                         those and supermq-immediate supermq-batched mosquitto-persist (with
                         PERSISTENCE=1, the default is "supermq supermq-immediate
                         supermq-batched mosquitto-persist nats")
  SCENARIOS="q0 q1"      run only these scenarios, of: q0 q1 q2 fanin100 fanin1000
                         fanout100 latency conns, and the persistent pq1 pfanin100 (the
                         default with PERSISTENCE=1; see scenario_list below)
  PERSISTENCE=1          the persistence comparison (--persistence)
  SUPERMQ_BIN=PATH       measure this supermq binary instead of building one
  PEERS_DIR=target/peers where rumqttd is installed (bin/rumqttd), relative to the repository
  CARGO_TARGET_DIR       where supermq is built (default target)
  BENCH_TIMEOUT=150      seconds before one bench run is abandoned (counted as n/a)
  OUT=FILE               the Markdown table (default bench/results/results-DATE.md, or
                         persistence-DATE.md, in a git-ignored folder; the raw runs go beside
                         it as .jsonl); OUT=- : stdout
  QUIET_BUDGET=240       seconds the run may spend, in all, waiting for the machine to be
                         quiet (at most QUIET_CORES=0.3 cores busy) before each scenario
  QUICK=1                a smoke run: a tenth of the messages, 1000 connections, 1 round
                         (unless ROUNDS or --rounds says otherwise)
  KEEP_WORK=1            keep the temporary directory (configurations, logs, raw output)

Other processes on the machine are never touched: only the brokers this script started
(tracked by pid) are stopped, on exit. Only the standard library is used.
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every broker a column can be (BROKERS names them), and the server it runs.
BROKER_KINDS = {
    "supermq": "supermq",
    "mosquitto": "mosquitto",
    "nats": "nats",
    "rumqttd": "rumqttd",
    # With storage on disk, for --persistence.
    "supermq-immediate": "supermq",
    "supermq-batched": "supermq",
    "mosquitto-persist": "mosquitto",
}
DEFAULT_BROKERS = ("supermq", "mosquitto", "nats", "rumqttd")
PERSISTENCE_BROKERS = ("supermq", "supermq-immediate", "supermq-batched", "mosquitto-persist",
                       "nats")
TICK = os.sysconf("SC_CLK_TCK")  # the unit of /proc/stat and /proc/PID/stat CPU times


def say(text):
    print(time.strftime("%H:%M:%S", time.gmtime()), text, file=sys.stderr, flush=True)


def die(text):
    say("compare.py: " + text)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Settings


def settings():
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="bench/compare.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=argparse.SUPPRESS,
    )
    parser.add_argument("--rounds", type=int, metavar="N", help="as ROUNDS=N")
    parser.add_argument("--out", metavar="FILE", help="as OUT=FILE")
    parser.add_argument("--stdout", action="store_true", help="the table on stdout (OUT=-)")
    parser.add_argument("--quick", action="store_true", help="as QUICK=1")
    parser.add_argument("--persistence", action="store_true", help="as PERSISTENCE=1")
    args = parser.parse_args()

    s = argparse.Namespace()
    # The command as given, with the settings that came from the environment, for the report.
    given = [f"{var}={shlex.quote(env[var])}" for var in (
        "CARGO_TARGET_DIR", "PEERS_DIR", "SUPERMQ_BIN", "ROUNDS", "BROKERS", "SCENARIOS",
        "QUIET_BUDGET", "QUIET_CORES", "QUICK", "PERSISTENCE", "BENCH_TIMEOUT") if var in env]
    s.command_line = " ".join(given + ["bench/compare.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    s.quick = args.quick or env.get("QUICK", "0") == "1"
    s.persistence = args.persistence or env.get("PERSISTENCE", "0") == "1"
    rounds = args.rounds if args.rounds is not None else env.get("ROUNDS") or None
    try:
        s.rounds = int(rounds) if rounds is not None else (1 if s.quick else 3)
    except ValueError:
        s.rounds = 0
    if s.rounds < 1:
        sys.exit("compare.py: ROUNDS must be a positive number")
    default_brokers = PERSISTENCE_BROKERS if s.persistence else DEFAULT_BROKERS
    s.brokers = env.get("BROKERS", " ".join(default_brokers)).split()
    for broker in s.brokers:
        if broker not in BROKER_KINDS:
            sys.exit(f"compare.py: unknown broker {broker} (of: {' '.join(BROKER_KINDS)})")
    known = [sid for sid, _, _, _ in scenario_list(False)]
    # By default, the persistent scenarios with --persistence and the others without.
    s.scenarios = env.get("SCENARIOS", "").split() or [
        sid for sid, _, _, args in scenario_list(False)
        if ("--persistent" in args) == s.persistence]
    for sid in s.scenarios:
        if sid not in known:
            sys.exit(f"compare.py: unknown scenario {sid} (of: {' '.join(known)})")
    s.bench_timeout = float(env.get("BENCH_TIMEOUT", "150"))
    s.quiet_budget = float(env.get("QUIET_BUDGET", "240"))
    s.quiet_cores = float(env.get("QUIET_CORES", "0.3"))
    s.keep_work = env.get("KEEP_WORK", "0") == "1"
    s.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    s.out = "-" if args.stdout else args.out or env.get("OUT") or os.path.join(
        ROOT, "bench", "results",
        f"{'persistence' if s.persistence else 'results'}-{s.stamp}.md")
    absolute = lambda path: path if os.path.isabs(path) else os.path.join(ROOT, path)
    s.peers_dir = absolute(env.get("PEERS_DIR") or "target/peers")
    s.target_dir = absolute(env.get("CARGO_TARGET_DIR") or "target")
    s.supermq_bin = env.get("SUPERMQ_BIN") and absolute(env["SUPERMQ_BIN"])
    return s


# ---------------------------------------------------------------------------------------------
# The scenarios: id, label, metric(s) taken from the bench's JSON line, bench arguments.
# 64-byte payloads (the bench's default) throughout.


def scenario_list(quick):
    def n(count):
        return str(count // 10 if quick else count)

    conns = 1000 if quick else 10000
    one_to_one = ["--pubs", "1", "--subs", "1", "-n"]
    return [
        ("q0", "1→1 QoS0", ["recv_rate"], one_to_one + [n(500000), "-q", "0"]),
        ("q1", "1→1 QoS1", ["recv_rate"], one_to_one + [n(200000), "-q", "1"]),
        ("q2", "1→1 QoS2", ["recv_rate"], one_to_one + [n(100000), "-q", "2"]),
        ("fanin100", "fan-in 100→1 QoS1", ["recv_rate"],
         ["--pubs", "100", "--subs", "1", "-n", n(2000), "-q", "1", "--shared-topic"]),
        ("fanin1000", "fan-in 1000→1 QoS1 (micro-mq-3 shape)", ["recv_rate"],
         ["--pubs", "1000", "--subs", "1", "-n", n(1000), "-q", "1", "--shared-topic"]),
        ("fanout100", "fan-out 1→100 QoS0", ["recv_rate"],
         ["--pubs", "1", "--subs", "100", "-n", n(20000), "-q", "0", "--shared-topic"]),
        ("latency", "latency 1→1 QoS1 at 5k msg/s", ["p50_us", "p99_us", "p999_us"],
         ["--pubs", "1", "--subs", "1", "--rate", "5000", "-n", n(25000), "-q", "1"]),
        ("conns", f"idle connections ({conns}), memory per connection", ["bytes_per_conn"],
         ["conns", "-n", str(conns), "--keep-alive", "300"]),
        # The subscriber keeps its session (MQTT 3.1.1 clean session 0, the only version
        # nats-server's MQTT speaks), so a broker with persistence stores what it queues for it.
        ("pq1", "1→1 QoS1, persistent subscriber", ["recv_rate"],
         one_to_one + [n(200000), "-q", "1", "--persistent"]),
        ("pfanin100", "fan-in 100→1 QoS1, persistent subscriber", ["recv_rate"],
         ["--pubs", "100", "--subs", "1", "-n", n(2000), "-q", "1", "--shared-topic",
          "--persistent"]),
    ]


# ---------------------------------------------------------------------------------------------
# Build supermq, install the peers


def build_supermq(s, work):
    if s.supermq_bin:
        binary = s.supermq_bin
        say(f"measuring {binary} (SUPERMQ_BIN: not built here)")
    else:
        say(f"building supermq (cargo build --release --locked, target {s.target_dir})")
        built = subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT,
                               env=dict(os.environ, CARGO_TARGET_DIR=s.target_dir),
                               stdout=sys.stderr)
        binary = os.path.join(s.target_dir, "release", "supermq")
        if built.returncode != 0:
            die("cargo build failed")
    if not os.access(binary, os.X_OK):
        die(f"no {binary} after the build")
    # A private copy: a rebuild in the same target directory during the run changes nothing here.
    copy = os.path.join(work, "supermq-bin")
    shutil.copy2(binary, copy)
    return copy


APT_UPDATED = False


def apt_install(package):
    global APT_UPDATED
    sudo = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            say(f"cannot install {package}: not root, no sudo")
            return False
        sudo = ["sudo"]
    if not APT_UPDATED:
        APT_UPDATED = subprocess.run(sudo + ["apt-get", "update", "-qq"],
                                     stdout=sys.stderr).returncode == 0
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", package], env=env,
                          stdout=sys.stderr).returncode == 0


def find_program(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def install_peers(s):
    """The peers' executables (a path that may not exist when the install failed)."""
    paths = {}
    for kind, program in (("mosquitto", "mosquitto"), ("nats", "nats-server")):
        wanted = any(BROKER_KINDS[broker] == kind for broker in s.brokers)
        if wanted and not os.access(find_program(program), os.X_OK):
            say(f"installing {program} (apt)")
            if not apt_install(program):
                say(f"{program} could not be installed: its column will be n/a")
        paths[kind] = find_program(program)
    paths["rumqttd"] = os.path.join(s.peers_dir, "bin", "rumqttd")
    if "rumqttd" in s.brokers and not os.access(paths["rumqttd"], os.X_OK):
        say(f"installing rumqttd 0.20 into {s.peers_dir} (cargo install, a few minutes, once)")
        install = ["cargo", "install", "rumqttd", "--version", "^0.20", "--root", s.peers_dir]
        if (subprocess.run(install + ["--locked"], stdout=sys.stderr).returncode != 0
                and subprocess.run(install, stdout=sys.stderr).returncode != 0):
            say("rumqttd could not be installed: its column will be n/a")
    return paths


# ---------------------------------------------------------------------------------------------
# Brokers

TAKEN_PORTS = set()


def free_port():
    """A port that 127.0.0.1 can bind now, never one this run already picked, below the
    ephemeral range (32768-60999 by default) so that no outgoing connection of the bench can
    be holding it later."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        if port in TAKEN_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        TAKEN_PORTS.add(port)
        return port
    die("no free port found between 20000 and 32000")


def rumqttd_config(generated, v4, v5, prometheus, ws):
    """rumqttd's generated configuration with the listen address of [v4.1], [v5.1],
    [prometheus] and [ws.1] on loopback ports, and without its [console] section (with the
    commented-out lines that follow it)."""
    ports = {"v4.1": v4, "v5.1": v5, "prometheus": prometheus, "ws.1": ws}
    section, seen, out = None, set(), []
    for line in generated.splitlines():
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
        raise ValueError(f"rumqttd's generated configuration has no {sorted(missing)} listen")
    return "\n".join(out) + "\n"


class Broker:
    def __init__(self, name, program, work):
        self.name, self.program = name, program
        self.kind = BROKER_KINDS[name]  # the server: supermq, mosquitto, nats or rumqttd
        self.dir = os.path.join(work, name)
        self.data = os.path.join(self.dir, "data")  # where a broker with persistence writes
        self.build = "release build"  # how supermq was built, for the report
        self.port = None  # the MQTT port, picked once
        self.proc = None  # the running process, or None when it cannot run
        self.failure = None  # why the last start failed: the last line of its log
        os.makedirs(self.dir, exist_ok=True)

    def configure(self):
        """Writes the configuration (once) and picks the port(s)."""
        if self.port is not None:
            return
        port = free_port()
        path = os.path.join(self.dir, f"{self.name}.conf")
        if self.kind == "supermq":
            # The HTTP listener stays on, as by default, but on a port of its own: its default
            # one would clash between the supermq columns of --persistence (and with any other
            # supermq on the machine).
            text = (f'[mqtt]\ntcp = "127.0.0.1:{port}"\n\n'
                    f'[http]\nlisten = "127.0.0.1:{free_port()}"\n\n'
                    '[log]\nlevel = "warn"\n')
            durability = self.name.partition("-")[2]
            if durability:
                text += f'\n[storage]\ndir = "{self.data}"\ndurability = "{durability}"\n'
            if durability == "batched":
                text += "flush_ms = 10\n"
        elif self.kind == "mosquitto":
            text = f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            if self.name == "mosquitto-persist":
                os.makedirs(self.data, exist_ok=True)
                # The location is a prefix: the trailing slash makes it a directory.
                text += f"persistence true\npersistence_location {self.data}/\n"
        elif self.kind == "nats":
            store = os.path.join(self.dir, "jetstream")
            os.makedirs(store, exist_ok=True)
            text = (f"server_name: supermq_compare\n"
                    f'listen: "127.0.0.1:{free_port()}"\n'
                    f'jetstream {{ store_dir: "{store}" }}\n'
                    f'mqtt {{ listen: "127.0.0.1:{port}" }}\n')
        else:  # rumqttd
            generated = subprocess.run([self.program, "generate-config"], capture_output=True,
                                       text=True, check=True).stdout
            text = rumqttd_config(generated, port, free_port(), free_port(), free_port())
            path = os.path.join(self.dir, "rumqttd.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        self.config, self.port = path, port

    def command(self):
        if self.kind == "rumqttd":
            return [self.program, "-q", "-c", self.config]
        return [self.program, "-c", self.config]

    def start(self):
        """(Re)starts the broker; self.proc is None afterwards when it cannot run."""
        self.stop()
        if not os.access(self.program, os.X_OK):
            return False
        try:
            self.configure()
        except (OSError, subprocess.CalledProcessError, ValueError) as error:
            say(f"{self.name}: no configuration ({error})")
            return False
        env = dict(os.environ)
        if self.kind == "supermq":
            # The default configuration apart from the listener and the log level: no
            # SUPERMQ_* variable from the caller's environment.
            env = {k: v for k, v in env.items() if not k.startswith("SUPERMQ_")}
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(self.command(), cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(proc)
        for _ in range(150):  # until the port accepts a connection (or the process died)
            if proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                self.proc = proc
                return True
            except OSError:
                time.sleep(0.1)
        say(f"{self.name} did not start listening on 127.0.0.1:{self.port}; log:")
        lines = self.log_lines()
        print("".join(lines[-5:]), end="", file=sys.stderr)
        self.failure = lines[-1].strip() if lines else None
        stop(proc)
        return False

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self):
        return os.path.join(self.dir, "log")

    def log_lines(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.readlines()
        except OSError:
            return []

    def version(self):
        def first_line(*argv):
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                return "not installed"
            return ((done.stdout + done.stderr).strip().splitlines() or ["?"])[0]

        if self.kind == "supermq":
            commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                    capture_output=True, text=True).stdout.strip() or "unknown"
            return f"{first_line(self.program, '--version')} (commit {commit}, {self.build})"
        if self.kind == "mosquitto":
            return first_line(self.program, "-h")
        return first_line(self.program, "--version")


    def storage(self):
        """What this broker keeps on disk, and when it writes it there."""
        if self.name == "supermq":
            return ('in memory (no [storage] section: dir = "", the default); persistent '
                    "sessions and their messages do not outlive the process")
        if self.kind == "supermq":
            mode = self.name.partition("-")[2]
            when = {
                "immediate": "QoS 1/2 acknowledged once the write is on disk (group commit)",
                "batched": "QoS 1/2 acknowledged at once, written within flush_ms = 10",
            }[mode]
            return f'[storage] dir = "{self.data}", durability = "{mode}": {when}'
        if self.name == "mosquitto-persist":
            return (f"persistence true, persistence_location {self.data}/: mosquitto writes its "
                    "database only on autosave (autosave_interval, 1800 s by default) and at "
                    "shutdown, so during a run its sessions and messages are in memory only")
        if self.kind == "nats":
            return (f"JetStream file store in {self.dir}/jetstream: every MQTT QoS 1 message "
                    "goes through a JetStream stream, written before the PUBACK; nats-server "
                    "leaves the fsync to its periodic sync (not per message)")
        return "in memory (no persistence configured)"


STARTED = []  # every process this script started, stopped on exit


def stop(proc):
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# How busy the machine is
#
# During a run: the CPU ticks all processes spent in user and system mode (/proc/stat), minus
# the broker's and the bench's own; other sessions or builds on the machine show up there.


def busy_ticks():
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()  # cpu user nice system ...
    return int(fields[1]) + int(fields[2]) + int(fields[3])


def pid_ticks(proc):
    """utime + stime of a process, 0 when it is gone."""
    try:
        with open(f"/proc/{proc.pid}/stat", encoding="ascii") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return 0


class Quiet:
    """Before each scenario, waits until the whole machine has been nearly idle for 2 s,
    within a budget of QUIET_BUDGET seconds for the whole run; the `other` CPU column shows
    what was left."""

    def __init__(self, budget, cores):
        self.budget, self.left, self.cores = budget, budget, cores

    def wait(self):
        waited = 0
        while True:
            before = busy_ticks()
            time.sleep(2)
            cores = (busy_ticks() - before) / TICK / 2
            if cores <= self.cores:
                break
            if self.left <= 0:
                say(f"machine busy ({cores:.2f} cores used by others), quiet-wait budget "
                    "spent: going on")
                break
            if waited == 0:
                say(f"machine busy ({cores:.2f} cores used by others): waiting")
            waited += 2
            self.left -= 2
        if waited:
            say(f"waited {waited} s for a quiet machine ({cores:.2f} cores busy)")


# ---------------------------------------------------------------------------------------------
# One run


def last_json_line(text):
    for line in reversed(text.splitlines()):
        if line.strip().startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_one(s, supermq, broker, scenario, round_no, raw_dir, nofile, conns_needed):
    """Runs one bench against one broker; returns its record."""
    sid, _, _, args = scenario
    is_conns = args[0] == "conns"
    # Idle-connection memory is measured on a freshly started broker: what earlier scenarios
    # left in its allocator would otherwise hide part of the growth.
    if is_conns or not broker.alive():
        if broker.proc is not None and not broker.alive():
            say(f"{broker.name} had exited; restarting it")
        broker.start()
    note, rc, result, other_cpu, timed_out = None, None, None, None, False
    stderr_text = ""
    if not broker.alive():
        note = "broker did not start" + (f": {broker.failure}" if broker.failure else "")
    elif is_conns and nofile < conns_needed:
        note = f"open-files limit {nofile} < {conns_needed}"
    else:
        target = ["-h", "127.0.0.1", "-p", str(broker.port)]
        if is_conns:
            argv = [supermq, "bench"] + args + ["--json"] + target + ["--pid", str(broker.proc.pid)]
        else:
            argv = ([supermq, "bench"] + args + ["--format", "json", "--quiet", "--scenario", sid]
                    + target + ["--broker-pid", str(broker.proc.pid)])
        out_path = os.path.join(raw_dir, f"{sid}.{broker.name}.{round_no}.out")
        err_path = os.path.join(raw_dir, f"{sid}.{broker.name}.{round_no}.err")
        busy0, broker0 = busy_ticks(), pid_ticks(broker.proc)
        usage0, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            bench = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                rc = bench.wait(s.bench_timeout)
            except subprocess.TimeoutExpired:
                stop(bench)
                timed_out = True
        real = time.monotonic() - start
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        other_ticks = busy_ticks() - busy0 - (pid_ticks(broker.proc) - broker0)
        bench_secs = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        if real > 0:  # cores the rest of the machine used during the run
            other_cpu = round(max(other_ticks / TICK - bench_secs, 0.0) / real, 2)
        with open(out_path, encoding="utf-8", errors="replace") as f:
            result = last_json_line(f.read())
        with open(err_path, encoding="utf-8", errors="replace") as f:
            stderr_text = f.read()
    qos2 = "-q" in args and args[args.index("-q") + 1] == "2"
    if (note is None and rc != 0 and broker.kind == "nats" and qos2
            and any("QoS=2 not supported" in line for line in broker.log_lines())):
        note = ("no QoS 2 in nats-server's MQTT: it resets the connection "
                "(log: publish QoS=2 not supported)")
    if note is None and broker.proc is not None and not broker.alive():
        note = "broker exited during the run"
        broker.proc = None
    error = note or ("timed out" if timed_out else None)
    if error is None and (rc != 0 or result is None):
        lines = [line.strip() for line in stderr_text.splitlines() if line.strip()]
        error = f"exit {rc}: {lines[-1] if lines else 'no output'}"
    record = {"broker": broker.name, "other_cpu": other_cpu, "scenario": sid, "round": round_no,
              "rc": rc, "error": error, "result": result if error is None else None}
    say("    " + progress(record))
    return record


def cpu_per_million(result):
    """The broker's CPU seconds per million delivered messages. broker_cpu is the broker's
    average cores over the busy time of the run: to the last delivery (recv_secs), or to the
    last publisher's final confirmation when that came later (pub_secs)."""
    try:
        busy = max(result["recv_secs"], result.get("pub_secs") or 0)
        return result["broker_cpu"] * busy / result["received"] * 1e6
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def progress(record):
    res = record["result"] or {}
    parts = []
    for key, fmt in (("recv_rate", "{:,.0f} msg/s"), ("p50_us", "p50 {:,.0f} µs"),
                     ("p99_us", "p99 {:,.0f} µs"), ("p999_us", "p99.9 {:,.0f} µs"),
                     ("lost", "lost {:,}"),
                     ("bytes_per_conn", "{:,.0f} B/conn")):
        if res.get(key) is not None:
            parts.append(fmt.format(res[key]))
    if res.get("client_cpu") is not None and res.get("broker_cpu") is not None:
        parts.append(f"cpu {res['client_cpu']:.2f}+{res['broker_cpu']:.2f}")
    if res.get("recv_rate") is not None and cpu_per_million(res) is not None:
        parts.append(f"{cpu_per_million(res):.2f} broker cpu-s/M")
    what = "n/a (" + record["error"] + ")" if record["error"] else ", ".join(parts)
    return f"{record['scenario']} {record['broker']} round {record['round']} : {what}"


# ---------------------------------------------------------------------------------------------
# The table

LOWER_IS_BETTER = {"p50_us", "p99_us", "p999_us", "bytes_per_conn"}


def fmt_value(metric, value):
    if value is None:
        return "n/a"
    if metric in ("p50_us", "p99_us", "p999_us"):
        return f"{value / 1000:.2f} ms" if value >= 10000 else f"{value:,.0f} µs"
    if metric == "bytes_per_conn":
        return f"{value / 1024:.1f} KiB"
    # three significant digits: 1.06M, 152k, 53.1k, 1.42k, 93
    for scale, suffix in ((1e6, "M"), (1e3, "k"), (1, "")):
        if value >= scale or scale == 1:
            scaled = value / scale
            digits = 0 if scaled >= 100 or scale == 1 else (1 if scaled >= 10 else 2)
            return f"{scaled:.{digits}f}{suffix}"


def fmt_cpu_s(value):
    """CPU seconds per million deliveries (and ratios): 0.71, 2.8, 310."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def ratio(metric, ours, theirs):
    """supermq's ratio, oriented so that >= 1.0 always means supermq is better."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return theirs / ours if metric in LOWER_IS_BETTER else ours / theirs


def fmt_ratio(value):
    if value is None:
        return "n/a"
    return f"{fmt_cpu_s(value)}×"


def ratio_columns(brokers):
    """The ratio columns of the main table, as (heading, ours, theirs), theirs None meaning
    the best peer; only those whose brokers are in the run."""
    peers = [b for b in brokers if BROKER_KINDS[b] != "supermq"]
    wanted = [
        ("supermq ÷ best peer", "supermq", None),
        ("supermq ÷ mosquitto", "supermq", "mosquitto"),
        # The persistence comparison: each durability against NATS's JetStream, and what
        # writing to disk costs against supermq in memory.
        ("immediate ÷ nats", "supermq-immediate", "nats"),
        ("batched ÷ nats", "supermq-batched", "nats"),
        ("immediate ÷ memory", "supermq-immediate", "supermq"),
    ]
    if "supermq-immediate" in brokers or "supermq-batched" in brokers:
        wanted = wanted[2:]
    return [(heading, ours, theirs) for heading, ours, theirs in wanted
            if ours in brokers and (theirs in brokers if theirs else peers)]


def table(runs, scenarios, brokers, header):
    rounds = max((r["round"] for r in runs), default=0)
    peers = [b for b in brokers if BROKER_KINDS[b] != "supermq"]
    ratios = ratio_columns(brokers)
    notes = []  # footnotes: why a cell is n/a

    def note(text):
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1

    def cell_runs(sid, broker):
        return [r for r in runs if r["scenario"] == sid and r["broker"] == broker]

    def values_of(sid, broker, key):
        results = [r["result"] for r in cell_runs(sid, broker) if r["result"] is not None]
        if key == "cpu_per_million":
            return [v for v in map(cpu_per_million, results) if v is not None]
        return [res[key] for res in results if res.get(key) is not None]

    def median_of(sid, broker, key):
        values = values_of(sid, broker, key)
        return (statistics.median(values), len(values)) if values else (None, 0)

    def failure(sid, broker):
        errors = [r["error"] for r in cell_runs(sid, broker) if r["error"]]
        return errors[0] if errors else None

    def missing(sid, broker):
        why = failure(sid, broker)
        return f"n/a [{note(why)}]" if why else "—"

    out = [header.rstrip("\n"), ""]

    # --- the main table
    out.append(
        f"Median of {rounds} interleaved round(s). Throughput: delivered msg/s (higher is "
        "better), and in brackets the broker's CPU per delivery in s/M: its CPU seconds per "
        "million delivered messages (broker cores × busy seconds ÷ delivered × 10⁶; lower is "
        "better). Latency and memory: lower is better. A ratio A ÷ B is oriented so that "
        "≥ 1.00× means A is better: A ÷ B for throughput, B ÷ A for latency and memory."
    )
    out.append("")
    cols = ["scenario"] + brokers + [heading for heading, _, _ in ratios]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
    for sid, label, metrics, _ in scenarios:
        for metric in metrics:
            name = {"p50_us": f"{label}: p50", "p99_us": f"{label}: p99",
                    "p999_us": f"{label}: p99.9"}.get(metric, label)
            row, values = [name], {}
            for broker in brokers:
                value, count = median_of(sid, broker, metric)
                values[broker] = value
                total = len(cell_runs(sid, broker))
                if value is None:
                    row.append(missing(sid, broker))
                    continue
                text = fmt_value(metric, value)
                if count < total:
                    text += f" ({count}/{total})"
                if metric == "recv_rate":
                    cpu, _ = median_of(sid, broker, "cpu_per_million")
                    if cpu is not None:
                        text += f" ({fmt_cpu_s(cpu)} s/M)"
                row.append(text)
            for _, ours, theirs in ratios:
                if theirs is not None:
                    row.append(fmt_ratio(ratio(metric, values[ours], values[theirs])))
                    continue
                peer_values = [values[p] for p in peers if values[p] is not None]
                if peer_values:
                    best = min(peer_values) if metric in LOWER_IS_BETTER else max(peer_values)
                    best_peer = [p for p in peers if values[p] == best][0]
                    r = ratio(metric, values[ours], best)
                    row.append(f"{fmt_ratio(r)} ({best_peer})" if r is not None else "n/a")
                else:
                    row.append("n/a")
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
                row.append(missing(sid, broker))
                continue
            worst = max(ok, key=lambda res: res.get("lost", 0))
            lost, expected = worst.get("lost", 0), worst.get("expected", 0)
            dup = max(res.get("dup", 0) for res in ok)
            text = "0 lost"
            if lost:
                text = f"**lost {lost:,}** ({100.0 * lost / max(expected, 1):.1f}%)"
            if dup:
                text += f", {dup:,} dup"
            client, _ = median_of(sid, broker, "client_cpu")
            brk, _ = median_of(sid, broker, "broker_cpu")
            if client is not None and brk is not None:
                text += f"; cpu {client:.2f} + {brk:.2f}"
            others = [r["other_cpu"] for r in cell_runs(sid, broker) if r["other_cpu"] is not None]
            if others:
                text += f" (other {statistics.median(others):.2f})"
            row.append(text)
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    others = [r["other_cpu"] for r in runs if r["other_cpu"] is not None]
    if others:
        out.append(
            f"Other processes used {statistics.median(others):.2f} cores (median over the "
            f"{len(others)} runs; max {max(others):.2f}) of the machine's CPUs while the "
            "benches ran."
        )
        out.append("")
    for i, text in enumerate(notes, 1):
        out.append(f"[{i}] {text}  ")
    if notes:
        out.append("")

    # --- every run, for the record
    out.append("<details><summary>Every run</summary>")
    out.append("")
    out.append(
        "Published msg/s is the rate the broker accepted (and, at QoS 1/2, acknowledged) the "
        "publications; delivered msg/s the rate the subscribers received them; broker cpu-s/M "
        "the broker's CPU seconds per million deliveries. Latencies of the unthrottled runs "
        "are queueing delays under full load, not the broker's latency."
    )
    out.append("")
    out.append("| scenario | broker | round | published msg/s | delivered msg/s | broker cpu-s/M | "
               "p50 µs | p99 µs | lost | cpu client + broker | other cpu | bytes/conn | error |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for sid, _, _, _ in scenarios:
        for broker in brokers:
            for r in sorted(cell_runs(sid, broker), key=lambda r: r["round"]):
                res = r["result"] or {}

                def num(key, fmt="{:,.0f}"):
                    return "" if res.get(key) is None else fmt.format(res[key])

                cpu = ""
                if res.get("client_cpu") is not None and res.get("broker_cpu") is not None:
                    cpu = f"{res['client_cpu']:.2f} + {res['broker_cpu']:.2f}"
                per_million = cpu_per_million(res) if res.get("recv_rate") is not None else None
                cells = [sid, broker, str(r["round"]), num("pub_rate"), num("recv_rate"),
                         "" if per_million is None else f"{per_million:.2f}",
                         num("p50_us"), num("p99_us"), num("lost"), cpu,
                         "" if r["other_cpu"] is None else f"{r['other_cpu']:.2f}",
                         num("bytes_per_conn"), (r["error"] or "").replace("|", "/")]
                out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("</details>")
    return "\n".join(out) + "\n"


def filesystem(path):
    """The filesystem `path` is on, from /proc/mounts: "ext4 (/dev/vda on /)"."""
    best = ("", "?", "?")
    with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            device, mount, kind = line.split()[:3]
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, device, kind)
    return f"{best[2]} ({best[1]} on {best[0]})"


def fsync_probe(directory):
    """How long one small write and fsync takes here: what a durable acknowledgement waits
    for at least."""
    path = os.path.join(directory, "fsync-probe")
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(50):
            start = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    return f"4 KiB write + fsync: median {statistics.median(times) * 1e3:.2f} ms of 50"


def header(s, scenarios, brokers, seconds, quiet, load_before, load_after):
    model = "?"
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    lines = [
        f"Command: `{s.command_line}` (ROUNDS={s.rounds}{', QUICK=1' if s.quick else ''})  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, benchmark "
        f"time {seconds:.0f} s (of which {quiet.budget - quiet.left:.0f} s waiting for a quiet "
        "machine)  ",
        f"Machine: {os.cpu_count()} CPUs, {model}, {mem_kib / 1048576:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}  ",
        f"Load average before / after: {load_before} / {load_after}  ",
    ]
    lines += [f"- {broker.name}: {broker.version()}" for broker in brokers]
    if s.persistence:
        lines += ["", f"Storage (on {filesystem(os.path.dirname(brokers[0].dir))}; "
                  f"{fsync_probe(brokers[0].dir)}):", ""]
        lines += [f"- {broker.name}: {broker.storage()}" for broker in brokers]
    lines += ["", "Scenarios (`supermq bench` arguments; 64-byte payloads):", ""]
    lines += [f"- {label}: `supermq bench {' '.join(args)}`" for _, label, _, args in scenarios]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main


def load_average():
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main():
    s = settings()
    scenarios = scenario_list(s.quick)
    if s.scenarios:
        scenarios = [sc for sc in scenarios if sc[0] in s.scenarios]
    if not scenarios:
        die(f"no scenario selected (SCENARIOS={' '.join(s.scenarios)})")
    conns = int(next(sc for sc in scenario_list(s.quick) if sc[0] == "conns")[3][2])
    if s.out != "-":
        os.makedirs(os.path.dirname(os.path.abspath(s.out)), exist_ok=True)

    work = tempfile.mkdtemp(prefix="supermq-compare.")
    raw_dir = os.path.join(work, "raw")
    os.makedirs(raw_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        return compare(s, scenarios, conns, work, raw_dir)
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in STARTED:
            stop(proc)
        if s.keep_work:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def compare(s, scenarios, conns, work, raw_dir):
    started = time.monotonic()
    supermq = build_supermq(s, work)
    programs = install_peers(s)
    programs["supermq"] = supermq

    # Every connection is a file descriptor, in the bench and in the broker (they inherit ours).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    except (ValueError, OSError):
        pass
    nofile = float("inf") if soft == resource.RLIM_INFINITY else soft
    if nofile < conns + 200 and any(sc[0] == "conns" for sc in scenarios):
        say(f"open-files limit is {nofile}: the {conns}-connection scenario will fail "
            "(raise ulimit -n)")

    brokers = [Broker(name, programs[BROKER_KINDS[name]], work) for name in s.brokers]
    for broker in brokers:
        if s.supermq_bin and broker.kind == "supermq":
            broker.build = f"SUPERMQ_BIN={s.supermq_bin}"
        if s.persistence:
            say(f"{broker.name}: {broker.storage()}")
        if broker.start():
            say(f"{broker.name}: pid {broker.proc.pid}, 127.0.0.1:{broker.port} — "
                f"{broker.version()}")
        else:
            say(f"{broker.name}: could not be started; its column will be n/a")

    quiet = Quiet(s.quiet_budget, s.quiet_cores)
    runs = []
    load_before, t0 = load_average(), time.monotonic()
    for round_no in range(1, s.rounds + 1):
        # rotate the broker order: A B C D, then B C D A, ...
        shift = (round_no - 1) % len(brokers)
        order = brokers[shift:] + brokers[:shift]
        say(f"round {round_no}/{s.rounds} (order: {' '.join(b.name for b in order)})")
        for scenario in scenarios:
            quiet.wait()
            for broker in order:
                runs.append(run_one(s, supermq, broker, scenario, round_no, raw_dir, nofile,
                                    conns + 200))
    seconds, load_after = time.monotonic() - t0, load_average()

    text = table(runs, scenarios, s.brokers,
                 header(s, scenarios, brokers, seconds, quiet, load_before, load_after))
    if s.out == "-":
        sys.stdout.write(text)
    else:
        with open(s.out, "w", encoding="utf-8") as f:
            f.write(text)
        raw = os.path.splitext(s.out)[0] + ".jsonl"
        with open(raw, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in runs)
        # the summary (without the per-run details) on the terminal too
        sys.stdout.write(text.split("<details>")[0])
        say(f"table written to {s.out} (raw runs: {raw})")
    say(f"done: {seconds:.0f} s of benchmarks, {time.monotonic() - started:.0f} s in all "
        f"(build included), ROUNDS={s.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
