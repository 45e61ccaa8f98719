"""Persistence with Paho, the client users run: a broker with a ``[storage] dir`` restarted
gracefully (SIGTERM) gives a persistent session back with the QoS 1 messages queued for it,
and keeps its retained messages. (Crashes — SIGKILL at any moment — are tests/persistence.rs's.)
"""

import time

from test_session import connect_persistent


def test_graceful_restart_keeps_queued_messages_and_retained(broker_factory, tmp_path, version):
    broker = broker_factory(storage={"dir": str(tmp_path / "store")})
    sub, connack = connect_persistent(broker, "paho-persist", version, clean=False)
    assert connack.session_present is False
    assert sub.subscribe("persist/paho/#", 1) == [1]
    sub.disconnect()
    pub = broker.connected("paho-pub", version)
    payloads = [f"queued {i}".encode() for i in range(20)]
    for payload in payloads:
        pub.publish("persist/paho/queue", payload, 1)
    pub.publish("persist/paho/retained", b"kept", 1, retain=True)
    pub.disconnect()

    assert broker.terminate() == 0, "a graceful stop exits 0"
    broker.start()  # the same configuration, so the same store
    # The port is bound before the store is read: wait for this start's line.
    deadline = time.monotonic() + 10
    while broker.log().count("store loaded") < 2:
        assert time.monotonic() < deadline, f"no store loaded line for the restart:\n{broker.log()}"
        time.sleep(0.02)
    assert broker.log().count("store loaded") == 2, "one store load per start"

    back, connack = connect_persistent(broker, "paho-persist", version, clean=False)
    assert connack.session_present is True, "the session did not survive the restart"
    # The retained message was queued for the session too, after the others.
    got = back.collect(len(payloads) + 1)
    assert [m.payload for m in got] == payloads + [b"kept"]
    assert all(m.qos == 1 for m in got)

    fresh = broker.connected("paho-fresh", version)
    fresh.subscribe("persist/paho/retained", 1)
    retained = fresh.next_message()
    assert (retained.payload, retained.retain) == (b"kept", True)
