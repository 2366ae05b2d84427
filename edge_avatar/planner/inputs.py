"""The planner's per-tick input vector (layout v1) and ``PlannerInputs``, the assembler the session feeds.

Why this module exists: the planner is a network exchanged as an ONNX or
TensorRT engine, so what it reads is a contract, like the perception token
and the motion frame. Everything the avatar's behaviour may depend on --
the visitor (perception token), the visitor's voice (audio tokens), the
avatar's own speech (TTS phoneme timeline + the audio it plays), the reply's
affect and gesture intents, the persona and the turn state -- arrives on
different threads at different rates; ``PlannerInputs`` keeps the latest of
each and packs them into one float32 vector for a tick's pts. The teacher
and the student both read this vector, so the student can only learn what
the vector carries.

Randomness is an input too: blinks, breathing, micro-motion, saccades and
the direction of a thinking glance come from ``BehaviourDrivers``, a small
seeded stochastic process (gamma blink intervals, Ornstein-Uhlenbeck noise)
advanced once per tick. The network then shapes them (a blink is a blink
only when nothing else closes the eyes; micro-motion is scaled by the
persona and the turn state). Same seed, same input history -> same vector,
bit for bit.

Input layout, version 1 (``INPUT_SIZE`` = 149 float32). "Visitor" = the
active visitor of the perception token; every perception value is 0 when
there is none, or when the token is missing or stale (older than
``stale_after_ms``). Offsets of the speech windows are ``SPEECH_OFFSETS_MS``
= 0, 33, 67, 100, 133 ms after the tick's pts; each window is 33.3 ms wide
(one tick), so together they tile the next ~150 ms: the mouth's lead
(~50 ms) plus coarticulation with what follows.

| index   | name               | n  | unit / range | meaning |
|---------|--------------------|----|--------------|---------|
| 0       | visitor_present    | 1  | 0/1   | an active visitor in a fresh perception token |
| 1       | perception_fresh   | 1  | 0/1   | a perception token newer than stale_after_ms |
| 2:6     | engagement         | 4  | one-hot | approaching, engaged, leaving, gone (gone when stale or missing) |
| 6       | visitor_arrival    | 1  | 0..1  | exp(-t / 1.5 s) since the visitor appeared (0 when absent) |
| 7       | distance           | 1  | 0..1  | distance_m / 3 m, saturating |
| 8       | visitor_yaw        | 1  | -1..1 | direction of the visitor's face, deg / 45 (+ the avatar's left) |
| 9       | visitor_pitch      | 1  | -1..1 | the same, elevation, deg / 30 (+ up) |
| 10      | face_size          | 1  | 0..1  | face box width / frame width |
| 11:14   | visitor_head       | 3  | -1..1 | visitor head yaw, pitch, roll, deg / 45 (perception's signs) |
| 14      | looking_at_screen  | 1  | 0..1  | perception's soft score |
| 15      | attending          | 1  | 0..1  | perception's score |
| 16      | visitor_smile      | 1  | 0..1  | mean mouthSmileLeft/Right of the visitor |
| 17      | visitor_jaw_open   | 1  | 0..1  | jawOpen |
| 18      | visitor_brow_up    | 1  | 0..1  | browInnerUp |
| 19      | visitor_brow_down  | 1  | 0..1  | mean browDownLeft/Right |
| 20      | visitor_frown      | 1  | 0..1  | mean mouthFrownLeft/Right |
| 21:23   | visitor_affect     | 2  | -1..1 | valence, arousal from the emotion probabilities |
| 23      | bystanders         | 1  | 0..1  | other faces / 3, saturating |
| 24      | voice_active       | 1  | 0..1  | share of the 10 ms audio tokens since the last tick with visitor voice |
| 25      | speech_probability | 1  | 0..1  | the largest of them |
| 26      | pitch_rel          | 1  | -1..1 | pitch re the visitor's running median, semitones / 12 (0 unvoiced) |
| 27      | voice_energy       | 1  | 0..1  | (energy_dbfs + 70) / 60 |
| 28      | speaking_rate      | 1  | 0..1  | syllables per second / 8 |
| 29      | double_talk        | 1  | 0/1   | the visitor talks while the avatar plays |
| 30      | pause              | 1  | 0..1  | visitor pause after an utterance, s / 2 (0 while talking / before any) |
| 31      | pitch_slope        | 1  | -1..1 | pitch slope, last 600 ms voiced, st/s / 20 (held 3 s) |
| 32      | utterance          | 1  | 0..1  | length of the current / last utterance, s / 4 (held 3 s) |
| 33      | mic_ok             | 1  | 0/1   | the microphone signal is usable |
| 34:104  | visemes            | 70 | 0..1  | viseme occupancy per window, 14 classes (``VISEMES``), offset-major |
| 104:109 | stress             | 5  | 0..1  | stressed-vowel occupancy per window (primary 1, secondary 0.5) |
| 109:114 | speech_energy      | 5  | 0..1  | envelope of the audio played, per window (1 = loud for the sentence) |
| 114     | speaking           | 1  | 0/1   | the avatar's voice sounds (first to last sounding phoneme) |
| 115     | sentence_progress  | 1  | 0..1  | position within the sounding sentence |
| 116     | sentence_end_near  | 1  | 0..1  | 1 - time to the sentence's last sound / 600 ms (0 outside) |
| 117     | since_sentence_end | 1  | 0..1  | exp(-t / 300 ms) since the last sentence's last sound |
| 118     | sentence_type      | 1  | -1..1 | current / last sentence: +1 statement, -1 question, 0 cut off |
| 119     | negation           | 1  | 0..1  | around a negation word being said ("no", "not", "can't", ...) |
| 120:122 | reply_affect       | 2  | -1..1 | the reply's valence, arousal |
| 122:125 | gesture_now        | 3  | 0..1  | the reply's nod, point, open_hands for the sentence sounding now |
| 125     | point_yaw          | 1  | -2..2 | where to point, deg / 90 (+ avatar's left) |
| 126:134 | persona            | 8  | 0..1  | ``Persona.persona_vector()`` (rate, smile, nod, motion, ...) |
| 134:138 | turn_state         | 4  | one-hot | listening, thinking, speaking, idle |
| 138     | turn_age           | 1  | 0..1  | time in this turn state, s / 3 |
| 139     | blink              | 1  | 0..1  | eyelid closure of the scheduled blink (drivers) |
| 140:142 | breath             | 2  | -1..1 | sin, cos of the breathing phase |
| 142:145 | micro_motion       | 3  | ~N(0,1) | smooth noise (tau 1 s) for head yaw, pitch, roll |
| 145:147 | saccade            | 2  | -1..1 | gaze offset target, redrawn every ~1 s |
| 147:149 | aversion           | 2  | -1..1 | the direction of the current thinking glance (yaw, pitch) |

Sanitising: NaN or inf anywhere becomes 0 (``counters["nan_values"]``), a
token of the wrong size is treated as missing (``bad_tokens``), a stale
token as no visitor (``perception_stale_ticks``), a persona out of [0, 1]
is clamped (``persona_out_of_range``, NaN -> the default persona's value),
a sentence with no phoneme timeline gets one made from its audio envelope
(``synthetic_timelines``; nothing at all: ``empty_timelines``), and the
final vector is clamped to each field's range (``clamped_values``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_avatar.perception.token import ENGAGEMENT_STATES, TOKEN_SIZE, TOKEN_SLICES
from edge_avatar.planner.visemes import N_VISEMES, VISEME_INDEX, VOWEL_VISEMES, phoneme_visemes

log = logging.getLogger(__name__)

INPUT_VERSION = 1
TURN_STATES: tuple[str, ...] = ("listening", "thinking", "speaking", "idle")
SPEECH_OFFSETS_MS: tuple[float, ...] = (0.0, 100.0 / 3, 200.0 / 3, 100.0, 400.0 / 3)
SPEECH_WINDOW_MS = 100.0 / 3
N_OFFSETS = len(SPEECH_OFFSETS_MS)

# (name, size, low, high) in vector order; slices are derived from it.
INPUT_FIELDS: tuple[tuple[str, int, float, float], ...] = (
    ("visitor_present", 1, 0, 1), ("perception_fresh", 1, 0, 1), ("engagement", 4, 0, 1),
    ("visitor_arrival", 1, 0, 1), ("distance", 1, 0, 1), ("visitor_yaw", 1, -1, 1), ("visitor_pitch", 1, -1, 1),
    ("face_size", 1, 0, 1), ("visitor_head", 3, -1, 1), ("looking_at_screen", 1, 0, 1), ("attending", 1, 0, 1),
    ("visitor_smile", 1, 0, 1), ("visitor_jaw_open", 1, 0, 1), ("visitor_brow_up", 1, 0, 1),
    ("visitor_brow_down", 1, 0, 1), ("visitor_frown", 1, 0, 1), ("visitor_affect", 2, -1, 1),
    ("bystanders", 1, 0, 1),
    ("voice_active", 1, 0, 1), ("speech_probability", 1, 0, 1), ("pitch_rel", 1, -1, 1), ("voice_energy", 1, 0, 1),
    ("speaking_rate", 1, 0, 1), ("double_talk", 1, 0, 1), ("pause", 1, 0, 1), ("pitch_slope", 1, -1, 1),
    ("utterance", 1, 0, 1), ("mic_ok", 1, 0, 1),
    ("visemes", N_VISEMES * N_OFFSETS, 0, 1), ("stress", N_OFFSETS, 0, 1), ("speech_energy", N_OFFSETS, 0, 1),
    ("speaking", 1, 0, 1), ("sentence_progress", 1, 0, 1), ("sentence_end_near", 1, 0, 1),
    ("since_sentence_end", 1, 0, 1), ("sentence_type", 1, -1, 1), ("negation", 1, 0, 1),
    ("reply_affect", 2, -1, 1), ("gesture_now", 3, 0, 1), ("point_yaw", 1, -2, 2),
    ("persona", 8, 0, 1), ("turn_state", 4, 0, 1), ("turn_age", 1, 0, 1),
    ("blink", 1, 0, 1), ("breath", 2, -1, 1), ("micro_motion", 3, -4, 4), ("saccade", 2, -1, 1),
    ("aversion", 2, -1, 1),
)


def _layout() -> tuple[dict[str, slice], np.ndarray, np.ndarray]:
    slices, lows, highs, start = {}, [], [], 0
    for name, size, low, high in INPUT_FIELDS:
        slices[name] = slice(start, start + size)
        lows += [low] * size
        highs += [high] * size
        start += size
    return slices, np.array(lows, np.float32), np.array(highs, np.float32)


INPUT_SLICES, INPUT_LOW, INPUT_HIGH = _layout()
INPUT_SIZE = int(INPUT_LOW.size)
assert INPUT_SIZE == 149
INPUT_INDEX = {name: s.start for name, s in INPUT_SLICES.items()}

# Documented constants of the features above.
ARRIVAL_DECAY_S = 1.5
DISTANCE_SCALE_M = 3.0
SENTENCE_END_RAMP_MS = 600.0
SINCE_END_DECAY_MS = 300.0
PAUSE_SCALE_S = 2.0
UTTERANCE_SCALE_S = 4.0
CUE_HOLD_S = 3.0
PITCH_SLOPE_WINDOW_MS = 600.0
PITCH_SLOPE_SCALE_ST_PER_S = 20.0
TURN_AGE_SCALE_S = 3.0
NEGATION_LEAD_MS, NEGATION_TAIL_MS, NEGATION_RAMP_MS = 150.0, 350.0, 200.0

NEGATION_WORDS = frozenset("""no not never nothing nobody none nowhere cannot can't don't doesn't didn't won't isn't
aren't wasn't weren't shouldn't couldn't wouldn't haven't hasn't hadn't mustn't nor""".split())
_QUESTION_END = re.compile(r"\?\s*[\"')\]]*\s*$")


def plateau(t: float, start: float, end: float, ramp: float) -> float:
    """1 inside [start, end], raised-cosine ramps of width ``ramp`` outside it, 0 beyond."""
    if start <= t <= end:
        return 1.0
    d = start - t if t < start else t - end
    if d >= ramp:
        return 0.0
    return 0.5 + 0.5 * math.cos(math.pi * d / ramp)


# ---------------------------------------------------------------------------------------------- speech


@dataclass
class SpeechTrack:
    """One sentence the speaker plays, on the media clock, ready for per-tick lookups.

    Times inside are ms from ``start_ns`` (the pts of the sentence's first sample). ``ev_*`` arrays hold
    the viseme events (a diphthong is two events); ``cum`` is a cumulative table at 1 ms resolution of
    [viseme occupancy (14), stress weight, envelope], so the mean of any window is two row lookups.
    """

    index: int
    start_ns: int
    text: str
    duration_ms: float
    ev_start_ms: np.ndarray        # (E,) float64
    ev_end_ms: np.ndarray          # (E,)
    ev_viseme: np.ndarray          # (E,) int64
    ev_stress: np.ndarray          # (E,) float32: 1 primary, 0.5 secondary, 0 otherwise
    envelope: np.ndarray           # (ceil(duration / 10 ms),) float32 0..1
    words: tuple[tuple[str, float, float], ...]
    first_sound_ms: float
    last_sound_ms: float
    sentence_type: int             # +1 statement, -1 question, 0 cut off before its end
    negation_spans_ms: tuple[tuple[float, float], ...]
    synthetic: bool = False        # the timeline was made from the envelope (the engine gave none)
    cum: np.ndarray = field(default=None, repr=False)  # (n_ms + 1, N_VISEMES + 2) float32

    @property
    def end_ns(self) -> int:
        return self.start_ns + int(self.duration_ms * 1e6)

    def ms(self, pts_ns: int) -> float:
        return (pts_ns - self.start_ns) / 1e6

    def window_means(self, a_ms: np.ndarray, b_ms: np.ndarray) -> np.ndarray:
        """(W, N_VISEMES + 2) mean of the table over windows [a, b) in ms; 0 outside the sentence."""
        n = self.cum.shape[0] - 1
        ia = np.clip(np.rint(a_ms), 0, n).astype(np.int64)
        ib = np.clip(np.rint(b_ms), 0, n).astype(np.int64)
        width = np.maximum(np.rint(b_ms) - np.rint(a_ms), 1.0)[:, None]
        return (self.cum[ib] - self.cum[ia]) / width

    def envelope_at(self, t_ms: float) -> float:
        i = int(t_ms // 10.0)
        return float(self.envelope[i]) if 0 <= i < len(self.envelope) else 0.0

    def truncated(self, at_ms: float) -> SpeechTrack:
        """The part heard before ``at_ms`` (a barge-in cleared the rest from the speaker)."""
        at_ms = max(0.0, min(at_ms, self.duration_ms))
        phonemes = [(p, s, min(e, at_ms), st) for p, s, e, st in self._phoneme_tuples() if s < at_ms]
        words = tuple((w, s, min(e, at_ms)) for w, s, e in self.words if s < at_ms)
        env = self.envelope[: int(math.ceil(at_ms / 10.0))]
        track = build_track(self.index, self.start_ns, self.text, phonemes, words, env, at_ms, truncated=True)
        if at_ms < self.last_sound_ms:
            track.sentence_type = 0   # cut off: no end-of-sentence gesture
        return track

    def remainder(self, at_ms: float) -> SpeechTrack:
        """The part not yet heard at ``at_ms``, as a sentence of its own starting there (pause/resume)."""
        at_ms = max(0.0, min(at_ms, self.duration_ms))
        phonemes = [(p, max(s, at_ms) - at_ms, e - at_ms, st) for p, s, e, st in self._phoneme_tuples() if e > at_ms]
        words = tuple((w, max(s, at_ms) - at_ms, e - at_ms) for w, s, e in self.words if e > at_ms)
        env = self.envelope[int(at_ms // 10.0):]
        track = build_track(self.index, self.start_ns + int(at_ms * 1e6), self.text, phonemes, words, env,
                            self.duration_ms - at_ms, truncated=True)
        track.sentence_type = self.sentence_type
        return track

    def _phoneme_tuples(self) -> list[tuple[str, float, float, int]]:
        # Reconstructed from the events (classes are kept; symbols become class names).
        from edge_avatar.planner.visemes import VISEMES  # noqa: PLC0415

        return [("_" if v == 0 else f"#{VISEMES[v]}", float(s), float(e), 2 if st >= 1 else 1 if st > 0 else 0)
                for s, e, v, st in zip(self.ev_start_ms, self.ev_end_ms, self.ev_viseme, self.ev_stress)]


def _class_of(symbol: str) -> tuple[int, ...]:
    if symbol.startswith("#"):  # a class name (from ``truncated``)
        return (VISEME_INDEX[symbol[1:]],)
    return phoneme_visemes(symbol)


def speech_envelope(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """(ceil(N / 10 ms),) RMS per 10 ms, normalised so that the sentence's loud voiced frames are ~1."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    hop = max(1, sample_rate_hz // 100)
    n = int(math.ceil(len(audio) / hop))
    if n == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(n * hop, np.float32)
    padded[: len(audio)] = audio
    rms = np.sqrt(np.mean(padded.reshape(n, hop) ** 2, axis=1))
    return normalise_envelope(rms)


def normalise_envelope(rms: np.ndarray) -> np.ndarray:
    rms = np.nan_to_num(np.asarray(rms, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(rms.max()) if rms.size else 0.0
    if peak <= 1e-6:
        return np.zeros_like(rms)
    voiced = rms[rms > 0.05 * peak]
    ref = float(np.percentile(voiced, 90)) if voiced.size else peak
    return (np.clip(rms / max(ref, 1e-6), 0.0, 1.25) / 1.25).astype(np.float32)


def _synthetic_phonemes(envelope: np.ndarray) -> list[tuple[str, float, float, int]]:
    """A timeline from the envelope alone: loud 10 ms frames become open vowels, quiet ones silence."""
    out: list[tuple[str, float, float, int]] = []
    voiced = envelope > 0.25
    i = 0
    while i < len(envelope):
        j = i
        while j < len(envelope) and voiced[j] == voiced[i]:
            j += 1
        out.append(("E" if voiced[i] else "_", i * 10.0, j * 10.0, 0))
        i = j
    return out


def build_track(index: int, start_ns: int, text: str, phonemes, words, envelope: np.ndarray, duration_ms: float,
                truncated: bool = False) -> SpeechTrack:
    """A ``SpeechTrack`` from (symbol, start_ms, end_ms, stress) phonemes, (word, start, end) words, envelope."""
    envelope = np.asarray(envelope, np.float32)
    duration_ms = float(max(duration_ms, len(envelope) * 10.0 if not truncated else duration_ms, 0.0))
    phonemes = [(str(p), float(s), float(e), int(st)) for p, s, e, st in phonemes
                if math.isfinite(s) and math.isfinite(e) and e > s]
    synthetic = False
    if not any(not p.startswith("_") for p, *_ in phonemes) and envelope.size and envelope.max() > 0.25:
        phonemes = _synthetic_phonemes(envelope)
        synthetic = True
    starts, ends, classes, stresses = [], [], [], []
    for symbol, s, e, stress in phonemes:
        cls = _class_of(symbol)
        bounds = [s, e] if len(cls) == 1 else [s, s + 0.6 * (e - s), e]
        weight = 1.0 if stress >= 2 else 0.5 if stress == 1 else 0.0
        for k, c in enumerate(cls):
            starts.append(bounds[k])
            ends.append(bounds[k + 1])
            classes.append(c)
            stresses.append(weight if c in VOWEL_VISEMES else 0.0)
    ev_start = np.array(starts, np.float64)
    ev_end = np.array(ends, np.float64)
    ev_vis = np.array(classes, np.int64)
    ev_stress = np.array(stresses, np.float32)
    n_ms = int(math.ceil(max(duration_ms, ev_end.max() if ev_end.size else 0.0))) + 1
    delta = np.zeros((n_ms + 1, N_VISEMES + 2), np.float32)
    for s, e, c, st in zip(ev_start, ev_end, ev_vis, ev_stress):
        a, b = int(round(s)), int(round(e))
        delta[a, c] += 1.0
        delta[b, c] -= 1.0
        if st > 0:
            delta[a, N_VISEMES] += st
            delta[b, N_VISEMES] -= st
    per_ms = np.cumsum(delta[:-1], axis=0)                                  # (n_ms, C)
    if envelope.size:
        env_ms = np.repeat(envelope, 10)[:n_ms]
        per_ms[: len(env_ms), N_VISEMES + 1] = env_ms
    cum = np.zeros((n_ms + 1, N_VISEMES + 2), np.float32)
    cum[1:] = np.cumsum(per_ms, axis=0)
    sounding = ev_vis != 0
    first = float(ev_start[sounding][0]) if sounding.any() else 0.0
    last = float(ev_end[sounding][-1]) if sounding.any() else 0.0
    words_t = tuple((str(w), float(s), float(e)) for w, s, e in words)
    negations = tuple((s, e) for w, s, e in words_t if w.lower().replace("’", "'") in NEGATION_WORDS)
    sentence_type = -1 if _QUESTION_END.search(text or "") else 1
    return SpeechTrack(index, int(start_ns), text or "", duration_ms, ev_start, ev_end, ev_vis, ev_stress, envelope,
                       words_t, first, last, sentence_type, negations, synthetic, cum)


def track_from_segment(segment: Any, first_sample_pts_ns: int) -> SpeechTrack:
    """A track from a ``speech.SpeechSegment`` and the pts of its first sample on the speaker."""
    env = speech_envelope(segment.audio, segment.sample_rate_hz)
    phonemes = [(p.phoneme, p.start_ms, p.end_ms, p.stress) for p in segment.phonemes]
    words = [(w.word, w.start_ms, w.end_ms) for w in segment.words]
    return build_track(int(segment.index), int(first_sample_pts_ns), segment.text, phonemes, words, env,
                       float(segment.duration_ms))


# ---------------------------------------------------------------------------------------------- drivers

BLINK_DURATION_MS = 150.0
BLINK_CLOSE_MS = 50.0
# Mean interval between spontaneous blinks by turn state, s (Bentivoglio et al. 1997: ~17/min at rest,
# more while talking, fewer while attending to someone else).
BLINK_MEAN_INTERVAL_S = {"listening": 3.4, "thinking": 2.8, "speaking": 2.6, "idle": 3.8}
BLINK_GAMMA_SHAPE = 2.5
BLINK_REFRACTORY_S = 0.25
BOUNDARY_BLINK_PROBABILITY = 0.7
NOISE_TAU_S = 1.0
BREATH_PERIOD_S = (3.5, 5.0)
SACCADE_MEAN_S, SACCADE_MIN_S = 1.0, 0.25


def blink_profile(t_ms: float) -> float:
    """Eyelid closure ``t_ms`` after a blink started: closed at 50 ms, open again at 150 ms."""
    if t_ms < 0.0 or t_ms >= BLINK_DURATION_MS:
        return 0.0
    if t_ms < BLINK_CLOSE_MS:
        return math.sin(0.5 * math.pi * t_ms / BLINK_CLOSE_MS)
    return math.cos(0.5 * math.pi * (t_ms - BLINK_CLOSE_MS) / (BLINK_DURATION_MS - BLINK_CLOSE_MS))


class BehaviourDrivers:
    """The seeded randomness of the behaviour: blinks, breathing, micro-motion, saccades, thinking glances.

    State is explicit (this object) and advanced only by ``advance`` with increasing pts; the output is a
    pure function of the seed and the (pts, turn state) history.
    """

    SIZE = 10

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.reset()

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.last_ns: int | None = None
        self.blink_start_ns = -(10**18)
        self.next_blink_ns: int | None = None
        self.blinks: list[int] = []        # start pts of every blink (tests and eval read it; bounded)
        self.breath_phase = float(self.rng.uniform(0, 2 * math.pi))
        self.breath_period_s = float(self.rng.uniform(*BREATH_PERIOD_S))
        self.noise = self.rng.standard_normal(3)
        self.saccade = self.rng.uniform(-1, 1, 2)
        self.next_saccade_ns: int | None = None
        self.aversion = np.array([1.0, 0.5])
        self.state = "idle"
        self._out = np.zeros(self.SIZE, np.float32)

    def _interval_ns(self, state: str) -> int:
        mean_s = BLINK_MEAN_INTERVAL_S.get(state, 3.5) - BLINK_REFRACTORY_S
        return int((BLINK_REFRACTORY_S + self.rng.gamma(BLINK_GAMMA_SHAPE, mean_s / BLINK_GAMMA_SHAPE)) * 1e9)

    def advance(self, pts_ns: int, state: str) -> np.ndarray:
        """(10,) float32: blink, breath sin/cos, noise x3, saccade x2, aversion x2 at ``pts_ns``."""
        if self.last_ns is not None and pts_ns <= self.last_ns:
            return self._out.copy()
        rng = self.rng
        dt_s = 1.0 / 30.0 if self.last_ns is None else min((pts_ns - self.last_ns) / 1e9, 1.0)
        if self.next_blink_ns is None:
            self.next_blink_ns = pts_ns + int(rng.uniform(0.3, 3.0) * 1e9)
            self.next_saccade_ns = pts_ns + int(rng.uniform(0.2, 1.0) * 1e9)
        if state != self.state:
            # Turn boundaries bring a blink (and a new direction for a thinking glance).
            if state == "thinking":
                self.aversion = np.array([rng.choice((-1.0, 1.0)) * rng.uniform(0.6, 1.0), rng.uniform(-0.4, 1.0)])
            if rng.random() < BOUNDARY_BLINK_PROBABILITY and pts_ns - self.blink_start_ns > 600e6:
                self.next_blink_ns = min(self.next_blink_ns, pts_ns + int(rng.uniform(0.08, 0.3) * 1e9))
            self.state = state
        while pts_ns >= self.next_blink_ns:
            self.blink_start_ns = self.next_blink_ns
            self.blinks.append(self.blink_start_ns)
            if len(self.blinks) > 10000:
                del self.blinks[:5000]
            self.next_blink_ns = self.blink_start_ns + int(BLINK_DURATION_MS * 1e6) + self._interval_ns(state)
        blink = blink_profile((pts_ns - self.blink_start_ns) / 1e6)
        self.breath_phase += 2 * math.pi * dt_s / self.breath_period_s
        if self.breath_phase >= 2 * math.pi:
            self.breath_phase -= 2 * math.pi
            self.breath_period_s = float(rng.uniform(*BREATH_PERIOD_S))
        a = dt_s / NOISE_TAU_S
        self.noise = self.noise * (1 - a) + math.sqrt(2 * a) * rng.standard_normal(3)
        if pts_ns >= self.next_saccade_ns:
            self.saccade = rng.uniform(-1, 1, 2)
            self.next_saccade_ns = pts_ns + int((SACCADE_MIN_S + rng.exponential(SACCADE_MEAN_S)) * 1e9)
        self.last_ns = pts_ns
        out = self._out
        out[0] = blink
        out[1], out[2] = math.sin(self.breath_phase), math.cos(self.breath_phase)
        out[3:6] = self.noise
        out[6:8] = self.saccade
        out[8:10] = self.aversion
        return out.copy()


# ---------------------------------------------------------------------------------------------- audio


class _VoiceState:
    """The visitor's voice, aggregated from 10 ms audio tokens between ticks."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.frames = self.voiced_frames = 0
        self.max_prob = 0.0
        self.pitch_hz = 0.0
        self.energy_dbfs = -120.0
        self.rate = 0.0
        self.double_talk = False
        self.mic_ok = True
        self.active = False
        self.utt_start_ns: int | None = None
        self.utt_end_ns: int | None = None
        self.slope = 0.0
        self.median_st = 0.0   # running centre of the visitor's pitch, semitones re 100 Hz
        self.median_ready = False
        self.recent: deque[tuple[int, float]] = deque(maxlen=80)  # (pts, semitones) voiced frames
        self.last_pts_ns = 0

    def add(self, pts_ns: int, v: np.ndarray) -> None:
        # v in AUDIO_TOKEN_FIELDS order (listening.token, version 1)
        active = v[0] > 0.5
        self.frames += 1
        self.voiced_frames += int(active)
        self.max_prob = max(self.max_prob, min(max(float(v[1]), 0.0), 1.0))
        self.pitch_hz = float(v[3]) if v[3] > 0 else 0.0
        self.energy_dbfs = float(v[5])
        self.rate = float(v[6])
        self.double_talk = self.double_talk or v[8] > 0.5
        self.mic_ok = v[10] > 0.5
        self.last_pts_ns = pts_ns
        if active and not self.active:
            self.utt_start_ns = pts_ns
            self.utt_end_ns = None
            self.recent.clear()
        elif not active and self.active:
            self.utt_end_ns = pts_ns
            self.slope = self._slope()
        self.active = active
        if active and self.pitch_hz > 0 and v[4] > 0.3:
            st = 12.0 * math.log2(self.pitch_hz / 100.0)
            self.recent.append((pts_ns, st))
            if not self.median_ready:
                self.median_st, self.median_ready = st, True
            else:  # a slow tracker of the centre: steps of 0.02 st toward each frame (a running median)
                self.median_st += 0.02 * (1 if st > self.median_st else -1)

    def _slope(self) -> float:
        if len(self.recent) < 5:
            return 0.0
        t_end = self.recent[-1][0]
        pts = [(t, s) for t, s in self.recent if t_end - t <= PITCH_SLOPE_WINDOW_MS * 1e6]
        if len(pts) < 5:
            return 0.0
        t = np.array([p[0] for p in pts], np.float64) / 1e9
        s = np.array([p[1] for p in pts], np.float64)
        t -= t.mean()
        denom = float((t * t).sum())
        return float((t * (s - s.mean())).sum() / denom) if denom > 0 else 0.0

    def features(self, pts_ns: int) -> np.ndarray:
        out = np.zeros(10, np.float32)
        if self.frames:
            out[0] = self.voiced_frames / self.frames
        else:
            out[0] = float(self.active)
        out[1] = self.max_prob
        if self.pitch_hz > 0 and self.median_ready:
            out[2] = (12.0 * math.log2(self.pitch_hz / 100.0) - self.median_st) / 12.0
        out[3] = (self.energy_dbfs + 70.0) / 60.0
        out[4] = self.rate / 8.0
        out[5] = float(self.double_talk)
        if self.active and self.utt_start_ns is not None:
            out[8] = (pts_ns - self.utt_start_ns) / 1e9 / UTTERANCE_SCALE_S
            out[7] = self._slope() / PITCH_SLOPE_SCALE_ST_PER_S
        elif self.utt_end_ns is not None and self.utt_start_ns is not None:
            pause_s = max(0.0, (pts_ns - self.utt_end_ns) / 1e9)
            out[6] = pause_s / PAUSE_SCALE_S
            if pause_s < CUE_HOLD_S:
                out[7] = self.slope / PITCH_SLOPE_SCALE_ST_PER_S
                out[8] = (self.utt_end_ns - self.utt_start_ns) / 1e9 / UTTERANCE_SCALE_S
        out[9] = float(self.mic_ok)
        # the next tick aggregates afresh
        self.frames = self.voiced_frames = 0
        self.max_prob = 0.0
        self.double_talk = False
        return out


# ---------------------------------------------------------------------------------------------- assembler


def _default_persona_vector() -> np.ndarray:
    from edge_avatar.dialogue.persona import default_persona  # noqa: PLC0415 - yaml stays out of import time

    return default_persona().persona_vector()


class PlannerInputs:
    """Keeps the latest of every input and packs the layout-v1 vector for a tick's pts. Thread-safe.

    The session feeds it from its threads; the planner (teacher or student) calls ``vector(pts_ns)``
    once per tick. See the module docstring for the layout.
    """

    def __init__(self, seed: int = 0, camera_hfov_deg: float = 69.0, camera_aspect: float = 4 / 3,
                 stale_after_ms: float = 1000.0, history_s: float = 10.0):
        self.seed = int(seed)
        self.camera_hfov_deg = float(camera_hfov_deg)
        self.camera_aspect = float(camera_aspect)
        self.stale_after_ns = int(stale_after_ms * 1e6)
        self.history_ns = int(history_s * 1e9)
        self._lock = threading.RLock()
        self._default_persona = _default_persona_vector()
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything (a new session): no visitor, no speech, idle, default persona, drivers reseeded."""
        with getattr(self, "_lock", threading.RLock()):
            self.counters: dict[str, int] = {k: 0 for k in (
                "ticks", "perception_tokens", "perception_missing_ticks", "perception_stale_ticks", "bad_tokens",
                "nan_values", "clamped_values", "persona_out_of_range", "empty_timelines", "synthetic_timelines",
                "unknown_turn_states", "audio_tokens", "speech_tracks", "speech_cleared", "speech_paused")}
            self._token: np.ndarray | None = None
            self._token_obj: Any = None
            self._token_ns: int | None = None
            self._present_since_ns: int | None = None
            self._voice = _VoiceState()
            self.tracks: list[SpeechTrack] = []
            self._held: list[tuple[int, SpeechTrack]] = []    # paused speech: (offset from the pause, track)
            self._reply_vec = np.zeros(6, np.float32)
            self._reply_gestures: list[tuple[int, int, float]] = []   # (gesture index, sentence index, strength)
            self._reply_all_sentences = False
            self._persona = self._default_persona.copy()
            self.turn_state = "idle"
            self._turn_since_ns: int | None = None
            self._pending_turns: list[tuple[int, str]] = []
            self.drivers = BehaviourDrivers(self.seed)
            self.last_pts_ns: int | None = None
            self._last_vector = np.zeros(INPUT_SIZE, np.float32)

    def _clean(self, values: Any, size: int | None = None) -> np.ndarray | None:
        arr = np.asarray(values, dtype=np.float32).reshape(-1)
        if size is not None and arr.size != size:
            self.counters["bad_tokens"] += 1
            return None
        bad = ~np.isfinite(arr)
        if bad.any():
            self.counters["nan_values"] += int(bad.sum())
            arr = np.where(bad, 0.0, arr).astype(np.float32)
        return arr

    # ------------------------------------------------------------------ setters (any thread)

    def set_perception(self, token: np.ndarray | None, pts_ns: int | None = None) -> None:
        """A new perception token (``perception.token`` v1, 107 floats) seen at ``pts_ns`` (None: no camera)."""
        with self._lock:
            pts = self._now(pts_ns)
            if token is None:
                self._token, self._token_obj, self._token_ns = None, None, None
                return
            self._token_obj = token
            self.counters["perception_tokens"] += 1
            self._token = self._clean(token, TOKEN_SIZE)
            self._token_ns = pts

    def observe_token(self, token: np.ndarray | None, pts_ns: int) -> None:
        """What the loop hands ``Planner.step``: the same object until perception runs again; new ones are fed."""
        if token is not self._token_obj or (token is None and self._token is not None):
            self.set_perception(token, pts_ns)

    def set_audio(self, token: Any, pts_ns: int | None = None) -> None:
        """One 10 ms ``listening.token.AudioToken`` (or its ``to_vector()`` with ``pts_ns``)."""
        vec = token.to_vector() if hasattr(token, "to_vector") else token
        pts = int(getattr(token, "pts_ns", pts_ns if pts_ns is not None else 0))
        with self._lock:
            clean = self._clean(vec, 11)
            if clean is None:
                return
            self.counters["audio_tokens"] += 1
            self._voice.add(pts, clean)

    def add_speech(self, queued: Any) -> SpeechTrack | None:
        """A sentence queued on the speaker: a ``speech.QueuedSegment`` (or a ready ``SpeechTrack``)."""
        if isinstance(queued, SpeechTrack):
            track = queued
        else:
            track = track_from_segment(queued.segment, queued.first_sample_pts_ns)
        with self._lock:
            if track.ev_viseme.size == 0 or not (track.ev_viseme != 0).any():
                self.counters["empty_timelines"] += 1
                if track.duration_ms <= 0:
                    return None
            if track.synthetic:
                self.counters["synthetic_timelines"] += 1
            self.counters["speech_tracks"] += 1
            self.tracks.append(track)
            self.tracks.sort(key=lambda t: t.start_ns)
            return track

    def set_speech_timeline(self, segments: list[Any]) -> None:
        """Replace the whole speech timeline with these queued segments (``[]`` clears it)."""
        with self._lock:
            self.tracks = []
            if not segments:
                self.counters["empty_timelines"] += 1
        for seg in segments:
            self.add_speech(seg)

    def pause_speech(self, at_pts_ns: int | None = None) -> None:
        """The speaker paused (a possible barge-in): what is not yet heard waits for ``resume_speech``."""
        with self._lock:
            at = self._now(at_pts_ns)
            kept, held = [], []
            for track in self.tracks:
                if track.end_ns <= at:
                    kept.append(track)
                elif track.start_ns >= at:
                    held.append((track.start_ns - at, track))
                else:
                    kept.append(track.truncated(track.ms(at)))
                    held.append((0, track.remainder(track.ms(at))))
            self.tracks = kept
            self._held = held
            self.counters["speech_paused"] += 1

    def resume_speech(self, at_pts_ns: int | None = None) -> None:
        """The speaker resumed where it paused: the held speech plays from ``at_pts_ns`` on."""
        with self._lock:
            at = self._now(at_pts_ns)
            for offset_ns, track in self._held:
                self.tracks.append(replace(track, start_ns=at + offset_ns))
            self.tracks.sort(key=lambda t: t.start_ns)
            self._held = []

    def clear_speech(self, at_pts_ns: int | None = None) -> None:
        """The speaker dropped what was queued (barge-in): keep only what was heard before ``at_pts_ns``."""
        with self._lock:
            at = self._now(at_pts_ns)
            kept = []
            for track in self.tracks:
                if track.start_ns >= at:
                    continue
                kept.append(track if track.end_ns <= at else track.truncated(track.ms(at)))
            self.tracks = kept
            self._held = []
            self._pending_turns = [p for p in self._pending_turns if p[0] <= at]   # e.g. "listening" at the old end
            self.counters["speech_cleared"] += 1

    def speech_tracks(self) -> list[SpeechTrack]:
        """A consistent copy of the sentences on the timeline (for captions; read from the tick thread)."""
        with self._lock:
            return list(self.tracks)

    def speech_end_ns(self) -> int | None:
        """The pts at which the queued speech ends (the last sentence's last sample), None when nothing is queued."""
        with self._lock:
            return max((t.end_ns for t in self.tracks), default=None)

    def set_reply(self, reply: Any) -> None:
        """The reply being spoken (``dialogue.reply.Reply``), a (6,) ``planner_vector()``, or None."""
        with self._lock:
            if reply is None:
                self._reply_vec = np.zeros(6, np.float32)
                self._reply_gestures = []
                return
            if hasattr(reply, "planner_vector"):
                vec = self._clean(reply.planner_vector(), 6)
                from edge_avatar.dialogue.reply import GESTURES  # noqa: PLC0415

                self._reply_gestures = [(GESTURES.index(g.name), int(g.sentence_index), float(g.strength))
                                        for g in reply.gestures]
                self._reply_all_sentences = False
            else:
                vec = self._clean(reply, 6)
                self._reply_gestures = []
                self._reply_all_sentences = True
            self._reply_vec = np.zeros(6, np.float32) if vec is None else vec

    def set_persona(self, vec: Any) -> None:
        """``Persona.persona_vector()`` (8 values in [0, 1]); NaN -> default, out of range -> clamped."""
        with self._lock:
            arr = np.asarray(vec, dtype=np.float32).reshape(-1)
            if arr.size != self._default_persona.size:
                self.counters["persona_out_of_range"] += 1
                self._persona = self._default_persona.copy()
                return
            bad = ~np.isfinite(arr)
            out = np.where(bad, self._default_persona, arr)
            clipped = np.clip(out, 0.0, 1.0)
            n_bad = int(bad.sum() + np.count_nonzero(clipped != out))
            if n_bad:
                self.counters["persona_out_of_range"] += n_bad
            self._persona = clipped.astype(np.float32)

    def set_turn_state(self, state: str, pts_ns: int | None = None) -> None:
        """listening | thinking | speaking | idle (anything else counts and becomes idle), from ``pts_ns``.

        A pts later than the last tick schedules the change (e.g. "listening" at the end of the queued
        speech); one at or before it applies now and cancels whatever was scheduled.
        """
        with self._lock:
            if state not in TURN_STATES:
                self.counters["unknown_turn_states"] += 1
                state = "idle"
            at = self._now(pts_ns)
            if self.last_pts_ns is not None and at > self.last_pts_ns:
                self._pending_turns.append((at, state))
                self._pending_turns.sort(key=lambda p: p[0])     # stable: same-time changes keep their order
                return
            self._pending_turns.clear()
            self._apply_turn(state, at)

    def _apply_turn(self, state: str, at_ns: int) -> None:
        if state != self.turn_state:
            self.turn_state = state
            self._turn_since_ns = at_ns

    def _now(self, pts_ns: int | None) -> int:
        if pts_ns is not None:
            return int(pts_ns)
        return self.last_pts_ns if self.last_pts_ns is not None else 0

    # ------------------------------------------------------------------ the vector

    def current_track(self, pts_ns: int) -> SpeechTrack | None:
        """The sentence sounding at ``pts_ns`` (between its first and last sounding phoneme)."""
        for track in self.tracks:
            t = track.ms(pts_ns)
            if track.first_sound_ms <= t < track.last_sound_ms:
                return track
        return None

    def tracks_near(self, pts_ns: int, before_ms: float, after_ms: float) -> list[SpeechTrack]:
        return [tr for tr in self.tracks
                if tr.start_ns - after_ms * 1e6 <= pts_ns <= tr.end_ns + before_ms * 1e6]

    def vector(self, pts_ns: int) -> np.ndarray:
        """(INPUT_SIZE,) float32 for the tick at ``pts_ns`` (advances the drivers once per new pts)."""
        with self._lock:
            return self._vector(int(pts_ns))

    def _vector(self, pts: int) -> np.ndarray:
        if self.last_pts_ns is not None and pts == self.last_pts_ns:
            return self._last_vector.copy()
        x = np.zeros(INPUT_SIZE, np.float32)
        c = self.counters
        c["ticks"] += 1
        while self._pending_turns and self._pending_turns[0][0] <= pts:
            self._apply_turn(*reversed(self._pending_turns.pop(0)))
        if self._turn_since_ns is None:
            self._turn_since_ns = pts
        self._perception_features(x, pts)
        x[INPUT_INDEX["voice_active"]:INPUT_INDEX["voice_active"] + 10] = self._voice.features(pts)
        self._speech_features(x, pts)
        s = INPUT_SLICES
        x[s["reply_affect"]] = self._reply_vec[:2]
        x[s["point_yaw"]] = self._reply_vec[5]
        x[s["persona"]] = self._persona
        x[s["turn_state"].start + TURN_STATES.index(self.turn_state)] = 1.0
        x[s["turn_age"]] = (pts - self._turn_since_ns) / 1e9 / TURN_AGE_SCALE_S
        x[INPUT_INDEX["blink"]:] = self.drivers.advance(pts, self.turn_state)
        # Documented saturations (distance, pause, ages) are silent; anything else out of range is counted.
        saturating = (INPUT_INDEX["distance"], INPUT_INDEX["pause"], INPUT_INDEX["utterance"],
                      INPUT_INDEX["turn_age"], INPUT_INDEX["speaking_rate"], INPUT_INDEX["voice_energy"],
                      INPUT_INDEX["bystanders"])
        for i in saturating:
            x[i] = min(max(x[i], INPUT_LOW[i]), INPUT_HIGH[i])
        clipped = np.minimum(np.maximum(x, INPUT_LOW), INPUT_HIGH)
        n = int(np.count_nonzero(clipped != x))
        if n:
            c["clamped_values"] += n
        self.last_pts_ns = pts
        self._last_vector = clipped
        self._forget_old_tracks(pts)
        return clipped.copy()

    def _perception_features(self, x: np.ndarray, pts: int) -> None:
        s = INPUT_SLICES
        token = self._token
        fresh = token is not None and self._token_ns is not None and pts - self._token_ns <= self.stale_after_ns
        if token is None:
            self.counters["perception_missing_ticks"] += 1
        elif not fresh:
            self.counters["perception_stale_ticks"] += 1
        present = fresh and token[TOKEN_SLICES["visitor_present"]][0] > 0.5
        x[s["perception_fresh"]] = float(fresh)
        engagement = np.zeros(4, np.float32)
        if fresh:
            engagement = np.clip(token[TOKEN_SLICES["engagement"]], 0, 1)
        if not fresh or engagement.sum() <= 0:
            engagement = np.zeros(4, np.float32)
            engagement[ENGAGEMENT_STATES.index("gone")] = 1.0
        x[s["engagement"]] = engagement
        if not present:
            self._present_since_ns = None
            return
        if self._present_since_ns is None:
            self._present_since_ns = pts
        t = TOKEN_SLICES
        x[s["visitor_present"]] = 1.0
        x[s["visitor_arrival"]] = math.exp(-(pts - self._present_since_ns) / 1e9 / ARRIVAL_DECAY_S)
        x[s["distance"]] = token[t["distance_m"]][0] / DISTANCE_SCALE_M
        cx, cy, w, _h = token[t["face_box"]]
        yaw_deg, pitch_deg = self.visitor_direction_deg(float(cx), float(cy))
        x[s["visitor_yaw"]] = yaw_deg / 45.0
        x[s["visitor_pitch"]] = pitch_deg / 30.0
        x[s["face_size"]] = w
        x[s["visitor_head"]] = token[t["head_pose_deg"]] / 45.0
        x[s["looking_at_screen"]] = token[t["looking_at_screen"]][0]
        x[s["attending"]] = token[t["attending"]][0]
        bs = token[t["blendshapes"]]
        from edge_avatar.motion import BLENDSHAPE_INDEX as B  # noqa: PLC0415

        x[s["visitor_smile"]] = 0.5 * (bs[B["mouthSmileLeft"]] + bs[B["mouthSmileRight"]])
        x[s["visitor_jaw_open"]] = bs[B["jawOpen"]]
        x[s["visitor_brow_up"]] = bs[B["browInnerUp"]]
        x[s["visitor_brow_down"]] = 0.5 * (bs[B["browDownLeft"]] + bs[B["browDownRight"]])
        x[s["visitor_frown"]] = 0.5 * (bs[B["mouthFrownLeft"]] + bs[B["mouthFrownRight"]])
        x[s["visitor_affect"]] = token[t["valence_arousal"]]
        x[s["bystanders"]] = token[t["bystanders_count"]][0] / 3.0

    def visitor_direction_deg(self, cx: float, cy: float) -> tuple[float, float]:
        """Direction of an image point (0..1) from the avatar, (yaw + avatar's left, pitch + up), degrees.

        The camera looks where the avatar looks; the image is not mirrored, so the image's right is the
        avatar's right (negative yaw).
        """
        tan_h = math.tan(math.radians(self.camera_hfov_deg) / 2)
        tan_v = tan_h / self.camera_aspect
        yaw = math.degrees(math.atan((0.5 - cx) * 2 * tan_h))
        pitch = math.degrees(math.atan((0.5 - cy) * 2 * tan_v))
        return yaw, pitch

    def _speech_features(self, x: np.ndarray, pts: int) -> None:
        s = INPUT_SLICES
        offsets = np.asarray(SPEECH_OFFSETS_MS)
        table = np.zeros((N_OFFSETS, N_VISEMES + 2), np.float32)
        near = self.tracks_near(pts, before_ms=SPEECH_WINDOW_MS, after_ms=offsets[-1] + SPEECH_WINDOW_MS)
        for track in near:
            t_ms = track.ms(pts)
            a = t_ms + offsets - SPEECH_WINDOW_MS / 2
            table += track.window_means(a, a + SPEECH_WINDOW_MS)
        occupancy = table[:, :N_VISEMES]
        occupancy[:, 0] += np.clip(1.0 - occupancy.sum(axis=1), 0.0, 1.0)   # nothing playing = silence
        x[s["visemes"]] = occupancy.reshape(-1)
        x[s["stress"]] = table[:, N_VISEMES]
        x[s["speech_energy"]] = table[:, N_VISEMES + 1]

        current = self.current_track(pts)
        latest_ended = None
        for track in self.tracks:
            if track.last_sound_ms > track.first_sound_ms and track.ms(pts) >= track.last_sound_ms:
                if latest_ended is None or track.start_ns >= latest_ended.start_ns:
                    latest_ended = track
        if latest_ended is not None:
            x[s["since_sentence_end"]] = math.exp(-(latest_ended.ms(pts) - latest_ended.last_sound_ms)
                                                  / SINCE_END_DECAY_MS)
        reference = current or latest_ended
        if reference is not None:
            x[s["sentence_type"]] = float(reference.sentence_type)
        if current is not None:
            t = current.ms(pts)
            span = max(current.last_sound_ms - current.first_sound_ms, 1.0)
            x[s["speaking"]] = 1.0
            x[s["sentence_progress"]] = (t - current.first_sound_ms) / span
            x[s["sentence_end_near"]] = max(0.0, 1.0 - (current.last_sound_ms - t) / SENTENCE_END_RAMP_MS)
            gestures = np.zeros(3, np.float32)
            if self._reply_all_sentences:
                gestures = self._reply_vec[2:5].copy()
            for g, sentence, strength in self._reply_gestures:
                if sentence == current.index:
                    gestures[g] = max(gestures[g], strength)
            x[s["gesture_now"]] = gestures
        negation = 0.0
        for track in self.tracks_near(pts, NEGATION_TAIL_MS + NEGATION_RAMP_MS, NEGATION_LEAD_MS + NEGATION_RAMP_MS):
            t = track.ms(pts)
            for ws, we in track.negation_spans_ms:
                negation = max(negation, plateau(t, ws - NEGATION_LEAD_MS, we + NEGATION_TAIL_MS, NEGATION_RAMP_MS))
        x[s["negation"]] = negation

    def _forget_old_tracks(self, pts: int) -> None:
        if len(self.tracks) > 1:
            old = [tr for tr in self.tracks[:-1] if tr.end_ns < pts - self.history_ns]
            if old:
                self.tracks = [tr for tr in self.tracks if tr not in old]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"turn_state": self.turn_state, "tracks": len(self.tracks), "counters": dict(self.counters)}


def describe_layout() -> list[dict[str, Any]]:
    """The layout as data (for manifests and the CLI)."""
    return [{"name": name, "start": INPUT_SLICES[name].start, "size": size, "low": low, "high": high}
            for name, size, low, high in INPUT_FIELDS]
