"""The site knowledge file: what the avatar can answer, checked before the kiosk opens.

Why this module exists: the built-in answer engine is only as good as the
file a site writes, and a site writes it by hand. So the file is validated
strictly at load time -- an empty file, a missing answer, a duplicate id, an
unknown key or a wrong type stops the start with the file, the key path
(``entries[3].answer``) and what was expected -- instead of the avatar
quietly answering nothing. Plain YAML (PyYAML is already a core dependency)
so that a receptionist can edit it.

Format (see examples/hospital-reception/knowledge.yaml)::

    version: 1
    site: Riverside General Hospital
    entries:
      - id: cardiology                     # unique, lower_snake_case
        title: Cardiology
        questions: [Where is cardiology?, ...]
        answer: Cardiology is on the second floor.
        directions: Take the lifts ...     # optional
        hours: Monday to Friday ...        # optional
        tags: [department, heart]          # optional; "department", "emergency", "sensitive" have meaning
        point: behind                      # optional gesture direction
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_avatar.errors import ConfigError

KNOWLEDGE_FORMAT_VERSION = 1
POINT_DIRECTIONS = ("left", "right", "ahead", "behind", "up", "down")
_ENTRY_KEYS = {"id", "title", "questions", "answer", "directions", "hours", "tags", "point"}
_TOP_KEYS = {"version", "site", "entries"}
_ID_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class KnowledgeError(ConfigError):
    """A knowledge file problem: names the file, the key path and what was expected."""


@dataclass(frozen=True)
class KnowledgeEntry:
    """One thing the avatar knows."""

    id: str
    title: str
    questions: tuple[str, ...]
    answer: str
    directions: str = ""
    hours: str = ""
    tags: tuple[str, ...] = ()
    point: str = ""

    @property
    def is_emergency(self) -> bool:
        return "emergency" in self.tags

    @property
    def is_sensitive(self) -> bool:
        return "sensitive" in self.tags

    @property
    def is_department(self) -> bool:
        return "department" in self.tags

    def search_text(self) -> str:
        """Everything the lexical index sees for this entry."""
        return " ".join([self.title, *self.questions, self.answer, self.directions, self.hours, *self.tags])

    def facts(self) -> str:
        """The entry as grounding text for the LLM tier."""
        parts = [f"{self.title}: {self.answer}"]
        if self.directions:
            parts.append(f"Directions: {self.directions}")
        if self.hours:
            parts.append(f"Hours: {self.hours}")
        return " ".join(parts)


@dataclass(frozen=True)
class KnowledgeBase:
    source: str
    site: str
    entries: tuple[KnowledgeEntry, ...]

    def by_id(self, entry_id: str) -> KnowledgeEntry:
        for entry in self.entries:
            if entry.id == entry_id:
                return entry
        raise KeyError(entry_id)

    def get(self, entry_id: str | None) -> KnowledgeEntry | None:
        if entry_id is None:
            return None
        try:
            return self.by_id(entry_id)
        except KeyError:
            return None

    def topics(self, limit: int = 6) -> list[str]:
        """A few titles to say what the avatar can help with (departments first)."""
        ordered = [e for e in self.entries if e.is_department] + [e for e in self.entries if not e.is_department]
        return [e.title for e in ordered if not e.is_emergency][:limit]


def load_knowledge(path: str | Path) -> KnowledgeBase:
    """Read and validate a knowledge file; raises ``KnowledgeError`` naming the file and key."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise KnowledgeError(source, "", "knowledge file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeError(source, "", f"cannot read: {exc}") from None
    return parse_knowledge(text, source)


def parse_knowledge(text: str, source: str = "<knowledge>") -> KnowledgeBase:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise KnowledgeError(source, "", f"{where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        raise KnowledgeError(source, "", "the file is empty; expected a mapping with 'entries:' "
                                         "(see examples/hospital-reception/knowledge.yaml)")
    if not isinstance(data, dict):
        raise KnowledgeError(source, "", f"expected a mapping with 'entries:' at the top, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise KnowledgeError(source, unknown[0], f"unknown key; expected one of: {', '.join(sorted(_TOP_KEYS))}")
    version = data.get("version", KNOWLEDGE_FORMAT_VERSION)
    if version != KNOWLEDGE_FORMAT_VERSION:
        raise KnowledgeError(source, "version", f"got {version!r}; this edge-avatar reads version "
                                                f"{KNOWLEDGE_FORMAT_VERSION}")
    site = data.get("site", "")
    if not isinstance(site, str):
        raise KnowledgeError(source, "site", f"got {site!r}; expected a string")
    raw_entries = data.get("entries")
    if raw_entries is None:
        raise KnowledgeError(source, "entries", "missing; expected a list of entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise KnowledgeError(source, "entries", "expected a non-empty list of entries")
    entries: list[KnowledgeEntry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        entry = _parse_entry(raw, f"entries[{index}]", source)
        if entry.id in seen:
            raise KnowledgeError(source, f"entries[{index}].id",
                                 f"duplicate id {entry.id!r} (first used by entries[{seen[entry.id]}])")
        seen[entry.id] = index
        entries.append(entry)
    return KnowledgeBase(source=source, site=site, entries=tuple(entries))


def _parse_entry(raw: Any, path: str, source: str) -> KnowledgeEntry:
    if not isinstance(raw, dict):
        raise KnowledgeError(source, path, f"expected a mapping with id, questions and answer, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - _ENTRY_KEYS)
    if unknown:
        raise KnowledgeError(source, f"{path}.{unknown[0]}",
                             f"unknown key; expected one of: {', '.join(sorted(_ENTRY_KEYS))}")
    entry_id = _text(raw, "id", path, source, required=True)
    if not _ID_PATTERN.fullmatch(entry_id):
        raise KnowledgeError(source, f"{path}.id", f"got {entry_id!r}; expected lower_snake_case (a-z, 0-9, _)")
    questions = _text_list(raw, "questions", path, source)
    if not questions:
        raise KnowledgeError(source, f"{path}.questions", "expected at least one example question")
    point = _text(raw, "point", path, source)
    if point and point not in POINT_DIRECTIONS:
        raise KnowledgeError(source, f"{path}.point", f"got {point!r}; expected one of: {', '.join(POINT_DIRECTIONS)}")
    return KnowledgeEntry(
        id=entry_id,
        title=_text(raw, "title", path, source) or entry_id.replace("_", " ").capitalize(),
        questions=tuple(questions),
        answer=_text(raw, "answer", path, source, required=True),
        directions=_text(raw, "directions", path, source),
        hours=_text(raw, "hours", path, source),
        tags=tuple(t.lower() for t in _text_list(raw, "tags", path, source)),
        point=point,
    )


def _text(raw: dict, key: str, path: str, source: str, required: bool = False) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise KnowledgeError(source, f"{path}.{key}", "missing; expected a non-empty string")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise KnowledgeError(source, f"{path}.{key}", f"got {value!r}; expected a string")
    text = " ".join(str(value).split())
    if required and not text:
        raise KnowledgeError(source, f"{path}.{key}", "is empty; expected a non-empty string")
    return text


def _text_list(raw: dict, key: str, path: str, source: str) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise KnowledgeError(source, f"{path}.{key}", f"got {value!r}; expected a list of strings")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)) or not str(item).strip():
            raise KnowledgeError(source, f"{path}.{key}[{i}]", f"got {item!r}; expected a non-empty string")
        out.append(" ".join(str(item).split()))
    return out
