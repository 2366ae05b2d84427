"""Listening to a whole recording at once: what ``edge-avatar transcribe``, the tests and the benchmark use.

Why this module exists: a file must go through exactly the pipeline a live
microphone goes through (same chunking, VAD, segmenter, recognizer), only
faster than real time, so that a test on a WAV says something about the
device. ``transcribe_samples`` feeds the samples as 10 ms ``AudioChunk``s
with sample-count pts and returns the segments with their final text, the
input report and plain-language warnings (no speech found, silent input,
clipping, resampled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_avatar.frames import AudioChunk, samples_to_ns
from edge_avatar.listening.asr import Recognizer
from edge_avatar.listening.listener import Listener
from edge_avatar.listening.options import PROCESS_RATE_HZ, ListeningConfig
from edge_avatar.listening.token import AudioToken

log = logging.getLogger(__name__)


class AudioInputError(RuntimeError):
    """A recording could not be read; the message names the file and how to convert it."""


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the file's sample rate (PCM WAV of any width; other formats through ffmpeg)."""
    from edge_avatar.scenario.audio import read_audio_file  # noqa: PLC0415
    from edge_avatar.scenario.format import ScenarioError  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path}: the file is empty")
    try:
        samples, rate = read_audio_file(path, None)
    except ScenarioError as exc:
        raise AudioInputError(f"{path}: cannot decode ({exc}); convert it with: "
                              f"ffmpeg -i {path} -ac 1 -ar 16000 -c:a pcm_s16le fixed.wav") from None
    if len(samples) == 0:
        raise AudioInputError(f"{path}: holds no audio samples")
    if not np.all(np.isfinite(samples)):
        raise AudioInputError(f"{path}: holds NaN or infinite samples")
    return samples.astype(np.float32), int(rate)


@dataclass
class SegmentText:
    start_s: float
    end_s: float
    text: str
    rejected: str = ""

    def to_json(self) -> dict:
        out = {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "text": self.text}
        if self.rejected:
            out["rejected"] = self.rejected
        return out


@dataclass
class Transcription:
    duration_s: float
    sample_rate_hz: int
    segments: list[SegmentText]
    recognizer: str
    stats: dict
    warnings: list[str] = field(default_factory=list)
    tokens: list[AudioToken] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text).strip()

    def to_json(self) -> dict:
        return {"duration_s": round(self.duration_s, 3), "sample_rate_hz": self.sample_rate_hz,
                "recognizer": self.recognizer, "segments": [s.to_json() for s in self.segments],
                "text": self.text, "warnings": self.warnings, "input": self.stats.get("input", {}),
                "resampled_from_hz": self.stats.get("resampled_from_hz")}


def transcribe_samples(samples: np.ndarray, sample_rate_hz: int, config: ListeningConfig | None = None, *,
                       recognizer: Recognizer | None = None, listener: Listener | None = None,
                       chunk_ms: int = 10, keep_tokens: bool = False) -> Transcription:
    """Run the listener over a whole signal (chunks of ``chunk_ms`` at ``sample_rate_hz``, pts from 0)."""
    config = config or ListeningConfig()
    if listener is None:
        listener = Listener(config, recognizer=recognizer)
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    chunk = max(1, sample_rate_hz * chunk_ms // 1000)
    tokens: list[AudioToken] = []
    for seq, first in enumerate(range(0, len(samples), chunk)):
        piece = samples[first:first + chunk]
        if len(piece) < chunk:   # a real microphone delivers whole chunks: pad the last one
            piece = np.concatenate([piece, np.zeros(chunk - len(piece), dtype=np.float32)])
        out = listener.process_chunk(AudioChunk(samples_to_ns(first, sample_rate_hz), seq, piece, sample_rate_hz))
        if keep_tokens:
            tokens += out
    # Half a second of silence lets the VAD hangover run out as it would live, then end the stream.
    tail = np.zeros(sample_rate_hz // 2, dtype=np.float32)
    base = len(samples) + (-len(samples)) % chunk
    for i, first in enumerate(range(0, len(tail), chunk)):
        out = listener.process_chunk(AudioChunk(samples_to_ns(base + first, sample_rate_hz), 10**9 + i,
                                                tail[first:first + chunk], sample_rate_hz))
        if keep_tokens:
            tokens += out
    out = listener.finish_stream()
    if keep_tokens:
        tokens += out
    segments = []
    for segment, final in listener.final_segments():
        segments.append(SegmentText(segment.start_ns / 1e9, segment.end_ns / 1e9,
                                    final.text if final is not None else "",
                                    final.rejected if final is not None else "no_final"))
    stats = listener.stats()
    warnings = []
    if listener.resampled_from_hz:
        warnings.append(f"input is {listener.resampled_from_hz} Hz; resampled to {PROCESS_RATE_HZ} Hz")
    if stats["input"]["silent_episodes"]:
        warnings.append("the input is silent (no signal above the dead-microphone floor)")
    if stats["input"]["clipping_episodes"]:
        warnings.append(f"the input clips ({stats['input']['clipped_samples']} samples at full scale)")
    if not segments:
        warnings.append("no speech found")
    elif not any(s.text for s in segments):
        warnings.append("speech-like sound found, but nothing was recognised as words")
    name = listener.recognizer.name if listener.recognizer is not None else "none"
    return Transcription(len(samples) / sample_rate_hz, sample_rate_hz, segments, name, stats, warnings,
                         tokens)
