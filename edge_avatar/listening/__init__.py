"""Audio perception: what the avatar hears, per 10 ms, on worker threads.

Why this package exists: the planner and turn-taking need the visitor's
voice as numbers on the media clock and as words, without hearing the
avatar's own voice. One ``Listener`` per microphone does, per 10 ms frame at
16 kHz: input checks (dead or clipping mic, wrong rate -> resampled), echo
cancellation against what the speaker actually played (``aec``, reference
via ``AudioOutput.add_tap``), webrtcvad gate + Silero VAD (``vad``), prosody
(``prosody``), and hands segments to a recognizer (``asr``: faster-whisper
tiny.en from a pinned package, pocketsphinx as the light fallback) on its own
worker (``transcriber``). Out come ``AudioToken``s and ``TranscriptEvent``s
(``token``). Configuration: ``ListeningConfig`` (``options``).

Wiring in a session (see ``build_listening``)::

    listening = build_listening(cfg.listening, clock, speaker, on_token=..., on_event=...)
    ListenerWorker(mic_queue, listening.listener.process_chunk)   # the existing mic consumer
    workers += listening.workers                                   # the transcriber thread

Heavy imports (onnxruntime, faster-whisper, pocketsphinx, webrtcvad) happen
only when a Listener is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from edge_avatar.listening.options import FRAME_SAMPLES, PROCESS_RATE_HZ, ListeningConfig
from edge_avatar.listening.token import (
    AUDIO_TOKEN_FIELDS,
    AUDIO_TOKEN_SIZE,
    AUDIO_TOKEN_VERSION,
    AudioToken,
    InputStatus,
    SpeechSegment,
    TranscriptEvent,
)

if TYPE_CHECKING:
    from edge_avatar.listening.listener import Listener

__all__ = [
    "AUDIO_TOKEN_FIELDS", "AUDIO_TOKEN_SIZE", "AUDIO_TOKEN_VERSION", "AudioToken", "FRAME_SAMPLES", "InputStatus",
    "Listening", "ListeningConfig", "PROCESS_RATE_HZ", "SpeechSegment", "TranscriptEvent", "build_listening",
]


@dataclass
class Listening:
    """What a session needs from this package: the listener (mic consumer) and the threads to start."""

    listener: Listener
    workers: list = field(default_factory=list)


def build_listening(config: ListeningConfig, clock=None, speaker=None, *,
                    on_token: Callable[[AudioToken], None] | None = None,
                    on_event: Callable[[TranscriptEvent], None] | None = None) -> Listening:
    """A listener with its recognizer on a worker thread and, given ``speaker``, the echo reference tapped."""
    import os  # noqa: PLC0415

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from edge_avatar.listening.listener import Listener  # noqa: PLC0415

    listener = Listener(config, threaded_asr=True, clock=clock, on_token=on_token, on_event=on_event)
    if speaker is not None and config.aec_enabled:
        listener.attach_speaker(speaker)
    if listener.recognizer is not None:
        listener.recognizer.warm_up()
    return Listening(listener, listener.workers())
