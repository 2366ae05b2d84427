"""The conversation glue: listening -> turn-taking -> the brain -> speech, with every turn measured.

Why this module exists: the listening package hears (VAD, echo cancellation,
ASR), dialogue decides (turn-taking, answers, persona, memory) and speech
speaks (TTS onto the speaker); something has to connect them on the media
clock, apply barge-in to the speaker, greet and say goodbye on perception's
engagement states, and keep one record per turn with its latencies. That is
this module; it owns no model of its own.

Threads: ``on_audio_token`` runs on the listener thread every 10 ms and only
updates turn-taking and puts requests in a bounded queue; the
``ConversationWorker`` answers and synthesises on its own thread, so the
tick and the microphone never wait for the brain. ``set_visual_cues`` is
called by the tick after perception.

Motion: when the session runs a planner it passes its ``PlannerInputs`` as
``motion``; the conversation tells it the turn state (listening, thinking,
speaking, idle), the reply's affect and gestures, every sentence queued on the
speaker with its phoneme timeline on the media clock, and each pause, resume
or drop of that speech, so the face moves with what is actually heard.

Privacy: the visitor's words are kept in the turn records only when
``privacy.log_transcripts`` is on (the demo turns it on: its visitor is a
script); otherwise ``user_text`` is left out of every report.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from edge_avatar.frames import ControlMessage
from edge_avatar.runtime.queues import BoundedQueue, OverflowPolicy, QueueEmpty
from edge_avatar.runtime.workers import Worker

log = logging.getLogger(__name__)


@dataclass
class TurnRecord:
    """One visitor turn (or an avatar-initiated greeting/farewell) and the reply, times in media ns."""

    turn_id: int
    kind: str                       # "answer", "greeting", "farewell", "say"
    user_text: str = ""
    end_of_speech_ns: int = 0       # the end of the visitor's last voiced frame (0 for greetings)
    decided_ns: int = 0             # when turn-taking decided the visitor had finished
    reply_text: str = ""
    tier: str = ""
    entry_id: str | None = None
    confidence: float = 0.0
    affect: dict = field(default_factory=dict)
    first_audio_ns: int | None = None
    reply_compute_ms: float = 0.0
    interrupted: bool = False
    barge_in_stop_ms: float | None = None
    sentences: list[str] = field(default_factory=list)
    sentences_queued: int = 0
    cues: dict = field(default_factory=dict)

    def to_json(self, include_user_text: bool) -> dict[str, Any]:
        latency_ms = None
        if self.first_audio_ns is not None and self.end_of_speech_ns:
            latency_ms = round((self.first_audio_ns - self.end_of_speech_ns) / 1e6, 1)
        data: dict[str, Any] = {
            "turn_id": self.turn_id,
            "kind": self.kind,
            "reply_text": self.reply_text,
            "tier": self.tier,
            "entry_id": self.entry_id,
            "confidence": round(self.confidence, 3),
            "affect": self.affect,
            "end_of_speech_s": round(self.end_of_speech_ns / 1e9, 3) if self.end_of_speech_ns else None,
            "decided_s": round(self.decided_ns / 1e9, 3) if self.decided_ns else None,
            "first_audio_s": None if self.first_audio_ns is None else round(self.first_audio_ns / 1e9, 3),
            "end_of_turn_wait_ms": round((self.decided_ns - self.end_of_speech_ns) / 1e6, 1)
            if self.end_of_speech_ns else None,
            "response_latency_ms": latency_ms,
            "reply_compute_ms": round(self.reply_compute_ms, 1),
            "interrupted": self.interrupted,
            "barge_in_stop_ms": self.barge_in_stop_ms,
        }
        if include_user_text:
            data = {"turn_id": self.turn_id, "kind": self.kind, "user_text": self.user_text, **data}
        return data


@dataclass
class _Request:
    record: TurnRecord | None
    text_to_answer: str | None = None   # None: speak record.reply_text as it is
    reply_factory: Any = None           # callable(record) -> Reply, for greetings and farewells
    unheard_turn: Any = None            # an end-of-turn event decided before any words were decoded


class Conversation:
    """Connects an ``AudioToken`` stream to turn-taking, the brain and the speaker."""

    def __init__(self, *, clock, speaker, dialogue, tts, turn_taker, include_user_text: bool,
                 request_queue_size: int = 8, motion=None):
        self.clock = clock
        self.motion = motion                     # the planner's PlannerInputs, or None
        self.speaker = speaker
        self.dialogue = dialogue
        self.tts = tts
        self.turn_taker = turn_taker
        self.include_user_text = include_user_text
        self.requests = BoundedQueue("turns->dialogue", request_queue_size, OverflowPolicy.BLOCK,
                                     put_timeout_s=2.0)
        self.turns: list[TurnRecord] = []
        self._lock = threading.Lock()
        self._visual = (False, False, True)      # face_visible, face_attending, mouth_closed
        self._speaking_record: TurnRecord | None = None   # the reply queued last (it may still be playing)
        self._synthesising = False
        self._engaged = False
        self._visit_closed = False               # farewell said; a new visit starts only once they were gone
        self._finals: list = []                  # recent (start_ns, end_ns, text) final transcripts
        self._finals_cond = threading.Condition()
        # How long an answer may wait for the ASR's final words. A final normally comes 0.3-0.5 s after the
        # end of speech; on an overloaded CPU it can take seconds, and answering a half-decoded partial
        # ("where is the car...") gives a wrong answer, which is worse than a late one. Only a stuck ASR
        # reaches this bound.
        self.final_wait_s = 4.0
        self.events: list[dict[str, Any]] = []   # for the report (and the fleet's events topic)
        self.event_listeners: list = []          # callables(kind, **fields)
        self.worker = ConversationWorker(self)

    # ------------------------------------------------------------------ inputs

    def set_visual_cues(self, face_visible: bool, face_attending: bool, mouth_closed: bool) -> None:
        self._visual = (face_visible, face_attending, mouth_closed)

    def on_engagement(self, state: str, pts_ns: int) -> None:
        """Perception's engagement state for the active visitor: greet on 'engaged', farewell on leaving."""
        if state in ("gone", "approaching") and not self._engaged:
            self._visit_closed = False
        if state == "engaged" and not self._engaged and not self._visit_closed:
            self._engaged = True
            self._turn_state("listening", pts_ns)
            self.dialogue.start_visit()
            self._emit("visitor_engaged", pts_ns)
            self._enqueue_avatar_turn("greeting", lambda r: self.dialogue.greet(r.turn_id, pts_ns))
        elif state in ("leaving", "gone") and self._engaged:
            self._engaged = False
            self._visit_closed = state == "leaving"
            self._enqueue_avatar_turn("farewell", lambda r: self.dialogue.farewell(r.turn_id, pts_ns))
            self.dialogue.end_visit()
            self._emit("conversation_ended", pts_ns)

    def say(self, text: str, interrupt: bool = False) -> int:
        """An operator's ``say`` command: speak ``text`` as the avatar."""
        if interrupt:
            self.interrupt()
        record = self._new_record("say")
        record.reply_text = text
        self.requests.put(_Request(record))
        return record.turn_id

    def on_audio_token(self, token) -> None:
        """Called on the listener thread for every 10 ms ``AudioToken``."""
        from edge_avatar.dialogue.turns import ListeningFrame  # noqa: PLC0415

        final_text, final_start_ns = None, None
        for event in token.events:
            if event.is_final and not event.rejected:
                final_text, final_start_ns = event.text, event.start_ns
                with self._finals_cond:
                    self._finals = [*self._finals[-7:], (event.start_ns, event.end_ns, event.text)]
                    self._finals_cond.notify_all()
        face_visible, attending, mouth_closed = self._visual
        frame = ListeningFrame(
            # Silent now even if the VAD keeps the segment open for its hangover: the end of speech (and the
            # silence turn-taking waits for) is measured from when the voice actually stopped.
            pts_ns=token.pts_ns, voice_active=token.voice_active and not getattr(token, "voice_paused", False),
            pitch_hz=token.pitch_hz,
            energy_dbfs=token.energy_dbfs, partial_text=token.partial_text, final_text=final_text,
            final_start_ns=final_start_ns,
            face_visible=face_visible, face_attending=attending, mouth_closed=mouth_closed,
            avatar_speaking=self.speaker.queued_ms > 0 and not self.speaker.paused)
        if self.motion is not None:
            self.motion.set_audio(token)
        for event in self.turn_taker.update(frame):
            self._on_turn_event(event)

    # ------------------------------------------------------------------ turn events

    def _on_turn_event(self, event) -> None:
        if event.kind == "end_of_turn":
            if not event.text.strip():
                # A short utterance ("Thank you!") can end before the ASR has decoded any of it; the worker
                # waits briefly for its final words and answers them, or drops a sound that had none.
                self.requests.put(_Request(None, unheard_turn=event))
                return
            self.requests.put(_Request(self._answer_record(event, event.text), text_to_answer=event.text))
        elif event.kind == "pause_speech":
            self.speaker.pause()
            if self.motion is not None:
                self.motion.pause_speech(self.clock.now_ns())
            onset_ns = event.cues.get("onset_ns")
            with self._lock:
                current = self._speaking_record
            if current is not None and onset_ns is not None:
                current.barge_in_stop_ms = round((event.pts_ns - onset_ns) / 1e6, 1)
        elif event.kind == "resume_speech":
            self.speaker.resume()
            if self.motion is not None:
                self.motion.resume_speech(self.clock.now_ns())
            with self._lock:
                if self._speaking_record is not None:
                    self._speaking_record.barge_in_stop_ms = None
        elif event.kind == "stop_speech":
            self.interrupt()

    def interrupt(self) -> None:
        """Barge-in confirmed: the rest of the current reply is dropped, queued replies too."""
        with self._lock:
            current = self._speaking_record
            # The reply is interrupted if any of it was still to be heard (queued, held, or being synthesised).
            if current is not None and (self.speaker.queued_ms > 0 or self.speaker.paused or self._synthesising):
                current.interrupted = True
        self.requests.put(ControlMessage("interrupt"))
        self.speaker.clear()
        self.speaker.resume()
        now_ns = self.clock.now_ns()
        if self.motion is not None:
            self.motion.clear_speech(now_ns)
            self.motion.set_reply(None)
        self._turn_state("listening", now_ns)
        self._emit("barge_in", now_ns)

    # ------------------------------------------------------------------ helpers

    def final_text_for(self, end_of_speech_ns: int, timeout_s: float) -> str | None:
        """The ASR's final words for the utterance that ended at ``end_of_speech_ns``, waiting up to ``timeout_s``.

        Turn-taking may decide on a partial transcript (the final decode finishes a little later); the
        answer is better when made from the final. A final belongs to the utterance when its audio ends
        within 0.5 s of the utterance's end.
        """
        def match() -> str | None:
            for _start_ns, end_ns, text in reversed(self._finals):
                if abs(end_ns - end_of_speech_ns) <= 500_000_000:
                    return text
            return None

        with self._finals_cond:
            self._finals_cond.wait_for(lambda: match() is not None, timeout_s)
            return match()

    def _new_record(self, kind: str) -> TurnRecord:
        with self._lock:
            record = TurnRecord(len(self.turns), kind)
            self.turns.append(record)
            return record

    def _enqueue_avatar_turn(self, kind: str, reply_factory) -> None:
        self.requests.put(_Request(self._new_record(kind), reply_factory=reply_factory))

    def _answer_record(self, event, text: str) -> TurnRecord:
        """The record of a visitor turn that turn-taking has closed (``event``: its end_of_turn)."""
        record = self._new_record("answer")
        record.user_text = text
        record.end_of_speech_ns = event.end_of_speech_ns
        record.decided_ns = event.pts_ns
        record.cues = event.cues
        self._emit("turn_end", event.pts_ns, wait_ms=round(event.wait_ms, 1))
        self._turn_state("thinking", event.pts_ns)
        return record

    def _turn_state(self, state: str, pts_ns: int | None) -> None:
        """Tell the planner the turn state from ``pts_ns`` on (a future pts schedules it)."""
        if self.motion is not None:
            self.motion.set_turn_state(state, pts_ns)

    def _emit(self, kind: str, pts_ns: int, **fields: Any) -> None:
        entry = {"pts_s": round(pts_ns / 1e9, 3), "kind": kind, **fields}
        self.events.append(entry)
        for listener in self.event_listeners:
            try:
                listener(kind, **{k: v for k, v in entry.items() if k != "kind"})
            except Exception:  # noqa: BLE001 - a reporting problem must not stop the conversation
                log.exception("event listener failed")

    def turns_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [t.to_json(self.include_user_text) for t in self.turns]


class ConversationWorker(Worker):
    """Answers turns and speaks replies sentence by sentence; an interrupt stops both at once."""

    def __init__(self, conversation: Conversation):
        super().__init__("conversation")
        self.c = conversation
        self._interrupted = threading.Event()

    def step(self) -> None:
        c = self.c
        try:
            item = c.requests.get(timeout_s=0.05)
        except QueueEmpty:
            return
        if isinstance(item, ControlMessage):
            if item.kind == "interrupt":
                c.requests.clear_media()
            return
        self._interrupted.clear()
        if item.record is None:
            event = item.unheard_turn
            final = c.final_text_for(event.end_of_speech_ns, c.final_wait_s)
            if not final or not final.strip():
                log.info("an utterance ending at %.2f s had no words; not answered", event.end_of_speech_ns / 1e9)
                return
            record = c._answer_record(event, final)
            record.cues = {**record.cues, "answered_from": "final", "partial": ""}
            item = _Request(record, text_to_answer=final)
        record = item.record
        base = c.clock.time_base
        start_ns = base.monotonic_ns()
        reply = None
        if item.text_to_answer is not None:
            final = c.final_text_for(record.end_of_speech_ns, c.final_wait_s)
            if final and final.strip() and final != item.text_to_answer:
                record.cues = {**record.cues, "answered_from": "final", "partial": item.text_to_answer}
                record.user_text = final
            text = record.user_text
            reply = c.dialogue.respond(text, record.turn_id, pts_ns=record.decided_ns)
            self._fill(record, reply)
        elif item.reply_factory is not None:
            reply = item.reply_factory(record)
            self._fill(record, reply)
        if c.motion is not None and reply is not None:
            c.motion.set_reply(reply)
        record.reply_compute_ms = (base.monotonic_ns() - start_ns) / 1e6
        if not record.reply_text:
            return
        with c._lock:
            c._speaking_record = record
            c._synthesising = True
        motion = c.motion
        try:
            from edge_avatar.speech import speak_streaming  # noqa: PLC0415

            def on_segment(queued) -> None:
                record.sentences_queued += 1
                if motion is not None and not record.interrupted:
                    motion.add_speech(queued)
                if record.first_audio_ns is None:
                    record.first_audio_ns = queued.first_sample_pts_ns
                    c._turn_state("speaking", queued.first_sample_pts_ns)

            speak_streaming(c.tts, record.reply_text, c.speaker, on_segment=on_segment,
                            should_stop=lambda: record.interrupted)
        finally:
            with c._lock:
                c._synthesising = False
        if motion is not None and not record.interrupted:
            # Back to listening (idle once the visitor has gone) when the last queued sample has been heard.
            end_ns = motion.speech_end_ns()
            c._turn_state("listening" if c._engaged else "idle", end_ns)
        if record.kind == "answer":
            c._emit("turn_done", record.first_audio_ns or 0, turn_id=record.turn_id, tier=record.tier,
                    response_latency_ms=record.to_json(False)["response_latency_ms"],
                    end_of_turn_wait_ms=record.to_json(False)["end_of_turn_wait_ms"])

    @staticmethod
    def _fill(record: TurnRecord, reply) -> None:
        record.reply_text = reply.text
        record.tier = reply.tier
        record.entry_id = reply.entry_id
        record.confidence = float(reply.confidence)
        record.affect = {"valence": round(float(reply.affect.valence), 3),
                         "arousal": round(float(reply.affect.arousal), 3)}
