"""What goes over the wire: topic names, message envelopes, JSON encoding and the privacy filter.

Why this module exists: the device, the operator console, the JSON-lines
fallback, the tests and the benchmark must agree on one topic layout and one
payload shape, and the privacy rule ("no transcript, audio or image leaves the
device unless the site says so") must be enforced in exactly one place that
every outgoing message passes through. Plain ``json`` from the standard
library: payloads are small, and a dependency here would be on every device.

Topic layout (``SCHEMA_VERSION`` 1)::

    edge-avatar/v1/<site>/<device>/status       retained: online (+ version, board, engines, persona) or offline
    edge-avatar/v1/<site>/<device>/telemetry    retained, every fleet.telemetry_interval_s
    edge-avatar/v1/<site>/<device>/events       QoS 1, each with a per-device monotonically increasing seq
    edge-avatar/v1/<site>/<device>/cmd/<name>   operator -> device
    edge-avatar/v1/<site>/<device>/cmd-result   device -> operator, one answer per command received
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from edge_avatar.fleet.options import valid_name

TOPIC_ROOT = "edge-avatar/v1"
SCHEMA_VERSION = 1

STATUS, TELEMETRY, EVENTS, CMD_RESULT = "status", "telemetry", "events", "cmd-result"
CMD = "cmd"

# Event kinds the session publishes (others are accepted: the list documents, it does not restrict).
EVENT_KINDS = ("visitor_engaged", "turn_done", "conversation_ended", "degraded", "recovered", "error",
               "command", "queue_overflow", "started", "stopping")


class TopicError(ValueError):
    """A site or device name that cannot be a topic level."""


@dataclass(frozen=True)
class DeviceTopics:
    """Every topic of one device; built once from ``config.site``."""

    site: str
    device: str

    def __post_init__(self) -> None:
        for what, value in (("site.name", self.site), ("site.device_id", self.device)):
            if not valid_name(value):
                raise TopicError(f"{what} {value!r} cannot be an MQTT topic level; "
                                 "expected 1-64 of A-Z a-z 0-9 . _ @ - (no '/', '+', '#')")

    @property
    def prefix(self) -> str:
        return f"{TOPIC_ROOT}/{self.site}/{self.device}"

    def topic(self, leaf: str) -> str:
        return f"{self.prefix}/{leaf}"

    @property
    def status(self) -> str:
        return self.topic(STATUS)

    @property
    def cmd_filter(self) -> str:
        return self.topic(f"{CMD}/#")

    def cmd(self, name: str) -> str:
        return self.topic(f"{CMD}/{name}")

    @property
    def cmd_result(self) -> str:
        return self.topic(CMD_RESULT)


@dataclass(frozen=True)
class ParsedTopic:
    site: str
    device: str
    leaf: str       # "status", "telemetry", "events", "cmd-result" or "cmd"
    command: str = ""  # for leaf "cmd": everything after "cmd/"


def parse_topic(topic: str) -> ParsedTopic | None:
    """Split a fleet topic; None for anything outside ``edge-avatar/v1/<site>/<device>/...``."""
    root = TOPIC_ROOT + "/"
    if not topic.startswith(root):
        return None
    parts = topic[len(root):].split("/", 3)
    if len(parts) < 3 or not parts[0] or not parts[1]:
        return None
    site, device, leaf = parts[0], parts[1], parts[2]
    if leaf == CMD:
        return ParsedTopic(site, device, CMD, parts[3] if len(parts) == 4 else "")
    if len(parts) != 3:
        return None
    return ParsedTopic(site, device, leaf)


# --------------------------------------------------------------------------- privacy

# Field names that carry what a visitor said or what the avatar answered.
_TRANSCRIPT_KEYS = frozenset({"text", "reply_text", "transcript", "utterance", "prompt", "answer", "asr_text",
                              "partial", "final", "caption", "captions", "question"})
_AUDIO_KEYS = frozenset({"audio", "pcm", "wav", "audio_b64", "recording"})
_IMAGE_KEYS = frozenset({"image", "frame", "jpeg", "png", "snapshot", "face_crop", "face_image", "image_b64",
                         "thumbnail", "video"})


@dataclass(frozen=True)
class PrivacyPolicy:
    """What may leave the device; built from ``config.privacy`` (all false in a hospital by default).

    Transcripts need ``privacy.publish_transcripts``; audio needs
    ``privacy.record_microphone`` and images ``privacy.record_camera``. Raw
    buffers (bytes, numpy arrays) never go: they are not JSON and they are
    exactly what must not leak by accident.
    """

    transcripts: bool = False
    audio: bool = False
    images: bool = False

    @classmethod
    def from_config(cls, privacy: Any) -> "PrivacyPolicy":
        return cls(transcripts=bool(getattr(privacy, "publish_transcripts", False)),
                   audio=bool(getattr(privacy, "record_microphone", False)),
                   images=bool(getattr(privacy, "record_camera", False)))

    def _forbidden(self, key: str) -> bool:
        k = key.lower()
        if not self.transcripts and (k in _TRANSCRIPT_KEYS or "transcript" in k):
            return True
        if not self.audio and (k in _AUDIO_KEYS or k.endswith(("_wav", "_pcm"))):
            return True
        if not self.images and (k in _IMAGE_KEYS or k.endswith(("_jpeg", "_jpg", "_png", "_image"))):
            return True
        return False

    def scrub(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A copy of ``fields`` without what may not leave, and the dotted names of what was removed."""
        removed: list[str] = []
        clean = self._scrub_mapping(fields, "", removed, depth=0)
        return clean, removed

    def _scrub_mapping(self, fields: Mapping[str, Any], prefix: str, removed: list[str], depth: int) -> dict:
        out: dict[str, Any] = {}
        for key, value in fields.items():
            key = str(key)
            path = prefix + key
            if self._forbidden(key):
                removed.append(path)
                continue
            cleaned = self._scrub_value(value, path, removed, depth)
            if cleaned is not _DROP:
                out[key] = cleaned
        return out

    def _scrub_value(self, value: Any, path: str, removed: list[str], depth: int) -> Any:
        if depth > 8:
            removed.append(path)
            return _DROP
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, Mapping):
            return self._scrub_mapping(value, path + ".", removed, depth + 1)
        if isinstance(value, (list, tuple)):
            items = [self._scrub_value(v, f"{path}[{i}]", removed, depth + 1) for i, v in enumerate(value)]
            return [v for v in items if v is not _DROP]
        item = getattr(value, "item", None)  # numpy scalars: a number, not a buffer
        if callable(item) and getattr(value, "ndim", None) == 0:
            return self._scrub_value(item(), path, removed, depth)
        removed.append(path)  # bytes, arrays, objects: never published
        return _DROP


_DROP = object()


# --------------------------------------------------------------------------- payloads


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/inf are refused (the scrubber already made them null)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))
