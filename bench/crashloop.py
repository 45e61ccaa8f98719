#!/usr/bin/env python3
"""Crash loop: SIGKILL a broker with a store over and over, and count what it lost.

    bench/crashloop.py [--kills 20] [--publishers 4] [--subscribers 2] [--offline 1]
                       [--min-gap 0.2] [--max-gap 2.0] [--seed N] [--binary PATH]

Starts supermq with `[storage] durability = "immediate"` on a fresh directory, then:
  - subscribers: persistent MQTT 3.1.1 sessions (clean session 0) subscribed to `crash/#` at
    QoS 1. The online ones stay connected, acknowledge what they get and reconnect after every
    crash (each reconnection must find its session: session present = 1); the offline ones
    subscribe once and disconnect, so their whole backlog sits in the store through every
    crash;
  - publishers: publish QoS 1 messages with unique payloads (`pN:SEQ`), up to 16 outstanding,
    and record each one the broker acknowledged with PUBACK — the ones the store promised to
    keep. A connection lost with PUBLISHes outstanding just goes on with new ones (those may
    or may not arrive; either is fine);
  - the broker is SIGKILLed `--kills` times, at random moments (`--min-gap`..`--max-gap`
    seconds apart), and started again on the same directory each time.
After the last restart the publishers stop, every subscriber (the offline ones now connect)
drains its session until it has every acknowledged message or nothing has come for 15 s, and
the script prints, per subscriber and in all: acknowledged, received, duplicates (allowed and
counted) and lost (acknowledged, never received: must be 0), with the kills and how long each
start took to load the store ("store loaded" lines). Exit code 0 when nothing was lost and no
session was lost, 1 otherwise, 2 when the broker could not run (its log tail is printed).

Not run by CI: it takes a minute or more. The binary is --binary, else $BROKER_BIN, else the
release build, else the debug build (under $CARGO_TARGET_DIR, default target/). The clients
speak MQTT with the standard library only (a few packet types, by hand), so that every
reconnection and every acknowledgement is under this script's control. Only the broker this
script started is ever signalled, by its pid. KEEP_WORK=1 keeps the temporary directory
(configuration, log, store).
"""

import argparse
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
TOPIC_FILTER = "crash/#"
#: QoS 1 PUBLISHes a publisher keeps unacknowledged at once.
WINDOW = 16
#: A drain ends when nothing has arrived for this long (the broker is not killed any more).
QUIET = 15.0
#: How long a start may take, store loading included.
START_TIMEOUT = 60.0


def find_binary(given):
    if given:
        return given
    if os.environ.get("BROKER_BIN"):
        return os.environ["BROKER_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "supermq")
        if os.path.exists(path):
            return path
    sys.exit("crashloop: no supermq binary: build one (cargo build) or pass --binary")


# MQTT 3.1.1, just what the clients need -------------------------------------------------------


def encode_length(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s):
    data = s.encode()
    return struct.pack(">H", len(data)) + data


def packet(first, body):
    return bytes([first]) + encode_length(len(body)) + body


def connect_packet(client_id, clean):
    # Keep alive 0: a dead connection shows as an error or EOF when the broker is killed.
    variable = mqtt_string("MQTT") + bytes([4, 0x02 if clean else 0x00]) + struct.pack(">H", 0)
    return packet(0x10, variable + mqtt_string(client_id))


def publish_packet(topic, packet_id, payload):
    return packet(0x32, mqtt_string(topic) + struct.pack(">H", packet_id) + payload)


def puback_packet(packet_id):
    return packet(0x40, struct.pack(">H", packet_id))


def subscribe_packet(packet_id, topic_filter):
    return packet(0x82, struct.pack(">H", packet_id) + mqtt_string(topic_filter) + bytes([1]))


class Closed(Exception):
    """The connection ended (the broker was killed, most likely)."""


class Connection:
    """A socket that reads whole MQTT packets; `read` returns None when `timeout` passes
    without one, so a thread can look at its stop flag."""

    def __init__(self, port, timeout=1.0):
        self.sock = socket.create_connection((HOST, port), timeout=2.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buf = bytearray()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise Closed(str(error)) from error

    def read(self):
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError as error:
                raise Closed(str(error)) from error
            if not chunk:
                raise Closed("end of stream")
            self.buf.extend(chunk)

    def _parse(self):
        if len(self.buf) < 2:
            return None
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            byte = self.buf[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        if len(self.buf) < i + length:
            return None
        first, body = self.buf[0], bytes(self.buf[i:i + length])
        del self.buf[:i + length]
        return first, body

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def mqtt_connect(port, client_id, clean, deadline):
    """Connects (retrying while the broker is down) and returns (connection, session present)."""
    while True:
        try:
            conn = Connection(port)
            conn.send(connect_packet(client_id, clean))
            answer = None
            while answer is None:
                answer = conn.read()
            first, body = answer
            if first >> 4 != 2 or body[1] != 0:
                raise Closed(f"CONNACK {body.hex()}")
            return conn, bool(body[0] & 1)
        except (OSError, Closed):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# The clients ---------------------------------------------------------------------------------


class Publisher(threading.Thread):
    def __init__(self, index, port, stop):
        super().__init__(daemon=True)
        self.name = f"p{index}"
        self.port = port
        self.stop = stop
        self.acked = set()
        self.sent = 0
        self.connections = 0

    def run(self):
        seq = 0
        while not self.stop.is_set():
            try:
                conn, _ = mqtt_connect(self.port, f"crash-{self.name}", True, time.monotonic() + 120)
            except (OSError, Closed):
                continue
            self.connections += 1
            outstanding = {}  # packet id -> payload
            free_ids = list(range(1, WINDOW + 1))
            try:
                while not (self.stop.is_set() and not outstanding):
                    while free_ids and not self.stop.is_set():
                        packet_id = free_ids.pop()
                        payload = f"{self.name}:{seq}".encode()
                        seq += 1
                        conn.send(publish_packet(f"crash/{self.name}", packet_id, payload))
                        self.sent += 1
                        outstanding[packet_id] = payload
                    answer = conn.read()
                    if answer is None:
                        continue
                    first, body = answer
                    if first >> 4 == 4:  # PUBACK
                        packet_id = struct.unpack(">H", body[:2])[0]
                        payload = outstanding.pop(packet_id, None)
                        if payload is not None:
                            self.acked.add(payload)
                            free_ids.append(packet_id)
            except Closed:
                pass  # the outstanding ones were never acknowledged: nothing was promised
            finally:
                conn.close()


class Subscriber(threading.Thread):
    def __init__(self, name, port, stop, online):
        super().__init__(daemon=True)
        self.name = name
        self.port = port
        self.stop = stop
        self.online = online
        self.received = []  # every payload, duplicates included
        self.dup_flags = 0
        self.sessions_lost = 0
        self.connections = 0
        self.last_arrival = time.monotonic()
        self.subscribed = threading.Event()
        self.drain = threading.Event()  # the offline ones connect when it is set

    def client_id(self):
        return f"crash-{self.name}"

    def subscribe(self):
        """A new persistent session subscribed to everything the publishers send."""
        conn, present = mqtt_connect(self.port, self.client_id(), False, time.monotonic() + 60)
        assert not present, f"{self.name}: a fresh client id found a session"
        conn.send(subscribe_packet(1, TOPIC_FILTER))
        answer = None
        while answer is None:
            answer = conn.read()
        assert answer[0] >> 4 == 9 and answer[1][2] == 1, f"{self.name}: SUBACK {answer}"
        self.connections += 1
        return conn

    def run(self):
        conn = self.subscribe()
        self.subscribed.set()
        if not self.online:
            conn.send(packet(0xE0, b""))  # DISCONNECT: the session lives on, offline
            conn.close()
            self.drain.wait()
            conn = None
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn, present = mqtt_connect(self.port, self.client_id(), False,
                                                 time.monotonic() + 120)
                except (OSError, Closed):
                    continue
                self.connections += 1
                if not present:
                    self.sessions_lost += 1
            try:
                while not self.stop.is_set():
                    answer = conn.read()
                    if answer is None:
                        continue
                    first, body = answer
                    if first >> 4 != 3:
                        continue
                    topic_length = struct.unpack(">H", body[:2])[0]
                    qos = (first >> 1) & 3
                    rest = body[2 + topic_length:]
                    if qos:
                        packet_id = struct.unpack(">H", rest[:2])[0]
                        rest = rest[2:]
                    self.received.append(bytes(rest))
                    self.last_arrival = time.monotonic()
                    if first & 0x08:
                        self.dup_flags += 1
                    if qos:
                        conn.send(puback_packet(packet_id))
            except Closed:
                pass
            conn.close()
            conn = None


# The broker ----------------------------------------------------------------------------------


class Broker:
    def __init__(self, binary, work):
        self.binary = binary
        self.work = work
        self.port = free_port()
        self.store = os.path.join(work, "store")
        self.conf = os.path.join(work, "supermq.conf")
        self.log_path = os.path.join(work, "supermq.log")
        with open(self.conf, "w") as f:
            f.write(
                f'[mqtt]\ntcp = "{HOST}:{self.port}"\n[http]\nlisten = ""\n[log]\nlevel = "info"\n'
                f'[storage]\ndir = "{self.store}"\ndurability = "immediate"\n'
                # Every acknowledged message must stay queued however long the run: no limit
                # may drop one (that would be counted as lost).
                "[limits]\nmax_queued_messages = 10000000\nmax_queued_bytes = 2000000000\n"
            )
        self.proc = None
        self.starts = 0

    def start(self):
        loaded_before = self.log().count("store loaded")
        with open(self.log_path, "ab") as log:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMQ_")}
            env.pop("RUST_LOG", None)
            env["NO_COLOR"] = "1"
            self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(self, f"the broker exited during start {self.starts + 1} "
                           f"(code {self.proc.returncode})")
            if self.log().count("store loaded") > loaded_before:
                try:
                    socket.create_connection((HOST, self.port), timeout=0.5).close()
                    self.starts += 1
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        fail(self, f"the broker did not start within {START_TIMEOUT} s")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def terminate(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def fail(broker, why):
    print(f"crashloop: {why}; log tail:", file=sys.stderr)
    print("\n".join(broker.log().splitlines()[-40:]), file=sys.stderr)
    broker.terminate()
    sys.exit(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--subscribers", type=int, default=2, help="online subscribers")
    parser.add_argument("--offline", type=int, default=1, help="subscribers offline until the end")
    parser.add_argument("--min-gap", type=float, default=0.2)
    parser.add_argument("--max-gap", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--binary", default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    binary = find_binary(args.binary)
    work = tempfile.mkdtemp(prefix="supermq-crashloop-")
    print(f"crashloop: {binary}, seed {seed}, work directory {work}")

    broker = Broker(binary, work)
    broker.start()
    stop_publishers = threading.Event()
    stop_subscribers = threading.Event()
    subscribers = [Subscriber(f"s{i}", broker.port, stop_subscribers, True)
                   for i in range(args.subscribers)]
    subscribers += [Subscriber(f"o{i}", broker.port, stop_subscribers, False)
                    for i in range(args.offline)]
    for s in subscribers:
        s.start()
    for s in subscribers:
        if not s.subscribed.wait(60):
            fail(broker, f"{s.name} could not subscribe")
    publishers = [Publisher(i, broker.port, stop_publishers) for i in range(args.publishers)]
    for p in publishers:
        p.start()

    began = time.monotonic()
    for kill in range(1, args.kills + 1):
        time.sleep(rng.uniform(args.min_gap, args.max_gap))
        broker.kill()
        broker.start()
        print(f"  kill {kill}/{args.kills}: acknowledged so far "
              f"{sum(len(p.acked) for p in publishers)}", flush=True)
    # A last stretch without kills, then every publisher waits for its outstanding PUBACKs.
    time.sleep(1.0)
    stop_publishers.set()
    for p in publishers:
        p.join(60)
    acked = set().union(*(p.acked for p in publishers))
    elapsed = time.monotonic() - began

    for s in subscribers:
        s.last_arrival = time.monotonic()  # the quiet time of a drain counts from its start
        s.drain.set()
    while True:
        missing = [s for s in subscribers if not acked <= set(s.received)]
        quiet = all(time.monotonic() - s.last_arrival > QUIET for s in missing)
        if not missing or quiet:
            break
        time.sleep(0.2)
    stop_subscribers.set()
    for s in subscribers:
        s.join(10)
    broker.terminate()
    check = subprocess.run([binary, "storage", "check", broker.store], capture_output=True,
                           text=True)

    # Each start's load time: the sum of the line's *_ms fields (opening, restoring).
    loads = [sum(int(ms) for ms in re.findall(r"\b\w+_ms=(\d+)", line))
             for line in broker.log().splitlines() if "store loaded" in line]
    sent = sum(p.sent for p in publishers)
    print(f"\nkills: {args.kills} in {elapsed:.1f} s; broker starts: {broker.starts}")
    print(f"published: {sent}, acknowledged: {len(acked)}")
    total_lost = 0
    total_sessions_lost = 0
    print(f"{'subscriber':<12}{'received':>10}{'unique':>10}{'duplicates':>12}{'DUP flag':>10}"
          f"{'lost':>8}{'unacked extra':>15}{'sessions lost':>15}")
    for s in subscribers:
        unique = set(s.received)
        lost = acked - unique
        total_lost += len(lost)
        total_sessions_lost += s.sessions_lost
        kind = "online" if s.online else "offline"
        print(f"{s.name + ' ' + kind:<12}{len(s.received):>10}{len(unique):>10}"
              f"{len(s.received) - len(unique):>12}{s.dup_flags:>10}{len(lost):>8}"
              f"{len(unique - acked):>15}{s.sessions_lost:>15}")
        if lost:
            print(f"    lost, e.g.: {sorted(lost)[:10]}")
    if loads:
        print(f"store loaded: {len(loads)} times, longest {max(loads)} ms")
    verdict = "ok" if check.returncode == 0 else f"FAILED ({check.returncode})"
    print(f"storage check after the run: {verdict} {check.stdout.strip()} {check.stderr.strip()}")
    print(f"lost: {total_lost}, sessions lost: {total_sessions_lost}")
    if os.environ.get("KEEP_WORK"):
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if total_lost == 0 and total_sessions_lost == 0 and check.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
