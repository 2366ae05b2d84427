"""The bounded offline queue: every outgoing telemetry and event message waits here until the broker acks it.

Why this module exists: the broker may be down for hours, and the device may
restart meanwhile; events (a visitor engaged, a turn's latencies, an error)
must then arrive late rather than never, in order. Every message is written
here first and deleted when its PUBACK arrives, so a crash or a lost
connection replays from the first unacknowledged message.

The bound is in bytes (``fleet.offline_queue_max_mb``). When full, the oldest
*telemetry* is dropped first (a newer sample supersedes it); events are never
dropped for telemetry's sake. Only when the queue holds nothing but events
is a new event refused, and the caller reports that (``queue_overflow``).

Why SQLite (standard library): atomic commits survive power loss on an eMMC,
deleting from the middle (oldest telemetry) is one statement, AUTOINCREMENT
ids never go backwards, and there is nothing to install. WAL with
``synchronous=NORMAL``: at most the last commit is lost on power failure,
with far fewer flash writes than ``FULL``. ``MemorySpool`` has the same
behaviour without persistence (no state directory, or a broken disk).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

log = logging.getLogger(__name__)

SPOOL_FILE = "offline-queue.sqlite3"


@dataclass(frozen=True)
class SpoolEntry:
    id: int
    leaf: str          # topic leaf: "telemetry", "events"
    payload: bytes
    retain: bool
    droppable: bool    # telemetry: may be dropped (oldest first) when the queue is full

    @property
    def size_bytes(self) -> int:
        return len(self.payload) + len(self.leaf) + 16


@dataclass(frozen=True)
class Outgoing:
    """A message to queue; ``tag`` comes back in ``AppendResult.refused`` (e.g. an event's seq)."""

    leaf: str
    payload: bytes
    retain: bool = False
    droppable: bool = False
    tag: int | None = None

    @property
    def size_bytes(self) -> int:
        return len(self.payload) + len(self.leaf) + 16


@dataclass
class AppendResult:
    dropped_telemetry: int = 0                            # older telemetry removed to make room
    refused: list[Outgoing] = field(default_factory=list)  # messages that could not be stored at all


class Spool(Protocol):
    max_bytes: int

    def append(self, messages: list[Outgoing], meta: dict[str, str] | None = None,
               delete: Iterable[int] = ()) -> AppendResult: ...
    def read_after(self, after_id: int, limit: int) -> list[SpoolEntry]: ...
    def first_id(self) -> int | None: ...
    @property
    def last_id(self) -> int: ...
    def delete(self, ids: Iterable[int]) -> None: ...
    def __len__(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def close(self) -> None: ...


class MemorySpool:
    """The same policy in memory (lost on restart)."""

    persistent = False

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, SpoolEntry] = OrderedDict()  # id -> entry, oldest first
        self._bytes = 0
        self._next_id = 1
        self._meta: dict[str, str] = {}

    def append(self, messages: list[Outgoing], meta: dict[str, str] | None = None,
               delete: Iterable[int] = ()) -> AppendResult:
        """Delete acknowledged ids, then queue messages in order (and update ``meta``); see the module doc."""
        result = AppendResult()
        self.delete(delete)
        self._meta.update(meta or {})
        for message in messages:
            need = message.size_bytes
            if self._bytes + need > self.max_bytes:
                result.dropped_telemetry += self._drop_telemetry(self._bytes + need - self.max_bytes)
            if self._bytes + need > self.max_bytes:
                result.refused.append(message)
                continue
            entry = SpoolEntry(self._next_id, message.leaf, message.payload, message.retain, message.droppable)
            self._next_id += 1
            self._entries[entry.id] = entry
            self._bytes += entry.size_bytes
        return result

    def _drop_telemetry(self, excess_bytes: int) -> int:
        freed = 0
        doomed = []
        for entry in self._entries.values():
            if freed >= excess_bytes:
                break
            if entry.droppable:
                doomed.append(entry.id)
                freed += entry.size_bytes
        self.delete(doomed)
        return len(doomed)

    def read_after(self, after_id: int, limit: int) -> list[SpoolEntry]:
        out = []
        for entry_id, entry in self._entries.items():
            if entry_id > after_id:
                out.append(entry)
                if len(out) >= limit:
                    break
        return out

    def first_id(self) -> int | None:
        """The oldest queued id, None when empty."""
        return next(iter(self._entries), None)

    @property
    def last_id(self) -> int:
        """The newest id ever queued (0 before the first)."""
        return self._next_id - 1

    def delete(self, ids: Iterable[int]) -> None:
        for entry_id in ids:
            entry = self._entries.pop(entry_id, None)
            if entry is not None:
                self._bytes -= entry.size_bytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def close(self) -> None:
        pass


class SqliteSpool:
    """The on-disk queue. One thread uses it at a time (the fleet sender)."""

    persistent = True

    def __init__(self, directory: str | Path, max_bytes: int):
        self.max_bytes = max_bytes
        self.path = Path(directory).expanduser() / SPOOL_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            # A torn or foreign file: keep it for inspection, start a fresh queue rather than go silent.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("offline queue %s is unreadable (%s); moved aside to %s", self.path, exc, aside.name)
            for suffix in ("", "-wal", "-shm"):
                victim = Path(str(self.path) + suffix)
                if victim.exists():
                    os.replace(victim, Path(str(aside) + suffix))
            self._db = self._open()
        self._recount()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                       "leaf TEXT NOT NULL, payload BLOB NOT NULL, retain INTEGER NOT NULL, "
                       "droppable INTEGER NOT NULL, size INTEGER NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS messages_droppable ON messages(droppable, id)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("SELECT COUNT(*) FROM messages").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def append(self, messages: list[Outgoing], meta: dict[str, str] | None = None,
               delete: Iterable[int] = ()) -> AppendResult:
        """Delete acknowledged ids, queue messages in order and update ``meta``: one transaction."""
        result = AppendResult()
        doomed = list(delete)
        if not messages and not meta and not doomed:
            return result
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._delete_in_transaction(doomed)
            for key, value in (meta or {}).items():
                self.set_meta(key, value)
            for message in messages:
                need = message.size_bytes
                if self._bytes + need > self.max_bytes:
                    result.dropped_telemetry += self._drop_telemetry(self._bytes + need - self.max_bytes)
                if self._bytes + need > self.max_bytes:
                    result.refused.append(message)
                    continue
                cursor = db.execute("INSERT INTO messages (leaf, payload, retain, droppable, size) "
                                    "VALUES (?, ?, ?, ?, ?)",
                                    (message.leaf, message.payload, int(message.retain), int(message.droppable),
                                     need))
                self._last_id = int(cursor.lastrowid or self._last_id)
                self._count += 1
                self._bytes += need
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount()
            raise
        return result

    def _drop_telemetry(self, excess_bytes: int) -> int:
        freed = dropped = 0
        while freed < excess_bytes:
            rows = self._db.execute("SELECT id, size FROM messages WHERE droppable = 1 ORDER BY id LIMIT 256"
                                    ).fetchall()
            if not rows:
                break
            doomed = []
            for row_id, size in rows:
                doomed.append((row_id,))
                freed += size
                if freed >= excess_bytes:
                    break
            self._db.executemany("DELETE FROM messages WHERE id = ?", doomed)
            dropped += len(doomed)
        self._count -= dropped
        self._bytes -= freed
        return dropped

    def _recount(self) -> None:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        self._last_id = int(row[0]) if row else 0

    def read_after(self, after_id: int, limit: int) -> list[SpoolEntry]:
        rows = self._db.execute("SELECT id, leaf, payload, retain, droppable FROM messages WHERE id > ? "
                                "ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [SpoolEntry(int(r[0]), r[1], bytes(r[2]), bool(r[3]), bool(r[4])) for r in rows]

    def first_id(self) -> int | None:
        """The oldest queued id, None when empty."""
        row = self._db.execute("SELECT MIN(id) FROM messages").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    @property
    def last_id(self) -> int:
        """The newest id ever queued (0 before the first)."""
        return self._last_id

    def delete(self, ids: Iterable[int]) -> None:
        doomed = list(ids)
        if not doomed:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._delete_in_transaction(doomed)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount()
            raise

    def _delete_in_transaction(self, ids: list[int]) -> None:
        for row_id in ids:
            row = self._db.execute("DELETE FROM messages WHERE id = ? RETURNING size", (row_id,)).fetchone()
            if row is not None:
                self._count -= 1
                self._bytes -= int(row[0])

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:  # pragma: no cover - closing must not raise during shutdown
            pass
