"""Sessions: persistence across connections, expiry, and takeover by a second connection."""

import time

from mqttclient import SESSION_TAKEN_OVER, SUCCESS, V5, V311, connect_props


def connect_persistent(broker, client_id, version, clean, expiry=60):
    """A client whose session outlives the connection: 3.1.1 clean session = ``clean`` (so it
    persists only with ``clean=False``), 5 clean start = ``clean`` and Session Expiry Interval
    ``expiry``. With a new client id, ``clean=False`` simply starts a new session."""
    if version == V311:
        client = broker.client(client_id, V311, clean_session=clean)
        return client, client.connect()
    client = broker.client(client_id, V5)
    return client, client.connect(clean_start=clean, properties=connect_props(SessionExpiryInterval=expiry))


def test_persistent_session_queues_messages_while_offline(broker, version):
    """A client that reconnects to its stored session gets session present = 1 and the QoS 1
    and 2 messages published while it was away, in order (3.1.1: MQTT-3.1.2-4, MQTT-3.2.2-2;
    5: MQTT-3.1.2-5, MQTT-3.2.2-2)."""
    sub, connack = connect_persistent(broker, "persist", version, clean=False)
    assert connack.session_present is False
    assert sub.subscribe([("ps/a", 1), ("ps/b", 2)]) == [1, 2]
    sub.disconnect()

    pub = broker.connected("pub", version)
    expected = []
    for i in range(5):
        topic, qos = ("ps/a", 1) if i % 2 == 0 else ("ps/b", 2)
        pub.publish(topic, f"offline {i}".encode(), qos)
        expected.append((topic, f"offline {i}".encode(), qos))

    back, connack = connect_persistent(broker, "persist", version, clean=False)
    assert connack.session_present is True
    got = back.collect(len(expected))
    # QoS 1 and 2 interleave differently in Paho (QoS 2 is handed over on PUBREL), so
    # compare the order within each QoS.
    for qos in (1, 2):
        assert [(m.topic, m.payload, m.qos) for m in got if m.qos == qos] == [e for e in expected if e[2] == qos]

    # The subscriptions are still there: live messages keep arriving.
    pub.publish("ps/a", b"live", 1)
    assert back.next_message().payload == b"live"


def test_clean_start_discards_the_stored_session(broker, version):
    """Connecting with clean session / clean start = 1 discards the stored session: session
    present = 0, nothing queued is delivered, and the old subscriptions are gone
    (MQTT-3.1.2-6 in 3.1.1; MQTT-3.1.2-4 in 5)."""
    sub, _ = connect_persistent(broker, "wiped", version, clean=False)
    sub.subscribe("wipe/t", 1)
    sub.disconnect()
    pub = broker.connected("pub", version)
    pub.publish("wipe/t", b"queued", 1)

    again, connack = connect_persistent(broker, "wiped", version, clean=True)
    assert connack.session_present is False
    again.subscribe("fence", 1)
    pub.publish("wipe/t", b"live", 1)
    pub.publish("fence", b"", 1)
    assert again.messages_until("fence") == []


def test_v5_session_without_expiry_ends_with_the_connection(broker):
    """MQTT 5: without a Session Expiry Interval (0), the session ends when the connection
    closes, so clean start = 0 finds none (MQTT 5 §3.1.2.11.2, MQTT-3.2.2-3)."""
    first = broker.connected("short-lived", V5)
    first.subscribe("short/t", 1)
    first.disconnect()
    again = broker.client("short-lived", V5)
    connack = again.connect(clean_start=False)
    assert connack.session_present is False


def test_v5_session_expires_after_its_interval(broker):
    """A session whose Session Expiry Interval has passed is gone: session present = 0
    (MQTT 5 §3.1.2.11.2). Waits out a 1 s expiry."""
    first, _ = connect_persistent(broker, "expiring", V5, clean=False, expiry=1)
    first.subscribe("expire/t", 1)
    first.disconnect()
    time.sleep(2.0)  # the interval must really pass; nothing to wait on
    again, connack = connect_persistent(broker, "expiring", V5, clean=False)
    assert connack.session_present is False


def test_second_connection_with_same_client_id_takes_over(broker, version):
    """A CONNECT with the client id of a connected client closes the older connection
    (MQTT-3.1.4-3 in 3.1.1 — no DISCONNECT there; in 5 the broker first sends DISCONNECT with
    reason 0x8E Session taken over), and the new one works."""
    first = broker.connected("same-id", version)
    first.subscribe("takeover/t", 1)
    second = broker.connected("same-id", version)
    gone = first.wait_disconnected()
    if version == V5:
        assert gone.from_broker, "MQTT 5: expected a DISCONNECT packet from the broker"
        assert gone.reason == SESSION_TAKEN_OVER
    assert second.subscribe("takeover/t", 1) == [1]
    pub = broker.connected("pub", version)
    pub.publish("takeover/t", b"to the new one", 1)
    assert second.next_message().payload == b"to the new one"


def test_takeover_resumes_a_persistent_session(broker, version):
    """Taking over with clean start = 0 resumes the session: session present = 1 and the
    subscription made by the first connection delivers to the second."""
    first, _ = connect_persistent(broker, "roamer", version, clean=False)
    first.subscribe("roam/t", 1)
    second, connack = connect_persistent(broker, "roamer", version, clean=False)
    assert connack.reason == SUCCESS
    assert connack.session_present is True
    first.wait_disconnected()
    pub = broker.connected("pub", version)
    pub.publish("roam/t", b"follows the session", 1)
    assert second.next_message().payload == b"follows the session"
