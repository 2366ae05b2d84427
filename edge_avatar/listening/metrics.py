"""How listening is scored: word error rate and echo return loss enhancement.

Why this module exists: the tests, the benchmark and BENCHMARKS.md must
compute the same numbers the same way. WER is the word-level Levenshtein
distance over the reference length, after a light normalisation (lower case,
punctuation dropped, hyphens split, a few spelled-out forms), so that "Heaven,"
and "heaven" are the same word but a wrong word is still wrong. ERLE is
10 log10 of mic power over residual power.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_PUNCT = re.compile(r"[^a-z0-9' ]+")
_SPELLING = {"ok": "okay", "mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_CLOCK = re.compile(r"\b(\d{1,2})[.:](\d{2})\b")


def number_words(n: int) -> list[str]:
    """0..9999 spelled out the way people say them ("1030" -> ten thirty is left to the caller)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    if n < 10000:
        return number_words(n // 1000) + ["thousand"] + (number_words(n % 1000) if n % 1000 else [])
    return list(str(n))


def normalize_words(text: str) -> list[str]:
    """Lower case, punctuation dropped, hyphens split, numbers and clock times spelled out, a few spellings unified."""
    text = text.lower().replace("\u2019", "'")
    text = _CLOCK.sub(lambda m: f"{m.group(1)} {m.group(2)}" if m.group(2) != "00" else m.group(1), text)
    text = text.replace("-", " ")
    text = _PUNCT.sub(" ", text)
    words: list[str] = []
    for w in text.split():
        w = w.strip("'")
        if not w:
            continue
        if w.isdigit():
            words += number_words(int(w))
        else:
            words.append(_SPELLING.get(w, w))
    return words


@dataclass(frozen=True)
class WerResult:
    wer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    def to_json(self) -> dict:
        return {"wer": round(self.wer, 4), "substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "reference_words": self.reference_words}


def word_error_rate(reference: str, hypothesis: str) -> WerResult:
    """(S + D + I) / N over normalised words (N = reference word count)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    n, m = len(ref), len(hyp)
    # cost[i][j] = edits to turn ref[:i] into hyp[:j]; ops tracked for the S/D/I split
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1])
            cost[i, j] = min(sub, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    i, j, s, d, ins = n, m, 0, 0, 0
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            s += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            d, i = d + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return WerResult((s + d + ins) / max(1, n), int(s), d, ins, n)


def erle_db(mic: np.ndarray, residual: np.ndarray) -> float:
    """Echo return loss enhancement: 10 log10(sum mic^2 / sum residual^2), dB."""
    mic = np.asarray(mic, dtype=np.float64)
    residual = np.asarray(residual, dtype=np.float64)
    return float(10.0 * np.log10((np.sum(mic * mic) + 1e-30) / (np.sum(residual * residual) + 1e-30)))
