"""MQTT over TLS, WebSocket (path /mqtt, subprotocol "mqtt") and secure WebSocket, with the
test certificates in tests/certs/."""

import pytest

from conftest import CERTS
from mqttclient import SUCCESS, Connack


def roundtrip(sub, pub, topic, payload):
    assert sub.subscribe(topic, 1) == [1]
    pub.publish(topic, payload, 1)
    m = sub.next_message()
    assert (m.topic, m.payload) == (topic, payload)


@pytest.fixture
def all_listeners(broker_factory):
    """A broker listening on TCP, TLS, WebSocket and secure WebSocket."""
    return broker_factory(("tcp", "tls", "ws", "wss"))


@pytest.mark.parametrize("kind", ["tls", "ws", "wss"])
def test_pubsub_over_transport(all_listeners, version, kind):
    """Publish and subscribe work end to end over each transport, payload intact."""
    sub = all_listeners.connected("sub", version, kind)
    pub = all_listeners.connected("pub", version, kind)
    roundtrip(sub, pub, f"{kind}/t", bytes(range(256)) * 40)


@pytest.mark.parametrize("sub_kind,pub_kind", [("ws", "tcp"), ("tcp", "ws"), ("wss", "tls"), ("tls", "wss")])
def test_messages_cross_transports(all_listeners, version, sub_kind, pub_kind):
    """One broker, whatever the transport: a message from a client on one listener reaches a
    subscriber on another."""
    sub = all_listeners.connected("sub", version, sub_kind)
    pub = all_listeners.connected("pub", version, pub_kind)
    roundtrip(sub, pub, "cross/t", f"{pub_kind} to {sub_kind}".encode())


def test_tls_server_presents_the_configured_certificate(all_listeners):
    """A client that trusts only an unrelated certificate cannot complete the handshake: the
    broker serves the configured tests/certs/server.pem (signed by the test CA)."""
    c = all_listeners.client("wary", kind="tls", ca_certs=str(CERTS / "other.pem"))
    outcome = c.try_connect()
    assert not isinstance(outcome, Connack), f"connected with a certificate the client must not trust: {outcome}"


@pytest.fixture
def mutual_tls(broker_factory):
    """TLS and WSS requiring a client certificate signed by the test CA ([tls] client_ca)."""
    return broker_factory(("tcp", "tls", "wss"), tls={"client_ca": str(CERTS / "ca.pem")})


@pytest.mark.parametrize("kind", ["tls", "wss"])
def test_client_certificate_required_when_client_ca_is_set(mutual_tls, kind):
    """With client_ca set, a client without a certificate is not connected."""
    c = mutual_tls.client("anonymous", kind=kind)
    outcome = c.try_connect()
    assert not isinstance(outcome, Connack) or outcome.reason != SUCCESS, "connected without a client certificate"


def test_client_certificate_from_another_ca_is_rejected(mutual_tls):
    """With client_ca set, a certificate the CA did not sign is not accepted."""
    c = mutual_tls.client("stranger", kind="tls", certfile=str(CERTS / "other.pem"), keyfile=str(CERTS / "other.key"))
    outcome = c.try_connect()
    assert not isinstance(outcome, Connack) or outcome.reason != SUCCESS, "connected with an untrusted client certificate"


@pytest.mark.parametrize("kind", ["tls", "wss"])
def test_client_certificate_signed_by_client_ca_is_accepted(mutual_tls, version, kind):
    """With client_ca set, a client presenting tests/certs/client.pem connects and works;
    plain TCP on the same broker is unaffected."""
    client_cert = {"certfile": str(CERTS / "client.pem"), "keyfile": str(CERTS / "client.key")}
    sub = mutual_tls.client("sub", version, kind, **client_cert)
    sub.connect()
    pub = mutual_tls.connected("pub", version, "tcp")
    roundtrip(sub, pub, "mtls/t", b"trusted")
