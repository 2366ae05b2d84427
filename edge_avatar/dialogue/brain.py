"""The brain: one object the session asks for a reply to each visitor turn, with memory and tiers.

Why this module exists: the rest of the avatar should not care whether the
built-in engine or an LLM answered, what is remembered, or what may be
logged. ``Dialogue.respond()`` takes the visitor's final transcript and
returns a ``Reply`` (text + affect + gesture intents + provenance);
``greet()`` and ``farewell()`` are driven by perception's engagement
states; ``end_visit()`` forgets the visit. Tiers:

- the built-in engine always runs first (a few ms): emergencies, small talk,
  other languages and declines are final there;
- when an LLM endpoint is configured, answers and clarifications are
  re-phrased by the LLM, grounded on the retrieved entries and the persona,
  within ``llm_time_budget_ms``; on timeout or any failure the built-in
  reply is used and ``fallback_reason`` says why (``tier`` says who answered).

Privacy: the visitor's words and the reply text are logged only when
``privacy.log_transcripts`` is true; otherwise logs carry the turn number,
tier, kind, entry id and confidence only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from edge_avatar.dialogue.engine import BuiltinEngine
from edge_avatar.dialogue.llm import LLMError, OpenAIChatClient, grounded_messages
from edge_avatar.dialogue.memory import LongTermMemory, VisitMemory
from edge_avatar.dialogue.options import DialogueConfig
from edge_avatar.dialogue.persona import Persona
from edge_avatar.dialogue.reply import GestureIntent, Reply
from edge_avatar.dialogue.turns import asks_to_continue
from edge_avatar.speech.text import split_sentences

log = logging.getLogger(__name__)

LLM_KINDS = ("answer", "clarify")  # what the LLM may re-phrase; everything else is final in the built-in engine


class Dialogue:
    """Replies to visitor turns; thread-safe (one turn at a time)."""

    def __init__(self, engine: BuiltinEngine, persona: Persona, config: DialogueConfig | None = None,
                 llm: OpenAIChatClient | None = None, long_term: LongTermMemory | None = None,
                 log_transcripts: bool = False, owns_embedder: bool = True):
        self.engine = engine
        self._owns_embedder = owns_embedder
        self.persona = persona
        self.config = config or DialogueConfig()
        self.llm = llm
        self.long_term = long_term
        self.log_transcripts = log_transcripts
        self.memory = VisitMemory()
        self.visitor_key = ""
        self._lock = threading.Lock()
        self._turn = 0
        self._interrupted: Reply | None = None   # a reply the visitor cut off, and ...
        self._interrupted_heard = 0              # ... how many of its sentences they heard
        self.stats = {"turns": 0, "builtin": 0, "llm": 0, "llm_fallbacks": 0}

    # ------------------------------------------------------------------ visit lifecycle

    def start_visit(self, visitor_key: str = "") -> None:
        """A visitor engaged. With long-term memory on and a stable ``visitor_key``, their facts come back."""
        with self._lock:
            self.memory.clear()
            self.visitor_key = visitor_key
            if self.long_term is not None and visitor_key:
                facts = self.long_term.recall(visitor_key)
                self.memory.name = facts.get("name", "")
                self.memory.department_entry_id = facts.get("department_entry_id", "")

    def end_visit(self) -> None:
        """The visitor left: forget the visit (saving name/department first only if long-term memory is on)."""
        with self._lock:
            if self.long_term is not None and self.visitor_key:
                self.long_term.remember(self.visitor_key, {"name": self.memory.name,
                                                           "department_entry_id": self.memory.department_entry_id})
            self.memory.clear()
            self.visitor_key = ""

    def erase_memory(self, visitor_key: str | None = None) -> int:
        """Erase long-term memory (one visitor, or all); the current visit is forgotten too."""
        with self._lock:
            self.memory.clear()
            return self.long_term.erase(visitor_key) if self.long_term is not None else 0

    def greet(self, turn_id: int = 0, pts_ns: int = 0) -> Reply:
        from edge_avatar.dialogue.affect import reply_affect, reply_gestures  # noqa: PLC0415

        text = self.persona.greeting_text(self.engine.knowledge.site)
        if self.memory.name:
            text = f"Welcome back, {self.memory.name}! How can I help you today?"
        return Reply(text=text, kind="greeting", affect=reply_affect("greeting"),
                     gestures=reply_gestures("greeting"), turn_id=turn_id, pts_ns=pts_ns)

    def farewell(self, turn_id: int = 0, pts_ns: int = 0) -> Reply:
        """The farewell line; call ``end_visit()`` when the visitor is gone."""
        from edge_avatar.dialogue.affect import reply_affect, reply_gestures  # noqa: PLC0415

        return Reply(text=self.persona.farewell_text(), kind="farewell", affect=reply_affect("farewell"),
                     gestures=reply_gestures("farewell"), turn_id=turn_id, pts_ns=pts_ns)

    # ------------------------------------------------------------------ turns

    def note_interrupted(self, reply: Reply, sentences_heard: int) -> None:
        """Barge-in stopped ``reply`` after ``sentences_heard`` sentences (see ``turns``): the rest is kept
        for one turn, spoken only if the visitor asks to go on, dropped otherwise."""
        with self._lock:
            self._interrupted, self._interrupted_heard = reply, sentences_heard

    def respond(self, text: str, turn_id: int | None = None, pts_ns: int = 0) -> Reply:
        """The reply to one final transcript. Never raises for bad input; always returns something to say."""
        with self._lock:
            self._turn += 1
            turn = self._turn if turn_id is None else turn_id
            interrupted, self._interrupted = self._interrupted, None
            if interrupted is not None and asks_to_continue(text):
                rest = " ".join(split_sentences(interrupted.text)[self._interrupted_heard:])
                if rest:
                    reply = replace(interrupted, text=rest, turn_id=turn, pts_ns=pts_ns)
                    self.memory.last_reply_text = reply.text
                    self._count(reply)
                    self._log(turn, text, reply)
                    return reply
            try:
                reply = self.engine.answer(text, self.memory)
            except Exception:  # noqa: BLE001 - the visitor must get an answer even if the engine breaks
                log.exception("turn %d: built-in engine failed", turn)
                reply = Reply(text="Sorry, something went wrong on my side. Please ask a member of staff at "
                                   "the reception desk.", kind="decline")
            if self.llm is not None and reply.kind in LLM_KINDS:
                reply = self._via_llm(text, reply)
            reply = replace(reply, turn_id=turn, pts_ns=pts_ns)
            self.memory.last_reply_text = reply.text
            self._count(reply)
            self._log(turn, text, reply)
            return reply

    def _via_llm(self, question: str, builtin: Reply) -> Reply:
        start_ns = time.perf_counter_ns()
        try:
            candidates = self.engine.candidates(self.engine.clean_input(question),
                                                top_k=self.config.llm_context_entries)
            messages = grounded_messages(self.engine.clean_input(question), [c.entry for c in candidates],
                                         self.persona, self.engine.knowledge.site, self.memory.name)
            text = self.llm.complete(messages, self.config.llm_time_budget_ms)
        except LLMError as exc:
            elapsed_ms = (time.perf_counter_ns() - start_ns) / 1e6
            log.warning("LLM tier fell back to the built-in engine after %.0f ms: %s", elapsed_ms, exc)
            return replace(builtin, fallback_reason=str(exc),
                           timings_ms={**builtin.timings_ms, "llm": elapsed_ms})
        except Exception as exc:  # noqa: BLE001 - an LLM bug must not silence the avatar
            elapsed_ms = (time.perf_counter_ns() - start_ns) / 1e6
            log.exception("LLM tier failed")
            return replace(builtin, fallback_reason=f"LLM tier error: {type(exc).__name__}: {exc}",
                           timings_ms={**builtin.timings_ms, "llm": elapsed_ms})
        elapsed_ms = (time.perf_counter_ns() - start_ns) / 1e6
        n_sentences = max(1, len(split_sentences(text)))
        gestures = tuple(GestureIntent(g.name, g.strength, min(g.sentence_index, n_sentences - 1), g.direction)
                         for g in builtin.gestures)
        return replace(builtin, text=text, tier="llm", gestures=gestures,
                       timings_ms={**builtin.timings_ms, "llm": elapsed_ms})

    def _count(self, reply: Reply) -> None:
        self.stats["turns"] += 1
        self.stats[reply.tier] += 1
        if reply.fallback_reason:
            self.stats["llm_fallbacks"] += 1

    def _log(self, turn: int, text: str, reply: Reply) -> None:
        if self.log_transcripts:
            log.info("turn %d: visitor %r -> %s/%s %s (%.2f): %r", turn, text, reply.tier, reply.kind,
                     reply.entry_id, reply.confidence, reply.text)
        else:
            log.info("turn %d: %d chars -> %s/%s %s (%.2f)", turn, len(text), reply.tier, reply.kind,
                     reply.entry_id, reply.confidence)

    def persona_vector(self):
        return self.persona.persona_vector()

    def close(self) -> None:
        if self.long_term is not None:
            self.long_term.close()
        if self._owns_embedder:
            self.engine.retriever.embedder.close()
