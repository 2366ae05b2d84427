"""The operator's side of the fleet: who is online, how they are doing, what happened, and commands.

Why this module exists: ``edge-avatar fleet ls|watch|send``, the integration
tests and the load benchmark all need the same consumer: subscribe to the
fleet's retained status and telemetry, to events and command results; drop
duplicate events (QoS 1 delivers at least once) by ``(stream_id, seq)``; send a
command with an id, the operator's identity (payload and MQTT 5 user
property), correlation data and a message expiry, and wait for *its* answer.
It speaks MQTT only through ``edge_avatar.fleet.mqtt``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_avatar.fleet.messages import CMD_RESULT, EVENTS, STATUS, TELEMETRY, TOPIC_ROOT, DeviceTopics, parse_topic
from edge_avatar.fleet.mqtt import BrokerSettings, Incoming, MqttConnection

log = logging.getLogger(__name__)


@dataclass
class DeviceView:
    site: str
    device: str
    status: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    last_event: dict[str, Any] | None = None
    updated_s: float = 0.0           # monotonic time of the last message about this device


@dataclass(frozen=True)
class FleetMessage:
    """One decoded fleet message, as ``watch`` prints it."""

    site: str
    device: str
    leaf: str
    payload: Any
    retain: bool
    duplicate: bool = False


class EventDeduper:
    """Exactly-once on top of at-least-once: remembers, per stream, the seqs seen (compactly)."""

    def __init__(self) -> None:
        self._floor: dict[tuple[str, str, str], int] = {}      # every seq <= floor has been seen
        self._above: dict[tuple[str, str, str], set[int]] = {}  # seen seqs above the floor

    def first_time(self, site: str, device: str, stream_id: str, seq: int) -> bool:
        key = (site, device, stream_id)
        floor = self._floor.get(key)
        above = self._above.setdefault(key, set())
        if floor is None:
            floor = seq - 1
            self._floor[key] = floor
        if seq <= floor or seq in above:
            return False
        above.add(seq)
        while floor + 1 in above:
            floor += 1
            above.discard(floor)
        self._floor[key] = floor
        return True


@dataclass
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None


class FleetConsole:
    """Subscribes to a site (or all sites), keeps a device table, sends commands and waits for answers."""

    def __init__(self, settings: BrokerSettings, *, operator: str, site: str = "+",
                 on_message: Callable[[FleetMessage], None] | None = None, events: bool = True):
        self.operator = operator
        self.site = site
        self.on_message = on_message
        self.devices: dict[tuple[str, str], DeviceView] = {}
        self.deduper = EventDeduper()
        self.duplicates = 0
        self._lock = threading.Lock()
        self._waiters: dict[str, _Waiter] = {}
        leaves = [STATUS, TELEMETRY, CMD_RESULT] + ([EVENTS] if events else [])
        subscriptions = tuple(f"{TOPIC_ROOT}/{site}/+/{leaf}" for leaf in leaves)
        self.connection = MqttConnection(settings, name="console", subscriptions=subscriptions,
                                         on_message=self._on_message)

    def start(self, timeout_s: float = 5.0) -> "FleetConsole":
        self.connection.start()
        if not self.connection.wait_connected(timeout_s):
            error = self.connection.last_error or "no answer"
            self.connection.stop()
            raise ConnectionError(f"cannot connect to {self.connection.settings.host}:"
                                  f"{self.connection.settings.port}: {error}")
        return self

    def stop(self) -> None:
        self.connection.stop(timeout_s=2.0)

    def __enter__(self) -> "FleetConsole":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ receiving

    def _on_message(self, incoming: Incoming) -> None:
        parsed = parse_topic(incoming.topic)
        if parsed is None:
            return
        try:
            payload = json.loads(incoming.payload.decode("utf-8")) if incoming.payload else None
        except (UnicodeDecodeError, ValueError):
            payload = {"undecodable": len(incoming.payload)}
        duplicate = False
        with self._lock:
            view = self.devices.get((parsed.site, parsed.device))
            if view is None:
                view = self.devices[(parsed.site, parsed.device)] = DeviceView(parsed.site, parsed.device)
            view.updated_s = time.monotonic()
            if parsed.leaf == STATUS:
                view.status = payload if isinstance(payload, dict) else None
            elif parsed.leaf == TELEMETRY and isinstance(payload, dict):
                view.telemetry = payload
            elif parsed.leaf == EVENTS and isinstance(payload, dict):
                seq, stream = payload.get("seq"), str(payload.get("stream_id", ""))
                if isinstance(seq, int):
                    duplicate = not self.deduper.first_time(parsed.site, parsed.device, stream, seq)
                    self.duplicates += duplicate
                if not duplicate:
                    view.last_event = payload
            elif parsed.leaf == CMD_RESULT and isinstance(payload, dict):
                key = (incoming.correlation or b"").decode("ascii", "replace") or str(payload.get("id"))
                waiter = self._waiters.get(key)
                if waiter is not None and waiter.answer is None:
                    waiter.answer = payload
                    waiter.event.set()
        if self.on_message is not None and not duplicate:
            self.on_message(FleetMessage(parsed.site, parsed.device, parsed.leaf, payload, incoming.retain))

    def snapshot(self) -> list[DeviceView]:
        with self._lock:
            return sorted((DeviceView(**v.__dict__) for v in self.devices.values()),
                          key=lambda v: (v.site, v.device))

    # ------------------------------------------------------------------ commands

    def send(self, site: str, device: str, command: str, args: dict[str, Any] | None = None, *,
             timeout_s: float = 10.0, request_id: str | None = None) -> dict[str, Any]:
        """Send one command and return the device's answer (``{"ok": ..., "result" | "error": ...}``).

        Raises ``TimeoutError`` when no answer came (device offline, or the
        command expired at the broker after ``timeout_s``).
        """
        request_id = request_id or f"{self.operator}-{secrets.token_hex(6)}"
        body = {"id": request_id, "operator": self.operator, "args": args or {}}
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return self.send_raw(site, device, command, payload, correlation=request_id, timeout_s=timeout_s)

    def send_raw(self, site: str, device: str, command: str, payload: bytes, *, correlation: str,
                 timeout_s: float = 10.0, user_properties: tuple[tuple[str, str], ...] | None = None
                 ) -> dict[str, Any]:
        """Publish any payload (tests, fuzzing) on ``cmd/<command>`` and wait for the answer."""
        waiter = self.submit_raw(site, device, command, payload, correlation=correlation, timeout_s=timeout_s,
                                 user_properties=user_properties)
        return self.wait(correlation, waiter, timeout_s)

    def submit_raw(self, site: str, device: str, command: str, payload: bytes, *, correlation: str,
                   timeout_s: float = 10.0, user_properties: tuple[tuple[str, str], ...] | None = None) -> _Waiter:
        topic = DeviceTopics(site, device).cmd(command) if command else DeviceTopics(site, device).topic("cmd")
        waiter = _Waiter()
        with self._lock:
            self._waiters[correlation] = waiter
        props = (("operator", self.operator),) if user_properties is None else user_properties
        sent = self.connection.publish(topic, payload, qos=1, user_properties=props,
                                       correlation=correlation.encode("ascii"),
                                       expiry_s=max(1, int(round(timeout_s))))
        if sent is None:
            with self._lock:
                self._waiters.pop(correlation, None)
            raise ConnectionError("not connected to the broker")
        return waiter

    def wait(self, correlation: str, waiter: _Waiter, timeout_s: float) -> dict[str, Any]:
        try:
            if not waiter.event.wait(timeout_s):
                raise TimeoutError(f"no answer within {timeout_s:g} s (is the device online?)")
            assert waiter.answer is not None
            return waiter.answer
        finally:
            with self._lock:
                self._waiters.pop(correlation, None)
