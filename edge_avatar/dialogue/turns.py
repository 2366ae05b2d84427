"""Turn-taking and barge-in: when has the visitor finished, and when are they really talking over the avatar?

Why this module exists: a fixed silence timer fails both ways -- it answers
into the pause of someone reading out a phone number, and it makes everyone
else wait. Here the silence needed to end a turn moves with the other cues
people use: the pitch and energy falling at the end of the utterance, whether
the words so far read as complete, and the visitor's face (still looking at
the avatar with the mouth closed = yielding; mouth open = about to go on).
The same cues separate a real interruption from a backchannel ("mm-hm"),
a cough, or the avatar's own voice coming back through the microphone.

Input: one ``ListeningFrame`` per 10 ms of microphone audio, assembled by the
session from the listening package's audio token (VAD, pitch, energy, ASR
partial/final text, all on the echo-cancelled signal) and perception's
visual token (face visible/attending, mouth closed) at the same pts.
Output: ``TurnEvent``s. Plain Python arithmetic: microseconds per frame.

End of turn: the required silence starts at ``turn_base_silence_ms`` and moves
(ms): falling pitch -150, rising pitch +250, falling energy -80, complete
words -180, unfinished words +600, face yielding -120, mouth open +250,
looking away +100; clamped to [``turn_min_silence_ms``,
``turn_max_silence_ms``] (``turn_max_incomplete_ms`` while the words are
unfinished).

Barge-in, while the avatar speaks: voiced frames (pitch > 0) above
``barge_in_min_dbfs`` with the visitor's mouth open count as the visitor
talking; after ``barge_in_confirm_ms`` of them the avatar PAUSEs (speech
stops within 150 ms of the onset). If the sound ends within
``backchannel_max_ms`` and its words are a backchannel (or there are none:
a cough, a laugh), the avatar RESUMEs where it paused -- nothing is lost;
otherwise it STOPs and the queued reply is discarded. A hum with the mouth
closed ("mm-hm"), unvoiced bursts (coughs) and voice with no moving mouth
(echo of the avatar itself) never pause it. Without a visible face the mouth
cue is missing and ``barge_in_no_face_confirm_ms`` (slower) applies.

The interrupted reply: the sentences not yet heard are kept
(``InterruptedReply``); the session speaks them only if the visitor's next
turn asks to go on ("sorry, go on"), otherwise they are dropped -- the
visitor interrupted because they want something else.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Literal

from edge_avatar.dialogue.intents import normalise, strip_politeness
from edge_avatar.dialogue.options import DialogueConfig

FRAME_NS = 10_000_000  # one ListeningFrame per 10 ms of audio

BACKCHANNELS = frozenset({"mm", "mhm", "mm hm", "mmhm", "hmm", "uh huh", "uhhuh", "yeah", "yes", "yep", "ok", "okay",
                          "right", "sure", "aha", "ah", "oh", "i see", "alright", "all right", "yeah yeah", "ok ok",
                          "uh", "um", "huh", "cool", "great", "fine", "good", "thanks", "thank you"})
_CONTINUE = re.compile(r"^(sorry |no |oh )?(go on|carry on|continue|please continue|keep going|go ahead|sorry go on)"
                       r"( please)?$")
_INCOMPLETE_ENDINGS = frozenset("""and or but the a an to of for with my your his her our their is are was were at in
on from um uh er erm so because like then if which whose that number about near into by as than when where while
i we it's its""".split())
_NUMBER_WORDS = frozenset("zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                          "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
                          "eighty ninety hundred double triple".split())
_READING_OUT = re.compile(r"\b(number|phone|mobile|call me on|postcode|post code|date of birth|reference|nhs)\b")
_QUESTION_START = re.compile(r"^(where|what|when|which|who|how|why|is|are|can|could|do|does|did|will|would|should"
                             r"|have|has|may|i need|i m looking|i am looking|i want|i d like)\b")
PHONE_DIGITS = 10  # fewer digits read out so far: the number is probably not finished


@dataclass(frozen=True)
class ListeningFrame:
    """What turn-taking reads for each 10 ms of microphone audio (documented input, version 1).

    pts_ns           media time of the frame's first sample (the speaker clock)
    voice_active     VAD on the echo-cancelled microphone signal
    pitch_hz         fundamental frequency, 0.0 when unvoiced (coughs, noise, silence)
    energy_dbfs      level of the echo-cancelled signal, dB full scale (silence about -90)
    partial_text     the ASR's running transcript of the current utterance ("" when none)
    final_text       the ASR's final transcript, on the frame where it closes an utterance (else None)
    final_start_ns   media time where the audio of ``final_text`` starts (None: unknown); a final that
                     began before the current utterance is a late answer for an earlier one and is ignored
    face_visible     perception sees the active visitor's face (False: no camera, or nobody there)
    face_attending   the face is turned to the avatar
    mouth_closed     the visitor's lips are together (jawOpen low), from the blendshapes
    avatar_speaking  the avatar's own speech is playing (from the speaker queue)
    """

    pts_ns: int
    voice_active: bool
    pitch_hz: float = 0.0
    energy_dbfs: float = -90.0
    partial_text: str = ""
    final_text: str | None = None
    face_visible: bool = False
    face_attending: bool = False
    mouth_closed: bool = True
    avatar_speaking: bool = False
    final_start_ns: int | None = None


EventKind = Literal["speech_start", "end_of_turn", "pause_speech", "resume_speech", "stop_speech"]


@dataclass(frozen=True)
class TurnEvent:
    kind: EventKind
    pts_ns: int                         # when the decision was made (media time)
    end_of_speech_ns: int = 0           # end_of_turn: the end of the last voiced frame
    text: str = ""                      # end_of_turn / stop_speech: the words so far (final when available)
    cues: dict = field(default_factory=dict)  # what moved the decision (for tuning and reports)

    @property
    def wait_ms(self) -> float:
        """end_of_turn: how long after the visitor stopped the decision came."""
        return (self.pts_ns - self.end_of_speech_ns) / 1e6 if self.end_of_speech_ns else 0.0


@dataclass
class InterruptedReply:
    """What the visitor did not get to hear when they barged in."""

    text: str
    sentences: list[str]
    sentences_heard: int

    @property
    def unheard_text(self) -> str:
        return " ".join(self.sentences[self.sentences_heard:])


def text_completeness(text: str) -> str:
    """'complete', 'incomplete' or 'unknown' for an utterance so far (ASR partial or final)."""
    stripped = text.strip()
    norm = normalise(stripped)
    if not norm:
        return "unknown"
    words = norm.split()
    last = words[-1]
    if _reading_out_number(norm, words):
        return "incomplete"
    if norm in BACKCHANNELS or norm in ("hello", "hi", "thanks", "thank you", "bye", "goodbye", "no", "yes please"):
        return "complete"
    if last in _INCOMPLETE_ENDINGS:
        return "incomplete"
    if stripped.endswith(("?", ".", "!")):
        return "complete"
    if len(words) >= 3 and _QUESTION_START.match(strip_politeness(stripped)):
        return "complete"
    return "unknown"


def _reading_out_number(norm: str, words: list[str]) -> bool:
    tail_is_number = words[-1].isdigit() or words[-1] in _NUMBER_WORDS
    if not tail_is_number or not _READING_OUT.search(norm):
        return False
    digits = sum(len(w) if w.isdigit() else 1 for w in words if w.isdigit() or w in _NUMBER_WORDS)
    return digits < PHONE_DIGITS


def is_backchannel(text: str) -> bool:
    norm = normalise(text)
    return not norm or norm in BACKCHANNELS or all(w in BACKCHANNELS for w in norm.split())


def asks_to_continue(text: str) -> bool:
    """'sorry, go on' after an interruption: speak the rest of the interrupted reply."""
    return bool(_CONTINUE.match(normalise(text)))


class TurnTaker:
    """Feed every ``ListeningFrame`` to ``update``; act on the events it returns."""

    def __init__(self, config: DialogueConfig | None = None):
        self.config = config or DialogueConfig()
        self._reset_turn()
        self._reset_barge_in()
        self.waits_ms: list[float] = []   # end-of-turn waits, for reports

    # ------------------------------------------------------------------ state

    def _reset_turn(self) -> None:
        self._voiced_run_ms = 0.0
        self._first_voiced_ns: int | None = None
        self._in_speech = False
        self._last_voice_end_ns = 0
        self._pitches: list[float] = []           # voiced pitch of this utterance, one per frame
        self._energies: list[float] = []
        self._text = ""
        self._final: str | None = None
        self._visitor_has_floor = False        # after a barge-in: this turn is the visitor's, whatever plays

    def _reset_barge_in(self) -> None:
        self._bi_run_ms = 0.0
        self._bi_gap_ms = 0.0
        self._bi_onset_ns: int | None = None
        self._bi_paused = False
        self._bi_utterance_ms = 0.0
        self._bi_silence_ms = 0.0
        self._bi_text = ""

    # ------------------------------------------------------------------ update

    def update(self, frame: ListeningFrame) -> list[TurnEvent]:
        if frame.partial_text:
            self._text = frame.partial_text
        if frame.final_text is not None and not self._stale_final(frame):
            self._final = frame.final_text
            self._text = frame.final_text or self._text
        if self._visitor_has_floor or not (frame.avatar_speaking or self._bi_paused):
            return self._end_of_turn(frame)
        if not self.config.barge_in:
            self._reset_turn()  # the avatar holds the floor; the visitor's sounds are not a turn
            return []
        events = self._barge_in(frame)
        if not self._bi_paused and not any(e.kind == "stop_speech" for e in events):
            self._reset_turn()
        return events

    STALE_FINAL_TOLERANCE_NS = 300_000_000  # VAD onsets and ASR segment starts differ by the VAD's padding

    def _stale_final(self, frame: ListeningFrame) -> bool:
        """A final whose audio starts before this utterance began belongs to an earlier one."""
        if frame.final_start_ns is None:
            return False
        if self._first_voiced_ns is None:
            return True  # no utterance in progress: nothing for this final to complete
        return frame.final_start_ns + self.STALE_FINAL_TOLERANCE_NS < self._first_voiced_ns

    def _end_of_turn(self, frame: ListeningFrame) -> list[TurnEvent]:
        cfg = self.config
        end_ns = frame.pts_ns + FRAME_NS
        events: list[TurnEvent] = []
        if frame.voice_active:
            if self._first_voiced_ns is None:
                self._first_voiced_ns = frame.pts_ns
            self._voiced_run_ms += 10.0
            self._last_voice_end_ns = end_ns
            if frame.pitch_hz > 0:
                self._pitches.append(frame.pitch_hz)
            self._energies.append(frame.energy_dbfs)
            if not self._in_speech and self._voiced_run_ms >= cfg.turn_min_speech_ms:
                self._in_speech = True
                events.append(TurnEvent("speech_start", frame.pts_ns))
            return events
        if not self._in_speech:
            if self._first_voiced_ns is not None and end_ns - self._last_voice_end_ns > 200_000_000:
                self._reset_turn()  # a short blip (door, cough): forget it
            return events
        silence_ms = (end_ns - self._last_voice_end_ns) / 1e6
        required_ms, cues = self.required_silence_ms(frame)
        if silence_ms >= required_ms:
            text = self._final if self._final is not None else self._text
            event = TurnEvent("end_of_turn", end_ns, self._last_voice_end_ns, text,
                              {**cues, "required_silence_ms": round(required_ms, 1)})
            self.waits_ms.append(event.wait_ms)
            events.append(event)
            self._reset_turn()
        return events

    def required_silence_ms(self, frame: ListeningFrame) -> tuple[float, dict]:
        """The silence that ends the turn now, and the cues behind it."""
        cfg = self.config
        required = cfg.turn_base_silence_ms
        cues: dict = {}
        pitch = _trend(self._pitches, tail=20)      # last 200 ms of voiced frames vs the utterance
        if pitch is not None:
            cues["pitch_ratio"] = round(pitch, 3)
            if pitch < 0.92:
                required -= 150
            elif pitch > 1.05:
                required += 250
        energy = _energy_drop_db(self._energies, tail=15)
        if energy is not None:
            cues["energy_drop_db"] = round(energy, 1)
            if energy <= -3.0:
                required -= 80
        completeness = text_completeness(self._text)
        cues["text"] = completeness
        if completeness == "complete":
            required -= 180
        elif completeness == "incomplete":
            required += 600
        if frame.face_visible:
            if not frame.face_attending:
                cues["face"] = "away"
                required += 100
            elif frame.mouth_closed:
                cues["face"] = "yielding"
                required -= 120
            else:
                cues["face"] = "mouth_open"
                required += 250
        ceiling = cfg.turn_max_incomplete_ms if completeness == "incomplete" else cfg.turn_max_silence_ms
        return min(max(required, cfg.turn_min_silence_ms), ceiling), cues

    def _barge_in(self, frame: ListeningFrame) -> list[TurnEvent]:
        cfg = self.config
        talking = frame.voice_active and frame.pitch_hz > 0 and frame.energy_dbfs >= cfg.barge_in_min_dbfs
        if talking and frame.face_visible and frame.mouth_closed:
            talking = False  # a hum ("mm-hm") or the avatar's own echo: no moving mouth
        confirm_ms = cfg.barge_in_confirm_ms if frame.face_visible else cfg.barge_in_no_face_confirm_ms
        if frame.partial_text:
            self._bi_text = frame.partial_text
        events: list[TurnEvent] = []
        if not self._bi_paused:
            if talking:
                if self._bi_onset_ns is None:
                    self._bi_onset_ns = frame.pts_ns
                self._bi_run_ms += 10.0
                self._bi_gap_ms = 0.0
                if self._bi_run_ms >= confirm_ms:
                    self._bi_paused = True
                    self._bi_utterance_ms = self._bi_run_ms
                    self._bi_silence_ms = 0.0
                    events.append(TurnEvent("pause_speech", frame.pts_ns + FRAME_NS,
                                            cues={"onset_ns": self._bi_onset_ns}))
            else:
                self._bi_gap_ms += 10.0
                if self._bi_gap_ms > 30.0:  # a gap longer than a stop consonant: the run is over
                    self._bi_run_ms, self._bi_onset_ns = 0.0, None
            return events
        # paused: is it a real interruption, or a backchannel / cough after all?
        voiced = frame.voice_active and frame.energy_dbfs >= cfg.barge_in_min_dbfs
        if voiced:
            self._bi_utterance_ms += 10.0
            self._bi_silence_ms = 0.0
        else:
            self._bi_silence_ms += 10.0
        words_say_more = bool(self._bi_text) and not is_backchannel(self._bi_text)
        if words_say_more or self._bi_utterance_ms > cfg.backchannel_max_ms:
            events.append(TurnEvent("stop_speech", frame.pts_ns + FRAME_NS, text=self._bi_text,
                                    cues={"onset_ns": self._bi_onset_ns, "utterance_ms": self._bi_utterance_ms}))
            onset = self._bi_onset_ns
            self._reset_barge_in()
            # the interruption is the start of the visitor's new turn
            self._visitor_has_floor = True
            self._in_speech = True
            self._first_voiced_ns = onset
            self._last_voice_end_ns = frame.pts_ns + FRAME_NS if voiced else self._last_voice_end_ns
            return events
        if self._bi_silence_ms >= 150.0:
            events.append(TurnEvent("resume_speech", frame.pts_ns + FRAME_NS, text=self._bi_text,
                                    cues={"utterance_ms": self._bi_utterance_ms}))
            self._reset_barge_in()
            self._reset_turn()
        return events


def _trend(values: list[float], tail: int) -> float | None:
    if len(values) < tail + 5:
        return None
    overall = statistics.median(values)
    if overall <= 0:
        return None
    return statistics.median(values[-tail:]) / overall


def _energy_drop_db(values: list[float], tail: int) -> float | None:
    if len(values) < tail + 5:
        return None
    return statistics.fmean(values[-tail:]) - statistics.fmean(values)
