"""The one module that touches paho-mqtt: a connection that keeps itself up, owned by one thread.

Why this module exists: everything else in the fleet package deals in plain
data (topic, bytes, a token to match an acknowledgement); this module turns
that into MQTT 5 and back. Keeping paho in one place means one place to get
its threading right:

- One network thread owns the paho client. Other threads never call paho:
  ``publish()`` appends to a deque and wakes the thread through a socket
  pair, so a caller never blocks on the network (and paho's writer is never
  entered from two threads at once, which its manual-loop mode would allow).
- Each connection attempt uses a *fresh* paho client. The last will
  (``status`` = offline, retained) is set on it *before* ``connect()``. A
  fresh client carries no half-sent messages from the previous connection,
  so after a reconnect nothing is retransmitted behind the caller's back:
  the caller (``agent``) replays from its own queue, in order.
- Reconnection uses exponential backoff with full jitter between
  ``reconnect_backoff_initial_s`` and ``reconnect_backoff_max_s``, so a
  hundred kiosks do not hammer a broker that has just come back.
- TLS: one ``ssl.SSLContext`` (CA verification and hostname check on, TLS
  1.2 minimum, optional client certificate). The password is read from its
  file at each connect, never kept in the config.

Why paho-mqtt 2.x: the reference MQTT client for Python, MQTT 5 (user
properties, correlation data, message expiry, session expiry) with the
VERSION2 callback API, pure Python (installs on a Jetson without a compiler).
"""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

try:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the fleet needs paho-mqtt 2.x: pip install 'edge-avatar[fleet]' "
                      "(or set fleet.enabled: false to log to a local file)") from exc

from edge_avatar.fleet.options import FleetConfig

log = logging.getLogger(__name__)

CONNECTION_STABLE_S = 10.0    # a connection that lasted this long resets the backoff
FAILURE_LOG_INTERVAL_S = 600.0  # while the broker stays unreachable, one warning per this interval
CLOSE_TIMEOUT_S = 1.0


class ConnectionSetupError(ValueError):
    """Settings that can never connect (a missing certificate file, a bad key)."""


@dataclass(frozen=True)
class BrokerSettings:
    """Everything needed to reach the broker; built from ``FleetConfig`` (or directly, in tests)."""

    host: str
    port: int = 1883
    client_id: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password_file: str = ""
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    clean_start: bool = True       # devices: yes (stale commands must not pile up while offline)
    session_expiry_s: int = 0      # consumers that must not miss events: a persistent session

    @classmethod
    def from_config(cls, fleet: FleetConfig, client_id: str, **overrides: Any) -> "BrokerSettings":
        values = dict(host=fleet.broker_host, port=fleet.broker_port, client_id=client_id, tls=fleet.tls,
                      ca_file=fleet.tls_ca_file, cert_file=fleet.tls_cert_file, key_file=fleet.tls_key_file,
                      username=fleet.username, password_file=fleet.password_file, keepalive_s=fleet.keepalive_s,
                      connect_timeout_s=fleet.connect_timeout_s,
                      backoff_initial_s=fleet.reconnect_backoff_initial_s,
                      backoff_max_s=fleet.reconnect_backoff_max_s)
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Will:
    """A message published by the broker if the connection dies without a clean disconnect."""

    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    user_properties: dict[str, str] = field(default_factory=dict)
    correlation: bytes | None = None


@dataclass
class _Publish:
    generation: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    token: Any
    user_properties: tuple[tuple[str, str], ...]
    correlation: bytes | None
    expiry_s: int | None


def make_tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """A client context that verifies the broker (CA + host name) and optionally presents a certificate."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(Path(ca_file).expanduser()) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file:
            context.load_cert_chain(str(Path(cert_file).expanduser()), str(Path(key_file).expanduser()))
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionSetupError(f"TLS setup failed (ca {ca_file or 'system'}, cert {cert_file or 'none'}): "
                                   f"{exc}") from None
    return context


def read_password(path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConnectionSetupError(f"cannot read fleet.password_file {path}: {exc.strerror}") from None
    return text.rstrip("\r\n")


class MqttConnection:
    """A broker connection that reconnects by itself; all paho calls happen on its own thread.

    Callbacks run on that thread and must be quick: ``on_connected(generation)``
    after CONNACK and subscriptions, ``on_disconnected(generation, reason)``,
    ``on_message(Incoming)``, ``on_acked(generation, token, ok, reason)`` for
    each QoS 1 message the broker acknowledged (``ok`` false when the broker
    refused it, e.g. ACL). The generation increases with every new client, so
    acknowledgements from a connection that has gone can be told apart.
    """

    def __init__(self, settings: BrokerSettings, *, name: str = "mqtt", will: Will | None = None,
                 subscriptions: tuple[str, ...] = (), retained_on_subscribe: bool = True,
                 on_connected: Callable[[int], None] | None = None,
                 on_disconnected: Callable[[int, str], None] | None = None,
                 on_message: Callable[[Incoming], None] | None = None,
                 on_acked: Callable[[int, Any, bool, str], None] | None = None,
                 rng: random.Random | None = None, idle_wake_s: float = 1.0):
        self.settings = settings
        self.name = name
        self.will = will
        self.subscriptions = subscriptions
        self.retained_on_subscribe = retained_on_subscribe  # False for commands: a retained one must never replay
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.on_message = on_message
        self.on_acked = on_acked
        self._rng = rng or random.Random()
        self._idle_wake_s = idle_wake_s
        self._tls_context = make_tls_context(settings.ca_file, settings.cert_file, settings.key_file) \
            if settings.tls else None
        if settings.password_file:
            read_password(settings.password_file)  # fail now, with the file's name, not in a log later
        self._actions: deque[_Publish] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._generation = 0
        self._final: Will | None = None
        self._thread: threading.Thread | None = None
        # per-connection state, touched only by the network thread
        self._mid_tokens: dict[int, tuple[int, Any]] = {}
        self._connack: Any = None
        self._disconnect_reason = ""
        self.counters = {"connects": 0, "connect_failures": 0, "disconnects": 0, "published": 0,
                         "acked": 0, "refused_by_broker": 0, "received": 0}
        self.last_error = ""
        self.receive_maximum = 65535
        self._refusal_logged_s = -FAILURE_LOG_INTERVAL_S

    # ------------------------------------------------------------------ public, any thread

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        return self._generation

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-net", daemon=True)
        self._thread.start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, token: Any = None,
                user_properties: tuple[tuple[str, str], ...] = (), correlation: bytes | None = None,
                expiry_s: int | None = None, generation: int | None = None) -> int | None:
        """Queue one message for the network thread; never blocks.

        Returns the connection generation it will go out on, or None when not
        connected (nothing was queued). With ``generation`` given, the message
        is queued only if that connection is still the current one: a caller
        that replays its own queue in order (the agent) must not have a
        message slip onto a newer connection before its replay. A message
        queued just as the connection drops is lost with it.
        """
        current = self._generation  # read before the check: a newer generation is only current once connected
        if not self._connected.is_set():
            return None
        if generation is not None and generation != current:
            return None
        self._actions.append(_Publish(current, topic, payload, qos, retain, token, user_properties,
                                      correlation, expiry_s))
        self._wake()
        return current

    def stop(self, final: Will | None = None, timeout_s: float = 3.0) -> None:
        """Disconnect cleanly (the will is not sent); ``final`` (e.g. status offline) goes out first if connected."""
        self._final = final
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("%s: network thread did not stop within %.1f s", self.name, timeout_s)
            self._thread = None
        for sock in (self._wake_r, self._wake_w):
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "connected": self.connected, "last_error": self.last_error}

    # ------------------------------------------------------------------ the network thread

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or closing

    def _run(self) -> None:
        attempt = 0
        failing_since: float | None = None
        last_failure_log = 0.0
        while not self._stop.is_set():
            self._generation += 1
            generation = self._generation
            started = time.monotonic()
            try:
                client = self._new_client(generation)
                self._connect(client)
            except (OSError, ssl.SSLError, ConnectionSetupError, ValueError) as exc:
                self.counters["connect_failures"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    last_failure_log = now
                    log.warning("%s: cannot reach %s:%d (%s); retrying with backoff", self.name,
                                self.settings.host, self.settings.port, self.last_error)
                elif now - last_failure_log >= FAILURE_LOG_INTERVAL_S:
                    last_failure_log = now
                    log.warning("%s: %s:%d still unreachable after %.0f s (%s)", self.name, self.settings.host,
                                self.settings.port, now - failing_since, self.last_error)
                else:
                    log.debug("%s: connect failed: %s", self.name, self.last_error)
                attempt += 1
                self._backoff(attempt)
                continue
            try:
                established = self._serve(client, generation)
            except Exception:  # noqa: BLE001 - a paho or callback bug must cost a reconnect, not the thread
                log.exception("%s: connection failed unexpectedly; reconnecting", self.name)
                self._connected.clear()
                self._hard_close(client)
                established = False
            if established:
                failing_since = None
                if time.monotonic() - started >= CONNECTION_STABLE_S:
                    attempt = 0
            if not self._stop.is_set():
                attempt += 1
                self._backoff(attempt)
        self._connected.clear()

    def _backoff(self, attempt: int) -> None:
        s = self.settings
        ceiling = min(s.backoff_max_s, s.backoff_initial_s * (2 ** min(attempt - 1, 30)))
        delay = self._rng.uniform(s.backoff_initial_s, max(ceiling, s.backoff_initial_s))
        self._stop.wait(delay)

    def _new_client(self, generation: int) -> "paho.Client":
        s = self.settings
        client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.connect_timeout = s.connect_timeout_s
        client.max_inflight_messages_set(0)  # unlimited in paho: the broker's Receive Maximum is applied here
        client.max_queued_messages_set(0)
        if self.will is not None:  # before connect(): the broker stores it with the session
            client.will_set(self.will.topic, self.will.payload, qos=self.will.qos, retain=self.will.retain)
        if s.username:
            client.username_pw_set(s.username, read_password(s.password_file) if s.password_file else None)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        self._mid_tokens = {}
        self._connack = None
        self._disconnect_reason = ""

        def on_connect(_client, _userdata, _flags, reason_code, properties):
            self._connack = reason_code
            # paho does not apply the broker's Receive Maximum (exceeding it gets us disconnected with
            # 0x93), so _flush_actions holds QoS 1 messages back beyond it.
            receive_maximum = getattr(properties, "ReceiveMaximum", None)
            self.receive_maximum = receive_maximum if isinstance(receive_maximum, int) and receive_maximum > 0 \
                else 65535

        def on_disconnect(_client, _userdata, _flags, reason_code, _properties):
            self._disconnect_reason = str(reason_code)

        def on_publish(_client, _userdata, mid, reason_code, _properties):
            entry = self._mid_tokens.pop(mid, None)
            if entry is None:
                return
            ok = not reason_code.is_failure
            self.counters["acked" if ok else "refused_by_broker"] += 1
            refused = self.counters["refused_by_broker"]
            if not ok and (refused <= 10 or refused % 1000 == 0):
                log.warning("%s: broker refused a message (%s; %d so far); check the broker's ACL for this "
                            "account", self.name, reason_code, refused)
            self._call(self.on_acked, entry[0], entry[1], ok, str(reason_code))

        def on_subscribe(_client, _userdata, _mid, reason_codes, _properties):
            for code in reason_codes:
                if code.is_failure:
                    log.error("%s: subscription refused by the broker (%s); check its ACL", self.name, code)

        def on_message(_client, _userdata, message):
            self.counters["received"] += 1
            props = message.properties
            user_properties = dict(getattr(props, "UserProperty", None) or [])
            correlation = getattr(props, "CorrelationData", None) if props is not None else None
            incoming = Incoming(message.topic, bytes(message.payload), bool(message.retain), message.qos,
                                user_properties, correlation)
            self._call(self.on_message, incoming)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        return client

    def _connect(self, client: "paho.Client") -> None:
        s = self.settings
        properties = None
        if s.session_expiry_s > 0:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = s.session_expiry_s
        client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=s.clean_start, properties=properties)

    def _serve(self, client: "paho.Client", generation: int) -> bool:
        """Run one connection until it drops or we stop; True if CONNACK accepted it."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        established = False
        while True:
            if self._stop.is_set():
                if established:
                    self._close(client, generation)
                else:
                    self._hard_close(client)
                break
            if not established and self._connack is not None:
                if self._connack.is_failure:
                    break
                established = True
                self.counters["connects"] += 1
                self.last_error = ""
                self._actions.clear()  # anything queued for an earlier connection is replayed by its owner
                if self.subscriptions:
                    options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
                                               if self.retained_on_subscribe else SubscribeOptions.RETAIN_DO_NOT_SEND)
                    client.subscribe([(topic, options) for topic in self.subscriptions])
                self._connected.set()
                log.info("%s: connected to %s:%d", self.name, self.settings.host, self.settings.port)
                self._call(self.on_connected, generation)
            if not established and time.monotonic() > deadline:
                break
            self._flush_actions(client, generation)
            if not self._step(client):
                break
        if not established:
            self._hard_close(client)
            if self._stop.is_set():
                return False
            self.counters["connect_failures"] += 1
            if self._connack is not None and self._connack.is_failure:
                error = f"broker refused the connection: {self._connack}"
                now = time.monotonic()
                if error != self.last_error or now - self._refusal_logged_s >= FAILURE_LOG_INTERVAL_S:
                    self._refusal_logged_s = now  # once per cause and interval: retries continue with backoff
                    log.error("%s: %s (check fleet.username, fleet.password_file, the client certificate and "
                              "the broker's ACL)", self.name, error)
                self.last_error = error
            elif time.monotonic() > deadline:
                self.last_error = "no CONNACK within connect_timeout_s"
            else:
                self.last_error = "connection closed before CONNACK"
            return False
        if established:
            self._connected.clear()
            self.counters["disconnects"] += 1
            reason = self._disconnect_reason or "connection lost"
            if not self._stop.is_set():
                log.warning("%s: disconnected from %s:%d (%s)", self.name, self.settings.host,
                            self.settings.port, reason)
            self._call(self.on_disconnected, generation, reason)
        return established

    def _flush_actions(self, client: "paho.Client", generation: int) -> None:
        while self._actions:
            action = self._actions[0]
            if action.generation == generation and action.qos > 0 and \
                    len(self._mid_tokens) >= self.receive_maximum:
                return  # in order: the rest waits for PUBACKs
            self._actions.popleft()
            if action.generation != generation:
                continue
            properties = None
            if action.user_properties or action.correlation is not None or action.expiry_s:
                properties = Properties(PacketTypes.PUBLISH)
                for key, value in action.user_properties:
                    properties.UserProperty = (key, value)
                if action.correlation is not None:
                    properties.CorrelationData = action.correlation
                if action.expiry_s:
                    properties.MessageExpiryInterval = action.expiry_s
            info = client.publish(action.topic, action.payload, qos=action.qos, retain=action.retain,
                                  properties=properties)
            self.counters["published"] += 1
            if action.qos > 0:
                self._mid_tokens[info.mid] = (generation, action.token)

    def _step(self, client: "paho.Client", timeout_s: float | None = None) -> bool:
        """One select + read/write/keepalive round; False when the connection is gone."""
        sock = client.socket()
        if sock is None:
            return False
        timeout = self._idle_wake_s if timeout_s is None else timeout_s
        pending = sock.pending() if hasattr(sock, "pending") else 0
        if pending or self._actions:
            timeout = 0.0
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select([sock, self._wake_r], wlist, [], timeout)
        except (OSError, ValueError, TypeError):
            return False
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        if sock in readable or pending:
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return False
        if client.want_write():
            if client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return False
        return client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS and client.socket() is not None

    def _close(self, client: "paho.Client", generation: int) -> None:
        """Publish the final message (bounded wait for its ack), then a clean DISCONNECT."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        self._flush_actions(client, generation)
        final = self._final
        if final is not None:
            info = client.publish(final.topic, final.payload, qos=final.qos, retain=final.retain)
            while not info.is_published() and time.monotonic() < deadline:
                if not self._step(client, timeout_s=0.05):
                    break
        self._connected.clear()
        client.disconnect()
        while client.socket() is not None and time.monotonic() < deadline + CLOSE_TIMEOUT_S:
            if not self._step(client, timeout_s=0.05):
                break
        self._hard_close(client)

    @staticmethod
    def _hard_close(client: "paho.Client") -> None:
        sock = client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    def _call(self, callback: Callable | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - a callback bug must not kill the connection
            log.exception("%s: callback %s failed", self.name, getattr(callback, "__name__", callback))
