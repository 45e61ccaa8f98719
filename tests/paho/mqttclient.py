"""A thin, synchronous test wrapper around the Eclipse Paho client (paho-mqtt 2.x).

Every callback Paho offers is turned into something a test can wait on with a timeout:
CONNACK, SUBACK, UNSUBACK, the acknowledgement of each publish, each received message and the
disconnect. Nothing here sleeps to synchronise; every wait is bounded by ``TIMEOUT``.

The network loop is our own thread calling ``Client.loop()`` rather than ``loop_start()``:
``loop_start()`` reconnects by itself after a lost connection, which would hide what the broker
did (a session taken over would be taken back a second later, a Will cancelled by the
reconnect). Here a connection that ends stays ended; a test that wants to reconnect makes a new
client.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

#: Upper bound for any single wait on the broker. Generous for a loaded 2-core CI machine, and
#: only ever reached when something is wrong.
TIMEOUT = 5.0

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
VERSIONS = [V311, V5]

# MQTT 5 reason codes the tests look for (MQTT 5.0 §2.4).
SUCCESS = 0x00
GRANTED_QOS_1 = 0x01
GRANTED_QOS_2 = 0x02
NO_MATCHING_SUBSCRIBERS = 0x10
UNSPECIFIED_ERROR = 0x80
CLIENT_ID_NOT_VALID = 0x85
SERVER_UNAVAILABLE = 0x88  # what Paho reports for an MQTT 3.1.1 CONNACK return code 3
NOT_AUTHORIZED = 0x87
SERVER_SHUTTING_DOWN = 0x8B
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
PACKET_TOO_LARGE = 0x95
QUOTA_EXCEEDED = 0x97


def version_name(version: int) -> str:
    return {V311: "v311", V5: "v5"}[version]


def props(packet_type: int, **values) -> Properties:
    """MQTT 5 properties, e.g. ``props(PacketTypes.PUBLISH, ContentType="text/plain")``."""
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def publish_props(**values) -> Properties:
    return props(PacketTypes.PUBLISH, **values)


def connect_props(**values) -> Properties:
    return props(PacketTypes.CONNECT, **values)


def subscribe_props(**values) -> Properties:
    return props(PacketTypes.SUBSCRIBE, **values)


def will_props(**values) -> Properties:
    return props(PacketTypes.WILLMESSAGE, **values)


def code(reason) -> int:
    """The numeric value of a Paho ReasonCode (or an int)."""
    return reason if isinstance(reason, int) else reason.value


@dataclass
class Connack:
    reason: int
    session_present: bool
    properties: Properties | None


@dataclass
class Disconnect:
    reason: int
    properties: Properties | None
    from_broker: bool


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None = None

    def prop(self, name, default=None):
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


class _Results:
    """Values keyed by packet id (mid), arriving on Paho's thread, awaited on the test's."""

    def __init__(self):
        self._cond = threading.Condition()
        self._values: dict[int, object] = {}

    def put(self, mid: int, value) -> None:
        with self._cond:
            self._values[mid] = value
            self._cond.notify_all()

    def wait(self, mid: int, what: str, timeout: float = TIMEOUT):
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._values, timeout):
                raise AssertionError(f"no {what} for packet id {mid} within {timeout} s")
            return self._values.pop(mid)


@dataclass
class Endpoint:
    """Where and how to reach a listener."""

    host: str
    port: int
    transport: str = "tcp"  # or "websockets"
    tls: dict | None = None  # keyword arguments for Client.tls_set
    ws_path: str = "/mqtt"


class MqttClient:
    """One Paho client with every result waitable. Use as ``with MqttClient(...) as c:``."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str = "",
        version: int = V5,
        clean_session: bool | None = None,
    ):
        self.endpoint = endpoint
        self.version = version
        kwargs = {}
        if version != V5:
            kwargs["clean_session"] = True if clean_session is None else clean_session
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=version,
            transport=endpoint.transport,
            **kwargs,
        )
        if endpoint.transport == "websockets":
            self.client.ws_set_options(path=endpoint.ws_path)
        if endpoint.tls is not None:
            self.client.tls_set(**endpoint.tls)
        self.messages: queue.Queue[Received] = queue.Queue()
        self._connack: queue.Queue[Connack] = queue.Queue()
        self._subacks = _Results()
        self._unsubacks = _Results()
        self._published = _Results()
        self._disconnected = threading.Event()
        self.disconnect_info: Disconnect | None = None
        self._stop = threading.Event()
        self._dropped = False
        self._thread: threading.Thread | None = None
        self.loop_error: BaseException | None = None

        c = self.client
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect

    # Paho callbacks (run on the loop thread) --------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._connack.put(Connack(code(reason_code), bool(flags.session_present), properties))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._subacks.put(mid, [code(r) for r in reason_codes])

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self._unsubacks.put(mid, [code(r) for r in reason_codes])

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._published.put(mid, code(reason_code))

    def _on_message(self, client, userdata, message):
        props = getattr(message, "properties", None)
        self.messages.put(
            Received(message.topic, bytes(message.payload), message.qos, bool(message.retain), props)
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_info = Disconnect(code(reason_code), properties, bool(flags.is_disconnect_packet_from_server))
        self._disconnected.set()

    # The network loop -------------------------------------------------------------------------

    def _run(self):
        try:
            while not self._stop.is_set():
                rc = self.client.loop(timeout=0.05)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    # Closed or lost: it stays closed. Paho has normally called
                    # on_disconnect already; make sure waiters see it either way.
                    self._disconnected.set()
                    break
        except BaseException as error:  # surfaced by the waits below
            self.loop_error = error
            self._disconnected.set()

    def _start_loop(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"paho-{self.client._client_id!r}", daemon=True)
        self._thread.start()

    def _stop_loop(self):
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(TIMEOUT)
        self._thread = None

    # Connecting -------------------------------------------------------------------------------

    def will_set(self, topic, payload=None, qos=0, retain=False, properties=None):
        self.client.will_set(topic, payload, qos, retain, properties)

    def connect(
        self,
        clean_start: bool = True,
        properties: Properties | None = None,
        keepalive: int = 30,
        expect: int | None = SUCCESS,
    ) -> Connack:
        """Connects and waits for the CONNACK. With ``expect`` set (the default: success), asserts
        its reason code (for MQTT 3.1.1, Paho's MQTT 5 equivalent of the return code)."""
        kwargs = {}
        if self.version == V5:
            kwargs["clean_start"] = clean_start
            kwargs["properties"] = properties
        self.client.connect(self.endpoint.host, self.endpoint.port, keepalive, **kwargs)
        self._start_loop()
        connack = self.wait_connack()
        if expect is not None:
            assert connack.reason == expect, f"CONNACK reason 0x{connack.reason:02x}, expected 0x{expect:02x}"
        return connack

    def try_connect(self, timeout: float = TIMEOUT, **connect) -> Connack | str:
        """Connects, for tests where failing is a possible outcome. Returns the CONNACK, or a
        description of how the attempt failed: an exception from connect() (say a TLS
        handshake error), or the connection closing with no CONNACK."""
        kwargs = {}
        if self.version == V5:
            kwargs["clean_start"] = connect.get("clean_start", True)
            kwargs["properties"] = connect.get("properties")
        try:
            self.client.connect(self.endpoint.host, self.endpoint.port, connect.get("keepalive", 30), **kwargs)
        except (OSError, ValueError) as error:  # ssl.SSLError, ConnectionError, WebSocket errors
            return f"connect() failed: {error!r}"
        self._start_loop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._connack.get(timeout=0.02)
            except queue.Empty:
                pass
            if self._disconnected.is_set():
                try:  # a CONNACK may have raced the close
                    return self._connack.get_nowait()
                except queue.Empty:
                    return f"closed without CONNACK (loop error: {self.loop_error!r})"
        raise AssertionError(f"neither CONNACK nor close within {timeout} s")

    def wait_connack(self, timeout: float = TIMEOUT) -> Connack:
        try:
            return self._connack.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no CONNACK within {timeout} s (loop error: {self.loop_error!r})") from None

    # Operations -------------------------------------------------------------------------------

    def subscribe(self, topic, qos: int = 0, options: SubscribeOptions | None = None, properties=None) -> list[int]:
        """Subscribes (one filter, or a list of (filter, qos|SubscribeOptions)) and returns the
        SUBACK reason codes."""
        if isinstance(topic, list):
            result, mid = self.client.subscribe(topic, properties=properties)
        elif options is not None:
            result, mid = self.client.subscribe(topic, options=options, properties=properties)
        else:
            result, mid = self.client.subscribe(topic, qos, properties=properties)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {result}"
        return self._subacks.wait(mid, "SUBACK")

    def unsubscribe(self, topic) -> list[int]:
        result, mid = self.client.unsubscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe not sent: {result}"
        return self._unsubacks.wait(mid, "UNSUBACK")

    def publish(self, topic, payload=b"", qos: int = 0, retain: bool = False, properties=None,
                timeout: float = TIMEOUT) -> int:
        """Publishes and waits until Paho reports it done: sent (QoS 0), PUBACK (QoS 1) or
        PUBCOMP (QoS 2). Returns the reason code Paho reports (MQTT 5: the ack's reason code)."""
        info = self.client.publish(topic, payload, qos, retain, properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish not sent: {info.rc}"
        return self._published.wait(info.mid, f"acknowledgement of QoS {qos} publish", timeout)

    def publish_nowait(self, topic, payload=b"", qos: int = 0, retain: bool = False, properties=None):
        return self.client.publish(topic, payload, qos, retain, properties)

    def disconnect(self, properties=None, reasoncode=None):
        """A normal DISCONNECT; waits until the connection is closed."""
        self.client.disconnect(reasoncode=reasoncode, properties=properties)
        self.wait_disconnected()
        self._stop_loop()

    def drop(self):
        """Ends the connection abruptly: no DISCONNECT, the socket just closes (as when a device
        loses power or its network)."""
        self._stop_loop()
        self._dropped = True
        sock = self.client.socket()
        if sock is not None:
            # The TCP socket itself, also under Paho's WebSocket wrapper; an SSLSocket's
            # shutdown() skips the TLS close_notify, as a lost connection would.
            raw = sock if isinstance(sock, socket.socket) else getattr(sock, "_socket", sock)
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def freeze(self):
        """Stops all traffic, PINGREQ included, but keeps the connection open: a client that
        hangs."""
        self._stop_loop()
        self._dropped = True

    def close(self):
        """Test teardown: disconnect if still connected, stop the loop."""
        if self._thread is not None and not self._disconnected.is_set() and not self._dropped:
            try:
                self.client.disconnect()
                self._disconnected.wait(1.0)
            except Exception:
                pass
        self._stop_loop()
        try:
            self.client._sock_close()
        except Exception:
            pass

    # Waiting for what the broker sends --------------------------------------------------------

    def wait_disconnected(self, timeout: float = TIMEOUT) -> Disconnect:
        if not self._disconnected.wait(timeout):
            raise AssertionError(f"connection still open after {timeout} s")
        if self.disconnect_info is None:
            return Disconnect(UNSPECIFIED_ERROR, None, False)
        return self.disconnect_info

    @property
    def is_disconnected(self) -> bool:
        return self._disconnected.is_set()

    def next_message(self, timeout: float = TIMEOUT) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def collect(self, count: int, timeout: float = TIMEOUT) -> list[Received]:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            left = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(left, 0)))
            except queue.Empty:
                raise AssertionError(
                    f"received {len(got)} of {count} messages within {timeout} s: {got}"
                ) from None
        return got

    def messages_until(self, topic: str, timeout: float = TIMEOUT) -> list[Received]:
        """Every message received before the first one on ``topic`` (a fence), which is
        consumed. Messages from one publisher reach a subscriber in the order they were sent
        (MQTT 4.6), so once the fence published after X arrives, X would have arrived too:
        this proves an absence without sleeping. The fence must arrive at a QoS at least as
        high as the messages before it: Paho hands over a QoS 2 message only on PUBREL, after
        a QoS 0 or 1 message sent later."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            left = deadline - time.monotonic()
            try:
                message = self.messages.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"fence message on {topic!r} not received; before it: {before}") from None
            if message.topic == topic:
                return before
            before.append(message)

    def assert_no_message(self, wait: float = 0.3):
        """For the rare case no fence is possible (the client can receive nothing at all)."""
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message: {message}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
