"""Speech: the avatar's voice, with a phoneme timeline the face can follow.

Why this package exists: see ARCHITECTURE.md ("TTS gives audio plus a
phoneme timeline on the audio clock"). One interface (``base.SpeechSynthesizer``:
``stream(text)`` yields one ``SpeechSegment`` per sentence), two engines
chosen by name:

- ``espeak`` (``espeak.EspeakTTS``): espeak-ng's C API in process; the
  embedded default, a few ms a sentence, timed phoneme and word events;
- ``piper`` (``piper.PiperTTS``): a neural voice in a separate process (GPL),
  with phoneme alignments; skipped with a clear reason when not installed.

``open_tts(persona, sample_rate_hz, dialogue_config)`` picks the engine and
voice from the persona (or the config's override) and falls back to espeak-ng
when Piper is missing, if the config allows. ``speak_streaming`` queues the
segments on the speaker as they are made and returns their timelines on the
media clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_avatar.speech.base import (
    BILABIALS,
    PAUSE,
    PhonemeEvent,
    SpeechSegment,
    SpeechSynthesizer,
    TTSError,
    TTSUnavailable,
    WordTiming,
    resample,
    write_wav,
)
from edge_avatar.speech.text import split_sentences

if TYPE_CHECKING:
    from edge_avatar.dialogue.options import DialogueConfig
    from edge_avatar.dialogue.persona import Persona
    from edge_avatar.outputs.audio import AudioOutput

log = logging.getLogger(__name__)

ENGINES = ("espeak", "piper")
ESPEAK_FALLBACK_VOICE = "en-us"

__all__ = ["BILABIALS", "ENGINES", "PAUSE", "PhonemeEvent", "QueuedSegment", "SpeechSegment", "SpeechSynthesizer",
           "TTSError", "TTSUnavailable", "WordTiming", "open_engine", "open_tts", "resample", "speak_streaming",
           "split_sentences", "write_wav"]


def open_engine(name: str, sample_rate_hz: int, voice: str = "", speaking_rate_wpm: int = 160,
                piper_python: str = "", piper_voice_model: str = "") -> SpeechSynthesizer:
    """Engine ``name`` ("espeak" or "piper"); heavy imports happen here. ``TTSUnavailable`` when not installed."""
    if name == "espeak":
        from edge_avatar.speech.espeak import EspeakTTS  # noqa: PLC0415

        return EspeakTTS(sample_rate_hz, voice or ESPEAK_FALLBACK_VOICE, speaking_rate_wpm)
    if name == "piper":
        from edge_avatar.speech.piper import PiperTTS  # noqa: PLC0415

        return PiperTTS(sample_rate_hz, speaking_rate_wpm, python=piper_python,
                        voice_model=piper_voice_model or (voice if voice.endswith(".onnx") else ""))
    raise ValueError(f"unknown TTS engine {name!r}; expected one of: {', '.join(ENGINES)}")


def open_tts(persona: Persona, sample_rate_hz: int, config: DialogueConfig | None = None) -> SpeechSynthesizer:
    """The persona's voice (engine, voice, rate), at the speaker's rate; espeak-ng if Piper is missing and allowed."""
    from edge_avatar.dialogue.options import DialogueConfig  # noqa: PLC0415

    config = config or DialogueConfig()
    engine = persona.tts_engine if config.tts_engine == "persona" else config.tts_engine
    voice = persona.voice if engine == persona.tts_engine else ""
    try:
        return open_engine(engine, sample_rate_hz, voice, persona.speaking_rate_wpm, config.piper_python,
                           config.piper_voice_model)
    except TTSError as exc:
        if engine == "espeak" or not config.tts_fallback_to_espeak:
            raise
        log.warning("TTS: %s; speaking with espeak-ng instead (dialogue.tts_fallback_to_espeak)", exc)
        return open_engine("espeak", sample_rate_hz, ESPEAK_FALLBACK_VOICE, persona.speaking_rate_wpm)


@dataclass(frozen=True)
class QueuedSegment:
    """A segment queued on the speaker: its timeline now sits on the media clock."""

    segment: SpeechSegment
    first_sample: int          # speaker sample index of its first sample
    first_sample_pts_ns: int   # the same on the media clock


def speak_streaming(tts: SpeechSynthesizer, text: str, speaker: AudioOutput,
                    on_segment: Callable[[QueuedSegment], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    write_timeout_s: float = 30.0) -> list[QueuedSegment]:
    """Synthesise sentence by sentence, queueing each on the speaker as soon as it exists.

    The first sentence starts playing while the next is synthesised. ``on_segment`` gets each queued segment
    (e.g. to hand the phoneme timeline to the planner); ``should_stop`` is checked between sentences (barge-in).
    """
    from edge_avatar.frames import samples_to_ns  # noqa: PLC0415

    queued: list[QueuedSegment] = []
    for segment in tts.stream(text):
        if should_stop is not None and should_stop():
            break
        first = speaker.write(segment.audio, timeout_s=write_timeout_s)
        item = QueuedSegment(segment, first, samples_to_ns(first, speaker.sample_rate_hz))
        queued.append(item)
        if on_segment is not None:
            on_segment(item)
    return queued
