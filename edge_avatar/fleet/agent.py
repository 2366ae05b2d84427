"""The device's side of the fleet: status, telemetry, events and commands, never in the media loop's way.

Why this module exists: a session needs one object to report through and to
take commands from, whether or not a broker is configured. ``FleetAgent``:

- ``event(kind, **fields)`` and ``update_status(**fields)`` are safe from any
  thread, the tick included: they append to a bounded in-memory list under a
  lock held for an append and return at once. Nothing in them touches the
  disk, the network or JSON.
- One sender thread drains that list, applies the privacy policy, encodes
  JSON, samples telemetry every ``fleet.telemetry_interval_s`` and writes
  everything either to the bounded offline queue (``spool``), from which it
  is published with QoS 1 in order and deleted on PUBACK, or, with no broker
  configured, to a local JSON-lines file.
- Every event carries ``stream_id`` and ``seq``: ``seq`` increases by one per
  event and survives restarts (it is stored with the queue), so a consumer
  can drop duplicates (QoS 1 is at-least-once) and see gaps.
- Commands arrive on the MQTT thread, are checked there (``commands``), and
  run one at a time on a command thread; every one is answered on
  ``cmd-result`` and audited as a ``command`` event.

Overflow, in order: the oldest queued telemetry goes first; events are only
refused when the queue holds nothing but events (``queue_overflow`` is then
reported with the lost seq range, as soon as there is room).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edge_avatar import __version__
from edge_avatar.fleet.commands import (
    INVALID_PAYLOAD,
    Answer,
    CommandHandlers,
    CommandProcessor,
    DefaultCommandHandlers,
    Request,
    safe_label,
)
from edge_avatar.fleet.messages import (
    CMD,
    EVENTS,
    SCHEMA_VERSION,
    TELEMETRY,
    DeviceTopics,
    PrivacyPolicy,
    encode,
    parse_topic,
)
from edge_avatar.fleet.spool import MemorySpool, Outgoing, SqliteSpool
from edge_avatar.fleet.telemetry import TelemetrySource

log = logging.getLogger(__name__)

STOP_FLUSH_TIMEOUT_S = 2.0      # on stop, how long to keep publishing the queue before giving up (it persists)
RESULT_ACK_TIMEOUT_S = 2.0      # before a command's follow-up (restart), wait this long for its answer's PUBACK
OVERFLOW_LOG_INTERVAL_S = 300.0
ACK_FLUSH_S = 0.5               # acknowledged messages are deleted from the queue within this long
IDLE_WAKE_S = 5.0
PENDING_OVERFLOW_KEY = "pending_overflow"  # a loss not yet reported survives a restart


@dataclass
class _Item:
    kind: str                 # "event" or "telemetry"
    name: str                 # event kind
    fields: dict[str, Any]
    seq: int
    ts: float


@dataclass
class _Overflow:
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    telemetry: int = 0

    report_seq: int | None = None   # the seq of the queue_overflow event that reports this loss

    def add_event(self, seq: int) -> None:
        self.events += 1
        self.first_seq = seq if self.first_seq is None else min(self.first_seq, seq)
        self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)

    def to_meta(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_meta(cls, text: str | None) -> "_Overflow":
        try:
            return cls(**json.loads(text)) if text else cls()
        except (ValueError, TypeError):
            return cls()

    def merge(self, other: "_Overflow") -> None:
        self.telemetry += other.telemetry
        self.events += other.events
        for seq in (other.first_seq, other.last_seq):
            if seq is not None:
                self.first_seq = seq if self.first_seq is None else min(self.first_seq, seq)
                self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)


@dataclass
class FleetCounters:
    events: int = 0
    telemetry: int = 0
    telemetry_dropped: int = 0
    events_dropped: int = 0
    redactions: int = 0
    written_local: int = 0
    published: int = 0
    acked: int = 0
    refused_by_broker: int = 0
    replays: int = 0
    commands: dict[str, int] = field(default_factory=dict)


class LocalSink:
    """The embedded default: the same messages as JSON lines in a file, rotated once at a size limit."""

    def __init__(self, path: str | Path, max_bytes: int):
        self.path = Path(path).expanduser()
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the agent's life

    def write(self, records: list[tuple[str, bool, bytes]]) -> None:
        for topic, retain, payload in records:
            line = '{"topic":' + json.dumps(topic) + ',"retain":' + ("true" if retain else "false") + \
                   ',"payload":' + payload.decode("utf-8") + "}\n"
            self._file.write(line)
        self._file.flush()
        if self._file.tell() >= self.max_bytes:
            self._file.close()
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()


class FleetAgent:
    """Reports for one device and takes its commands. ``start()`` never waits for a broker."""

    def __init__(self, config: Any, *, handlers: CommandHandlers | None = None,
                 telemetry: TelemetrySource | None = None, status: Mapping[str, Any] | None = None,
                 wall_clock: Callable[[], float] = time.time, monotonic_s: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, spool_factory: Callable[[], Any] | None = None):
        self.config = config
        self.fleet = config.fleet
        self.topics = DeviceTopics(config.site.name, config.site.device_id)
        self.privacy = PrivacyPolicy.from_config(config.privacy)
        self.handlers = handlers or DefaultCommandHandlers(version=__version__)
        self.telemetry = telemetry if telemetry is not None else TelemetrySource(recent_turns=self.fleet.recent_turns)
        self.processor = CommandProcessor(self.handlers, allowed_operators=self.fleet.allowed_operators,
                                          max_payload_bytes=self.fleet.command_max_bytes)
        self.mode = "mqtt" if self.fleet.enabled else "local"
        self._wall = wall_clock
        self._monotonic = monotonic_s
        self._rng = rng or random.Random()
        self._spool_factory = spool_factory
        self.counters = FleetCounters()

        self._lock = threading.Lock()          # guards _inbox, _status, _overflow (held for O(1) work)
        self._inbox: list[_Item] = []
        self._in_transit = 0                   # items taken from the inbox, not yet in the queue or file
        self._put_serial = 0                   # items offered to the inbox so far (dropped ones too)
        self._stored_serial = 0                # ... of which the sender has stored (or dropped) this many
        self._stored_through_id = 0            # the newest queue id after that store
        self._queue_first_id: int | None = None  # the oldest id still queued (unacknowledged)
        self._idle_waiters = 0                 # wait_idle() callers: acknowledged messages are deleted at once
        self._inbox_max = self.fleet.publish_queue_max_messages
        self._status: dict[str, Any] = {"version": __version__, "board": config.board.name,
                                        "engines": {}, "persona": None, **dict(status or {})}
        self._status_dirty = True
        self._overflow = _Overflow()          # dropped by producers (memory full), taken by the sender
        self._pending_overflow = _Overflow()  # sender thread: loss not yet reported (kept in the queue's meta)
        self._persisted_seq = 0
        self._overflow_logged_s = -1e9
        self._telemetry_due_now = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = itertools.count(1)
        self._telemetry_sample = itertools.count(1)
        self.stream_id = ""
        self.setup_error = ""
        self._sender: threading.Thread | None = None
        self._started = False

        # MQTT state (sender thread unless noted)
        self.connection: Any = None
        self.spool: Any = None
        self._local: LocalSink | None = None
        self._acks: list[tuple[int, Any, bool]] = []   # appended by the network thread under _lock
        self._link_generation: int | None = None      # set by the network thread
        self._inflight_generation: int | None = None
        self._inflight: dict[int, int] = {}           # spool id -> size, awaiting PUBACK
        self._cursor = 0
        self._result_waiters: dict[Any, threading.Event] = {}
        self._commands: queue.Queue[Request | None] = queue.Queue(maxsize=self.fleet.command_queue_max)
        self._command_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ paths

    def _state_dir(self) -> Path:
        return Path(self.config.site.state_dir).expanduser()

    @property
    def offline_queue_dir(self) -> Path:
        return Path(self.fleet.offline_queue_dir).expanduser() if self.fleet.offline_queue_dir \
            else self._state_dir() / "fleet"

    @property
    def local_log_path(self) -> Path:
        return Path(self.fleet.local_log_path).expanduser() if self.fleet.local_log_path \
            else self._state_dir() / "fleet.jsonl"

    # ------------------------------------------------------------------ life cycle

    def start(self, strict: bool = False) -> None:
        """Start reporting. Never waits for the broker.

        Settings that can never connect (a missing password file or
        certificate) raise ``ConnectionSetupError`` with ``strict``; otherwise
        they are logged as an error and the agent reports to the local
        JSON-lines file instead: a fleet misconfiguration must not take the
        avatar down.
        """
        if self._started:
            return
        self._started = True
        if self.mode == "mqtt":
            try:
                self._check_mqtt_settings()
            except Exception as exc:
                if strict:
                    raise
                self.setup_error = str(exc)
                log.error("fleet: %s; reporting to %s instead of the broker", exc, self.local_log_path)
                self.mode = "local"
        if self.mode == "mqtt":
            self._status_dirty = False  # published on every connect
            self.spool = self._open_spool()
            self.stream_id = self.spool.get_meta("stream_id") or secrets.token_hex(6)
            self.spool.set_meta("stream_id", self.stream_id)
            self._persisted_seq = int(self.spool.get_meta("event_seq") or 0)
            self._seq = itertools.count(self._persisted_seq + 1)
            self._pending_overflow = _Overflow.from_meta(self.spool.get_meta(PENDING_OVERFLOW_KEY))
            with self._lock:  # events queued before start() continue the persisted numbering
                for item in self._inbox:
                    if item.kind == "event":
                        item.seq = next(self._seq)
            self._start_mqtt()
        else:
            self.stream_id = secrets.token_hex(6)
            self._local = LocalSink(self.local_log_path, int(self.fleet.local_log_max_mb * 2**20))
            log.info("fleet: no broker configured; writing status, telemetry and events to %s", self.local_log_path)
        self._sender = threading.Thread(target=self._run_sender, name="fleet-sender", daemon=True)
        self._sender.start()

    def _check_mqtt_settings(self) -> None:
        from edge_avatar.fleet.mqtt import make_tls_context, read_password  # noqa: PLC0415 - paho only here

        if self.fleet.password_file:
            read_password(self.fleet.password_file)
        if self.fleet.tls:
            make_tls_context(self.fleet.tls_ca_file, self.fleet.tls_cert_file, self.fleet.tls_key_file)

    def _open_spool(self) -> Any:
        max_bytes = int(self.fleet.offline_queue_max_mb * 2**20)
        if self._spool_factory is not None:
            return self._spool_factory()
        try:
            return SqliteSpool(self.offline_queue_dir, max_bytes)
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error or a read-only disk: keep reporting
            log.error("fleet: offline queue in %s unavailable (%s); queueing in memory only (lost on restart)",
                      self.offline_queue_dir, exc)
            return MemorySpool(max_bytes)

    def _start_mqtt(self) -> None:
        from edge_avatar.fleet.mqtt import BrokerSettings, MqttConnection, Will  # noqa: PLC0415 - paho only here

        client_id = self.fleet.client_id or f"{self.topics.site}.{self.topics.device}"
        will = Will(self.topics.status, encode(self._status_payload("offline", reason="connection lost")))
        self.connection = MqttConnection(
            BrokerSettings.from_config(self.fleet, client_id), name="fleet", will=will,
            subscriptions=(self.topics.cmd_filter,), retained_on_subscribe=False, on_connected=self._on_connected,
            on_disconnected=self._on_disconnected, on_message=self._on_message, on_acked=self._on_acked,
            rng=self._rng)
        self._command_thread = threading.Thread(target=self._run_commands, name="fleet-commands", daemon=True)
        self._command_thread.start()
        self.connection.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed (bounded), publish status offline, disconnect. Idempotent."""
        if not self._started or self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        deadline = self._monotonic() + timeout_s
        if self._sender is not None:
            self._sender.join(max(0.1, deadline - self._monotonic()))
        if self._command_thread is not None:
            try:
                self._commands.put_nowait(None)
            except queue.Full:
                pass
            self._command_thread.join(max(0.1, min(1.0, deadline - self._monotonic())))
        if self.connection is not None:
            from edge_avatar.fleet.mqtt import Will  # noqa: PLC0415

            final = Will(self.topics.status, encode(self._status_payload("offline", reason="stopped")))
            self.connection.stop(final=final, timeout_s=max(0.5, deadline - self._monotonic()))
        if self._local is not None:
            self._local.write([(self.topics.status, True, encode(self._status_payload("offline", reason="stopped")))])
            self._local.close()
        if self.spool is not None:
            self.spool.close()
        self.telemetry.close()

    # ------------------------------------------------------------------ producers (any thread, never blocks)

    def event(self, kind: str, **fields: Any) -> int:
        """Queue one event; returns its seq (also when it had to be dropped, which is counted and reported)."""
        seq = next(self._seq)
        item = _Item("event", kind, dict(fields), seq, self._wall())
        self._put(item)
        return seq

    def update_status(self, **fields: Any) -> None:
        """Merge into the retained status (persona, engines, ...) and republish it."""
        with self._lock:
            self._status.update(fields)
            self._status_dirty = True
        self._wake.set()

    def telemetry_now(self) -> None:
        """Sample and send telemetry at the next opportunity, outside the regular interval."""
        self._telemetry_due_now = True
        self._wake.set()

    def _put(self, item: _Item) -> None:
        with self._lock:
            self._put_serial += 1
            if len(self._inbox) >= self._inbox_max and not self._make_room(item):
                return
            self._inbox.append(item)
        self._wake.set()

    def _make_room(self, item: _Item) -> bool:
        """Called with the lock held and the inbox full: False if ``item`` itself is dropped."""
        for i, queued in enumerate(self._inbox):
            if queued.kind == "telemetry":
                del self._inbox[i]
                self.counters.telemetry_dropped += 1
                self._overflow.telemetry += 1
                return True
        if item.kind == "telemetry":
            self.counters.telemetry_dropped += 1
            self._overflow.telemetry += 1
        else:
            self.counters.events_dropped += 1
            self._overflow.add_event(item.seq)
        return False

    # ------------------------------------------------------------------ payloads

    def _envelope(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "site": self.topics.site, "device": self.topics.device,
                "ts": round(self._wall(), 3)}

    def _status_payload(self, state: str, **extra: Any) -> dict[str, Any]:
        payload = self._envelope()
        payload["state"] = state
        payload["stream_id"] = self.stream_id
        if state == "online":
            with self._lock:
                status = dict(self._status)
            payload.update(self._scrub(status, payload))
        else:
            payload.pop("ts")  # the will is written at connect time; a timestamp in it would lie
            payload["version"] = __version__
        payload.update(extra)
        return payload

    def _scrub(self, fields: Mapping[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        clean, removed = self.privacy.scrub(fields)
        if removed:
            self.counters.redactions += len(removed)
            envelope["redacted"] = removed
        return clean

    def _encode_item(self, item: _Item) -> Outgoing:
        if item.kind == "event":
            payload = self._envelope()
            payload["ts"] = round(item.ts, 3)
            payload.update(stream_id=self.stream_id, seq=item.seq, kind=item.name)
            payload["data"] = self._scrub(item.fields, payload)
            return Outgoing(EVENTS, _safe_encode(payload), retain=False, droppable=False, tag=item.seq)
        payload = self._envelope()
        payload["ts"] = round(item.ts, 3)
        payload["sample"] = item.seq
        payload.update(self._scrub(item.fields, payload))
        return Outgoing(TELEMETRY, _safe_encode(payload), retain=True, droppable=True)

    def fleet_stats(self) -> dict[str, Any]:
        c = self.counters
        out: dict[str, Any] = {"mode": self.mode, "events": c.events, "telemetry": c.telemetry,
                               **({"setup_error": self.setup_error} if self.setup_error else {}),
                               "dropped": {"telemetry": c.telemetry_dropped, "events": c.events_dropped},
                               "memory_queue": len(self._inbox)}
        if self.spool is not None:
            out["offline_queue"] = {"messages": len(self.spool), "mb": round(self.spool.size_bytes / 2**20, 3),
                                    "persistent": bool(getattr(self.spool, "persistent", False))}
        if self.connection is not None:
            s = self.connection.stats()
            out["connection"] = {"connected": s["connected"], "connects": s["connects"],
                                 "failures": s["connect_failures"], "last_error": s["last_error"]}
            out["commands"] = dict(self.processor.counts)
        return out

    # ------------------------------------------------------------------ the sender thread

    def _run_sender(self) -> None:
        interval_s = self.fleet.telemetry_interval_s
        next_telemetry_s = self._monotonic()  # one sample at start: operators see a device the moment it is up
        stop_deadline: float | None = None
        while True:
            now_s = self._monotonic()
            timeout_s = min(next_telemetry_s - now_s, IDLE_WAKE_S)
            if self._acks or self._inflight:  # acknowledgements due: delete them within ACK_FLUSH_S
                timeout_s = min(timeout_s, ACK_FLUSH_S if not self._idle_waiters else 0.01)
            self._wake.wait(max(0.0, timeout_s))
            self._wake.clear()
            now_s = self._monotonic()
            stopping = self._stop.is_set()  # read before draining: whatever was queued before stop() goes out
            try:
                if now_s >= next_telemetry_s or self._telemetry_due_now:
                    self._telemetry_due_now = False
                    self._sample_telemetry()
                    if now_s >= next_telemetry_s:  # on the grid; after a stall, resume from now (no burst)
                        next_telemetry_s += interval_s
                        if next_telemetry_s <= now_s:
                            next_telemetry_s = now_s + interval_s
                self._drain()
            except Exception:  # noqa: BLE001 - the sender must outlive any single bad message or disk error
                log.exception("fleet: sender iteration failed")
                self._stop.wait(0.5)
            if stopping:
                if stop_deadline is None:
                    stop_deadline = self._monotonic() + STOP_FLUSH_TIMEOUT_S
                if self.mode == "local" or not self._publishing_pending() or self._monotonic() >= stop_deadline:
                    break
                self._wake.wait(0.02)

    def _sample_telemetry(self) -> None:
        sample = self.telemetry.sample()
        sample["fleet"] = self.fleet_stats()
        self._put(_Item("telemetry", "", sample, next(self._telemetry_sample), self._wall()))

    def _drain(self) -> None:
        with self._lock:
            items, self._inbox = self._inbox, []
            serial = self._put_serial
            self._in_transit = len(items)
            status_dirty, self._status_dirty = self._status_dirty, False
            dropped_in_memory, self._overflow = self._overflow, _Overflow()
        try:
            self._store(items, status_dirty, dropped_in_memory)
        finally:
            first_id = self.spool.first_id() if self.spool is not None else None
            last_id = self.spool.last_id if self.spool is not None else 0
            with self._lock:
                self._in_transit = 0
                self._stored_serial = serial
                self._stored_through_id = last_id
                self._queue_first_id = first_id

    def _store(self, items: list[_Item], status_dirty: bool, dropped_in_memory: "_Overflow") -> None:
        outgoing = [self._encode_item(item) for item in items]
        self.counters.events += sum(1 for i in items if i.kind == "event")
        self.counters.telemetry += sum(1 for i in items if i.kind == "telemetry")
        if self.mode == "local":
            records = [(self.topics.topic(o.leaf), o.retain, o.payload) for o in outgoing]
            if status_dirty:
                records.insert(0, (self.topics.status, True, encode(self._status_payload("online"))))
            if dropped_in_memory.events:
                report = _Item("event", "queue_overflow",
                               {"events_dropped": dropped_in_memory.events, "first_seq": dropped_in_memory.first_seq,
                                "last_seq": dropped_in_memory.last_seq,
                                "telemetry_dropped": dropped_in_memory.telemetry}, next(self._seq), self._wall())
                records.append((self.topics.topic(EVENTS), False, self._encode_item(report).payload))
            if records:
                self._local.write(records)
                self.counters.written_local += len(records)
            return
        pending = self._pending_overflow
        pending.merge(dropped_in_memory)
        last_seq = max((i.seq for i in items if i.kind == "event"), default=None)
        meta = None
        if last_seq is not None and last_seq > self._persisted_seq:
            self._persisted_seq = last_seq
            meta = {"event_seq": str(last_seq)}
        result = self.spool.append(outgoing, meta=meta, delete=self._take_acks())  # one transaction
        self.counters.telemetry_dropped += result.dropped_telemetry
        for message in result.refused:
            if message.droppable:
                self.counters.telemetry_dropped += 1
                pending.telemetry += 1
            else:
                self.counters.events_dropped += 1
                pending.add_event(message.tag if message.tag is not None else -1)
        if pending.events:
            self._report_overflow(pending)
        if status_dirty and not self._publish_status():
            with self._lock:
                self._status_dirty = True  # not connected: published on (re)connect anyway
        self._pump()

    def _report_overflow(self, pending: "_Overflow") -> None:
        """Queue a ``queue_overflow`` event naming the lost seq range; retried until the queue has room.

        Its seq is taken when the loss begins (so it sits next to the gap it
        describes) and it is kept in the queue's meta until it is stored, so a
        restart does not lose the report.
        """
        now_s = self._monotonic()
        if now_s - self._overflow_logged_s >= OVERFLOW_LOG_INTERVAL_S:
            self._overflow_logged_s = now_s
            log.error("fleet: queue full; %d events dropped (seq %s..%s), %d telemetry samples dropped",
                      pending.events, pending.first_seq, pending.last_seq, pending.telemetry)
        if pending.report_seq is None:
            pending.report_seq = next(self._seq)
        item = _Item("event", "queue_overflow", {"events_dropped": pending.events, "first_seq": pending.first_seq,
                                                 "last_seq": pending.last_seq,
                                                 "telemetry_dropped": pending.telemetry},
                     pending.report_seq, self._wall())
        self._persisted_seq = max(self._persisted_seq, pending.report_seq)
        meta = {"event_seq": str(self._persisted_seq), PENDING_OVERFLOW_KEY: pending.to_meta()}
        result = self.spool.append([self._encode_item(item)], meta=meta)
        if not result.refused:
            self.counters.events += 1
            self._pending_overflow = _Overflow()
            self.spool.set_meta(PENDING_OVERFLOW_KEY, "")

    def _publish_status(self) -> bool:
        if self.connection is None or not self.connection.connected:
            return False
        return self.connection.publish(self.topics.status, encode(self._status_payload("online")), qos=1,
                                       retain=True, token=("status",)) is not None

    # ------------------------------------------------------------------ MQTT: publish from the queue, in order

    def _publishing_pending(self) -> bool:
        return bool(self._inflight) or (self.spool is not None and len(self.spool) > 0 and
                                        self._link_generation is not None)

    def _take_acks(self) -> list[int]:
        """Queue ids the broker acknowledged on the current connection (to delete)."""
        with self._lock:
            acks, self._acks = self._acks, []
        done = []
        for generation, token, ok in acks:
            if generation != self._inflight_generation or not isinstance(token, int):
                continue
            if self._inflight.pop(token, None) is not None:
                done.append(token)
                self.counters.acked += ok
                self.counters.refused_by_broker += not ok
        return done

    def _pump(self) -> None:
        with self._lock:
            link = self._link_generation
        if link is None:
            return
        if link != self._inflight_generation:
            # A new connection: everything not acknowledged goes again, from the oldest, in order.
            if self._inflight or self._cursor:
                self.counters.replays += 1
            self._inflight_generation = link
            self._inflight.clear()
            self._cursor = 0
        window = self.fleet.inflight_max_messages
        while len(self._inflight) < window:
            entries = self.spool.read_after(self._cursor, window - len(self._inflight))
            if not entries:
                return
            for entry in entries:
                sent = self.connection.publish(self.topics.topic(entry.leaf), entry.payload, qos=1,
                                               retain=entry.retain, token=entry.id, generation=link)
                if sent is None:
                    return  # the connection went; the next one replays from the first unacknowledged entry
                self._inflight[entry.id] = entry.size_bytes
                self._cursor = entry.id
                self.counters.published += 1

    # -- callbacks from the network thread: record and wake, nothing more

    def _on_connected(self, generation: int) -> None:
        with self._lock:
            self._link_generation = generation
        # Status first: retained, so any operator sees "online" before the replay arrives.
        self.connection.publish(self.topics.status, encode(self._status_payload("online")), qos=1, retain=True,
                                token=("status",), generation=generation)
        self._wake.set()

    def _on_disconnected(self, generation: int, reason: str) -> None:
        with self._lock:
            if self._link_generation == generation:
                self._link_generation = None
        self._wake.set()

    def _on_acked(self, generation: int, token: Any, ok: bool, reason: str) -> None:
        if isinstance(token, int):
            with self._lock:
                self._acks.append((generation, token, ok))
                pending = len(self._acks)
            # Deleting acknowledged messages can wait for the sender's next round (its next message, or
            # within ACK_FLUSH_S): one transaction and one thread hand-off less per message. Wake it only
            # when the in-flight window may have room for a backlog, or to finish a stop.
            if pending >= self.fleet.inflight_max_messages // 2 or self._stop.is_set() or self._idle_waiters or \
                    (self.spool is not None and len(self.spool) > len(self._inflight)):
                self._wake.set()
            return
        waiter = self._result_waiters.pop(token, None) if isinstance(token, tuple) else None
        if waiter is not None:
            waiter.set()

    def _on_message(self, incoming: Any) -> None:
        parsed = parse_topic(incoming.topic)
        if parsed is None or parsed.leaf != CMD or parsed.site != self.topics.site \
                or parsed.device != self.topics.device:
            log.debug("fleet: ignoring a message outside this device's commands")
            return
        if incoming.retain:
            # A retained command would run again at every reconnect (a retained "restart": a restart loop).
            self._answer(Answer(safe_label(parsed.command), None, False, error_code=INVALID_PAYLOAD,
                                error_message="retained commands are refused; publish commands without retain",
                                correlation=incoming.correlation))
            return
        outcome = self.processor.check(parsed.command, incoming.payload, incoming.user_properties,
                                       incoming.correlation)
        if outcome is None:
            return  # a duplicate of a command still running: its answer is on the way
        if isinstance(outcome, Answer):
            self._answer(outcome)
            return
        try:
            self._commands.put_nowait(outcome)
        except queue.Full:
            self._answer(self.processor.busy(outcome))

    # ------------------------------------------------------------------ commands

    def _run_commands(self) -> None:
        while True:
            request = self._commands.get()
            if request is None or self._stop.is_set():
                return
            answer = self.processor.execute(request)
            waiter = self._answer(answer, wait=answer.then is not None)
            if answer.then is not None:
                if waiter is not None:
                    waiter.wait(RESULT_ACK_TIMEOUT_S)
                try:
                    answer.then()
                except Exception:  # noqa: BLE001
                    log.exception("fleet: follow-up of command %s failed", answer.command)

    def _answer(self, answer: Answer, wait: bool = False) -> threading.Event | None:
        payload = self._envelope()
        payload.update(answer.to_payload())
        clean = self._scrub({k: v for k, v in payload.items() if k not in ("schema", "site", "device", "ts")},
                            payload)
        payload.update(clean)
        token = ("result", secrets.token_hex(4))
        waiter = None
        if wait:
            waiter = threading.Event()
            self._result_waiters[token] = waiter
        sent = self.connection.publish(self.topics.cmd_result, _safe_encode(payload), qos=1, token=token,
                                       correlation=answer.correlation)
        if sent is None:
            log.warning("fleet: answer to command %s lost (not connected)", answer.command)
            self._result_waiters.pop(token, None)
            waiter = None
        counts = self.counters.commands
        key = "ok" if answer.ok else (answer.error_code or "error")
        counts[key] = counts.get(key, 0) + 1
        if answer.ok:
            log.info("fleet: command %s (id %s) from %s done", answer.command, answer.id, answer.operator)
        elif counts[key] <= 20 or counts[key] % 1000 == 0:
            log.warning("fleet: command %s refused: %s (%s x%d)", safe_label(answer.command), answer.error_code,
                        answer.error_message, counts[key])
        audit = {"command": answer.command, "id": answer.id, "operator": answer.operator, "ok": answer.ok}
        if not answer.ok:
            audit["error"] = answer.error_code
        if answer.duplicate:
            audit["duplicate"] = True
        self.event("command", **audit)
        return waiter

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until everything queued before this call is acknowledged and deleted (tests, benchmarks).

        Telemetry keeps arriving while a device runs, so "the queue is empty"
        may never be true at any instant; what a caller means is that nothing
        it produced is still waiting. Acknowledged messages are deleted at
        once (not lazily) while someone waits here.
        """
        deadline = self._monotonic() + timeout_s
        with self._lock:
            target = self._put_serial
            self._idle_waiters += 1
        self._wake.set()
        barrier: int | None = None
        try:
            while True:
                with self._lock:
                    if barrier is None and self._stored_serial >= target and not self._in_transit:
                        barrier = self._stored_through_id
                    first_id = self._queue_first_id
                if barrier is not None and (first_id is None or first_id > barrier):
                    return True
                if self._monotonic() >= deadline:
                    return False
                self._wake.set()
                time.sleep(0.01)
        finally:
            with self._lock:
                self._idle_waiters -= 1


def _safe_encode(payload: dict[str, Any]) -> bytes:
    try:
        return encode(payload)
    except (TypeError, ValueError) as exc:
        log.error("fleet: a message could not be encoded (%s); sending its envelope only", exc)
        keep = {k: payload[k] for k in ("schema", "site", "device", "ts", "stream_id", "seq", "kind", "sample")
                if k in payload}
        keep["encode_error"] = type(exc).__name__
        return encode(keep)
