"""Will messages: published when a connection ends without DISCONNECT, not after a normal one
(MQTT 3.1.2.5; MQTT 5 §3.1.2.5, §3.1.3.2 Will Delay Interval)."""

import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from mqttclient import V5, connect_props, will_props

#: How long to watch for a Will that must not come. The broker publishes a Will as soon as
#: it has closed the connection, well within this; there is no event for "nothing happened".
NO_WILL_WAIT = 0.5


def watcher(broker, version, filter_="will/#"):
    w = broker.connected("watcher", version)
    assert w.subscribe(filter_, 2) == [2]
    return w


def test_will_is_published_when_the_connection_drops(broker, version):
    """A client that vanishes without DISCONNECT has its Will published, with its topic,
    payload and QoS (MQTT-3.1.2-8)."""
    w = watcher(broker, version)
    dying = broker.client("dying", version)
    dying.will_set("will/dying", b"\x00lost\xff", qos=1)
    dying.connect()
    dying.drop()
    m = w.next_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("will/dying", b"\x00lost\xff", 1, False)


def test_will_is_published_when_keep_alive_expires(broker, version):
    """A client silent for 1.5 × its keep alive is disconnected by the broker (MQTT-3.1.2-24)
    and its Will published (MQTT-3.1.2-8). Here keep alive is 1 s."""
    w = watcher(broker, version)
    hung = broker.client("hung", version)
    hung.will_set("will/hung", b"timed out", qos=1)
    hung.connect(keepalive=1)
    frozen_at = time.monotonic()
    hung.freeze()
    m = w.next_message(timeout=5)
    elapsed = time.monotonic() - frozen_at
    assert m.payload == b"timed out"
    assert elapsed >= 1.0, f"Will published {elapsed:.2f} s after the client went silent"


def test_will_is_not_published_after_a_normal_disconnect(broker, version):
    """A normal DISCONNECT discards the Will (3.1.1: MQTT-3.1.2-10; 5: MQTT-3.1.2-10,
    reason 0x00)."""
    w = watcher(broker, version)
    polite = broker.client("polite", version)
    polite.will_set("will/polite", b"should not appear", qos=1)
    polite.connect()
    polite.disconnect()
    w.assert_no_message(NO_WILL_WAIT)


def test_retained_will_is_kept_for_later_subscribers(broker, version):
    """A Will with RETAIN set is published as a retained message (3.1.1: MQTT-3.1.2-17;
    5: MQTT-3.1.2-15): a client subscribing after it was published receives it."""
    w = watcher(broker, version)
    dying = broker.client("dying", version)
    dying.will_set("will/status", b"offline", qos=1, retain=True)
    dying.connect()
    dying.drop()
    assert w.next_message().payload == b"offline"  # published (and so stored) by now
    late = broker.connected("late", version)
    late.subscribe("will/status", 1)
    m = late.next_message()
    assert (m.topic, m.payload, m.retain) == ("will/status", b"offline", True)


def test_v5_disconnect_with_will_message_publishes_the_will(broker):
    """MQTT 5 DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the Will
    (MQTT 5 §3.14.2.1), carrying its Will Properties (§3.1.3.2)."""
    w = watcher(broker, V5)
    leaving = broker.client("leaving", V5)
    leaving.will_set(
        "will/leaving",
        b"{}",
        qos=1,
        properties=will_props(ContentType="application/json", UserProperty=[("why", "test")]),
    )
    leaving.connect()
    leaving.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    m = w.next_message()
    assert (m.topic, m.payload) == ("will/leaving", b"{}")
    assert m.prop("ContentType") == "application/json"
    assert m.prop("UserProperty") == [("why", "test")]


def test_v5_will_delay_postpones_the_will(broker):
    """MQTT 5 Will Delay Interval: the Will is published only after the delay has passed
    (MQTT 5 §3.1.3.2.2), here 1 s, with a session that lives longer than that."""
    w = watcher(broker, V5)
    dying = broker.client("delayed", V5)
    dying.will_set("will/delayed", b"late", qos=1, properties=will_props(WillDelayInterval=1))
    dying.connect(properties=connect_props(SessionExpiryInterval=30))
    dropped_at = time.monotonic()
    dying.drop()
    m = w.next_message(timeout=5)
    elapsed = time.monotonic() - dropped_at
    assert m.payload == b"late"
    assert elapsed >= 0.9, f"Will published {elapsed:.2f} s after the drop, before its 1 s delay"


def test_v5_reconnect_within_will_delay_cancels_the_will(broker):
    """If the client reconnects to its session before the Will Delay Interval has passed,
    the Will is not published (MQTT-3.1.3-9, MQTT 5 §3.1.2.5)."""
    w = watcher(broker, V5)
    dying = broker.client("comeback", V5)
    dying.will_set("will/comeback", b"must not appear", qos=1, properties=will_props(WillDelayInterval=1))
    dying.connect(properties=connect_props(SessionExpiryInterval=30))
    dying.drop()
    back = broker.client("comeback", V5)
    connack = back.connect(clean_start=False, properties=connect_props(SessionExpiryInterval=30))
    assert connack.session_present is True
    w.assert_no_message(1.5)  # past the 1 s delay
