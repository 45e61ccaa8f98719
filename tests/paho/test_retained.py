"""Retained messages, MQTT 3.1.1 and 5 (MQTT 3.3.1.3), and the MQTT 5 subscription options
that govern them (§3.8.3.1: Retain Handling, Retain As Published)."""

from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttclient import V5


def retained_then_fence(sub, pub, fence="fence"):
    """Messages ``sub`` received before a live fence published after it subscribed: retained
    messages are sent right after the SUBACK, so all of them come before the fence. The fence
    is QoS 2, the highest, because Paho hands over a QoS 2 message only on PUBREL."""
    pub.publish(fence, b"", 2)
    return sub.messages_until(fence)


def test_retained_message_is_delivered_on_subscribe_with_retain_flag(broker, version):
    """A new subscription receives the retained message of each matching topic with RETAIN set
    (3.1.1: MQTT-3.3.1-6, MQTT-3.3.1-8; 5: MQTT-3.3.1-9), at min(publish QoS, granted QoS)."""
    pub = broker.connected("pub", version)
    pub.publish("r/a", b"alpha", 1, retain=True)
    pub.publish("r/b/c", b"beta", 2, retain=True)
    pub.publish("r/plain", b"not retained", 1)
    sub = broker.connected("sub", version)
    sub.subscribe([("r/#", 2), ("fence", 2)])
    got = retained_then_fence(sub, pub)
    assert sorted((m.topic, m.payload, m.retain, m.qos) for m in got) == [
        ("r/a", b"alpha", True, 1),
        ("r/b/c", b"beta", True, 2),
    ]
    sub0 = broker.connected("sub0", version)
    sub0.subscribe([("r/a", 0), ("fence", 2)])
    got = retained_then_fence(sub0, pub)
    assert [(m.payload, m.retain, m.qos) for m in got] == [(b"alpha", True, 0)]


def test_retained_dollar_topics_are_not_sent_to_leading_wildcards(broker, version):
    """Retained messages on topics starting with `$` are not sent to a `#` or `+/...`
    subscription, only to one that names the `$` level (MQTT-4.7.2-1)."""
    pub = broker.connected("pub", version)
    pub.publish("$internal/x", b"hidden", 1, retain=True)
    pub.publish("visible/x", b"shown", 1, retain=True)
    sub = broker.connected("sub", version)
    sub.subscribe([("#", 1), ("+/x", 1)])
    got = retained_then_fence(sub, pub)
    assert {(m.topic, m.payload) for m in got} == {("visible/x", b"shown")}
    dollar = broker.connected("dollar", version)
    dollar.subscribe([("$internal/+", 1), ("fence", 2)])
    assert [(m.topic, m.retain) for m in retained_then_fence(dollar, pub)] == [("$internal/x", True)]


def test_retained_message_is_replaced_by_the_next(broker, version):
    """A new retained message on a topic replaces the previous one (MQTT-3.3.1-5)."""
    pub = broker.connected("pub", version)
    pub.publish("r/x", b"first", 1, retain=True)
    pub.publish("r/x", b"second", 1, retain=True)
    sub = broker.connected("sub", version)
    sub.subscribe([("r/x", 1), ("fence", 2)])
    got = retained_then_fence(sub, pub)
    assert [(m.payload, m.retain) for m in got] == [(b"second", True)]


def test_retained_message_is_cleared_by_empty_payload(broker, version):
    """A retained PUBLISH with a zero-length payload removes the retained message; it is still
    delivered to current subscribers as a normal message (3.1.1: MQTT-3.3.1-10;
    5: MQTT-3.3.1-6, §3.3.1.3)."""
    pub = broker.connected("pub", version)
    pub.publish("r/gone", b"soon gone", 1, retain=True)
    pub.publish("r/kept", b"kept", 1, retain=True)
    live = broker.connected("live", version)
    live.subscribe([("r/gone", 1), ("fence", 2)])
    assert [m.payload for m in retained_then_fence(live, pub)] == [b"soon gone"]

    pub.publish("r/gone", b"", 1, retain=True)
    m = live.next_message()
    assert (m.topic, m.payload, m.retain) == ("r/gone", b"", False)

    late = broker.connected("late", version)
    late.subscribe([("r/#", 1), ("fence", 2)])
    got = retained_then_fence(late, pub)
    assert [(m.topic, m.payload) for m in got] == [("r/kept", b"kept")]


def test_live_retained_message_has_retain_cleared_for_existing_subscribers(broker, version):
    """A retained message published while a subscription exists goes to that subscriber with
    RETAIN 0 (3.1.1: MQTT-3.3.1-9; 5: MQTT-3.3.1-12, without Retain As Published)."""
    sub = broker.connected("sub", version)
    sub.subscribe("r/live", 1)
    pub = broker.connected("pub", version)
    pub.publish("r/live", b"now", 1, retain=True)
    m = sub.next_message()
    assert (m.payload, m.retain) == (b"now", False)


def test_retain_as_published_keeps_the_retain_flag(broker):
    """With Retain As Published, a live message keeps the RETAIN flag it was published with
    (MQTT-3.3.1-13); without it the flag is cleared (MQTT-3.3.1-12)."""
    rap = broker.connected("rap", V5)
    rap.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=True))
    plain = broker.connected("plain", V5)
    plain.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=False))
    pub = broker.connected("pub", V5)
    pub.publish("rap/t", b"retained", 1, retain=True)
    pub.publish("rap/t", b"not retained", 1, retain=False)
    assert [(m.payload, m.retain) for m in rap.collect(2)] == [(b"retained", True), (b"not retained", False)]
    assert [(m.payload, m.retain) for m in plain.collect(2)] == [(b"retained", False), (b"not retained", False)]


def test_retain_handling_2_sends_no_retained_messages(broker):
    """Retain Handling 2: retained messages are not sent when the subscription is made
    (MQTT-3.3.1-11), yet live messages still arrive."""
    pub = broker.connected("pub", V5)
    pub.publish("rh/t", b"old", 1, retain=True)
    sub = broker.connected("sub", V5)
    sub.subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
    pub.publish("rh/t", b"live", 1)
    got = sub.next_message()
    assert (got.payload, got.retain) == (b"live", False), "the retained message must not be sent"


def test_retain_handling_1_sends_retained_only_for_a_new_subscription(broker):
    """Retain Handling 1: retained messages are sent only if the subscription did not exist;
    re-subscribing to the same filter sends none (MQTT-3.3.1-10)."""
    pub = broker.connected("pub", V5)
    pub.publish("rh1/t", b"old", 1, retain=True)
    sub = broker.connected("sub", V5)
    opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    sub.subscribe("fence", 2)
    sub.subscribe("rh1/t", options=opts)
    assert [(m.payload, m.retain) for m in retained_then_fence(sub, pub)] == [(b"old", True)]
    sub.subscribe("rh1/t", options=opts)
    assert retained_then_fence(sub, pub) == []


def test_retain_handling_0_resends_retained_on_every_subscribe(broker):
    """Retain Handling 0 (the default): retained messages are sent on every SUBSCRIBE, also
    when it replaces an existing subscription (MQTT-3.3.1-9, MQTT-3.8.4-3)."""
    pub = broker.connected("pub", V5)
    pub.publish("rh0/t", b"old", 1, retain=True)
    sub = broker.connected("sub", V5)
    sub.subscribe("fence", 2)
    for _ in range(2):
        sub.subscribe("rh0/t", 1)
        assert [(m.payload, m.retain) for m in retained_then_fence(sub, pub)] == [(b"old", True)]
