"""What the brain hands on: the reply text plus how to say it (affect) and what to do (gesture intents).

Why this module exists: the planner turns replies into motion, and it takes
numbers, not words. A reply therefore carries, next to its text, an affect
vector (valence, arousal in [-1, 1]) and gesture intents (nod, point,
open_hands, each with a strength in [0, 1] and the sentence it belongs to),
plus the provenance the operator needs: which tier answered, which knowledge
entry matched and how sure the engine was. ``planner_vector()`` is the fixed
numeric layout the planner reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

GESTURES = ("nod", "point", "open_hands")
# planner_vector() layout, version 1: [valence, arousal, nod, point, open_hands, point_yaw_deg / 90]
REPLY_VECTOR_VERSION = 1
REPLY_VECTOR_FIELDS = ("valence", "arousal", "nod", "point", "open_hands", "point_yaw_norm")
# Where the avatar points, as a yaw angle seen from the avatar (positive = the avatar's left).
POINT_YAW_DEG = {"left": 60.0, "right": -60.0, "ahead": 0.0, "behind": 150.0, "up": 0.0, "down": 0.0, "": 0.0}

ReplyKind = Literal["answer", "smalltalk", "emergency", "clarify", "decline", "language", "greeting", "farewell"]
Tier = Literal["builtin", "llm"]


@dataclass(frozen=True)
class Affect:
    """How the reply should feel: valence (negative..positive) and arousal (calm..excited), each in [-1, 1]."""

    valence: float = 0.0
    arousal: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "valence", float(np.clip(self.valence, -1.0, 1.0)))
        object.__setattr__(self, "arousal", float(np.clip(self.arousal, -1.0, 1.0)))

    def as_array(self) -> np.ndarray:
        return np.array([self.valence, self.arousal], dtype=np.float32)


@dataclass(frozen=True)
class GestureIntent:
    """A gesture the planner should make while the reply plays."""

    name: Literal["nod", "point", "open_hands"]
    strength: float                 # [0, 1]
    sentence_index: int = 0         # which sentence of the reply it goes with (TTS segment index)
    direction: str = ""             # point only: left, right, ahead, behind, up, down

    def __post_init__(self) -> None:
        if self.name not in GESTURES:
            raise ValueError(f"unknown gesture {self.name!r}; expected one of {GESTURES}")
        object.__setattr__(self, "strength", float(np.clip(self.strength, 0.0, 1.0)))


@dataclass(frozen=True)
class Reply:
    """One answer to one visitor turn."""

    text: str
    kind: ReplyKind
    tier: Tier = "builtin"
    entry_id: str | None = None          # the knowledge entry answered from (None: nothing matched)
    confidence: float = 0.0              # the answer engine's confidence in entry_id (or the best guess)
    affect: Affect = field(default_factory=Affect)
    gestures: tuple[GestureIntent, ...] = ()
    suggested_entry_id: str | None = None  # clarify: the entry the engine guessed ("Did you mean ...?")
    fallback_reason: str = ""            # why the LLM tier did not answer ("" when it did or was not asked)
    timings_ms: dict[str, float] = field(default_factory=dict)
    turn_id: int = 0
    pts_ns: int = 0                      # media time of the visitor's final transcript this answers

    @property
    def answered(self) -> bool:
        return self.entry_id is not None and self.kind in ("answer", "emergency")

    def gesture_strengths(self) -> np.ndarray:
        """(3,) float32: the strongest intent per gesture, in ``GESTURES`` order."""
        out = np.zeros(len(GESTURES), dtype=np.float32)
        for g in self.gestures:
            i = GESTURES.index(g.name)
            out[i] = max(out[i], g.strength)
        return out

    def planner_vector(self) -> np.ndarray:
        """(6,) float32 in ``REPLY_VECTOR_FIELDS`` order (version ``REPLY_VECTOR_VERSION``)."""
        point = [g for g in self.gestures if g.name == "point"]
        yaw = POINT_YAW_DEG.get(point[0].direction, 0.0) / 90.0 if point else 0.0
        return np.concatenate([self.affect.as_array(), self.gesture_strengths(),
                               np.array([yaw], dtype=np.float32)]).astype(np.float32)

    def to_json(self, include_text: bool = True) -> dict[str, Any]:
        """A JSON-ready dict; ``include_text=False`` for logs and telemetry where privacy forbids words."""
        return {
            "text": self.text if include_text else None,
            "kind": self.kind,
            "tier": self.tier,
            "entry_id": self.entry_id,
            "confidence": round(self.confidence, 4),
            "affect": {"valence": round(self.affect.valence, 3), "arousal": round(self.affect.arousal, 3)},
            "gestures": [{"name": g.name, "strength": round(g.strength, 3), "sentence_index": g.sentence_index,
                          **({"direction": g.direction} if g.direction else {})} for g in self.gestures],
            "suggested_entry_id": self.suggested_entry_id,
            "fallback_reason": self.fallback_reason,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "turn_id": self.turn_id,
        }
