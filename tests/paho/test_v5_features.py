"""MQTT 5 features seen end to end: properties that travel with a message, subscription
identifiers, No Local, topic aliases, assigned client identifiers and message expiry."""

import time

from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttclient import V5, V311, connect_props, publish_props, subscribe_props


def test_publish_properties_reach_the_subscriber_unchanged(broker):
    """User Properties (in order, repeats kept), Content Type, Response Topic, Correlation
    Data and Payload Format Indicator are forwarded as sent (MQTT-3.3.2-4, -15, -16, -17,
    -18, -20)."""
    sub = broker.connected("sub", V5)
    sub.subscribe("props/t", 2)
    pub = broker.connected("pub", V5)
    sent = publish_props(
        PayloadFormatIndicator=1,
        ContentType="application/json; charset=utf-8",
        ResponseTopic="props/reply/42",
        CorrelationData=b"\x00\x01corr\xff",
        UserProperty=[("b", "2"), ("a", "1"), ("b", "3"), ("ünï", "cödé")],
    )
    for qos in (0, 1, 2):
        pub.publish("props/t", b'{"x": 1}', qos, properties=sent)
        m = sub.next_message()
        assert m.payload == b'{"x": 1}'
        assert m.prop("PayloadFormatIndicator") == 1
        assert m.prop("ContentType") == "application/json; charset=utf-8"
        assert m.prop("ResponseTopic") == "props/reply/42"
        assert m.prop("CorrelationData") == b"\x00\x01corr\xff"
        assert m.prop("UserProperty") == [("b", "2"), ("a", "1"), ("b", "3"), ("ünï", "cödé")]
        assert m.prop("MessageExpiryInterval") is None, "no expiry was set"


def test_message_expiry_interval_is_forwarded_counted_down(broker):
    """A message with a Message Expiry Interval is forwarded with the interval that is left,
    never more than was sent (MQTT-3.3.2-6)."""
    sub = broker.connected("sub", V5)
    sub.subscribe("exp/live", 1)
    pub = broker.connected("pub", V5)
    pub.publish("exp/live", b"x", 1, properties=publish_props(MessageExpiryInterval=120))
    interval = sub.next_message().prop("MessageExpiryInterval")
    assert interval is not None and 110 <= interval <= 120


def test_expired_message_is_not_delivered_to_a_returning_session(broker):
    """A message whose expiry interval passes while it waits for an offline session is not
    delivered (MQTT-3.3.2-5); one still alive arrives with the time waited deducted
    (MQTT-3.3.2-6). Waits out a 1 s expiry."""
    expiry = connect_props(SessionExpiryInterval=60)
    sub = broker.client("sleeper", V5)
    sub.connect(clean_start=False, properties=expiry)
    sub.subscribe("exp/t", 1)
    sub.disconnect()

    pub = broker.connected("pub", V5)
    pub.publish("exp/t", b"short-lived", 1, properties=publish_props(MessageExpiryInterval=1))
    pub.publish("exp/t", b"long-lived", 1, properties=publish_props(MessageExpiryInterval=100))
    pub.publish("exp/t", b"immortal", 1)
    time.sleep(2.0)  # the first message's lifetime must really run out

    back = broker.client("sleeper", V5)
    assert back.connect(clean_start=False, properties=expiry).session_present is True
    pub.publish("exp/t", b"fence", 1)
    got = back.collect(3)
    assert [m.payload for m in got] == [b"long-lived", b"immortal", b"fence"]
    left = got[0].prop("MessageExpiryInterval")
    assert left is not None and left <= 99, f"expiry interval {left}: the 2 s waited were not deducted"
    assert got[1].prop("MessageExpiryInterval") is None


def test_subscription_identifier_arrives_with_the_message(broker):
    """A message delivered because of a subscription made with a Subscription Identifier
    carries that identifier (MQTT-3.3.4-3); one without an identifier carries none."""
    sub = broker.connected("sub", V5)
    assert sub.subscribe("sid/with/#", 1, properties=subscribe_props(SubscriptionIdentifier=4711)) == [1]
    assert sub.subscribe("sid/without/#", 1) == [1]
    pub = broker.connected("pub", V5)
    pub.publish("sid/with/x", b"1", 1)
    pub.publish("sid/without/x", b"2", 1)
    with_id, without_id = sub.collect(2)
    assert with_id.prop("SubscriptionIdentifier") == [4711]
    assert without_id.prop("SubscriptionIdentifier") is None


def test_subscription_identifier_is_sent_with_retained_messages(broker):
    """Retained messages sent on subscribe also carry the subscription's identifier
    (MQTT 5 §3.3.4)."""
    pub = broker.connected("pub", V5)
    pub.publish("sid/r", b"kept", 1, retain=True)
    sub = broker.connected("sub", V5)
    sub.subscribe("sid/r", 1, properties=subscribe_props(SubscriptionIdentifier=99))
    m = sub.next_message()
    assert (m.payload, m.retain, m.prop("SubscriptionIdentifier")) == (b"kept", True, [99])


def test_no_local_does_not_echo_own_messages(broker):
    """With No Local, a client does not receive the messages it published itself
    (MQTT-3.8.3-3); other subscribers do, and so does the client itself without No Local."""
    talker = broker.connected("talker", V5)
    talker.subscribe("chat/room", options=SubscribeOptions(qos=1, noLocal=True))
    talker.subscribe("chat/fence", 1)
    echo = broker.connected("echo", V5)
    echo.subscribe("chat/room", options=SubscribeOptions(qos=1, noLocal=False))
    echo.subscribe("chat/fence", 1)

    talker.publish("chat/room", b"from talker", 1)
    talker.publish("chat/fence", b"", 1)
    assert talker.messages_until("chat/fence") == []
    assert [m.payload for m in echo.messages_until("chat/fence")] == [b"from talker"]

    echo.publish("chat/room", b"from echo", 1)
    assert talker.next_message().payload == b"from echo"
    assert echo.next_message().payload == b"from echo", "without No Local a client gets its own message"


def test_topic_alias_from_the_client_is_resolved(broker):
    """A client may set a Topic Alias with a topic and then publish with the alias and an
    empty topic; subscribers see the full topic (MQTT 5 §3.3.2.3.4). The
    broker offers aliases in the CONNACK (Topic Alias Maximum)."""
    sub = broker.connected("sub", V5)
    sub.subscribe("alias/#", 1)
    pub = broker.client("pub", V5)
    connack = pub.connect()
    assert (connack.properties.TopicAliasMaximum or 0) >= 2
    pub.publish("alias/long/topic/name", b"first", 1, properties=publish_props(TopicAlias=1))
    pub.publish("", b"second", 1, properties=publish_props(TopicAlias=1))
    pub.publish("alias/other", b"third", 1, properties=publish_props(TopicAlias=2))
    pub.publish("", b"fourth", 1, properties=publish_props(TopicAlias=2))
    # Rebinding alias 1 to another topic.
    pub.publish("alias/rebound", b"fifth", 1, properties=publish_props(TopicAlias=1))
    pub.publish("", b"sixth", 1, properties=publish_props(TopicAlias=1))
    got = sub.collect(6)
    assert [(m.topic, m.payload) for m in got] == [
        ("alias/long/topic/name", b"first"),
        ("alias/long/topic/name", b"second"),
        ("alias/other", b"third"),
        ("alias/other", b"fourth"),
        ("alias/rebound", b"fifth"),
        ("alias/rebound", b"sixth"),
    ]
    assert all(m.prop("TopicAlias") is None for m in got), "the client's alias is not forwarded"


def test_empty_client_id_gets_an_assigned_identifier(broker):
    """MQTT 5: an empty client id is accepted and the broker returns the id it chose in
    Assigned Client Identifier (MQTT-3.1.3-6, MQTT-3.1.3-7); two such clients get different
    ids."""
    ids = []
    for _ in range(2):
        c = broker.client("", V5)
        connack = c.connect()
        assigned = getattr(connack.properties, "AssignedClientIdentifier", None)
        assert assigned, "no Assigned Client Identifier in the CONNACK"
        ids.append(assigned)
    assert ids[0] != ids[1]


def test_v311_empty_client_id_with_clean_session_is_accepted(broker):
    """MQTT 3.1.1: a zero-length client id with clean session = 1 is accepted (MQTT-3.1.3-6)
    and the client can publish and subscribe."""
    c = broker.client("", V311, clean_session=True)
    c.connect()
    c.subscribe("anon/t", 1)
    c.publish("anon/t", b"hello", 1)
    assert c.next_message().payload == b"hello"


def test_connack_announces_the_broker_limits(broker_factory):
    """MQTT 5 CONNACK tells the client the broker's Receive Maximum, Maximum Packet Size and
    Topic Alias Maximum, taken from [limits] (MQTT 5 §3.2.2.3)."""
    broker = broker_factory(limits={"max_inflight": 17, "max_packet_size": 4096, "max_topic_aliases": 5})
    c = broker.client("limits", V5)
    p = c.connect().properties
    assert p.ReceiveMaximum == 17
    assert p.MaximumPacketSize == 4096
    assert p.TopicAliasMaximum == 5
