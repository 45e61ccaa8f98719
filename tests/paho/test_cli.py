"""The command line and process contract (README, Command line): --help/--version, configuration
errors (exit code 2, one line naming the key), environment overrides, and SIGTERM."""

import signal
import socket
import subprocess
import time

import pytest

from conftest import CERTS, HOST, REPO_ROOT, broker_env, free_port
from mqttclient import QUOTA_EXCEEDED, SERVER_SHUTTING_DOWN, V5, V311

RUN_TIMEOUT = 10


def run(supermq_bin, *args, env=None):
    return subprocess.run(
        [str(supermq_bin), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=broker_env(env),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )


def run_config(supermq_bin, tmp_path, text, env=None):
    """Runs the broker on a configuration that must make it stop at start-up."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    try:
        return path, run(supermq_bin, "-c", str(path), env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"supermq kept running on a configuration it must refuse:\n{text}")


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_help_exits_0(supermq_bin):
    result = run(supermq_bin, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert "--config" in result.stdout


def test_version_exits_0(supermq_bin):
    result = run(supermq_bin, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("supermq "), result.stdout
    assert any(ch.isdigit() for ch in result.stdout)


def test_unknown_key_exits_2_naming_the_key(supermq_bin, tmp_path):
    """An unknown key is an error, not ignored: exit 2 and one line naming file and key."""
    path, result = run_config(supermq_bin, tmp_path, '[mqtt]\ntcp = "127.0.0.1:0"\n[limits]\nmax_conections = 5\n')
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, f"expected one line on stderr, got: {lines}"
    assert "max_conections" in lines[0]
    assert path.name in lines[0], "the line should name the file"


def test_unknown_section_exits_2_naming_it(supermq_bin, tmp_path):
    _, result = run_config(supermq_bin, tmp_path, '[mqtt]\ntcp = "127.0.0.1:0"\n[limitz]\nmax_connections = 5\n')
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "limitz" in lines[0], lines


def test_wrong_type_exits_2_naming_the_key(supermq_bin, tmp_path):
    _, result = run_config(supermq_bin, tmp_path, '[mqtt]\ntcp = "127.0.0.1:0"\n[limits]\nmax_connections = "many"\n')
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "max_connections" in lines[0], lines


def test_unknown_environment_override_exits_2_naming_it(supermq_bin, tmp_path):
    _, result = run_config(
        supermq_bin, tmp_path, '[mqtt]\ntcp = "127.0.0.1:0"\n', env={"SUPERMQ_LIMITS_MAX_NOTHING": "1"}
    )
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "SUPERMQ_LIMITS_MAX_NOTHING" in lines[0], lines


def test_address_in_use_exits_2_naming_the_listener(supermq_bin, tmp_path):
    """A listener address that is taken stops start-up with exit code 2 and names the key."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        _, result = run_config(supermq_bin, tmp_path, f'[mqtt]\ntcp = "{HOST}:{port}"\n')
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "mqtt.tcp" in lines[0], lines


def test_unreadable_certificate_exits_2_naming_the_key(supermq_bin, tmp_path):
    missing = tmp_path / "no-such-cert.pem"
    _, result = run_config(
        supermq_bin,
        tmp_path,
        f'[mqtt]\ntcp = ""\ntls = "{HOST}:{free_port()}"\n'
        f'[tls]\ncert = "{missing}"\nkey = "{CERTS / "server.key"}"\n',
    )
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "tls" in lines[0] and "no-such-cert.pem" in lines[0], lines


def test_environment_overrides_the_file(broker_factory):
    """SUPERMQ_<SECTION>_<KEY> wins over the file: here SUPERMQ_LIMITS_MAX_SUBSCRIPTIONS=1
    against max_subscriptions = 5 in the file."""
    broker = broker_factory(limits={"max_subscriptions": 5}, env={"SUPERMQ_LIMITS_MAX_SUBSCRIPTIONS": "1"})
    c = broker.connected("env", V5)
    assert c.subscribe([("e/a", 0), ("e/b", 0)]) == [0, QUOTA_EXCEEDED]


def test_shipped_appserver_conf_starts(supermq_bin, tmp_path):
    """config/appserver.conf is a valid configuration (with the listener moved to a free
    port through the environment)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(supermq_bin), "-c", str(REPO_ROOT / "config" / "appserver.conf")],
        env=broker_env({"SUPERMQ_MQTT_TCP": f"{HOST}:{port}"}),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"exited with {proc.returncode}: {proc.stderr.read()}"
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "not listening on SUPERMQ_MQTT_TCP"
                time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_disconnects_clients_and_exits_0(broker):
    """SIGTERM shuts down gracefully: an MQTT 5 client receives DISCONNECT 0x8B Server
    shutting down, a 3.1.1 client's connection is closed, and the process exits 0 promptly."""
    v5 = broker.connected("v5", V5)
    v3 = broker.connected("v3", V311)
    ws = broker.connected("ws", V5, "ws")
    started = time.monotonic()
    broker.proc.send_signal(signal.SIGTERM)
    for client in (v5, ws):
        gone = client.wait_disconnected()
        assert gone.from_broker, "expected a DISCONNECT packet"
        assert gone.reason == SERVER_SHUTTING_DOWN
    v3.wait_disconnected()
    code = broker.proc.wait(5)
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 3, f"took {elapsed:.1f} s to exit"
