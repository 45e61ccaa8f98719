"""Fixtures that run the real three-node cluster of docker-compose-cluster.yaml.

Each test gets a cluster of its own: a compose project with a unique name, its MQTT ports
published on free host ports, brought up with the real image (supermq:latest, built by
``./docker.sh build``) and the real compose file, and taken down with its containers, networks
and volumes at teardown, whatever the test's outcome. Every node's log is printed under a
failing test. Projects left over by an interrupted run (their names start with ``PREFIX``) are
removed before the first test.

The tests drive failures with the docker CLI: ``docker kill``/``start``, ``docker network
disconnect``/``connect`` on the private route network, ``docker pause``/``unpause`` and
``docker restart``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose-cluster.yaml"
IMAGE = "supermq:latest"
PREFIX = "supermqtest"
NODES = ("node1", "node2", "node3")
HOST = "127.0.0.1"

# The Paho wrapper of the end-to-end tests.
sys.path.insert(0, str(REPO_ROOT / "tests" / "paho"))

#: From `up` to every node healthy: start-up takes milliseconds, the first health check runs
#: after 2 s (the compose file's interval); the rest is a loaded 2-core machine.
HEALTHY_TIMEOUT = 60.0


def compose_command() -> list[str]:
    """`docker compose` where the plugin exists, else the older `docker-compose`."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed", pytrace=False)


def run(args: list[str], check: bool = True, env: dict | None = None, timeout: float = 120) -> str:
    """Runs a docker command; returns stdout and stderr together."""
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` exited with {done.returncode}:\n{output}")
    return output


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


class Cluster:
    """One compose project of docker-compose-cluster.yaml, and the failures a test injects."""

    def __init__(self, compose: list[str]):
        self.project = f"{PREFIX}{uuid.uuid4().hex[:8]}"
        self.compose_cmd = compose
        self.ports = {node: free_port() for node in NODES}
        self.http_ports = {node: free_port() for node in NODES}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMQ_")}
        # A secret of the project's own, as the compose file asks for, rather than its default.
        self.env["SUPERMQ_CLUSTER_SECRET"] = secrets.token_hex(32)
        for node, port in self.ports.items():
            self.env[f"{node.upper()}_MQTT_PORT"] = str(port)
        for node, port in self.http_ports.items():
            self.env[f"{node.upper()}_HTTP_PORT"] = str(port)
        self._ids: dict[str, str] = {}

    def compose(self, *args: str, check: bool = True) -> str:
        command = [*self.compose_cmd, "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        return run(command, check=check, env=self.env)

    # Life cycle -------------------------------------------------------------------------------

    def up(self) -> None:
        self.compose("up", "-d")
        for node in NODES:
            self.wait_healthy(node)

    def down(self) -> None:
        for node in NODES:  # a paused container cannot be stopped
            if node in self._ids:
                run(["docker", "unpause", self._ids[node]], check=False)
        self.compose("down", "-v", "--remove-orphans", "-t", "2", check=False)

    def container(self, node: str) -> str:
        if node not in self._ids:
            ids = self.compose("ps", "-q", node).split()
            assert ids, f"no container for {node}"
            self._ids[node] = ids[-1]
        return self._ids[node]

    def state(self, node: str) -> dict:
        return json.loads(run(["docker", "inspect", "-f", "{{json .State}}", self.container(node)]))

    def wait_healthy(self, node: str, timeout: float = HEALTHY_TIMEOUT) -> float:
        """Waits for Docker's health check (`supermq health`) to pass; returns the seconds."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            state = self.state(node)
            if state.get("Health", {}).get("Status") == "healthy":
                return time.monotonic() - start
            time.sleep(0.25)
        raise AssertionError(f"{node} not healthy within {timeout} s: {state}")

    # Failures ---------------------------------------------------------------------------------

    def docker(self, verb: str, node: str, *args: str) -> None:
        run(["docker", verb, *args, self.container(node)])

    def routes_network(self) -> str:
        out = run([
            "docker", "network", "ls", "-q",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", "label=com.docker.compose.network=routes",
        ]).split()
        assert len(out) == 1, f"route network of {self.project}: {out}"
        return out[0]

    def cut(self, node: str) -> None:
        """Disconnects `node` from the route network; its MQTT port stays reachable."""
        run(["docker", "network", "disconnect", self.routes_network(), self.container(node)])

    def heal(self, node: str) -> None:
        """Reconnects `node` to the route network, under the alias its peers dial."""
        run(["docker", "network", "connect", "--alias", f"{node}-route",
             self.routes_network(), self.container(node)])

    # Observation ------------------------------------------------------------------------------

    def log(self, node: str) -> str:
        return run(["docker", "logs", self.container(node)], check=False)

    def wait_log(self, node: str, text: str, timeout: float, after: int = 0) -> float:
        """Waits until `node`'s log holds `text` past its first `after` characters; returns
        the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if text in self.log(node)[after:]:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"{node} did not log {text!r} within {timeout} s:\n{self.log(node)[after:]}")


def remove_leftovers(compose: list[str]) -> None:
    """Takes down projects an interrupted earlier run left behind."""
    labels = run(["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}'], check=False)
    labels += run(["docker", "network", "ls", "--format", '{{.Label "com.docker.compose.project"}}'], check=False)
    for project in sorted({p for p in labels.split() if p.startswith(PREFIX)}):
        run([*compose, "-f", str(COMPOSE_FILE), "-p", project, "down", "-v", "--remove-orphans", "-t", "1"],
            check=False)


@pytest.fixture(scope="session")
def compose() -> list[str]:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers `docker info`")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        pytest.fail(f"image {IMAGE} not found: run ./docker.sh build", pytrace=False)
    command = compose_command()
    remove_leftovers(command)
    return command


@pytest.fixture
def cluster(compose, request):
    cluster = Cluster(compose)
    try:
        cluster.up()
        yield cluster
    finally:
        # Printed, so pytest shows it under a failing test only.
        for node in NODES:
            try:
                print(f"===== {node} log =====\n{cluster.log(node)}")
            except AssertionError:
                pass
        cluster.down()
