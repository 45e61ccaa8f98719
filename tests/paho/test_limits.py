"""The [limits] of the configuration, as a client meets them (config/appserver.conf says what
happens at each)."""

import time

from mqttclient import (
    CLIENT_ID_NOT_VALID,
    PACKET_TOO_LARGE,
    QUOTA_EXCEEDED,
    SERVER_UNAVAILABLE,
    SUCCESS,
    TOPIC_FILTER_INVALID,
    TOPIC_NAME_INVALID,
    UNSPECIFIED_ERROR,
    V5,
    V311,
    Connack,
    connect_props,
)


def test_too_large_packet_closes_the_connection(broker_factory, version):
    """A packet larger than max_packet_size ends the sender's connection — MQTT 5 with
    DISCONNECT 0x95 Packet too large (MQTT 5 §3.2.2.3.6, §4.13) — and is not
    delivered; a packet within the limit, and other clients, are unaffected."""
    broker = broker_factory(limits={"max_packet_size": 1024})
    sub = broker.connected("sub", version)
    sub.subscribe("big/#", 1)
    pub = broker.connected("pub", version)
    pub.publish("big/ok", b"x" * 900, 1)
    assert sub.next_message().payload == b"x" * 900

    pub.publish_nowait("big/too", b"x" * 2000, 1)
    gone = pub.wait_disconnected()
    if version == V5:
        assert gone.from_broker, "MQTT 5: expected DISCONNECT from the broker"
        assert gone.reason == PACKET_TOO_LARGE

    other = broker.connected("other", version)
    other.publish("big/fence", b"", 1)
    assert sub.messages_until("big/fence") == [], "the oversized message must not be delivered"


def test_max_connections_refuses_the_next_client(broker_factory, version):
    """Past max_connections a CONNECT is refused: MQTT 5 CONNACK 0x97 Quota exceeded, 3.1.1
    return code 3 Server unavailable (which Paho reports as 0x88). Once a client leaves,
    a new one is accepted again."""
    broker = broker_factory(limits={"max_connections": 2})
    first = broker.connected("c1", version)
    broker.connected("c2", version)
    refused = broker.client("c3", version)
    outcome = refused.try_connect()
    assert isinstance(outcome, Connack), outcome
    assert outcome.reason == (QUOTA_EXCEEDED if version == V5 else SERVER_UNAVAILABLE)
    refused.wait_disconnected()

    first.disconnect()
    deadline = time.monotonic() + 5
    while True:  # the broker counts the closed connection down asynchronously
        retry = broker.client("c4", version)
        outcome = retry.try_connect()
        if isinstance(outcome, Connack) and outcome.reason == SUCCESS:
            break
        assert time.monotonic() < deadline, f"still refused after a client left: {outcome}"
        time.sleep(0.05)


def test_max_subscriptions_fails_the_extra_subscription(broker_factory, version):
    """Past max_subscriptions a new filter fails in the SUBACK (MQTT 5: 0x97 Quota exceeded;
    3.1.1: 0x80) while the others in the same SUBSCRIBE succeed; re-subscribing to an existing
    filter is not a new subscription, and unsubscribing frees a place."""
    broker = broker_factory(limits={"max_subscriptions": 2})
    c = broker.connected("subs", version)
    failure = QUOTA_EXCEEDED if version == V5 else UNSPECIFIED_ERROR
    assert c.subscribe([("s/a", 1), ("s/b", 1), ("s/c", 1)]) == [1, 1, failure]
    assert c.subscribe("s/a", 2) == [2]
    c.unsubscribe("s/b")
    assert c.subscribe("s/c", 1) == [1]
    c.publish("s/c", b"works", 1)
    assert c.next_message().payload == b"works"


def test_too_long_topic_filter_fails_in_suback(broker_factory, version):
    """A filter longer than max_topic_length, or deeper than max_topic_levels, fails in the
    SUBACK: MQTT 5 0x8F Topic Filter invalid, 3.1.1 0x80."""
    broker = broker_factory(limits={"max_topic_length": 16, "max_topic_levels": 3})
    c = broker.connected("long", version)
    failure = TOPIC_FILTER_INVALID if version == V5 else UNSPECIFIED_ERROR
    assert c.subscribe([("x" * 17, 1), ("x" * 16, 1), ("a/b/c/d", 1), ("a/b/c", 1)]) == [failure, 1, failure, 1]


def test_v5_too_long_topic_name_is_refused_in_puback(broker_factory):
    """MQTT 5: a PUBLISH to a topic past max_topic_length is refused with PUBACK 0x90 Topic
    Name invalid and not delivered; the connection stays usable."""
    broker = broker_factory(limits={"max_topic_length": 16})
    sub = broker.connected("sub", V5)
    sub.subscribe("#", 1)
    pub = broker.connected("pub", V5)
    assert pub.publish("y" * 17, b"too long", 1) == TOPIC_NAME_INVALID
    assert pub.publish("fence", b"", 1) == SUCCESS
    assert sub.messages_until("fence") == []


def test_v311_too_long_topic_name_closes_the_connection(broker_factory):
    """MQTT 3.1.1 has no negative PUBACK: a PUBLISH to a topic past max_topic_length closes
    the connection, and the message is not delivered."""
    broker = broker_factory(limits={"max_topic_length": 16})
    sub = broker.connected("sub", V311)
    sub.subscribe("#", 1)
    pub = broker.connected("pub", V311)
    pub.publish_nowait("y" * 17, b"too long", 1)
    pub.wait_disconnected()
    broker.connected("other", V311).publish("fence", b"", 1)
    assert sub.messages_until("fence") == []


def test_too_long_client_id_is_refused(broker_factory, version):
    """A client id longer than max_client_id_length is refused: MQTT 5 CONNACK 0x85 Client
    Identifier not valid; 3.1.1 return code 2 Identifier rejected (Paho reports 0x85)."""
    broker = broker_factory(limits={"max_client_id_length": 30})
    assert broker.client("i" * 30, version).try_connect().reason == SUCCESS
    outcome = broker.client("i" * 31, version).try_connect()
    assert isinstance(outcome, Connack), outcome
    assert outcome.reason == CLIENT_ID_NOT_VALID


def test_v5_keep_alive_and_session_expiry_are_capped_in_connack(broker_factory):
    """MQTT 5: a keep alive above max_keep_alive is answered with Server Keep Alive
    (MQTT-3.2.2-21), a session expiry above max_session_expiry_secs with the granted Session
    Expiry Interval (MQTT 5 §3.2.2.3.2)."""
    broker = broker_factory(limits={"max_keep_alive": 10, "max_session_expiry_secs": 5})
    c = broker.client("capped", V5)
    p = c.connect(keepalive=60, properties=connect_props(SessionExpiryInterval=100)).properties
    assert p.ServerKeepAlive == 10
    assert p.SessionExpiryInterval == 5


def test_offline_queue_is_bounded_by_max_queued_messages(broker_factory, version):
    """A persistent session keeps at most max_queued_messages messages while offline; later
    ones are dropped (the oldest are kept) and the publisher is not affected. QoS 0 messages
    are not queued for an offline session (MQTT-3.1.2-5 leaves that to the server;
    config/appserver.conf documents it)."""
    broker = broker_factory(limits={"max_queued_messages": 3})
    sub = broker.client("offline", version, clean_session=False)
    if version == V5:
        sub.connect(clean_start=False, properties=connect_props(SessionExpiryInterval=60))
    else:
        sub.connect()
    sub.subscribe("q/#", 1)
    sub.disconnect()

    pub = broker.connected("pub", version)
    pub.publish("q/zero", b"qos 0", 0)
    for i in range(6):
        assert pub.publish("q/t", str(i).encode(), 1) == SUCCESS

    back = broker.client("offline", version, clean_session=False)
    if version == V5:
        back.connect(clean_start=False, properties=connect_props(SessionExpiryInterval=60))
    else:
        back.connect()
    # By the CONNACK the queued messages have moved into the in-flight window, so the queue
    # has room for the fence.
    pub.publish("q/fence", b"", 1)
    assert [m.payload for m in back.messages_until("q/fence")] == [b"0", b"1", b"2"]
