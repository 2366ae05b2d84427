"""Turn-taking and barge-in on scripted 10 ms cue sequences (the listening package's token, synthesised here).

The two classic failures are both tested: answering into the pauses of a
visitor reading out a phone number, and waiting too long after a finished
question. Barge-in: a real interruption stops the avatar within 150 ms of its
onset; backchannels, a cough and the avatar's own echo never stop it.
"""

from __future__ import annotations

import statistics

import pytest

from edge_avatar.dialogue.options import DialogueConfig
from edge_avatar.dialogue.turns import (
    FRAME_NS,
    InterruptedReply,
    ListeningFrame,
    TurnTaker,
    asks_to_continue,
    is_backchannel,
    text_completeness,
)

MS = 1_000_000


class Script:
    """Builds a frame sequence: speech with pitch/energy contours and a growing transcript, then silence."""

    def __init__(self, face: bool = True):
        self.frames: list[ListeningFrame] = []
        self.face = face
        self.text = ""

    @property
    def now_ns(self) -> int:
        return len(self.frames) * FRAME_NS

    def speak(self, words: str, ms: int, pitch=(180.0, 180.0), energy=(-22.0, -22.0), final: bool = False,
              avatar_speaking: bool = False, mouth_closed: bool = False, pitch_hz_override: float | None = None,
              voice: bool = True) -> Script:
        n = ms // 10
        tokens = words.split()
        for i in range(n):
            frac = i / max(1, n - 1)
            shown = " ".join(tokens[:max(1, round(len(tokens) * (i + 1) / n))]) if tokens else ""
            partial = (self.text + " " + shown).strip()
            pitch_hz = pitch[0] + (pitch[1] - pitch[0]) * frac if pitch_hz_override is None else pitch_hz_override
            self.frames.append(ListeningFrame(
                self.now_ns, voice, pitch_hz, energy[0] + (energy[1] - energy[0]) * frac, partial,
                None, self.face, self.face, mouth_closed, avatar_speaking))
        self.text = (self.text + " " + words).strip()
        if final:
            last = self.frames[-1]
            self.frames[-1] = ListeningFrame(last.pts_ns, last.voice_active, last.pitch_hz, last.energy_dbfs,
                                             last.partial_text, self.text, last.face_visible, last.face_attending,
                                             last.mouth_closed, last.avatar_speaking)
        return self

    def silence(self, ms: int, avatar_speaking: bool = False, mouth_closed: bool = True) -> Script:
        for _ in range(ms // 10):
            self.frames.append(ListeningFrame(self.now_ns, False, 0.0, -70.0, self.text, None, self.face, self.face,
                                              mouth_closed, avatar_speaking))
        return self

    def run(self, taker: TurnTaker | None = None):
        taker = taker or TurnTaker(DialogueConfig())
        events = []
        for frame in self.frames:
            events += taker.update(frame)
        return events


def _question(text: str, face: bool = True, falling: bool = True, silence_ms: int = 1500) -> Script:
    s = Script(face)
    words = text.split()
    s.speak(" ".join(words[:-2]), 120 * max(1, len(words) - 2))
    s.speak(" ".join(words[-2:]), 400, pitch=(180.0, 130.0) if falling else (180.0, 182.0),
            energy=(-22.0, -30.0) if falling else (-22.0, -22.0), final=True)
    return s.silence(silence_ms)


def test_finished_question_is_answered_quickly():
    events = _question("excuse me where is the radiology department").run()
    turns = [e for e in events if e.kind == "end_of_turn"]
    assert len(turns) == 1
    assert turns[0].text == "excuse me where is the radiology department"
    assert turns[0].wait_ms <= 250, turns[0].cues
    assert turns[0].cues["face"] == "yielding" and turns[0].cues["text"] == "complete"


def test_end_of_turn_wait_p50_under_400_ms():
    waits = []
    for text, face, falling in [("where is the pharmacy please", True, True), ("can I park here", True, True),
                                ("what are the visiting hours", False, True), ("i need the toilets", True, False),
                                ("where do i check in for my appointment", True, True),
                                ("is there a cafe", False, False), ("how do i get to cardiology", True, True),
                                ("my mother is on ward nine", True, True), ("thank you", True, True),
                                ("can you help me find the blood test room", False, True)]:
        turns = [e for e in _question(text, face, falling).run() if e.kind == "end_of_turn"]
        assert len(turns) == 1, text
        waits.append(turns[0].wait_ms)
    assert statistics.median(waits) < 400, waits
    assert max(waits) <= DialogueConfig().turn_max_silence_ms + 10


def test_phone_number_pauses_are_not_cut():
    s = Script()
    s.speak("my number is 07700", 1500, pitch=(170.0, 175.0))   # flat-rising: more to come
    s.silence(650)                                             # the pause between digit groups
    s.speak("900", 500, pitch=(172.0, 176.0))
    s.silence(700)
    s.speak("123", 500, pitch=(175.0, 125.0), energy=(-22.0, -31.0), final=True)
    s.silence(1500)
    turns = [e for e in s.run() if e.kind == "end_of_turn"]
    assert len(turns) == 1, [(e.pts_ns / 1e9, e.text, e.cues) for e in turns]
    assert turns[0].text == "my number is 07700 900 123"
    assert turns[0].wait_ms < 400


def test_trailing_conjunction_waits_and_never_forever():
    s = Script(face=True).speak("i'm looking for the x ray and", 1500).silence(3000)
    turns = [e for e in s.run() if e.kind == "end_of_turn"]
    assert len(turns) == 1
    assert 900 <= turns[0].wait_ms <= DialogueConfig().turn_max_incomplete_ms + 10
    # no cues at all (no face, no text yet, flat voice): the base silence, not the maximum
    s = Script(face=False).speak("", 1200).silence(2000)
    turns = [e for e in s.run() if e.kind == "end_of_turn"]
    assert len(turns) == 1 and turns[0].wait_ms == pytest.approx(DialogueConfig().turn_base_silence_ms, abs=15)


def test_short_noise_is_not_a_turn():
    s = Script().speak("", 60).silence(1500)
    assert [e for e in s.run() if e.kind in ("end_of_turn", "speech_start")] == []


# ---------------------------------------------------------------------------- barge-in


def _avatar_talking(ms: int = 500, face: bool = True) -> Script:
    return Script(face).silence(ms, avatar_speaking=True)


def test_real_barge_in_stops_within_150_ms():
    s = _avatar_talking()
    onset_ns = s.now_ns
    s.speak("wait that's not what i asked", 1200, avatar_speaking=True)
    s.silence(1500)
    events = s.run()
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["pause_speech", "stop_speech"], kinds
    assert (events[0].pts_ns - onset_ns) / MS <= 150
    assert "resume_speech" not in kinds
    turns = [e for e in events if e.kind == "end_of_turn"]
    assert len(turns) == 1 and turns[0].text.startswith("wait")  # the interruption became the visitor's turn


def test_barge_in_without_a_visible_face_is_slower_but_works():
    s = _avatar_talking(face=False)
    onset_ns = s.now_ns
    s.speak("no no i meant the other building", 1200, avatar_speaking=True)
    events = s.run()
    pause = next(e for e in events if e.kind == "pause_speech")
    assert (pause.pts_ns - onset_ns) / MS <= DialogueConfig().barge_in_no_face_confirm_ms + 10
    assert "stop_speech" in [e.kind for e in events]


@pytest.mark.parametrize("name, build", [
    ("mm-hm, lips closed", lambda s: s.speak("mm hm", 400, avatar_speaking=True, mouth_closed=True)),
    ("cough: loud, unvoiced", lambda s: s.speak("", 250, energy=(-12.0, -15.0), pitch_hz_override=0.0,
                                                  avatar_speaking=True)),
    ("echo of the avatar: voiced, no moving mouth", lambda s: s.speak("", 2000, energy=(-30.0, -30.0),
                                                                      avatar_speaking=True, mouth_closed=True)),
])
def test_backchannels_coughs_and_echo_never_interrupt(name, build):
    s = _avatar_talking()
    build(s)
    s.silence(800, avatar_speaking=True)
    assert s.run() == [], name


def test_echo_without_a_face_is_below_the_level_threshold():
    s = _avatar_talking(face=False)
    s.speak("", 2000, energy=(-50.0, -50.0), avatar_speaking=True)
    assert s.run() == []


def test_open_mouth_backchannel_pauses_then_resumes_without_stopping():
    s = _avatar_talking()
    s.speak("yeah", 300, avatar_speaking=True)
    s.silence(800, avatar_speaking=True)
    kinds = [e.kind for e in s.run()]
    assert kinds == ["pause_speech", "resume_speech"]


def test_barge_in_can_be_disabled():
    s = _avatar_talking()
    s.speak("wait that's not what i asked", 1200, avatar_speaking=True)
    assert s.run(TurnTaker(DialogueConfig(barge_in=False))) == []


def test_text_cues_and_interrupted_reply():
    assert text_completeness("where is the pharmacy") == "complete"
    assert text_completeness("where is the") == "incomplete"
    assert text_completeness("my number is 0 7 7 0 0") == "incomplete"
    assert text_completeness("my number is 07700 900 123") == "unknown"
    assert text_completeness("Radiology.") == "complete"
    assert text_completeness("") == "unknown"
    assert is_backchannel("mm-hm") and is_backchannel("yeah okay") and not is_backchannel("yeah but where")
    assert asks_to_continue("Sorry, go on") and asks_to_continue("please continue") and not asks_to_continue("go")
    reply = InterruptedReply("One. Two. Three.", ["One.", "Two.", "Three."], 1)
    assert reply.unheard_text == "Two. Three."


def test_interrupted_reply_is_resumed_only_when_asked(make_dialogue_for_turns):
    d = make_dialogue_for_turns
    reply = d.respond("where is radiology")
    assert len(reply.text.split(". ")) >= 2
    d.note_interrupted(reply, sentences_heard=1)
    rest = d.respond("sorry, go on")
    assert rest.text.startswith("Take the lifts") and rest.entry_id == "radiology"
    d.note_interrupted(reply, sentences_heard=1)
    other = d.respond("where can I park?")
    assert other.entry_id == "parking"
    assert d.respond("go on").entry_id != "radiology"  # the interrupted reply was dropped


@pytest.fixture
def make_dialogue_for_turns():
    from edge_avatar.config import load_config
    from edge_avatar.dialogue import build_dialogue
    from edge_avatar.dialogue.embedding import shared_embedder

    d = build_dialogue(load_config(site_file="examples/hospital-reception/site.yaml"), embedder=shared_embedder())
    yield d
    d.close()


def test_a_late_final_from_an_earlier_utterance_is_not_the_next_turns_text():
    from edge_avatar.dialogue.turns import FRAME_NS, ListeningFrame, TurnTaker

    taker = TurnTaker()
    events = []
    t = 0
    # The final for an utterance that started at 0 s arrives late, between utterances.
    events += taker.update(ListeningFrame(t, False, final_text="where is cardiology", final_start_ns=0))
    t = 5_000_000_000
    for _ in range(120):  # a new utterance, 1.2 s, voiced with falling pitch
        events += taker.update(ListeningFrame(t, True, pitch_hz=180.0, energy_dbfs=-25.0,
                                              partial_text="is it on the second floor"))
        t += FRAME_NS
    for _ in range(150):
        events += taker.update(ListeningFrame(t, False, partial_text="is it on the second floor"))
        t += FRAME_NS
    turns = [e for e in events if e.kind == "end_of_turn"]
    assert len(turns) == 1
    assert turns[0].text == "is it on the second floor"
