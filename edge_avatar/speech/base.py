"""The TTS interface: text in, per-sentence audio + phoneme timeline + word timings out.

Why this module exists: the face must move with the voice, so speech is not
just samples. Every engine returns, per sentence, a ``SpeechSegment``:

- ``audio``: float32 mono in [-1, 1] at the *speaker's* rate (resampled here
  when the engine's native rate differs), ready for ``AudioOutput.write``;
- ``phonemes``: ``PhonemeEvent(phoneme, start_ms, end_ms, stress)`` covering
  the segment in order, times relative to the segment's first sample;
- ``words``: ``WordTiming(word, start_ms, end_ms)`` for captions.

``stream(text)`` yields one segment per sentence (``speech.text``), so the
first sentence plays while the rest is synthesised. When a segment is queued
on the speaker, ``AudioOutput.write`` returns its first sample index; with
``segment.on_clock(first_sample_pts_ns)`` the timeline moves onto the media
clock the planner runs on.

Engines (one file each, chosen by name in ``open_tts``): ``espeak`` (in
process through the C API; the embedded default) and ``piper`` (a neural
voice, out of process because Piper is GPL).
"""

from __future__ import annotations

import abc
import logging
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.speech.text import split_sentences

log = logging.getLogger(__name__)

PAUSE = "_"                      # the phoneme symbol of silence in every engine's timeline
BILABIALS = frozenset("pbm")     # phonemes with closed lips (the planner's mouthClose / lip-sync anchors)


class TTSError(RuntimeError):
    """Synthesis failed; the message says which engine and why."""


class TTSUnavailable(TTSError):
    """An engine is not installed here; the message says how to install it."""


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme: engine symbol (espeak mnemonic or IPA), times in ms from the segment start, stress."""

    phoneme: str
    start_ms: float
    end_ms: float
    stress: int = 0   # 0 = unstressed or consonant, 1 = secondary, 2 = primary stress (vowels)

    @property
    def is_pause(self) -> bool:
        return self.phoneme == PAUSE

    @property
    def lips_closed(self) -> bool:
        """A bilabial (p, b, m): the lips must close during this phoneme."""
        return self.phoneme[:1] in BILABIALS


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class SpeechSegment:
    """One synthesised sentence."""

    index: int                              # sentence index within the reply
    text: str
    audio: np.ndarray                       # (N,) float32 at sample_rate_hz
    sample_rate_hz: int
    phonemes: tuple[PhonemeEvent, ...]
    words: tuple[WordTiming, ...]
    alphabet: str                           # "espeak" (Kirshenbaum mnemonics) or "ipa"
    engine: str
    synth_ms: float = 0.0                   # wall time the engine took (a measurement, not media time)

    @property
    def duration_ms(self) -> float:
        return len(self.audio) * 1000.0 / self.sample_rate_hz

    def on_clock(self, first_sample_pts_ns: int) -> list[tuple[str, int, int, int]]:
        """The phoneme timeline on the media clock: (phoneme, start_pts_ns, end_pts_ns, stress)."""
        return [(p.phoneme, first_sample_pts_ns + int(p.start_ms * 1e6), first_sample_pts_ns + int(p.end_ms * 1e6),
                 p.stress) for p in self.phonemes]

    def to_json(self, offset_ms: float = 0.0) -> dict[str, Any]:
        return {
            "index": self.index, "text": self.text, "engine": self.engine, "alphabet": self.alphabet,
            "start_ms": round(offset_ms, 2), "duration_ms": round(self.duration_ms, 2),
            "synth_ms": round(self.synth_ms, 2),
            "phonemes": [[p.phoneme, round(p.start_ms + offset_ms, 2), round(p.end_ms + offset_ms, 2), p.stress]
                         for p in self.phonemes],
            "words": [[w.word, round(w.start_ms + offset_ms, 2), round(w.end_ms + offset_ms, 2)] for w in self.words],
        }


class SpeechSynthesizer(abc.ABC):
    """Text -> ``SpeechSegment``s. Implementations are thread-safe (calls are serialised inside)."""

    name = "base"

    def __init__(self, sample_rate_hz: int, speaking_rate_wpm: int = 160):
        self.sample_rate_hz = sample_rate_hz
        self.speaking_rate_wpm = speaking_rate_wpm
        self.sentences_synthesized = 0

    @abc.abstractmethod
    def _synthesize(self, sentence: str) -> tuple[np.ndarray, int, list[PhonemeEvent], list[WordTiming], str]:
        """One sentence -> (float32 audio, its native rate, phonemes, words, alphabet)."""

    def synthesize_sentence(self, sentence: str, index: int = 0) -> SpeechSegment:
        start_ns = time.perf_counter_ns()
        audio, native_rate_hz, phonemes, words, alphabet = self._synthesize(sentence)
        audio = resample(audio, native_rate_hz, self.sample_rate_hz)
        duration_ms = len(audio) * 1000.0 / self.sample_rate_hz
        phonemes = _clip_timeline(phonemes, duration_ms)
        words = [WordTiming(w.word, min(w.start_ms, duration_ms), min(w.end_ms, duration_ms)) for w in words]
        self.sentences_synthesized += 1
        return SpeechSegment(index, sentence, audio, self.sample_rate_hz, tuple(phonemes), tuple(words), alphabet,
                             self.name, (time.perf_counter_ns() - start_ns) / 1e6)

    def stream(self, text: str) -> Iterator[SpeechSegment]:
        """One segment per sentence, each synthesised only when the previous one has been taken."""
        for index, sentence in enumerate(split_sentences(text)):
            yield self.synthesize_sentence(sentence, index)

    def synthesize(self, text: str) -> SpeechSegment:
        """The whole text as one segment (timelines shifted and joined)."""
        segments = list(self.stream(text))
        if not segments:
            return SpeechSegment(0, "", np.zeros(0, dtype=np.float32), self.sample_rate_hz, (), (), "", self.name)
        offset = 0.0
        phonemes: list[PhonemeEvent] = []
        words: list[WordTiming] = []
        for seg in segments:
            phonemes += [PhonemeEvent(p.phoneme, p.start_ms + offset, p.end_ms + offset, p.stress)
                         for p in seg.phonemes]
            words += [WordTiming(w.word, w.start_ms + offset, w.end_ms + offset) for w in seg.words]
            offset += seg.duration_ms
        return SpeechSegment(0, text, np.concatenate([s.audio for s in segments]), self.sample_rate_hz,
                             tuple(phonemes), tuple(words), segments[0].alphabet, self.name,
                             sum(s.synth_ms for s in segments))

    def close(self) -> None:
        pass


def _clip_timeline(phonemes: list[PhonemeEvent], duration_ms: float) -> list[PhonemeEvent]:
    """Monotonic, non-overlapping, inside [0, duration_ms]: what the planner is promised."""
    out: list[PhonemeEvent] = []
    previous_end = 0.0
    for p in phonemes:
        start = min(max(p.start_ms, previous_end), duration_ms)
        end = min(max(p.end_ms, start), duration_ms)
        if end <= start and out:
            continue  # nothing left of it inside the audio
        out.append(PhonemeEvent(p.phoneme, start, end, p.stress))
        previous_end = end
    return out


def resample(audio: np.ndarray, from_rate_hz: int, to_rate_hz: int) -> np.ndarray:
    """Linear-interpolation resampling (speech to a speaker rate; the timeline is in ms and unaffected)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if from_rate_hz == to_rate_hz or len(audio) == 0:
        return audio
    n_out = int(round(len(audio) * to_rate_hz / from_rate_hz))
    positions = np.arange(n_out, dtype=np.float64) * from_rate_hz / to_rate_hz
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int) -> Path:
    """16-bit mono PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(pcm.tobytes())
    return path
