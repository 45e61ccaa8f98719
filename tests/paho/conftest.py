"""Fixtures that run the real supermq binary for the Paho end-to-end tests.

Each test gets its own broker process (start-up takes milliseconds), on free ports, with a
configuration generated from the test's overrides, so no test sees another's retained messages,
sessions or limits. The broker's log (stdout and stderr) goes to a file that is printed under
any failing test. At teardown the test's clients are closed and the broker gets SIGTERM: it must
exit with code 0 within a few seconds and must not have panicked, or the test errors.

The binary is $BROKER_BIN, else target/debug/supermq, else target/release/supermq (relative to
the repository root). Build it first: ``cargo build``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mqttclient import V5, V311, Endpoint, MqttClient

REPO_ROOT = Path(__file__).resolve().parents[2]
CERTS = REPO_ROOT / "tests" / "certs"
HOST = "127.0.0.1"
LISTENERS = ("tcp", "tls", "ws", "wss")

#: How long the broker may take to start listening, and to exit after SIGTERM. It waits up
#: to 5 s for connections to close, but the tests close their clients first.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def broker_binary() -> Path:
    env = os.environ.get("BROKER_BIN")
    if env:
        path = Path(env)
        if not path.is_absolute():
            path = REPO_ROOT / path
        return path
    for candidate in ("target/debug/supermq", "target/release/supermq"):
        path = REPO_ROOT / candidate
        if path.exists():
            return path
    return REPO_ROOT / "target/debug/supermq"


@pytest.fixture(scope="session")
def supermq_bin() -> Path:
    path = broker_binary()
    if not path.exists():
        pytest.fail(f"supermq binary not found at {path}: run `cargo build` or set BROKER_BIN", pytrace=False)
    return path


def broker_env(extra: dict | None = None) -> dict:
    """The environment for a broker process: ours without any SUPERMQ_* variable (the broker
    reads every SUPERMQ_* as a configuration override and refuses unknown ones, BROKER_BIN
    included), plus the test's own overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMQ_")}
    env.pop("RUST_LOG", None)  # [log] level decides
    env["NO_COLOR"] = "1"  # a plain log file
    env.update(extra or {})
    return env


def free_port() -> int:
    """A port nothing listens on right now (the broker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string for our values


def to_toml(sections: dict[str, dict]) -> str:
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in keys.items())
        lines.append("")
    return "\n".join(lines)


class Broker:
    """A running supermq process and how to reach it."""

    _ids = itertools.count(1)

    def __init__(self, binary: Path, workdir: Path, listeners, sections: dict, env: dict | None):
        self.binary = binary
        self.workdir = workdir
        self.listeners = tuple(listeners)
        self.sections = sections
        self.env = env or {}
        self.name = f"broker{next(self._ids)}"
        self.host = HOST
        self.ports: dict[str, int] = {}
        self.config_path = workdir / f"{self.name}.toml"
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.clients: list[MqttClient] = []
        self.returncode: int | None = None

    # Start and stop ---------------------------------------------------------------------------

    def config(self) -> dict:
        mqtt = {kind: "" for kind in LISTENERS}
        for kind in self.listeners:
            mqtt[kind] = f"{HOST}:{self.ports[kind]}"
        # No HTTP unless a test asks for it: its default port is one for the whole machine.
        config = {"mqtt": mqtt, "http": {"listen": ""}, "log": {"level": "info"}}
        if {"tls", "wss"} & set(self.listeners):
            config["tls"] = {"cert": str(CERTS / "server.pem"), "key": str(CERTS / "server.key")}
        for section, keys in self.sections.items():
            config.setdefault(section, {}).update(keys)
        return config

    def start(self) -> None:
        # A free port can be taken between our probe and the broker's bind; try again then.
        for attempt in range(3):
            self.ports = {kind: free_port() for kind in self.listeners}
            self.config_path.write_text(to_toml(self.config()))
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [str(self.binary), "-c", str(self.config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=broker_env(self.env),
                    cwd=REPO_ROOT,
                )
            if self._wait_listening():
                return
            if attempt < 2 and "in use" in self.log():
                continue
            break
        raise RuntimeError(
            f"supermq did not start (exit code {self.proc.returncode}); config:\n"
            f"{self.config_path.read_text()}\nlog:\n{self.log()}"
        )

    def _wait_listening(self) -> bool:
        """Waits until one listener accepts TCP connections. The broker binds every listener
        before it serves any, so one is enough; the plain TCP one is preferred, as probing
        the others leaves a failed handshake in the log."""
        deadline = time.monotonic() + START_TIMEOUT
        pending = [self.ports["tcp"] if "tcp" in self.ports else next(iter(self.ports.values()))]
        while pending and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection((HOST, pending[0]), timeout=0.2).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.01)
        if pending:
            self.proc.kill()
            self.proc.wait()
            return False
        return True

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM; returns the exit code, or None if it had to be killed after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
            return self.returncode
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # Clients ----------------------------------------------------------------------------------

    def endpoint(self, kind: str = "tcp", **tls) -> Endpoint:
        """How to reach the ``kind`` listener; for tls/wss, ``tls`` are tls_set() arguments
        (the default trusts the test CA and presents no client certificate)."""
        transport = "websockets" if kind in ("ws", "wss") else "tcp"
        tls_args = None
        if kind in ("tls", "wss"):
            tls_args = {"ca_certs": str(CERTS / "ca.pem"), **tls}
        return Endpoint(self.host, self.ports[kind], transport, tls_args)

    def client(self, client_id: str = "", version: int = V5, kind: str = "tcp", clean_session=None, **tls) -> MqttClient:
        """A Paho client for this broker, closed at teardown. Not yet connected."""
        c = MqttClient(self.endpoint(kind, **tls), client_id, version, clean_session)
        self.clients.append(c)
        return c

    def connected(self, client_id: str = "", version: int = V5, kind: str = "tcp") -> MqttClient:
        """A client, connected with a clean session."""
        c = self.client(client_id, version, kind)
        c.connect()
        return c


@pytest.fixture
def broker_factory(request, tmp_path, supermq_bin):
    """``start(listeners=("tcp",), env=None, **sections)`` runs a broker, e.g.
    ``start(limits={"max_connections": 2})`` or ``start(("tcp", "tls"), tls={"client_ca": ...})``."""
    started: list[Broker] = []
    request.node._supermq_brokers = started

    def start(listeners=("tcp",), env=None, **sections) -> Broker:
        broker = Broker(supermq_bin, tmp_path, listeners, sections, env)
        started.append(broker)
        broker.start()
        return broker

    yield start

    problems = []
    for broker in started:
        for c in broker.clients:
            c.close()
        if broker.proc is None:
            continue
        already_exited = broker.proc.poll() is not None
        code = broker.terminate()
        if code is None:
            problems.append(f"{broker.name} did not exit within {STOP_TIMEOUT} s of SIGTERM")
        elif code != 0 and not getattr(broker, "expect_exit", False):
            how = "exited by itself" if already_exited else "after SIGTERM"
            problems.append(f"{broker.name} exit code {code} ({how})")
        if "panicked" in broker.log():
            problems.append(f"{broker.name} panicked")
    if problems:
        logs = "\n".join(f"--- {b.name} log ---\n{b.log()}" for b in started)
        pytest.fail("; ".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A broker with default limits on TCP and WebSocket."""
    return broker_factory(("tcp", "ws"))


@pytest.fixture(params=[V311, V5], ids=["v311", "v5"])
def version(request) -> int:
    """Runs a test once with MQTT 3.1.1 and once with MQTT 5."""
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches every broker log of a failed test to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in getattr(item, "_supermq_brokers", []):
            report.sections.append((f"supermq log: {broker.name} ({broker.config_path})", broker.log()))
