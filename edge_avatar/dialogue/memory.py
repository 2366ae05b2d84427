"""What the avatar remembers: this visit always (and only until the visitor leaves); longer only if a site opts in.

Why this module exists: "I'm looking for radiology" then "which floor is
it on?" must work, and "my name is Sam" should be used -- but a hospital
kiosk must not keep what strangers said. So:

- ``VisitMemory`` holds the visitor's name, the department they are looking
  for, the last entry answered and the last reply (for "say that again"). It
  lives in RAM and ``clear()`` wipes it when perception says the visitor left.
- ``LongTermMemory`` is off by default. A site that enables it gets a small
  SQLite file under ``site.state_dir`` (sqlite3 is in the standard library,
  survives power cuts with its journal and needs no server) holding only
  facts (name, department) per visitor key, never transcripts; rows older
  than the retention period are purged on open and on every write, and
  ``erase()`` deletes one visitor or everything on command.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400.0


@dataclass
class VisitMemory:
    """Facts about the current visitor, for this visit only."""

    name: str = ""
    department_entry_id: str = ""     # the department they are looking for (a knowledge entry id)
    last_entry_id: str = ""
    last_reply_text: str = ""
    pending_suggestion_id: str = ""   # "Did you mean X?" asked; a "yes" answers X
    name_used: bool = False           # the name was said back once (not in every sentence)
    asked_entry_ids: list[str] = field(default_factory=list)
    turns: int = 0

    def clear(self) -> None:
        self.pending_suggestion_id = ""
        self.name_used = False
        self.name = ""
        self.department_entry_id = ""
        self.last_entry_id = ""
        self.last_reply_text = ""
        self.asked_entry_ids = []
        self.turns = 0

    @property
    def is_empty(self) -> bool:
        return not (self.name or self.department_entry_id or self.last_entry_id or self.turns)


class LongTermMemory:
    """Per-visitor facts in SQLite with a retention period. Thread-safe; one connection."""

    def __init__(self, path: str | Path, retention_days: float, clock=time.time):
        self.path = Path(path).expanduser()
        self.retention_s = retention_days * SECONDS_PER_DAY
        self._clock = clock                       # wall-clock seconds (retention is about calendar time)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS visitor_facts ("
                         " visitor_key TEXT NOT NULL, fact TEXT NOT NULL, value TEXT NOT NULL,"
                         " updated_s REAL NOT NULL, PRIMARY KEY (visitor_key, fact))")
        self._db.commit()
        self.purge_expired()

    def remember(self, visitor_key: str, facts: dict[str, str]) -> None:
        if not visitor_key:
            return
        now = self._clock()
        with self._lock:
            self._db.executemany(
                "INSERT INTO visitor_facts (visitor_key, fact, value, updated_s) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(visitor_key, fact) DO UPDATE SET value = excluded.value, updated_s = excluded.updated_s",
                [(visitor_key, k, v, now) for k, v in facts.items() if v])
            self._db.commit()
        self.purge_expired()

    def recall(self, visitor_key: str) -> dict[str, str]:
        cutoff = self._clock() - self.retention_s
        with self._lock:
            rows = self._db.execute("SELECT fact, value FROM visitor_facts WHERE visitor_key = ? AND updated_s >= ?",
                                    (visitor_key, cutoff)).fetchall()
        return dict(rows)

    def purge_expired(self) -> int:
        cutoff = self._clock() - self.retention_s
        with self._lock:
            count = self._db.execute("DELETE FROM visitor_facts WHERE updated_s < ?", (cutoff,)).rowcount
            self._db.commit()
        if count:
            log.info("long-term memory: purged %d facts older than the retention period", count)
        return count

    def erase(self, visitor_key: str | None = None) -> int:
        """Delete one visitor's facts, or everything when ``visitor_key`` is None; returns rows deleted."""
        with self._lock:
            if visitor_key is None:
                count = self._db.execute("DELETE FROM visitor_facts").rowcount
            else:
                count = self._db.execute("DELETE FROM visitor_facts WHERE visitor_key = ?", (visitor_key,)).rowcount
            self._db.commit()
            self._db.execute("VACUUM")  # erased means erased: do not leave the rows in free pages
        log.info("long-term memory: erased %d facts (%s)", count,
                 "all visitors" if visitor_key is None else "one visitor")
        return count

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM visitor_facts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
