"""Sentence splitting shared by the dialogue (gestures per sentence) and TTS (synthesis per sentence).

Why this module exists: the first reply audio should play while the rest is
still being synthesised, so speech is made one sentence at a time; a
gesture ("point while giving directions") is tied to a sentence index. Both
sides must cut the text in exactly the same places, so the rule lives here
once. Plain regular expressions: no NLP dependency for a handful of rules
(abbreviations, decimals, times such as 7:30 and initials are not ends).
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "st", "no", "vs", "etc", "eg", "e.g", "ie", "i.e", "approx",
                            "dept", "prof", "sr", "jr", "mt", "ave", "rd", "tel", "ext", "am", "pm", "a.m", "p.m"})
_CANDIDATE = re.compile(r"[.!?]+[\"')\]]*\s+")
MAX_WORDS_PER_SENTENCE = 40  # longer sentences are cut at a comma or semicolon near the middle


def split_sentences(text: str, max_words: int = MAX_WORDS_PER_SENTENCE) -> list[str]:
    """Split ``text`` into sentences to synthesise (and to attach gestures to), in order; no empty items."""
    text = " ".join(text.split())
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for match in _CANDIDATE.finditer(text):
        end = match.end()
        piece = text[start:match.start()]
        last_word = piece.rsplit(" ", 1)[-1].lower().rstrip(".")
        initial = len(last_word) == 1 and last_word.isalpha()
        if match.group(0).startswith(".") and (last_word in _ABBREVIATIONS or initial):
            # "Dr. Smith", "a.m. on", "J. Smith": not the end of a sentence; "7 am." at the end still is
            next_char = text[end:end + 1]
            if not next_char.isupper() or last_word in ("dr", "mr", "mrs", "ms", "st", "prof"):
                continue
        sentences.append(text[start:end].strip())
        start = end
    if start < len(text):
        sentences.append(text[start:].strip())
    out: list[str] = []
    for sentence in sentences:
        out.extend(_cut_long(sentence, max_words))
    return [s for s in out if s]


def _cut_long(sentence: str, max_words: int) -> list[str]:
    words = sentence.split(" ")
    if len(words) <= max_words:
        return [sentence]
    middle = len(sentence) // 2
    cuts = [m.end() for m in re.finditer(r"[,;]\s", sentence)]
    if not cuts:
        head = " ".join(words[:max_words])
        return [head, *_cut_long(" ".join(words[max_words:]), max_words)]
    cut = min(cuts, key=lambda c: abs(c - middle))
    return [*_cut_long(sentence[:cut].strip(), max_words), *_cut_long(sentence[cut:].strip(), max_words)]
