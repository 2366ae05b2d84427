"""Word matching for the answer engine: text normalisation and Okapi BM25 over knowledge entries.

Why this module exists: a sentence embedding knows that "chemo" is about
cancer care, but it is weak on the rare exact words that settle a question
in a hospital -- "PALS", "phlebotomy", "blue badge", a department name the
model never saw. BM25 over each entry's questions, answer and tags catches
those. It is a few dozen lines of plain Python and numpy, so no search
library is added; the knowledge file is small (tens to a few hundred entries).

Multi-word tags ("blue badge", "sign in") are also matched as phrases, so
"sign in" is not confused with "sign language".

The lexical score is normalised per query to [0, 1): the BM25 score divided
by the most the query's words could score (each word's idf x (k1 + 1)), with
words the site's text never uses counted at the highest idf. A question made
of words the knowledge never mentions therefore scores near zero, which is
what lets the combined confidence decline out-of-scope questions.
"""

from __future__ import annotations

import math
import re
from collections import Counter

_WORD = re.compile(r"[a-z0-9]+")

# Function words and question scaffolding that say nothing about *which* entry is meant.
STOPWORDS = frozenset("""
a about above after again all am an and any anyone anything are as at be been being but by can cannot could did
do does doing done for from get got had has have having he her here hers him his how i i'm if in into is it its
just know let like looking may me might mine more most much my need needs no nor not now of off on once one only
or other our out over please right should so some someone something still such tell than thank thanks that the
their them then there these they this those through to too up us very want wants was way we well were what when
where which while who whom why will with would yes you your yours go going where's what's i'd i've im ive
find sorry excuse hi hello hey dear okay ok whats wheres thats theres dont cant id youre hows whos
""".split())


def stem(word: str) -> str:
    """A deliberately light suffix stripper (plural and verb endings); the same on both sides of a match."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("'", ""))


def tokenize(text: str, phrases: frozenset[str] = frozenset()) -> list[str]:
    """Lower-case word stems without stopwords, plus one token per known phrase present ("sign in")."""
    words = words_of(text)
    tokens = [stem(w) for w in words if (w not in STOPWORDS and len(w) > 1) or w.isdigit()]
    if phrases:
        joined = f" {' '.join(words)} "
        tokens += [p.replace(" ", "_") for p in phrases if f" {p} " in joined]
    return tokens


def phrase_key(text: str) -> str:
    """A multi-word tag as the phrase ``tokenize`` looks for ("Blue Badge" -> "blue badge")."""
    return " ".join(words_of(text))


def content_words(text: str) -> list[str]:
    """Lower-case words that are not stopwords (not stemmed), e.g. to tell if anything is left to answer."""
    return [w for w in _WORD.findall(text.lower().replace("'", "")) if w not in STOPWORDS]


class BM25Index:
    """Okapi BM25 over a fixed list of documents, with a per-query normalised score."""

    def __init__(self, documents: list[str], k1: float = 1.2, b: float = 0.5,
                 phrases: frozenset[str] = frozenset()):
        self.k1, self.b = k1, b
        self.phrases = phrases  # multi-word terms matched as one token (the knowledge file's multi-word tags)
        self._docs = [Counter(tokenize(d, phrases)) for d in documents]
        self._lengths = [sum(d.values()) for d in self._docs]
        self._avg_length = max(1.0, sum(self._lengths) / max(1, len(self._docs)))
        n_docs = len(self._docs)
        df: Counter[str] = Counter()
        for doc in self._docs:
            df.update(doc.keys())
        self._idf = {t: math.log(1.0 + (n_docs - n + 0.5) / (n + 0.5)) for t, n in df.items()}
        self._idf_unknown = math.log(1.0 + (n_docs + 0.5) / 0.5)

    def idf(self, term: str) -> float:
        return self._idf.get(term, self._idf_unknown)

    def scores(self, query: str) -> list[float]:
        """Normalised BM25 of ``query`` against every document, each in [0, 1)."""
        terms = tokenize(query, self.phrases)
        if not terms:
            return [0.0] * len(self._docs)
        ceiling = sum(self.idf(t) * (self.k1 + 1.0) for t in terms)
        out = []
        for doc, length in zip(self._docs, self._lengths):
            norm = self.k1 * (1.0 - self.b + self.b * length / self._avg_length)
            total = 0.0
            for term in terms:
                tf = doc.get(term, 0)
                if tf:
                    total += self.idf(term) * tf * (self.k1 + 1.0) / (tf + norm)
            out.append(total / ceiling)
        return out
