"""Connect, publish and subscribe end to end, MQTT 3.1.1 and 5."""

import os

import pytest

from mqttclient import NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED, SUCCESS, V5, V311


def test_connect_and_disconnect(broker, version):
    """CONNECT is answered by a successful CONNACK without a session (clean start), and a
    normal DISCONNECT closes the connection (MQTT-3.2.2-1, MQTT-3.14.4-1)."""
    client = broker.client("conn-1", version)
    connack = client.connect()
    assert connack.session_present is False
    client.disconnect()
    assert client.disconnect_info.from_broker is False


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_reaches_subscriber_with_payload_intact(broker, version, qos):
    """A message published at QoS 0/1/2 arrives once, at that QoS, on its topic, with every
    payload byte as sent: binary bytes including 0x00, and an empty payload."""
    sub = broker.connected("sub", version)
    assert sub.subscribe("data/+", qos) == [qos]
    pub = broker.connected("pub", version)
    payloads = [os.urandom(1000) + b"\x00\xff\x00", b"", "text é ✓".encode(), os.urandom(100_000)]
    for i, payload in enumerate(payloads):
        pub.publish(f"data/{i}", payload, qos)
    got = sub.collect(len(payloads))
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        (f"data/{i}", payload, qos, False) for i, payload in enumerate(payloads)
    ]
    # Exactly once each: a fence after them shows no duplicate followed.
    pub.publish("data/fence", b"", qos)
    assert sub.messages_until("data/fence") == []


def test_delivery_qos_is_minimum_of_publish_and_subscription(broker, version):
    """Each subscriber gets a message at the lower of the publish QoS and the QoS it was
    granted (MQTT-3.8.4-8 / MQTT 5 §3.8.4)."""
    subs = {}
    for sub_qos in (0, 1, 2):
        subs[sub_qos] = broker.connected(f"sub{sub_qos}", version)
        assert subs[sub_qos].subscribe("qos/t", sub_qos) == [sub_qos]
    pub = broker.connected("pub", version)
    for pub_qos in (0, 1, 2):
        pub.publish("qos/t", f"at {pub_qos}".encode(), pub_qos)
    for sub_qos, sub in subs.items():
        got = sub.collect(3)
        assert [(m.payload, m.qos) for m in got] == [
            (f"at {pub_qos}".encode(), min(pub_qos, sub_qos)) for pub_qos in (0, 1, 2)
        ], f"subscriber at QoS {sub_qos}"


def test_many_messages_in_order(broker, version):
    """A burst of QoS 1 messages from one publisher arrives complete and in order
    (MQTT 4.6: ordered topics)."""
    sub = broker.connected("sub", version)
    sub.subscribe("burst", 1)
    pub = broker.connected("pub", version)
    infos = [pub.publish_nowait("burst", str(i).encode(), 1) for i in range(300)]
    for info in infos:
        info.wait_for_publish(5)
    got = sub.collect(300)
    assert [m.payload for m in got] == [str(i).encode() for i in range(300)]


WILDCARD_CASES = {
    # filter: topics (of the published set) it must receive
    "sport/tennis/+": ["sport/tennis/player1", "sport/tennis/player2"],
    "sport/#": ["sport", "sport/tennis/player1", "sport/tennis/player2", "sport/tennis/player1/ranking", "sport/"],
    "sport/+": ["sport/"],
    "+/tennis/#": ["sport/tennis/player1", "sport/tennis/player2", "sport/tennis/player1/ranking"],
    "+": ["sport"],
    "#": ["sport", "sport/tennis/player1", "sport/tennis/player2", "sport/tennis/player1/ranking", "sport/", "/finance"],
    "+/+": ["sport/", "/finance"],
    "/+": ["/finance"],
    "sport/tennis/player1": ["sport/tennis/player1"],
}
WILDCARD_TOPICS = ["sport", "sport/tennis/player1", "sport/tennis/player2", "sport/tennis/player1/ranking", "sport/", "/finance"]


def test_wildcard_subscriptions_match_the_spec_examples(broker, version):
    """`+` matches exactly one level (possibly empty), `#` any number of levels including the
    parent itself: `sport/#` receives `sport` (MQTT 4.7.1.2, 4.7.1.3, MQTT-4.7.1-2)."""
    subs = {}
    for i, filter_ in enumerate(WILDCARD_CASES):
        subs[filter_] = broker.connected(f"wild{i}", version)
        # every subscriber also gets the fence that marks the end of the published set
        subs[filter_].subscribe([(filter_, 1), ("fence", 1)])
    pub = broker.connected("pub", version)
    for topic in WILDCARD_TOPICS:
        pub.publish(topic, topic.encode(), 1)
    pub.publish("fence", b"", 1)
    for filter_, expected in WILDCARD_CASES.items():
        got = subs[filter_].messages_until("fence")
        assert sorted(m.topic for m in got) == sorted(expected), f"filter {filter_!r}"


def test_unsubscribe_stops_delivery(broker, version):
    """After UNSUBACK no more messages arrive on the removed filter (MQTT-3.10.4-2)."""
    sub = broker.connected("sub", version)
    sub.subscribe([("un/a", 1), ("un/fence", 1)])
    pub = broker.connected("pub", version)
    pub.publish("un/a", b"before", 1)
    assert sub.next_message().payload == b"before"
    codes = sub.unsubscribe("un/a")
    if version == V5:
        assert codes == [SUCCESS]
    pub.publish("un/a", b"after", 1)
    pub.publish("un/fence", b"", 1)
    assert sub.messages_until("un/fence") == []


def test_filter_starting_with_wildcard_does_not_match_dollar_topics(broker, version):
    """`#` and `+/...` do not match topics beginning with `$`; `$x/#` does (MQTT-4.7.2-1)."""
    everything = broker.connected("all", version)
    everything.subscribe([("#", 1), ("+/status", 1)])
    dollar = broker.connected("dollar", version)
    dollar.subscribe("$internal/#", 1)
    pub = broker.connected("pub", version)
    pub.publish("$internal/status", b"hidden", 1)
    pub.publish("fence", b"", 1)
    assert everything.messages_until("fence") == []
    got = dollar.next_message()
    assert (got.topic, got.payload) == ("$internal/status", b"hidden")


def test_clients_cannot_publish_to_sys(broker):
    """A client's PUBLISH to `$SYS/...` is refused: MQTT 5 PUBACK 0x87 Not authorized, and no
    subscriber — not even one to `$SYS/#` — receives it (README, MQTT support; MQTT 5 §4.7.2)."""
    everything = broker.connected("all", V5)
    everything.subscribe([("#", 1), ("$SYS/#", 1)])
    pub = broker.connected("pub", V5)
    assert pub.publish("$SYS/x", b"forged", 1) == NOT_AUTHORIZED
    assert pub.publish("fence", b"", 1) == SUCCESS
    # The broker's own $SYS/broker/ tree does arrive; the forged message does not.
    got = everything.messages_until("fence")
    assert [m for m in got if not m.topic.startswith("$SYS/broker/")] == []


def test_clients_cannot_publish_to_sys_v311(broker):
    """MQTT 3.1.1 has no negative PUBACK: the publish is acknowledged and dropped, and the
    connection stays usable."""
    everything = broker.connected("all", V311)
    everything.subscribe([("#", 1), ("$SYS/#", 1)])
    pub = broker.connected("pub", V311)
    pub.publish("$SYS/x", b"forged", 1)
    pub.publish("fence", b"", 1)
    got = everything.messages_until("fence")
    assert [m for m in got if not m.topic.startswith("$SYS/broker/")] == []


def test_v5_puback_says_when_nobody_is_subscribed(broker):
    """A QoS 1 publish no subscription matches is acknowledged with 0x10 No matching
    subscribers (MQTT 5 §3.4.2.1; a server may send 0x00 instead, supermq says 0x10, and Paho
    2.x hands the PUBACK's reason code to on_publish as it came), one that matches with 0x00."""
    pub = broker.connected("pub", V5)
    assert pub.publish("nobody/here", b"x", 1) == NO_MATCHING_SUBSCRIBERS
    sub = broker.connected("sub", V5)
    sub.subscribe("somebody/here", 1)
    assert pub.publish("somebody/here", b"x", 1) == SUCCESS
