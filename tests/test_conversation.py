"""The conversation glue: turn events drive the brain, the speaker and the turn records."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from edge_avatar.clock import ManualTimeBase, MediaClock
from edge_avatar.dialogue.reply import Affect, Reply
from edge_avatar.dialogue.turns import TurnEvent
from edge_avatar.outputs.audio import VirtualAudioOutput
from edge_avatar.runtime.conversation import Conversation


class FakeDialogue:
    def __init__(self):
        self.visits = []
        self.persona = SimpleNamespace(name="Ava")

    def respond(self, text, turn_id=None, pts_ns=0):
        return Reply(text=f"You asked: {text}. First sentence. Second sentence.", kind="answer",
                     entry_id="faq", confidence=0.9, affect=Affect(0.5, 0.1), turn_id=turn_id or 0)

    def greet(self, turn_id=0, pts_ns=0):
        return Reply(text="Hello!", kind="greeting", turn_id=turn_id)

    def farewell(self, turn_id=0, pts_ns=0):
        return Reply(text="Goodbye!", kind="farewell", turn_id=turn_id)

    def start_visit(self, key=""):
        self.visits.append("start")

    def end_visit(self):
        self.visits.append("end")


class FakeTTS:
    """One 0.5 s segment per sentence, like the real engines' sentence streaming."""

    def stream(self, text):
        for sentence in [s for s in text.split(".") if s.strip()]:
            yield SimpleNamespace(audio=np.full(11025, 0.1, np.float32), text=sentence)


class ScriptedTurns:
    def __init__(self):
        self.pending = []

    def update(self, frame):
        events, self.pending = self.pending, []
        return events


def make(include_user_text=True):
    base = ManualTimeBase()
    speaker = VirtualAudioOutput(base, sample_rate_hz=22050, buffer_ms=60000)
    speaker.start()
    clock = MediaClock(speaker, base)
    turns = ScriptedTurns()
    conversation = Conversation(clock=clock, speaker=speaker, dialogue=FakeDialogue(), tts=FakeTTS(),
                                turn_taker=turns, include_user_text=include_user_text)
    conversation.worker.start()
    return conversation, turns, speaker, base


def token(pts_ns):
    return SimpleNamespace(pts_ns=pts_ns, voice_active=False, pitch_hz=0.0, energy_dbfs=-80.0, partial_text="",
                           events=())


def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_end_of_turn_is_answered_and_measured_from_the_end_of_speech():
    conversation, turns, speaker, base = make()
    base.advance_ns(2_000_000_000)
    speaker.position_samples()
    turns.pending = [TurnEvent("end_of_turn", 2_000_000_000, end_of_speech_ns=1_700_000_000,
                               text="where is radiology")]
    conversation.on_audio_token(token(1_990_000_000))
    assert wait_for(lambda: conversation.turns and conversation.turns[0].sentences_queued == 3)
    conversation.worker.stop()
    record = conversation.turns_json()[0]
    assert record["user_text"] == "where is radiology"
    assert record["reply_text"].startswith("You asked: where is radiology")
    assert record["entry_id"] == "faq" and record["tier"] == "builtin"
    assert record["end_of_turn_wait_ms"] == 300.0
    # The first sample plays right after what the speaker has already pulled (one 10 ms block at most).
    assert 300.0 <= record["response_latency_ms"] <= 310.0
    assert speaker.queued_ms > 1400  # three sentences queued, nothing played yet on the manual clock


def test_user_text_is_left_out_unless_the_site_allows_it():
    conversation, turns, _, _ = make(include_user_text=False)
    turns.pending = [TurnEvent("end_of_turn", 10, end_of_speech_ns=5, text="my name is Jane Doe")]
    conversation.on_audio_token(token(0))
    assert wait_for(lambda: conversation.turns and conversation.turns[0].reply_text)
    conversation.worker.stop()
    assert "user_text" not in conversation.turns_json()[0]
    assert "Jane" not in str({k: v for k, v in conversation.turns_json()[0].items() if k != "reply_text"})


def test_barge_in_pauses_then_stop_discards_the_rest_of_the_reply():
    conversation, turns, speaker, base = make()
    turns.pending = [TurnEvent("end_of_turn", 10, end_of_speech_ns=5, text="tell me everything")]
    conversation.on_audio_token(token(0))
    assert wait_for(lambda: conversation.turns and conversation.turns[0].sentences_queued >= 1)
    assert wait_for(lambda: conversation._speaking_record is not None or conversation.turns[0].sentences_queued == 3)
    turns.pending = [TurnEvent("pause_speech", 1_120_000_000, cues={"onset_ns": 1_000_000_000})]
    conversation.on_audio_token(token(1_110_000_000))
    assert speaker.paused
    turns.pending = [TurnEvent("stop_speech", 1_300_000_000, text="no wait")]
    conversation.on_audio_token(token(1_290_000_000))
    assert not speaker.paused and speaker.queued_ms == 0
    conversation.worker.stop()
    record = conversation.turns[0]
    assert record.interrupted
    assert [e["kind"] for e in conversation.events][-1] == "barge_in"


def test_a_false_alarm_resumes_where_it_paused():
    conversation, turns, speaker, _ = make()
    speaker.write(np.ones(22050, np.float32))
    turns.pending = [TurnEvent("pause_speech", 100, cues={"onset_ns": 0})]
    conversation.on_audio_token(token(90))
    assert speaker.paused
    turns.pending = [TurnEvent("resume_speech", 400)]
    conversation.on_audio_token(token(390))
    conversation.worker.stop()
    assert not speaker.paused and speaker.queued_ms == 1000  # nothing was lost


def test_greeting_on_engagement_and_farewell_when_leaving_never_to_an_empty_room():
    conversation, _, _, _ = make()
    conversation.on_engagement("approaching", 0)
    conversation.on_engagement("gone", 1)
    assert conversation.turns == []  # nobody engaged: nothing said
    conversation.on_engagement("engaged", 2)
    conversation.on_engagement("engaged", 3)  # once per visit
    conversation.on_engagement("leaving", 4)
    assert wait_for(lambda: len(conversation.turns) == 2 and conversation.turns[1].reply_text)
    conversation.worker.stop()
    assert [t.kind for t in conversation.turns] == ["greeting", "farewell"]
    assert conversation.dialogue.visits == ["start", "end"]
    assert [e["kind"] for e in conversation.events] == ["visitor_engaged", "conversation_ended"]


def test_the_answer_waits_briefly_for_the_final_words_of_the_utterance():
    conversation, turns, _, _ = make()
    turns.pending = [TurnEvent("end_of_turn", 2_000_000_000, end_of_speech_ns=1_800_000_000,
                               text="where is the card")]
    conversation.on_audio_token(token(1_990_000_000))
    time.sleep(0.2)
    late_final = SimpleNamespace(is_final=True, rejected="", text="where is the cardiology department",
                                 start_ns=300_000_000, end_ns=1_750_000_000)
    conversation.on_audio_token(SimpleNamespace(**{**vars(token(2_100_000_000)), "events": (late_final,)}))
    assert wait_for(lambda: conversation.turns and conversation.turns[0].reply_text)
    conversation.worker.stop()
    record = conversation.turns[0]
    assert record.user_text == "where is the cardiology department"
    assert "cardiology" in record.reply_text
    assert record.cues["partial"] == "where is the card"


def test_no_second_greeting_while_the_visitor_walks_away():
    conversation, _, _, _ = make()
    for state in ("approaching", "engaged", "leaving", "engaged", "leaving", "gone", "approaching", "engaged"):
        conversation.on_engagement(state, 0)
    assert wait_for(lambda: len(conversation.turns) == 3 and conversation.turns[2].reply_text)
    conversation.worker.stop()
    assert [t.kind for t in conversation.turns] == ["greeting", "farewell", "greeting"]


def test_a_turn_closed_before_any_words_were_decoded_is_answered_from_the_final():
    """A short "Thank you!" can end before the ASR has a partial: wait for its final, or drop a wordless sound."""
    conversation, turns, _, _ = make()
    conversation.final_wait_s = 0.5
    turns.pending = [TurnEvent("end_of_turn", 5_000_000_000, end_of_speech_ns=4_800_000_000, text="")]
    conversation.on_audio_token(token(4_990_000_000))
    time.sleep(0.1)
    late_final = SimpleNamespace(is_final=True, rejected="", text="thank you", start_ns=4_200_000_000,
                                 end_ns=4_790_000_000)
    conversation.on_audio_token(SimpleNamespace(**{**vars(token(5_100_000_000)), "events": (late_final,)}))
    assert wait_for(lambda: conversation.turns and conversation.turns[0].reply_text)
    record = conversation.turns[0]
    assert record.kind == "answer" and record.user_text == "thank you"
    assert record.end_of_speech_ns == 4_800_000_000 and record.decided_ns == 5_000_000_000
    assert record.cues["answered_from"] == "final"
    # A cough: turn-taking closes a turn, no words ever come; nothing is answered, nothing recorded.
    turns.pending = [TurnEvent("end_of_turn", 9_000_000_000, end_of_speech_ns=8_800_000_000, text="")]
    conversation.on_audio_token(token(8_990_000_000))
    time.sleep(0.9)
    conversation.worker.stop()
    assert len(conversation.turns) == 1
