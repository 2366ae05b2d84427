"""Synthetic conversations for distillation: input streams at the tick rate + the teacher's motion for each tick.

Why this module exists: the student learns the teacher's behaviour from
examples, and the examples must cover what a hospital kiosk meets --
nobody there, someone walking up, greetings, questions, long answers,
pauses, barge-in, sad or angry or cheerful visitors, bystanders, formal and
lively personas -- and the faults it must survive: lost or stale camera,
NaN in a token, a persona out of range, a sentence with no phoneme
timeline, a dead microphone. Each conversation is a script drawn from a
seeded generator and replayed through the real ``PlannerInputs`` (the
exact code the session feeds) and the teacher, one tick at a time.

Speech is real: the avatar's sentences are synthesised once with the
project's espeak-ng engine (``edge_avatar.speech``), in several voices and
rates, and their phoneme timelines, word timings and audio envelopes are
cached (``timelines-v1.json``); sentences are split into a training and a
held-out set by a hash of their text. The visitor side (perception tokens
and 10 ms audio tokens) is simulated: a face that moves, attends, smiles or
frowns by emotion and moves its jaw while talking; a voice with syllables,
declination, accents and a final fall (statement) or rise (question),
hesitation pauses and backchannels.

Everything is a function of the seed: conversation ``i`` of a dataset uses
``SeedSequence([seed, i])``, so datasets can be generated in parallel and
still be identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.perception.token import EMOTION_VALENCE_AROUSAL, EMOTIONS, ENGAGEMENT_STATES, TOKEN_SLICES, empty_token
from edge_avatar.planner.inputs import INPUT_SIZE, PlannerInputs, SpeechTrack, build_track
from edge_avatar.planner.teacher import TeacherPlanner
from edge_avatar.planner.visemes import PP

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
DEFAULT_CACHE_DIR = "~/.cache/edge-avatar/planner-data"
TIMELINE_VOICES: tuple[tuple[str, int], ...] = (("en-us", 160), ("en-us+f3", 140), ("en", 175),
                                                ("en-us-nyc", 190), ("en-gb-scotland", 150))
HELD_OUT_FRACTION = 0.15
TICK_RATE_HZ = 30.0

# The avatar's lines: what a reception assistant says (statements, questions, negations, directions).
SENTENCES: tuple[str, ...] = (
    "Hello, I'm Ava, the reception assistant of Riverside General Hospital.",
    "How can I help you today?",
    "Good morning, welcome to the hospital.",
    "Hi there, what can I do for you?",
    "The pharmacy is on the ground floor, past the main entrance.",
    "Radiology is on the second floor, turn left when you leave the lift.",
    "The emergency department is to your right, follow the red line on the floor.",
    "Outpatient clinics are in building B, across the courtyard.",
    "The cafe is open from seven in the morning until eight in the evening.",
    "Visiting hours are from two until eight every day.",
    "You can park in the multi-storey car park behind the main building.",
    "The maternity ward is on the third floor.",
    "Please take a seat, someone will be with you shortly.",
    "Your appointment is at half past ten with Doctor Patel.",
    "Please bring your appointment letter and a photo ID.",
    "The blood test clinic is on the first floor, room one hundred and twelve.",
    "I'm sorry, I don't know the answer to that.",
    "I'm afraid I can't book appointments, but the front desk can help you.",
    "No, the pharmacy is not open on Sundays.",
    "Unfortunately the car park is full at the moment.",
    "That ward does not allow visitors after eight.",
    "I can't give medical advice, but a nurse can talk to you.",
    "There is no cash machine on this floor, but there is one by the shop.",
    "Would you like me to call someone for you?",
    "Is this your first visit to the hospital?",
    "Do you have your appointment letter with you?",
    "Could you tell me your surname, please?",
    "Are you looking for the children's ward?",
    "Did you want the main reception or the clinic reception?",
    "Shall I show you the way on the map?",
    "Take the lift to the fourth floor and turn right.",
    "Go straight down this corridor and it's the second door on your left.",
    "The toilets are just behind you, next to the stairs.",
    "The chapel is on the ground floor, near the garden.",
    "The lifts are around the corner to your left.",
    "I understand, that must be very worrying for you.",
    "I'm sorry to hear that, please take your time.",
    "Don't worry, you are in the right place.",
    "That sounds difficult, let me find someone who can help.",
    "It's okay, we will sort this out together.",
    "Great, I'm glad I could help.",
    "You're very welcome.",
    "Thank you for waiting.",
    "Have a lovely day, and take care.",
    "Goodbye, I hope everything goes well.",
    "Bye for now, get well soon.",
    "If you need anything else, just ask me.",
    "The hospital shop sells snacks, drinks, magazines and flowers.",
    "Free wifi is available, the network is called Riverside Guest.",
    "The physiotherapy department moved to building C last month.",
    "Masks are available at every entrance.",
    "Please use the hand gel before entering the ward.",
    "The bus stop for the number twelve is outside the main doors.",
    "A taxi rank is just past the car park barrier.",
    "The eye clinic runs on Monday, Wednesday and Friday mornings.",
    "Your prescription will be ready in about twenty minutes.",
    "Please follow the blue signs to the X-ray department.",
    "The fracture clinic is next to accident and emergency.",
    "Mobile phones must be switched off in the intensive care unit.",
    "Wheelchairs are available by the main entrance, free of charge.",
    "The baby changing room is beside the cafe.",
    "Patient transport leaves from the side entrance.",
    "The patient advice team can help with complaints and compliments.",
    "Sorry, could you say that again?",
    "Do you mean the dermatology clinic?",
    "Which department are you looking for?",
    "Is someone meeting you here today?",
    "Can I help with anything else?",
    "Yes, the pharmacy is open until six tonight.",
    "Yes, you can bring a family member with you.",
    "No problem at all.",
    "Of course, it's just over there.",
    "Please wait here, a porter is on the way.",
    "It takes about five minutes to walk there.",
    "The lift near the stairs is the quickest way up.",
    "The stroke unit is on the fifth floor, ward fifty two.",
    "Please check in at the desk on the left when you arrive.",
    "The waiting time today is around forty minutes.",
    "Remember to bring a list of the medicines you take.",
    "Please don't eat anything for six hours before the test.",
    "You will need to drink plenty of water before your scan.",
    "Your results will be sent to your family doctor.",
    "A volunteer can walk with you if you like.",
    "Hearing loops are fitted at every reception desk.",
    "Large print maps are available at the information point.",
    "The prayer room is open all day and night.",
    "Car park tickets can be paid at the machine or by phone.",
    "Blue badge holders can park for free near the entrance.",
    "Please keep your ticket, you will need it to leave.",
    "I hope you feel better soon.",
    "It was nice to meet you.",
    "Let me check that for you.",
    "One moment please, I'm looking that up.",
    "Mm, that's a good question.",
    "Right, so you need the orthopaedic clinic.",
    "Okay, the nearest exit is behind me.",
    "Perfect, you're all checked in.",
    "Brilliant, thank you.",
    "Oh, I see.",
    "Maybe the nurse at the ward can tell you more.",
    "Every ward has a member of staff at the desk.",
    "Members of the public may not enter the operating theatres.",
    "Pets are not allowed inside, except assistance dogs.",
    "Smoking is not permitted anywhere on the hospital grounds.",
    "Never leave bags unattended, please.",
    "Nobody is at the desk right now, but please ring the bell.",
    "The appointment has moved to Thursday at nine.",
    "My name is Ava, I'm here to help.",
    "Please speak to me or press the button on the screen.",
    "Would you prefer the stairs or the lift?",
    "Have you been given a ward number?",
    "Who is your appointment with?",
    "What time is your appointment?",
    "Where would you like to go?",
    "Why don't you take a seat while you wait?",
    "How are you feeling today?",
    "Is there anything I can do to make your visit easier?",
    "Please mind the step at the end of the corridor.",
    "The garden is a quiet place to sit if you need a moment.",
    "The main reception closes at nine in the evening.",
    "Thank you, that's very kind.",
    "Absolutely, I'll explain it again.",
    "First, go through the double doors, then take the stairs down one floor.",
    "The vaccination clinic is by appointment only, not walk in.",
    "Sorry, that's not something I can help with.",
    "Please remember your umbrella, it's raining outside.",
    "Mobile charging points are next to the vending machines.",
    "Your sample can be dropped off at the pathology hatch.",
    "The renal unit has its own entrance on Mill Road.",
    "Please be patient, the team is very busy today.",
    "Welcome back, it's nice to see you again.",
    "Goodbye, and thank you for visiting.",
    "Take care on your way home.",
    "Bye, have a good afternoon.",
)


def held_out(text: str) -> bool:
    """Whether a sentence belongs to the held-out set (a stable hash of its text)."""
    h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return (h % 1000) < HELD_OUT_FRACTION * 1000


# ---------------------------------------------------------------------------------------------- timelines


@dataclass(frozen=True)
class Timeline:
    """One synthesised sentence: text, timing and the normalised 10 ms envelope of its audio."""

    text: str
    voice: str
    rate_wpm: int
    duration_ms: float
    phonemes: tuple[tuple[str, float, float, int], ...]
    words: tuple[tuple[str, float, float], ...]
    envelope: tuple[float, ...]

    def track(self, index: int, start_ns: int, empty_timeline: bool = False) -> SpeechTrack:
        phonemes = () if empty_timeline else self.phonemes
        return build_track(index, start_ns, self.text, phonemes, self.words, np.asarray(self.envelope, np.float32),
                           self.duration_ms)


def synthesise_timelines(sentences: tuple[str, ...] = SENTENCES,
                         voices: tuple[tuple[str, int], ...] = TIMELINE_VOICES) -> list[Timeline]:
    """Run espeak-ng on every (sentence, voice, rate); raises ``TTSUnavailable`` without espeak-ng."""
    from edge_avatar.planner.inputs import speech_envelope  # noqa: PLC0415
    from edge_avatar.speech import open_engine  # noqa: PLC0415

    out: list[Timeline] = []
    engines: dict[tuple[str, int], Any] = {}
    for voice, rate in voices:
        engines[(voice, rate)] = open_engine("espeak", 22050, voice, rate)
    for text in sentences:
        for voice, rate in voices:
            seg = engines[(voice, rate)].synthesize_sentence(text)
            env = speech_envelope(seg.audio, seg.sample_rate_hz)
            out.append(Timeline(text, voice, rate, round(seg.duration_ms, 2),
                                tuple((p.phoneme, round(p.start_ms, 2), round(p.end_ms, 2), p.stress)
                                      for p in seg.phonemes),
                                tuple((w.word, round(w.start_ms, 2), round(w.end_ms, 2)) for w in seg.words),
                                tuple(round(float(v), 3) for v in env)))
    return out


def timelines_key(sentences: tuple[str, ...] = SENTENCES,
                  voices: tuple[tuple[str, int], ...] = TIMELINE_VOICES) -> str:
    from edge_avatar.speech.espeak import check_available  # noqa: PLC0415

    data = json.dumps({"v": GENERATOR_VERSION, "s": sentences, "voices": voices, "espeak": check_available()})
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def load_timelines(cache_dir: str | Path = DEFAULT_CACHE_DIR, sentences: tuple[str, ...] = SENTENCES,
                   voices: tuple[tuple[str, int], ...] = TIMELINE_VOICES,
                   say: Callable[[str], None] | None = None) -> list[Timeline]:
    """The cached timelines for these sentences and voices, synthesised on first use."""
    cache = Path(cache_dir).expanduser() / f"timelines-{timelines_key(sentences, voices)}.json"
    if cache.is_file():
        data = json.loads(cache.read_text(encoding="utf-8"))
        return [Timeline(d["text"], d["voice"], d["rate_wpm"], d["duration_ms"],
                         tuple(tuple(p) for p in d["phonemes"]), tuple(tuple(w) for w in d["words"]),
                         tuple(d["envelope"])) for d in data]
    if say:
        say(f"synthesising {len(sentences) * len(voices)} sentence timelines with espeak-ng -> {cache}")
    timelines = synthesise_timelines(sentences, voices)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(t) for t in timelines]), encoding="utf-8")
    tmp.replace(cache)
    return timelines


# ---------------------------------------------------------------------------------------------- the script


@dataclass
class Utterance:
    """One stretch of visitor voice (ns on the media clock)."""

    start_ns: int
    end_ns: int
    kind: str = "statement"          # statement | question | hesitation | backchannel
    f0_hz: float = 160.0


@dataclass
class Script:
    """What happens in one conversation, on the media clock."""

    duration_ns: int
    persona: np.ndarray
    events: list[tuple[int, str, Any]] = field(default_factory=list)   # (pts, kind, payload), sorted later
    utterances: list[Utterance] = field(default_factory=list)
    visits: list[tuple[int, int]] = field(default_factory=list)        # (arrive, leave) of each visitor
    emotions: list[str] = field(default_factory=list)                  # per visit
    stride: int = 1
    camera_lost: list[tuple[int, int]] = field(default_factory=list)
    stale: list[tuple[int, int]] = field(default_factory=list)
    dropouts: list[tuple[int, int]] = field(default_factory=list)
    mic_dead: list[tuple[int, int]] = field(default_factory=list)
    nan_rate: float = 0.0
    bystanders: int = 0

    def add(self, pts_ns: int, kind: str, payload: Any = None) -> None:
        self.events.append((int(pts_ns), kind, payload))


_S = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(round(seconds * _S))


def _reply(rng: np.random.Generator, n_sentences: int, emotion: str, kind: str, texts: list[str]) -> Any:
    from edge_avatar.dialogue.reply import Affect, GestureIntent, Reply  # noqa: PLC0415

    base = {"happy": (0.55, 0.3), "sad": (-0.2, -0.3), "fear": (-0.1, -0.2), "angry": (0.0, -0.3),
            "surprise": (0.3, 0.2), "neutral": (0.25, 0.0), "disgust": (-0.1, -0.1)}[emotion]
    if kind == "greeting":
        base = (0.65, 0.3)
    elif kind == "farewell":
        base = (0.5, 0.1)
    valence = float(np.clip(base[0] + rng.normal(0, 0.25), -1, 1))
    arousal = float(np.clip(base[1] + rng.normal(0, 0.25), -1, 1))
    gestures = []
    for i, text in enumerate(texts[:n_sentences]):
        directional = any(w in text.lower() for w in ("left", "right", "floor", "corridor", "behind", "over there",
                                                      "around the corner", "straight"))
        if rng.random() < 0.25:
            gestures.append(GestureIntent("nod", float(rng.uniform(0.3, 1.0)), i))
        if rng.random() < (0.6 if directional else 0.1):
            direction = "left" if "left" in text else "right" if "right" in text else str(
                rng.choice(["left", "right", "ahead", "behind", "down"]))
            gestures.append(GestureIntent("point", float(rng.uniform(0.4, 1.0)), i, direction))
        if rng.random() < 0.15:
            gestures.append(GestureIntent("open_hands", float(rng.uniform(0.3, 1.0)), i))
    return Reply(" ".join(texts[:n_sentences]), "answer", affect=Affect(valence, arousal), gestures=tuple(gestures))


def _random_persona(rng: np.random.Generator) -> np.ndarray:
    style = np.zeros(3, np.float32)
    style[rng.integers(3)] = 1.0
    vec = np.concatenate([rng.uniform(0.1, 0.7, 1), rng.uniform(0, 1, 4), style]).astype(np.float32)
    r = rng.random()
    if r < 0.05:
        vec[rng.integers(0, 5, 2)] = rng.choice([-1.0, 1.8, 3.0])     # out of range (clamped by the assembler)
    elif r < 0.08:
        vec[rng.integers(0, 5)] = np.nan
    return vec


class ScriptWriter:
    """Draws one conversation: idle, visitors arriving, turns, replies, interruptions, faults."""

    def __init__(self, rng: np.random.Generator, timelines: list[Timeline], target_s: float):
        self.rng = rng
        self.timelines = timelines
        self.by_text: dict[str, list[Timeline]] = {}
        for tl in timelines:
            self.by_text.setdefault(tl.text, []).append(tl)
        self.texts = sorted(self.by_text)
        self.greetings = [t for t in self.texts if t.split(",")[0].split(" ")[0] in ("Hello", "Hi", "Good", "Welcome")]
        self.farewells = [t for t in self.texts if any(w in t for w in ("Goodbye", "Bye", "Take care", "Have a"))]
        self.target_s = target_s

    def _voice_for(self, text: str, voice_index: int) -> Timeline:
        options = self.by_text[text]
        return options[voice_index % len(options)]

    def write(self) -> Script:
        rng = self.rng
        script = Script(duration_ns=0, persona=_random_persona(rng), stride=int(rng.choice([1, 1, 2, 3])))
        script.nan_rate = float(rng.choice([0.0, 0.0, 0.0, 0.02, 0.1]))
        script.bystanders = int(rng.choice([0, 0, 0, 1, 2]))
        voice_index = int(rng.integers(0, 100))
        t = rng.uniform(0.5, 5.0)
        script.add(0, "turn", "idle")
        while t < self.target_s:
            t = self._visit(script, t, voice_index)
            t += rng.uniform(1.0, 4.0)
        script.duration_ns = _ns(t)
        self._faults(script)
        script.events.sort(key=lambda e: e[0])
        return script

    def _visit(self, script: Script, t: float, voice_index: int) -> float:
        rng = self.rng
        emotion = str(rng.choice(["neutral", "happy", "sad", "fear", "angry", "surprise", "neutral", "happy"]))
        arrive = t
        t += rng.uniform(0.8, 2.0)     # approaching
        script.add(_ns(t), "turn", "listening")
        if rng.random() < 0.8:
            t = self._avatar_turn(script, t + rng.uniform(0.1, 0.4), emotion, "greeting", voice_index)
        n_turns = int(rng.integers(1, 5))
        for _ in range(n_turns):
            t = self._visitor_turn(script, t, emotion)
            if t - arrive > 70:
                break
            t = self._avatar_turn(script, t, emotion, "answer", voice_index)
        if rng.random() < 0.6:
            t = self._avatar_turn(script, t + rng.uniform(0.3, 1.0), emotion, "farewell", voice_index)
        t += rng.uniform(0.3, 1.5)
        leave = t
        script.add(_ns(t + 1.2), "turn", "idle")
        script.visits.append((_ns(arrive), _ns(leave)))
        script.emotions.append(emotion)
        return t + 1.5

    def _visitor_turn(self, script: Script, t: float, emotion: str) -> float:
        """The visitor speaks (one or two parts, maybe hesitating); the avatar listens. Returns the turn end."""
        rng = self.rng
        script.add(_ns(t), "turn", "listening")
        t += rng.uniform(0.2, 1.5)
        f0 = float(rng.uniform(95, 240))
        if rng.random() < 0.08:            # a silent visitor: no words, just presence
            return t + rng.uniform(2.0, 5.0)
        parts = 1 if rng.random() < 0.6 else 2
        for p in range(parts):
            length = float(rng.uniform(0.5, 5.0))
            kind = "question" if rng.random() < 0.35 else "statement"
            if p < parts - 1 and rng.random() < 0.5:
                kind = "hesitation"
            script.utterances.append(Utterance(_ns(t), _ns(t + length), kind, f0))
            t += length
            if p < parts - 1:
                t += rng.uniform(0.3, 1.2)
        return t + rng.uniform(0.5, 0.9)   # turn-taking waits for the end of the turn

    def _avatar_turn(self, script: Script, t: float, emotion: str, kind: str, voice_index: int) -> float:
        """Thinking, then speaking a reply (maybe interrupted). Returns when the avatar is done."""
        rng = self.rng
        script.add(_ns(t), "turn", "thinking")
        t += rng.uniform(0.2, 0.6) if kind != "answer" else rng.uniform(0.3, 2.5)
        pool = (self.greetings if kind == "greeting" else self.farewells if kind == "farewell" else []) or self.texts
        n = 1 if kind != "answer" else int(rng.choice([1, 1, 2, 2, 3]))
        texts = [str(rng.choice(pool)) for _ in range(n)]
        reply = _reply(rng, n, emotion, kind, texts)
        script.add(_ns(t), "reply", reply)
        script.add(_ns(t), "turn", "speaking")
        if rng.random() < 0.03:            # TTS failed: speaking state, nothing plays
            script.add(_ns(t), "timeline", [])
            t += rng.uniform(0.5, 1.5)
            script.add(_ns(t), "turn", "listening")
            return t
        start = t + rng.uniform(0.02, 0.15)
        tracks: list[SpeechTrack] = []
        for i, text in enumerate(texts):
            tl = self._voice_for(text, voice_index)
            empty = rng.random() < 0.04
            track = tl.track(i, _ns(start), empty_timeline=empty)
            tracks.append(track)
            script.add(_ns(start) - 150_000_000, "speech", track)   # queued a little ahead of playing
            start += tl.duration_ms / 1000.0
        end = start
        if rng.random() < 0.15 and end - t > 1.5:
            # Barge-in: the visitor talks over the avatar; the speaker is cleared ~200 ms later.
            onset = float(rng.uniform(t + 1.0, end - 0.2))
            length = float(rng.uniform(0.8, 3.0))
            script.utterances.append(Utterance(_ns(onset), _ns(onset + length), "statement",
                                               float(rng.uniform(95, 240))))
            clear_ns = _ns(onset + 0.2)
            script.events = [ev for ev in script.events if not (ev[1] == "speech" and ev[0] >= clear_ns)]
            script.add(clear_ns, "clear", None)
            script.add(_ns(onset + 0.2), "turn", "listening")
            return onset + length + rng.uniform(0.5, 0.9)
        if rng.random() < 0.2 and end - t > 2.0:
            # A backchannel from the visitor ("mm-hm"): no interruption.
            at = float(rng.uniform(t + 0.8, end - 0.5))
            script.utterances.append(Utterance(_ns(at), _ns(at + rng.uniform(0.25, 0.5)), "backchannel",
                                               float(rng.uniform(95, 240))))
        script.add(_ns(end + 0.05), "turn", "listening")
        return end + rng.uniform(0.1, 0.4)

    def _faults(self, script: Script) -> None:
        rng = self.rng
        duration_s = script.duration_ns / _S

        def intervals(p: float, lo: float, hi: float) -> list[tuple[int, int]]:
            out = []
            while rng.random() < p:
                start = rng.uniform(0, duration_s)
                out.append((_ns(start), _ns(start + rng.uniform(lo, hi))))
                p *= 0.5
            return out

        script.camera_lost = intervals(0.15, 1.0, 4.0)
        script.stale = intervals(0.15, 1.5, 4.0)
        script.dropouts = intervals(0.3, 0.3, 2.0)
        script.mic_dead = intervals(0.05, 2.0, 6.0)


# ---------------------------------------------------------------------------------------------- the visitor


class VisitorModel:
    """A simulated visitor seen by perception: position, attention, expression by emotion, talking jaw."""

    def __init__(self, rng: np.random.Generator, script: Script):
        self.rng = rng
        self.script = script
        self.cx = self.cy = 0.5
        self.head = np.zeros(3)
        self.smile = 0.0
        self.attending = 0.9
        self.emotion = np.zeros(len(EMOTIONS))
        self.visit = -1
        self.mean = (0.5, 0.45)

    def token(self, pts: int, talking: float) -> np.ndarray | None:
        s = self.script
        if any(a <= pts < b for a, b in s.camera_lost):
            return None
        rng = self.rng
        token = empty_token()
        token[TOKEN_SLICES["frame_valid"]] = 1.0
        visit = next((k for k, (a, b) in enumerate(s.visits) if a <= pts < b + _ns(1.2)), -1)
        token[TOKEN_SLICES["faces_count"]] = s.bystanders
        token[TOKEN_SLICES["bystanders_count"]] = s.bystanders
        if visit < 0 or any(a <= pts < b for a, b in s.dropouts):
            self._nan(token)
            return token
        arrive, leave = s.visits[visit]
        if visit != self.visit:
            self.visit = visit
            self.mean = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.35, 0.55)))
            self.cx, self.cy = self.mean
            em = s.emotions[visit]
            base = np.full(len(EMOTIONS), 0.03)
            base[EMOTIONS.index(em)] = 0.8
            base[EMOTIONS.index("neutral")] += 0.2
            self.emotion = base / base.sum()
        t_in = (pts - arrive) / _S
        t_out = (pts - leave) / _S
        if t_out >= 0:
            state, distance = "leaving", 1.0 + 1.5 * t_out
        elif t_in < 1.0:
            state, distance = "approaching", 2.6 - 1.4 * t_in
        else:
            state, distance = "engaged", 1.0 + 0.15 * math.sin(t_in * 0.3)
        # Ornstein-Uhlenbeck drift of the face position and head pose (tau ~2 s)
        self.cx += 0.03 * (self.mean[0] - self.cx) + 0.006 * rng.standard_normal()
        self.cy += 0.03 * (self.mean[1] - self.cy) + 0.004 * rng.standard_normal()
        self.head += 0.05 * (np.array([0.0, -3.0, 0.0]) - self.head) + rng.normal(0, [1.0, 0.7, 0.5])
        if rng.random() < 0.01:
            self.attending = float(rng.choice([0.2, 0.9, 0.95]))
        self.emotion = np.clip(self.emotion + rng.normal(0, 0.01, len(EMOTIONS)), 0.001, None)
        self.emotion /= self.emotion.sum()
        em = s.emotions[visit]
        smile_target = {"happy": 0.55, "surprise": 0.2, "neutral": 0.1}.get(em, 0.0)
        self.smile += 0.05 * (smile_target - self.smile) + 0.02 * rng.standard_normal()
        width = 0.16 / (2 * distance * math.tan(math.radians(69.0) / 2))
        token[TOKEN_SLICES["visitor_present"]] = 1.0
        token[TOKEN_SLICES["engagement"]] = 0.0
        token[TOKEN_SLICES["engagement"].start + ENGAGEMENT_STATES.index(state)] = 1.0
        token[TOKEN_SLICES["distance_m"]] = distance
        token[TOKEN_SLICES["face_box"]] = (self.cx, self.cy, width, width * 1.3)
        token[TOKEN_SLICES["face_score"]] = 0.95
        token[TOKEN_SLICES["head_pose_deg"]] = self.head
        token[TOKEN_SLICES["gaze_deg"]] = self.head[:2] * 0.8
        token[TOKEN_SLICES["looking_at_screen"]] = self.attending
        token[TOKEN_SLICES["attending"]] = self.attending
        from edge_avatar.motion import BLENDSHAPE_INDEX as B  # noqa: PLC0415

        bs = np.zeros(52, np.float32)
        smile = float(np.clip(self.smile, 0, 1))
        bs[B["mouthSmileLeft"]] = bs[B["mouthSmileRight"]] = smile
        bs[B["jawOpen"]] = talking * float(rng.uniform(0.1, 0.4))
        if em in ("sad", "fear"):
            bs[B["browInnerUp"]] = 0.4
            bs[B["mouthFrownLeft"]] = bs[B["mouthFrownRight"]] = 0.3 if em == "sad" else 0.1
        if em == "angry":
            bs[B["browDownLeft"]] = bs[B["browDownRight"]] = 0.5
        bs[B["eyeBlinkLeft"]] = bs[B["eyeBlinkRight"]] = 1.0 if rng.random() < 0.03 else 0.05
        token[TOKEN_SLICES["blendshapes"]] = bs
        token[TOKEN_SLICES["emotion"]] = self.emotion
        token[TOKEN_SLICES["valence_arousal"]] = self.emotion @ EMOTION_VALENCE_AROUSAL
        token[TOKEN_SLICES["faces_count"]] = 1 + s.bystanders
        token[TOKEN_SLICES["state_age_s"]] = max(t_in, 0.0)
        self._nan(token)
        return token

    def _nan(self, token: np.ndarray) -> None:
        if self.script.nan_rate and self.rng.random() < self.script.nan_rate:
            token[self.rng.integers(0, token.size, 3)] = np.nan


class VoiceModel:
    """The visitor's voice as 10 ms audio-token vectors (``listening.token`` v1 layout)."""

    HANGOVER_NS = 150_000_000
    ONSET_NS = 30_000_000

    def __init__(self, rng: np.random.Generator, script: Script):
        self.rng = rng
        self.script = script
        self.utterances = sorted(script.utterances, key=lambda u: u.start_ns)
        # Per utterance: syllables (start, end) and pitch accents, drawn once.
        self.syllables: list[list[tuple[int, int, float]]] = []
        for u in self.utterances:
            sylls, t = [], u.start_ns
            while t < u.end_ns:
                length = int(rng.uniform(0.12, 0.25) * _S)
                accent = float(rng.choice([0.0, 0.0, 2.0, 3.5]))
                sylls.append((t, min(t + length, u.end_ns), accent))
                t += length + int(rng.uniform(0.02, 0.08) * _S)
            self.syllables.append(sylls)
        self.final_st = [(-rng.uniform(4, 9) if u.kind in ("statement", "backchannel") else
                          rng.uniform(4, 9) if u.kind == "question" else rng.uniform(-0.5, 0.5))
                         for u in self.utterances]
        self._index = 0

    def vector(self, pts: int, far_end: bool) -> np.ndarray:
        v = np.zeros(11, np.float32)
        v[5] = -65.0 + self.rng.normal(0, 2)
        v[10] = 0.0 if any(a <= pts < b for a, b in self.script.mic_dead) else 1.0
        v[7] = float(far_end)
        while self._index < len(self.utterances) and self.utterances[self._index].end_ns + self.HANGOVER_NS < pts:
            self._index += 1
        if v[10] == 0.0 or self._index >= len(self.utterances):
            return v
        u = self.utterances[self._index]
        if not (u.start_ns + self.ONSET_NS <= pts < u.end_ns + self.HANGOVER_NS):
            return v
        v[0] = 1.0
        v[1] = 0.6
        v[8] = float(far_end)
        for s0, s1, accent in self.syllables[self._index]:
            if s0 <= pts < s1:
                t_s = (pts - u.start_ns) / _S
                remaining_s = (u.end_ns - pts) / _S
                st = -1.0 * t_s + accent * math.sin(math.pi * (pts - s0) / max(s1 - s0, 1))
                if remaining_s < 0.5:
                    st += self.final_st[self._index] * (1 - remaining_s / 0.5)
                v[1], v[2] = 0.95, 1.0
                v[3] = u.f0_hz * 2 ** (st / 12)
                v[4] = 0.85
                v[5] = -24.0 + self.rng.normal(0, 3)
                v[6] = 4.5
                break
        else:
            v[5] = -45.0
        return v


# ---------------------------------------------------------------------------------------------- replay


@dataclass
class Conversation:
    """One generated conversation: per-tick inputs and teacher motion, plus what the metrics need."""

    inputs: np.ndarray          # (T, INPUT_SIZE) float32
    motion: np.ndarray          # (T, 64) float32
    pts_ns: np.ndarray          # (T,) int64
    envelope: np.ndarray        # (T,) float32: the avatar's speech envelope at each tick's pts (sound time)
    bilabials_ns: np.ndarray    # (N, 2) int64: start, end of every bilabial the speaker played
    blinks_ns: np.ndarray       # (K,) int64: blink starts
    backchannels_ns: np.ndarray  # (M,) int64
    turn_state: np.ndarray      # (T,) int8: index in TURN_STATES


def replay(script: Script, seed: int, tick_rate_hz: float = TICK_RATE_HZ,
           timings_ns: dict[str, list[int]] | None = None) -> Conversation:
    """Drive the real ``PlannerInputs`` and the teacher through a script, one tick at a time.

    ``timings_ns``, when given, collects the wall time of each tick's input assembly ("assembly") and teacher
    step ("teacher") -- the bench's measurement, taken on the very work the generator does.
    """
    rng = np.random.default_rng(seed)
    inputs = PlannerInputs(seed=seed)
    teacher = TeacherPlanner(inputs)
    inputs.set_persona(script.persona)
    visitor = VisitorModel(rng, script)
    voice = VoiceModel(rng, script)
    n_ticks = int(script.duration_ns * tick_rate_hz / _S)
    xs = np.zeros((n_ticks, INPUT_SIZE), np.float32)
    ys = np.zeros((n_ticks, 64), np.float32)
    env = np.zeros(n_ticks, np.float32)
    pts_all = np.zeros(n_ticks, np.int64)
    states = np.zeros(n_ticks, np.int8)
    played: list[SpeechTrack] = []
    events = script.events
    e = 0
    audio_ns = 0
    from edge_avatar.planner.inputs import TURN_STATES  # noqa: PLC0415

    for k in range(n_ticks):
        pts = (k * _S * 1000) // int(tick_rate_hz * 1000)
        while e < len(events) and events[e][0] <= pts:
            at, kind, payload = events[e]
            if kind == "turn":
                inputs.set_turn_state(payload, at)
            elif kind == "reply":
                inputs.set_reply(payload)
            elif kind == "speech":
                inputs.add_speech(payload)
                played.append(payload)
            elif kind == "timeline":
                inputs.set_speech_timeline(payload)
            elif kind == "clear":
                inputs.clear_speech(at)
                played = [tr if tr.end_ns <= at else tr.truncated(tr.ms(at)) for tr in played if tr.start_ns < at]
            e += 1
        while audio_ns <= pts:
            far_end = inputs.current_track(audio_ns) is not None
            inputs.set_audio(voice.vector(audio_ns, far_end), audio_ns)
            audio_ns += 10_000_000
        talking = float(any(u.start_ns <= pts < u.end_ns for u in voice.utterances))
        if k % script.stride == 0 and not any(a <= pts < b for a, b in script.stale):
            inputs.set_perception(visitor.token(pts, talking), pts)
        if timings_ns is None:
            x = inputs.vector(pts)
            ys[k] = teacher.step_vector(pts, x)
        else:
            t0 = time.perf_counter_ns()
            x = inputs.vector(pts)
            t1 = time.perf_counter_ns()
            ys[k] = teacher.step_vector(pts, x)
            timings_ns.setdefault("assembly", []).append(t1 - t0)
            timings_ns.setdefault("teacher", []).append(time.perf_counter_ns() - t1)
        xs[k] = x
        pts_all[k] = pts
        states[k] = TURN_STATES.index(inputs.turn_state)
        for tr in inputs.tracks_near(pts, 0.0, 0.0):
            env[k] = max(env[k], tr.envelope_at(tr.ms(pts)))
    bilabials = [(tr.start_ns + int(s * 1e6), tr.start_ns + int(en * 1e6))
                 for tr in played for s, en, v in zip(tr.ev_start_ms, tr.ev_end_ms, tr.ev_viseme)
                 if v == PP and tr.start_ns + en * 1e6 < script.duration_ns]
    return Conversation(xs, ys, pts_all, env, np.array(bilabials, np.int64).reshape(-1, 2),
                        np.array(inputs.drivers.blinks, np.int64), np.array(teacher.core.state.backchannels, np.int64),
                        states)


@dataclass(frozen=True)
class GeneratorOptions:
    """Everything that decides a generated dataset (part of its cache key)."""

    seed: int = 0
    conversations: int = 200
    target_s: float = 40.0          # each conversation runs until its last visit passes this
    held_out: bool = False          # draw sentences from the held-out set instead of the training set
    tick_rate_hz: float = TICK_RATE_HZ


def generate_conversation(options: GeneratorOptions, index: int, timelines: list[Timeline]) -> Conversation:
    seq = np.random.SeedSequence([options.seed, index, int(options.held_out)])
    rng = np.random.default_rng(seq)
    pool = [tl for tl in timelines if held_out(tl.text) == options.held_out]
    script = ScriptWriter(rng, pool, options.target_s * float(rng.uniform(0.6, 1.4))).write()
    return replay(script, int(seq.generate_state(1)[0]), options.tick_rate_hz)


def source_fingerprint() -> str:
    """A hash of the code that decides the data (inputs, visemes, teacher, this generator)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("inputs.py", "visemes.py", "teacher.py", "generate.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _worker(args: tuple[GeneratorOptions, int, list[Timeline]]) -> Conversation:
    options, index, timelines = args
    return generate_conversation(options, index, timelines)


def dataset_path(options: GeneratorOptions, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> Path:
    """Where the conversations of ``options`` are cached: keyed by the options, the code and the timelines."""
    key = hashlib.sha256(json.dumps({**asdict(options), "code": source_fingerprint(),
                                     "timelines": timelines_key()}, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"conversations-{key}.npz"


def generate_dataset(options: GeneratorOptions, cache_dir: str | Path = DEFAULT_CACHE_DIR, jobs: int = 1,
                     on_progress: Callable[[int, int], None] | None = None,
                     say: Callable[[str], None] | None = None) -> list[Conversation]:
    """The conversations of ``options``, from the cache when the code and options are unchanged."""
    timelines = load_timelines(cache_dir, say=say)
    path = dataset_path(options, cache_dir)
    if path.is_file():
        if say:
            say(f"conversations from the cache: {path}")
        return load_conversations(path)
    conversations: list[Conversation] = []
    work = [(options, i, timelines) for i in range(options.conversations)]
    if jobs > 1:
        import multiprocessing  # noqa: PLC0415

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for i, conv in enumerate(pool.imap(_worker, work, chunksize=2)):
                conversations.append(conv)
                if on_progress:
                    on_progress(i + 1, options.conversations)
    else:
        for i, item in enumerate(work):
            conversations.append(_worker(item))
            if on_progress:
                on_progress(i + 1, options.conversations)
    save_conversations(path, conversations)
    return conversations


def save_conversations(path: Path, conversations: list[Conversation]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for name in Conversation.__dataclass_fields__:
        parts = [getattr(c, name) for c in conversations]
        arrays[name] = np.concatenate(parts) if parts else np.zeros(0)
        arrays[name + "__len"] = np.array([len(p) for p in parts], np.int64)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_conversations(path: Path) -> list[Conversation]:
    with np.load(path) as data:
        fields = {}
        for name in Conversation.__dataclass_fields__:
            lengths = data[name + "__len"]
            fields[name] = np.split(data[name], np.cumsum(lengths)[:-1]) if len(lengths) else []
    n = len(fields["inputs"])
    return [Conversation(**{name: fields[name][i] for name in fields}) for i in range(n)]
