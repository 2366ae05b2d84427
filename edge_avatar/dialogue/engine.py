"""The built-in answer engine: offline, deterministic, a few milliseconds a question.

Why this module exists: the avatar must give a useful answer with no network
and no LLM, and must never make one up. Every turn goes through the same
steps, in this order:

1. empty or noise -> ask again;
2. an emergency phrase -> always direct to staff (the site's emergency entry);
3. not English -> say so and offer an interpreter via staff;
4. "my name is ..." -> remember it for the visit;
5. small talk and politeness (hello, thanks, who are you, say that again,
   yes/no after "Did you mean ...?") -> a persona-styled line;
6. retrieval (``retrieval.HybridRetriever``) -> answer when the confidence
   reaches ``dialogue.confidence_threshold``; between it and
   ``clarify_threshold`` ask "Did you mean ...?"; below, decline politely and
   offer staff. A follow-up ("which floor is it on?") is resolved against
   the last entry of the visit.

The answer text is composed from the entry (answer, then directions; the
hours first when the visitor asked *when*), with affect and gesture intents
from ``affect``.
"""

from __future__ import annotations

import logging
import re
import time

from edge_avatar.dialogue import intents
from edge_avatar.dialogue.affect import SentimentReader, reply_affect, reply_gestures
from edge_avatar.dialogue.knowledge import KnowledgeBase, KnowledgeEntry
from edge_avatar.dialogue.memory import VisitMemory
from edge_avatar.dialogue.options import DialogueConfig
from edge_avatar.dialogue.persona import Persona
from edge_avatar.dialogue.reply import Reply
from edge_avatar.dialogue.retrieval import Candidate, HybridRetriever
from edge_avatar.speech.text import split_sentences

log = logging.getLogger(__name__)

_HOURS_QUESTION = re.compile(r"\b(open|opens|opening|close|closes|closing|closed|hours|what time|times|when|today"
                             r"|tonight|tomorrow|weekend|saturday|sunday|monday|friday|24 hours)\b")
_ANAPHORA = re.compile(r"\b(it|there|that|this|they|them|its|that place|the department|the clinic)\b")
_EXISTENTIAL = re.compile(r"\b(is there|are there|there is|there are|is it possible|is that possible)\b")
_LONG_TURN_WORDS = 30  # a turn longer than this is searched by its last question (see _focus)
_TAIL_WORDS = 25
_QUESTION_START = re.compile(r"\b(where|how|when|what|which|who|is there|are there|can i|could i|do you|i need"
                             r"|i'?m looking|i am looking)\b", re.IGNORECASE)


class BuiltinEngine:
    """Answers one visitor turn from the knowledge file (see the module docstring for the steps)."""

    def __init__(self, knowledge: KnowledgeBase, retriever: HybridRetriever, persona: Persona,
                 config: DialogueConfig | None = None, sentiment: SentimentReader | None = None):
        self.knowledge = knowledge
        self.retriever = retriever
        self.persona = persona
        self.config = config or DialogueConfig()
        self.sentiment = sentiment or SentimentReader()
        self._emergency_entry = next((e for e in knowledge.entries if e.is_emergency), None)

    # ------------------------------------------------------------------ public

    def clean_input(self, text: str) -> str:
        """Whitespace collapsed and cut to ``max_input_chars`` (keeping the end, where the question usually is)."""
        text = " ".join(str(text).split())
        limit = self.config.max_input_chars
        if len(text) > limit:
            text = text[-limit:]
            text = text.split(" ", 1)[1] if " " in text else text
        return text

    def candidates(self, text: str, top_k: int = 5) -> list[Candidate]:
        return self.retriever.rank(_focus(text), top_k=top_k)

    def answer(self, text: str, memory: VisitMemory) -> Reply:
        start_ns = time.perf_counter_ns()
        reply = self._answer(self.clean_input(text), memory)
        timings = {**reply.timings_ms, "builtin": (time.perf_counter_ns() - start_ns) / 1e6}
        reply = _with(reply, timings_ms=timings)
        self._remember(reply, memory)
        return reply

    # ------------------------------------------------------------------ steps

    def _answer(self, text: str, memory: VisitMemory) -> Reply:
        if not intents.normalise(text):
            return self._simple("clarify", "Sorry, I didn't catch that. Could you say it again, please?")
        if intents.is_emergency(text, self.config.extra_emergency_phrases):
            return self._emergency(1.0)
        language = intents.guess_language(text)
        if not language.english:
            return self._simple("language", "I'm sorry, I can only speak English. Please ask a member of staff "
                                            "at the reception desk: they can arrange an interpreter for you.")
        sentiment = self.sentiment.compound(text)
        name = intents.extract_name(text)
        rest = text
        if name:
            memory.name, memory.name_used = name, False
            rest = intents.remove_name_intro(text)
        intent = intents.smalltalk_intent(rest) if intents.normalise(rest) else None
        if name and (intent is None and not intents.strip_politeness(rest) or intent in ("greeting", "acknowledge")):
            memory.name_used = True
            return self._simple("name", f"Nice to meet you, {name}. How can I help you today?", sentiment)
        if intent is not None:
            return self._smalltalk(intent, memory, sentiment)

        candidates = self.candidates(rest)
        best = candidates[0]
        focus = rest
        previous = self.knowledge.get(memory.last_entry_id)
        if previous is not None and best.entry.id != previous.id and _refers_back(rest):
            # "which floor is it on?" after radiology: the pronoun means the last thing we talked about,
            # unless the question names something else clearly enough to win even with that context added.
            followup = self.candidates(f"{rest} ({previous.title})")
            if followup[0].entry.id == previous.id:
                best = followup[0]
        memory.pending_suggestion_id = ""
        if best.confidence >= self.config.confidence_threshold:
            if best.entry.is_emergency:
                return self._emergency(best.confidence)
            return self._entry_reply(best.entry, best.confidence, focus, memory, sentiment,
                                     greet=intents.had_greeting(text) and memory.turns == 0)
        if best.confidence >= self.config.clarify_threshold:
            memory.pending_suggestion_id = best.entry.id
            return _with(self._simple("clarify", f"I'm not quite sure I understood. Did you mean "
                                                 f"{_lower_first(best.entry.title)}?", sentiment),
                         confidence=best.confidence, suggested_entry_id=best.entry.id)
        return _with(self._decline(sentiment), confidence=best.confidence)

    def _entry_reply(self, entry: KnowledgeEntry, confidence: float, question: str, memory: VisitMemory,
                     sentiment: float, greet: bool = False) -> Reply:
        asked_hours = bool(_HOURS_QUESTION.search(intents.normalise(question)))
        parts: list[str] = []
        if greet:
            parts.append("Hello!")
        if memory.name and not memory.name_used:
            parts.append(f"Of course, {memory.name}.")
            memory.name_used = True
        directions_at: int | None = None
        if asked_hours and entry.hours:
            parts += [entry.hours, entry.answer]
        else:
            parts.append(entry.answer)
            if entry.directions:
                directions_at = len(split_sentences(" ".join(parts)))
                parts.append(entry.directions)
        text = " ".join(parts)
        n_sentences = len(split_sentences(text))
        if entry.is_department:
            memory.department_entry_id = entry.id
        key = "sensitive" if entry.is_sensitive else "answer"
        return Reply(text=text, kind="answer", entry_id=entry.id, confidence=confidence,
                     affect=reply_affect(key, sentiment),
                     gestures=reply_gestures(key, point_direction=entry.point, directions_sentence=directions_at,
                                             n_sentences=n_sentences))

    def _emergency(self, confidence: float) -> Reply:
        entry = self._emergency_entry
        if entry is None:
            text = ("If this is an emergency, please tell a member of staff right now: they will help you "
                    "immediately.")
            point = ""
        else:
            text = " ".join(p for p in (entry.answer, entry.directions) if p)
            point = entry.point
        return Reply(text=text, kind="emergency", entry_id=entry.id if entry else None, confidence=confidence,
                     affect=reply_affect("emergency"),
                     gestures=reply_gestures("emergency", point_direction=point,
                                             n_sentences=len(split_sentences(text))))

    def _decline(self, sentiment: float) -> Reply:
        topics = self.knowledge.topics(4)
        offer = f" I can tell you about things like {_join(topics)}." if topics else ""
        if self.persona.formality >= 0.7:
            text = f"I am sorry, I cannot help with that here.{offer} A member of staff at the desk may be able to."
        else:
            text = (f"Sorry, I can't help with that one.{offer} Or a member of staff at the reception desk can "
                    f"help you.")
        return self._simple("decline", text, sentiment)

    def _smalltalk(self, intent: str, memory: VisitMemory, sentiment: float) -> Reply:
        p = self.persona
        name = f", {memory.name}" if memory.name else ""
        formal = p.formality >= 0.7
        if intent == "greeting":
            return self._simple("greeting", f"Hello{name}! How can I help you today?" if not formal
                                else f"Good day{name}. How may I help you?", sentiment)
        if intent == "how_are_you":
            return self._simple("how_are_you", "I'm very well, thank you for asking. How can I help you?", sentiment)
        if intent == "thanks":
            return self._simple("thanks", f"You're very welcome{name}!" if not formal else
                                f"You are most welcome{name}.", sentiment)
        if intent == "goodbye":
            return self._simple("farewell", p.farewell_text(), sentiment)
        if intent == "who_are_you":
            return self._simple("who_are_you", f"I'm {p.name}, {p.role}. I'm a computer assistant, "
                                               f"and I'm here to help you find your way.", sentiment)
        if intent == "capabilities":
            topics = self.knowledge.topics(5)
            return self._simple("capabilities", f"I can tell you where things are and when they are open, "
                                                f"for example {_join(topics)}. What are you looking for?", sentiment)
        if intent == "repeat":
            if memory.last_reply_text:
                return self._simple("repeat", memory.last_reply_text, sentiment)
            return self._simple("repeat", "I haven't said anything yet. How can I help you?", sentiment)
        if intent == "affirm" and memory.pending_suggestion_id:
            entry = self.knowledge.get(memory.pending_suggestion_id)
            memory.pending_suggestion_id = ""
            if entry is not None:
                return self._entry_reply(entry, self.config.confidence_threshold, "", memory, sentiment)
        if intent == "deny" and memory.pending_suggestion_id:
            memory.pending_suggestion_id = ""
            return self._simple("deny", "Sorry about that. Could you tell me in other words what you are "
                                        "looking for? Or a member of staff at the desk can help.", sentiment)
        if intent in ("affirm", "acknowledge"):
            return self._simple("acknowledge", "Is there anything else I can help you with?", sentiment)
        return self._simple("deny", "All right. Is there anything else I can help you with?", sentiment)

    def _simple(self, key: str, text: str, sentiment: float = 0.0) -> Reply:
        kind = {"clarify": "clarify", "decline": "decline", "language": "language", "greeting": "greeting",
                "farewell": "farewell"}.get(key, "smalltalk")
        return Reply(text=text, kind=kind, affect=reply_affect(key, sentiment),
                     gestures=reply_gestures(key, n_sentences=len(split_sentences(text))))

    @staticmethod
    def _remember(reply: Reply, memory: VisitMemory) -> None:
        memory.turns += 1
        if reply.text:
            memory.last_reply_text = reply.text
        if reply.entry_id:
            memory.last_entry_id = reply.entry_id
            memory.asked_entry_ids.append(reply.entry_id)


def _focus(text: str) -> str:
    """A long, rambling turn is searched by its last question ("... and then, where is the pharmacy?")."""
    words = text.split()
    if len(words) <= _LONG_TURN_WORDS:
        return text
    matches = list(_QUESTION_START.finditer(text))
    if matches:
        tail = text[matches[-1].start():].split()
        if len(tail) >= 2:
            return " ".join(tail[:_LONG_TURN_WORDS])
    return " ".join(words[-_TAIL_WORDS:])


def _refers_back(text: str) -> bool:
    """Does the question point back at something said before ("how do I get there?", "is it open?")?"""
    return bool(_ANAPHORA.search(_EXISTENTIAL.sub(" ", intents.normalise(text))))


def _with(reply: Reply, **changes) -> Reply:
    from dataclasses import replace  # noqa: PLC0415

    return replace(reply, **changes)


def _lower_first(title: str) -> str:
    """'Blood tests (laboratory)' -> 'blood tests (laboratory)'; 'PALS' and 'Wi-Fi' stay as they are."""
    first = title.split(" ", 1)[0]
    if first[:1].isupper() and first[1:].islower():
        return title[:1].lower() + title[1:]
    return title


def _join(items: list[str]) -> str:
    items = [_lower_first(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
