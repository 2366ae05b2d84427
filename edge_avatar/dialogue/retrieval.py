"""Hybrid retrieval over the knowledge file: MiniLM cosine + normalised BM25 -> ranked entries with a confidence.

Why this module exists: neither signal alone is good enough at a kiosk.
Embeddings carry paraphrases ("somewhere to grab lunch" -> cafeteria) but
give unrelated questions a similarity of 0.2-0.4 that is hard to threshold;
exact words carry rare names and abbreviations ("PALS"). Each entry gets

    confidence = (wq * questions + wa * answers + wl * lexical) / (wq + wa + wl)

- ``questions``: best cosine between the visitor's words and the entry's
  example questions and title (the site's own phrasing of the need);
- ``answers``: best cosine with a sentence of the entry's answer, or with
  "title: tags" (catches needs phrased by what is *there*: "change a nappy"
  -> the toilets' "baby changing");
- ``lexical``: BM25 over title, questions, tags (twice), answer, directions
  and hours, normalised per query to [0, 1) (see ``lexical``).

Everything on the knowledge side is embedded once at load (about 200
sentences: under a second on 2 cores); a query costs one MiniLM run
(a few ms) and a BM25 pass. The weights were tuned on the frozen paraphrase
set tests/data/hospital_paraphrases.yaml (see tests/test_dialogue_accuracy.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edge_avatar.dialogue.embedding import SentenceEmbedder
from edge_avatar.dialogue.knowledge import KnowledgeBase, KnowledgeEntry
from edge_avatar.dialogue.lexical import BM25Index, phrase_key

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class RetrievalWeights:
    questions: float = 0.31
    answers: float = 0.31
    lexical: float = 0.38

    def normalised(self) -> tuple[float, float, float]:
        total = self.questions + self.answers + self.lexical
        if total <= 0:
            raise ValueError("retrieval weights must not all be zero")
        return self.questions / total, self.answers / total, self.lexical / total


@dataclass(frozen=True)
class Candidate:
    entry: KnowledgeEntry
    confidence: float   # the combined score, [0, 1]
    questions: float    # best cosine over the entry's example questions and title
    answers: float      # best cosine over the entry's answer sentences and "title: tags"
    lexical: float      # normalised BM25, [0, 1)


class HybridRetriever:
    """Ranks knowledge entries for a question."""

    def __init__(self, knowledge: KnowledgeBase, embedder: SentenceEmbedder,
                 weights: RetrievalWeights | None = None):
        self.knowledge = knowledge
        self.embedder = embedder
        self.weights = weights or RetrievalWeights()
        question_texts: list[str] = []
        question_owners: list[int] = []
        answer_texts: list[str] = []
        answer_owners: list[int] = []
        for index, entry in enumerate(knowledge.entries):
            for text in (*entry.questions, entry.title):
                question_texts.append(text)
                question_owners.append(index)
            for text in _SENTENCE_END.split(entry.answer):
                answer_texts.append(text)
                answer_owners.append(index)
            if entry.tags:
                answer_texts.append(f"{entry.title}: {', '.join(entry.tags)}")
                answer_owners.append(index)
        vectors = embedder.embed_many(question_texts + answer_texts)              # (Q + A, 384)
        self._vectors = vectors
        self._owners = np.asarray(question_owners + answer_owners, dtype=np.int64)  # (Q + A,)
        self._n_questions = len(question_texts)
        phrases = frozenset(phrase_key(t) for e in knowledge.entries for t in e.tags if " " in t.strip())
        self._bm25 = BM25Index([self._lexical_document(e) for e in knowledge.entries], phrases=phrases)

    @staticmethod
    def _lexical_document(entry: KnowledgeEntry) -> str:
        # Tags are the site's chosen keywords: counted twice. The answer's wording counts once.
        return " ".join([entry.title, *entry.questions, *entry.tags, *entry.tags, entry.answer,
                         entry.directions, entry.hours])

    def _best_per_entry(self, sims: np.ndarray, owners: np.ndarray) -> np.ndarray:
        best = np.full(len(self.knowledge.entries), -1.0, dtype=np.float32)
        np.maximum.at(best, owners, sims)
        return best

    def channel_scores(self, question: str, query_vector: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(questions, answers, lexical) scores per entry, each (E,)."""
        sims = self._vectors @ query_vector.reshape(-1)                        # (Q + A,)
        n = self._n_questions
        by_question = self._best_per_entry(sims[:n], self._owners[:n])
        by_answer = self._best_per_entry(sims[n:], self._owners[n:])
        lexical = np.asarray(self._bm25.scores(question), dtype=np.float32)
        return by_question, by_answer, lexical

    def rank(self, question: str, top_k: int = 5, query_vector: np.ndarray | None = None) -> list[Candidate]:
        if query_vector is None:
            query_vector = self.embedder.embed(question)[0]
        by_question, by_answer, lexical = self.channel_scores(question, query_vector)
        wq, wa, wl = self.weights.normalised()
        combined = (wq * np.clip(by_question, 0.0, 1.0) + wa * np.clip(by_answer, 0.0, 1.0) + wl * lexical)
        order = np.argsort(-combined, kind="stable")[:top_k]
        return [Candidate(self.knowledge.entries[i], float(combined[i]), float(by_question[i]),
                          float(by_answer[i]), float(lexical[i])) for i in order]
