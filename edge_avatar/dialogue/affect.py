"""Affect and gesture intents for a reply: how it should feel and what the body should do.

Why this module exists: the planner needs numbers (valence, arousal, gesture
strengths), and they must fit both the answer and the visitor. The answer
sets the base (a greeting is bright, an emergency is serious and alert, a
refusal is gentle); the visitor's own words move it: an upset visitor gets a
calmer, less cheerful avatar. The visitor's sentiment comes from VADER
(vaderSentiment==3.3.2: a 0.4 MB lexicon, MIT, microseconds per sentence,
built for short informal text like speech transcripts), loaded lazily and
replaced by "neutral" when the package is missing. Knowledge entries tagged
``sensitive`` (cancer care, finding a patient) are answered gently.
"""

from __future__ import annotations

import logging
import threading

from edge_avatar.dialogue.reply import Affect, GestureIntent

log = logging.getLogger(__name__)

# (valence, arousal) per reply kind / small-talk intent, before the visitor's sentiment is applied.
BASE_AFFECT: dict[str, tuple[float, float]] = {
    "answer": (0.45, 0.15),
    "emergency": (-0.3, 0.55),
    "clarify": (0.15, 0.0),
    "decline": (0.05, -0.1),
    "language": (0.3, 0.05),
    "greeting": (0.7, 0.4),
    "farewell": (0.6, 0.2),
    "thanks": (0.7, 0.3),
    "how_are_you": (0.6, 0.3),
    "who_are_you": (0.55, 0.25),
    "capabilities": (0.5, 0.25),
    "repeat": (0.3, 0.0),
    "affirm": (0.45, 0.1),
    "acknowledge": (0.45, 0.1),
    "deny": (0.15, 0.0),
    "name": (0.65, 0.3),
    "sensitive": (0.15, -0.2),
}


class SentimentReader:
    """Visitor sentiment in [-1, 1] (VADER compound); 0.0 when VADER is not installed."""

    def __init__(self) -> None:
        self._analyzer = None
        self._tried = False
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: PLC0415
                    self._analyzer = SentimentIntensityAnalyzer()
                except ImportError:
                    log.warning("vaderSentiment is not installed: visitor sentiment reads as neutral "
                                "(pip install vaderSentiment==3.3.2)")
        return self._analyzer

    def compound(self, text: str) -> float:
        analyzer = self._load()
        if analyzer is None or not text.strip():
            return 0.0
        return float(analyzer.polarity_scores(text)["compound"])


def reply_affect(key: str, visitor_sentiment: float = 0.0) -> Affect:
    """The affect of a reply of kind/intent ``key`` to a visitor whose sentiment is ``visitor_sentiment``."""
    valence, arousal = BASE_AFFECT.get(key, (0.3, 0.0))
    if key != "emergency":
        if visitor_sentiment <= -0.3:     # upset or worried visitor: calm, warm, not cheerful
            valence = min(valence, 0.2) + 0.1 * visitor_sentiment
            arousal = arousal - 0.2
        elif visitor_sentiment >= 0.5:    # cheerful visitor: a little brighter
            valence += 0.1
            arousal += 0.05
    return Affect(valence, arousal)


def reply_gestures(key: str, *, point_direction: str = "", directions_sentence: int | None = None,
                   n_sentences: int = 1) -> tuple[GestureIntent, ...]:
    """Gesture intents for a reply (strengths before the persona's expressiveness is applied by the planner)."""
    if key in ("answer", "sensitive"):
        gestures = [GestureIntent("nod", 0.45 if key == "answer" else 0.3, 0)]
        if point_direction and directions_sentence is not None:
            gestures.append(GestureIntent("point", 0.8, min(directions_sentence, max(0, n_sentences - 1)),
                                          point_direction))
        return tuple(gestures)
    if key == "emergency":
        gestures = [GestureIntent("open_hands", 0.3, 0)]
        if point_direction:
            gestures.append(GestureIntent("point", 0.9, min(1, max(0, n_sentences - 1)), point_direction))
        return tuple(gestures)
    table = {
        "greeting": (("nod", 0.6), ("open_hands", 0.5)),
        "farewell": (("nod", 0.5),),
        "thanks": (("nod", 0.7),),
        "how_are_you": (("nod", 0.4), ("open_hands", 0.3)),
        "who_are_you": (("open_hands", 0.6),),
        "capabilities": (("open_hands", 0.7),),
        "name": (("nod", 0.6),),
        "affirm": (("nod", 0.5),),
        "acknowledge": (("nod", 0.4),),
        "clarify": (("open_hands", 0.4),),
        "decline": (("open_hands", 0.5),),
        "language": (("open_hands", 0.5),),
        "repeat": (("nod", 0.2),),
        "deny": (("open_hands", 0.3),),
    }
    return tuple(GestureIntent(name, strength, 0) for name, strength in table.get(key, ()))
