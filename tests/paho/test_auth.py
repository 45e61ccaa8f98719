"""[auth]: who may connect (allow_anonymous, password_file, certificate names) and what they may
publish, subscribe to and receive (acl_file), with the reason codes MQTT 3.1.1 and 5.0 give,
`supermq passwd`, and SIGHUP reloads. The ACL cases follow the examples of mosquitto's
documentation (mosquitto.conf(5), "acl_file")."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CERTS, REPO_ROOT, broker_env, free_port
from mqttclient import NOT_AUTHORIZED, SUCCESS, V5, V311

BAD_USER_NAME_OR_PASSWORD = 0x86
SUBACK_FAILURE = 0x80
PACKET_ID_NOT_FOUND = 0x92
MOSQUITTO_FILE = REPO_ROOT / "tests" / "fixtures" / "mosquitto.passwd"


def passwd(supermq_bin, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(supermq_bin), "passwd", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=30,
        env=broker_env(),
    )


def make_users(supermq_bin, path: Path, users: dict[str, str]) -> Path:
    """A password file written by `supermq passwd -b` (-c for the first user)."""
    for i, (user, password) in enumerate(users.items()):
        flags = ["-c"] if i == 0 else []
        result = passwd(supermq_bin, *flags, "-b", path, user, password)
        assert result.returncode == 0, result.stderr
    return path


def login(broker, client_id, version, user=None, password=None, expect=SUCCESS, **kw):
    c = broker.client(client_id, version, **kw)
    if user is not None:
        c.client.username_pw_set(user, password)
    connack = c.connect(expect=None)
    assert connack.reason == expect, f"CONNACK 0x{connack.reason:02x}, expected 0x{expect:02x}"
    return c


def reload(broker) -> None:
    broker.proc.send_signal(signal.SIGHUP)


def wait_log(broker, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in broker.log():
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{broker.log()}"
        time.sleep(0.02)


# Authentication ---------------------------------------------------------------------------


def test_anonymous_clients_refused_when_not_allowed(broker_factory, version):
    """allow_anonymous = false: no user name → 5.0 0x87, 3.1.1 return code 5 (which Paho
    reports as 0x87); with a user name (and no password file) → accepted."""
    broker = broker_factory(auth={"allow_anonymous": False})
    refused = broker.client("anon", version)
    outcome = refused.try_connect()
    assert outcome.reason == NOT_AUTHORIZED, outcome
    login(broker, "named", version, user="someone", password="anything")
    assert "allow_anonymous" in broker.log()


def test_password_file_written_by_supermq_passwd(broker_factory, supermq_bin, tmp_path, version):
    """Right password → accepted; wrong password, unknown user, or no password → 5.0 0x86,
    3.1.1 return code 4. Anonymous clients are still let in (allow_anonymous defaults to
    true, as in mosquitto). Each failure is logged with the address and user name, never the
    password."""
    users = make_users(supermq_bin, tmp_path / "users", {"alice": "alice-pw", "bob": "bob-pw"})
    broker = broker_factory(auth={"password_file": str(users)})
    login(broker, "a1", version, "alice", "alice-pw")
    login(broker, "b1", version, "bob", "bob-pw")
    login(broker, "a2", version, "alice", "wrong-guess", expect=BAD_USER_NAME_OR_PASSWORD)
    login(broker, "m1", version, "mallory", "alice-pw", expect=BAD_USER_NAME_OR_PASSWORD)
    login(broker, "a3", version, "alice", None, expect=BAD_USER_NAME_OR_PASSWORD)
    login(broker, "anon", version)
    log = broker.log()
    assert "mallory" in log and "127.0.0.1" in log
    assert "wrong-guess" not in log, "a password must never be logged"


def test_mosquitto_passwd_file_works_unchanged(broker_factory, version):
    """A file mosquitto_passwd wrote ($7$, PBKDF2-SHA512) is read as it is."""
    broker = broker_factory(auth={"password_file": str(MOSQUITTO_FILE), "allow_anonymous": False})
    login(broker, "a", version, "alice", "alice-pw")
    login(broker, "b", version, "bob", "bob-pw")
    login(broker, "c", version, "bob", "alice-pw", expect=BAD_USER_NAME_OR_PASSWORD)


def test_passwd_round_trip_and_sighup(broker_factory, supermq_bin, tmp_path):
    """Users added, changed and deleted with `supermq passwd` take effect on SIGHUP."""
    users = make_users(supermq_bin, tmp_path / "users", {"carol": "old-pw"})
    broker = broker_factory(auth={"password_file": str(users)})
    login(broker, "c1", V5, "carol", "old-pw")
    assert passwd(supermq_bin, "-b", users, "carol", "new-pw").returncode == 0
    assert passwd(supermq_bin, "-b", users, "dave", "dave-pw").returncode == 0
    # Before the reload the old rules hold.
    login(broker, "d0", V5, "dave", "dave-pw", expect=BAD_USER_NAME_OR_PASSWORD)
    reload(broker)
    wait_log(broker, "reloaded")
    login(broker, "c2", V5, "carol", "new-pw")
    login(broker, "c3", V5, "carol", "old-pw", expect=BAD_USER_NAME_OR_PASSWORD)
    login(broker, "d1", V5, "dave", "dave-pw")
    assert passwd(supermq_bin, "-D", users, "dave").returncode == 0
    reload(broker)
    deadline = time.monotonic() + 5
    while broker.log().count("reloaded") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    login(broker, "d2", V5, "dave", "dave-pw", expect=BAD_USER_NAME_OR_PASSWORD)


def test_failed_attempts_are_slowed_per_address(broker_factory, supermq_bin, tmp_path):
    """With failed_auth_per_ip_per_sec = 2, ten wrong guesses from one address take about
    four seconds (a burst of two, then one every half second), while right passwords are not
    slowed, and the right password is still accepted afterwards."""
    users = make_users(supermq_bin, tmp_path / "users", {"erin": "erin-pw"})
    broker = broker_factory(auth={"password_file": str(users), "failed_auth_per_ip_per_sec": 2})
    started = time.monotonic()
    for i in range(8):
        login(broker, f"right{i}", V5, "erin", "erin-pw")
    took = time.monotonic() - started
    assert took < 2.0, f"8 right passwords took {took:.2f} s: only failures may be slowed"
    started = time.monotonic()
    for i in range(10):
        login(broker, f"g{i}", V5, "erin", f"guess-{i}", expect=BAD_USER_NAME_OR_PASSWORD)
    took = time.monotonic() - started
    assert took >= 3.0, f"10 guesses took only {took:.2f} s"
    time.sleep(1.0)
    login(broker, "ok", V5, "erin", "erin-pw")


def test_bad_password_file_stops_start_up(supermq_bin, tmp_path):
    """A `$6$` line (mosquitto's old format), or a missing file, is exit 2 naming the file,
    line and reason."""
    bad = tmp_path / "old.passwd"
    bad.write_text("# users\nalice:$6$c2FsdA==$aGFzaA==\n")
    for path, expected in ((bad, f"{bad}:2"), (tmp_path / "missing", "missing")):
        config = tmp_path / "c.toml"
        config.write_text(f'[mqtt]\ntcp = "127.0.0.1:0"\n[auth]\npassword_file = "{path}"\n')
        result = subprocess.run(
            [str(supermq_bin), "-c", str(config)], capture_output=True, text=True, timeout=10, env=broker_env()
        )
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr, result.stderr


def test_certificate_name_is_the_user_name(broker_factory, tmp_path):
    """tls.use_identity_as_username: the client certificate's CN is the user name, for the
    ACL; no password is asked."""
    acl = tmp_path / "acl"
    acl.write_text("user supermq test client\ntopic readwrite certified/#\n")
    broker = broker_factory(
        ("tcp", "tls"),
        tls={
            "cert": str(CERTS / "server.pem"),
            "key": str(CERTS / "server.key"),
            "client_ca": str(CERTS / "ca.pem"),
            "use_identity_as_username": True,
        },
        auth={"acl_file": str(acl), "allow_anonymous": False},
    )
    tls = {"certfile": str(CERTS / "client.pem"), "keyfile": str(CERTS / "client.key")}
    c = login(broker, "cert", V5, kind="tls", **tls)
    assert c.subscribe("certified/#", 1) == [1]
    assert c.subscribe("other/#", 1) == [NOT_AUTHORIZED]
    assert c.publish("certified/x", b"hi", 1) == SUCCESS
    assert c.next_message().topic == "certified/x"
    # Plain TCP has no certificate: a user name is still required there.
    assert broker.client("tcp", V5).try_connect().reason == NOT_AUTHORIZED


# Authorization ----------------------------------------------------------------------------

MOSQUITTO_EXAMPLE = """\
# This affects access control for clients with no username.
topic read $SYS/#

# This only affects clients with username "roger".
user roger
topic foo/bar

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
"""


def acl_broker(broker_factory, tmp_path, text: str, **auth):
    path = tmp_path / "acl"
    path.write_text(text)
    broker = broker_factory(auth={"acl_file": str(path), **auth})
    broker.acl_path = path
    return broker


def test_mosquitto_documentation_example(broker_factory, tmp_path, version):
    broker = acl_broker(broker_factory, tmp_path, MOSQUITTO_EXAMPLE)
    anon = login(broker, "anon", version)
    denied = NOT_AUTHORIZED if version == V5 else SUBACK_FAILURE
    assert anon.subscribe([("$SYS/#", 0), ("foo/bar", 0), ("#", 0)]) == [0, denied, denied]
    roger = login(broker, "roger-1", version, "roger", "x")
    assert roger.subscribe([("foo/bar", 1), ("foo/#", 1), ("$SYS/#", 0)]) == [1, denied, denied]
    # roger may publish to foo/bar and read it back.
    assert roger.publish("foo/bar", b"1", 1) == SUCCESS
    assert roger.next_message().payload == b"1"


def test_publish_denied(broker_factory, tmp_path, version):
    """A publish the ACL denies: 5.0 PUBACK/PUBREC 0x87; 3.1.1 acked all the same (it has no
    way to say no); QoS 0 dropped; in every case nothing is delivered."""
    broker = acl_broker(
        broker_factory, tmp_path, "topic read #\ntopic write open/#\nuser watcher\ntopic read #\n"
    )
    watcher = login(broker, "watcher", V5, "watcher", "x")
    assert watcher.subscribe("#", 2) == [2]
    pub = login(broker, "pub", version)
    expected = NOT_AUTHORIZED if version == V5 else SUCCESS
    assert pub.publish("closed/1", b"q1", 1) == expected
    # QoS 2: Paho sends PUBREL even after a PUBREC of 0x87 (MQTT 5 §4.3.3 says it must not),
    # and reports the PUBCOMP's 0x92 "packet identifier not found"; 3.1.1 completes.
    assert pub.publish("closed/2", b"q2", 2) == (PACKET_ID_NOT_FOUND if version == V5 else SUCCESS)
    pub.publish("closed/0", b"q0", 0)
    assert pub.publish("open/fence", b"", 1) == SUCCESS
    assert watcher.messages_until("open/fence") == []


def test_patterns_for_client_id_and_user_name(broker_factory, tmp_path, version):
    broker = acl_broker(
        broker_factory,
        tmp_path,
        "pattern readwrite devices/%c/#\npattern read users/%u/inbox\nuser admin\ntopic readwrite #\n",
    )
    admin = login(broker, "admin", V5, "admin", "x")
    dev = login(broker, "dev7", version, "eve", "x")
    denied = NOT_AUTHORIZED if version == V5 else SUBACK_FAILURE
    assert dev.subscribe([("devices/dev7/#", 1), ("devices/+/#", 1), ("users/eve/inbox", 1), ("users/bob/inbox", 1)]) == [
        1,
        denied,
        1,
        denied,
    ]
    assert dev.publish("devices/dev7/temp", b"21", 1) == SUCCESS
    assert dev.next_message().topic == "devices/dev7/temp"
    admin.publish("users/eve/inbox", b"hello", 1)
    assert dev.next_message().payload == b"hello"
    # eve may not write to her inbox (read only), nor to another device.
    assert admin.subscribe("#", 1) == [1]
    dev.publish("users/eve/inbox", b"x", 1)
    dev.publish("devices/dev8/temp", b"x", 1)
    dev.publish("devices/dev7/fence", b"", 1)
    got = admin.messages_until("devices/dev7/fence")
    assert got == [], got


def test_deny_wins_and_each_delivery_is_checked(broker_factory, tmp_path, version):
    """readwrite a/# with deny a/secret/#: a/# is granted, a/secret/# is not, and messages on
    a/secret/... never reach the a/# subscriber — retained ones included."""
    broker = acl_broker(broker_factory, tmp_path, "topic readwrite a/#\ntopic deny a/secret/#\nuser admin\ntopic #\n")
    admin = login(broker, "admin", V5, "admin", "x")
    admin.publish("a/secret/r", b"retained secret", 1, retain=True)
    admin.publish("a/open/r", b"retained open", 1, retain=True)
    sub = login(broker, "sub", version)
    denied = NOT_AUTHORIZED if version == V5 else SUBACK_FAILURE
    assert sub.subscribe([("a/#", 1), ("a/secret/#", 1)]) == [1, denied]
    retained = sub.next_message()
    assert retained.topic == "a/open/r" and retained.retain
    admin.publish("a/secret/live", b"no", 1)
    admin.publish("a/fence", b"", 1)
    assert sub.messages_until("a/fence") == []


def test_group_subscriptions_are_checked_on_their_filter(broker_factory, tmp_path, version):
    broker = acl_broker(broker_factory, tmp_path, "topic readwrite jobs/#\n")
    worker = login(broker, "w", version)
    denied = NOT_AUTHORIZED if version == V5 else SUBACK_FAILURE
    assert worker.subscribe([("$share/g/jobs/#", 1), ("$g/g/jobs/#", 1), ("$share/g/other/#", 1), ("$g/jobs/x", 1)]) == [
        1,
        1,
        denied,
        denied,
    ]
    assert worker.publish("jobs/1", b"j", 1) == SUCCESS
    assert worker.next_message().payload == b"j"


def test_will_checked_when_published(broker_factory, tmp_path, version):
    """A Will goes out only if its client may write to its topic when it is published."""
    broker = acl_broker(broker_factory, tmp_path, "topic read #\ntopic write wills/ok\n")
    sub = login(broker, "sub", V5)
    assert sub.subscribe("wills/#", 1) == [1]
    for topic in ("wills/denied", "wills/ok"):
        c = broker.client(f"dying-{topic[6:]}", version)
        c.will_set(topic, b"gone", 1)
        c.connect()
        c.drop()
    assert sub.next_message().topic == "wills/ok"
    sub.assert_no_message(0.5)


def test_sighup_applies_new_rules_to_existing_subscriptions(broker_factory, tmp_path, version):
    """A rule change reaches a subscription made under the old rules: after SIGHUP, messages
    it no longer may read are not delivered."""
    broker = acl_broker(broker_factory, tmp_path, "topic readwrite news/#\n")
    sub = login(broker, "sub", version)
    assert sub.subscribe("news/#", 1) == [1]
    pub = login(broker, "pub", version)
    pub.publish("news/1", b"before", 1)
    assert sub.next_message().payload == b"before"
    broker.acl_path.write_text("topic write news/#\ntopic read news/public/#\n")
    reload(broker)
    wait_log(broker, "reloaded")
    pub.publish("news/2", b"after", 1)
    pub.publish("news/public/fence", b"", 1)
    assert sub.messages_until("news/public/fence") == []


def test_broken_reload_keeps_the_previous_rules(broker_factory, tmp_path):
    """A broken ACL on SIGHUP is logged with file, line and reason; the old rules stay (the
    broker never opens up)."""
    broker = acl_broker(broker_factory, tmp_path, "topic readwrite ok/#\n")
    broker.acl_path.write_text("topic readwrite ok/#\nthis is not a rule\n")
    reload(broker)
    wait_log(broker, f"{broker.acl_path}:2")
    c = login(broker, "c", V5)
    assert c.subscribe([("ok/#", 1), ("#", 1)]) == [1, NOT_AUTHORIZED]


def test_bad_acl_stops_start_up(supermq_bin, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user a\ntopic read a/#/b\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[mqtt]\ntcp = "127.0.0.1:0"\n[auth]\nacl_file = "{acl}"\n')
    result = subprocess.run(
        [str(supermq_bin), "-c", str(config)], capture_output=True, text=True, timeout=10, env=broker_env()
    )
    assert result.returncode == 2, result.stderr
    assert f"{acl}:2" in result.stderr, result.stderr


def test_open_broker_warning(supermq_bin, tmp_path):
    """One warning at start-up when anyone can connect (anonymous allowed, no password file,
    a listener beyond loopback), none when the listener is loopback only."""
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False)):
        config = tmp_path / "c.toml"
        config.write_text(f'[mqtt]\ntcp = "{host}:{free_port()}"\n')
        log = tmp_path / f"{host}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(supermq_bin), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, env=broker_env()
            )
        deadline = time.monotonic() + 10
        while "supermq started" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert ("open to anyone" in log.read_text()) == warned, log.read_text()


def test_a_session_is_not_resumed_by_another_user(broker_factory, version):
    """A persistent session belongs to the user that made it: the same client id with another
    user name starts afresh (session present 0) and gets none of the queued messages."""
    broker = broker_factory()
    expiry = {"clean_session": False} if version == V311 else {}
    first = broker.client("shared-id", version, **expiry)
    first.client.username_pw_set("alice", "x")
    props = None
    if version == V5:
        from mqttclient import connect_props

        props = connect_props(SessionExpiryInterval=300)
    first.connect(clean_start=False, properties=props)
    assert first.subscribe("inbox/#", 1) == [1]
    first.disconnect()
    pub = login(broker, "pub", version)
    pub.publish("inbox/1", b"for alice", 1)
    second = broker.client("shared-id", version, **expiry)
    second.client.username_pw_set("mallory", "x")
    connack = second.connect(clean_start=False, properties=props)
    assert not connack.session_present
    second.assert_no_message(0.5)
    assert "another user name" in broker.log()
