"""What listening hands the planner and turn-taking: one ``AudioToken`` per 10 ms, plus transcript events.

Why this module exists: the planner needs the visitor's voice as numbers on
the media clock (is someone talking, how sure, how high, how loud, how fast,
is the avatar talking over them), and turn-taking needs transcripts with the
sample extent they cover. Both are small frozen dataclasses; the token also
has a fixed-layout, versioned float vector (``AUDIO_TOKEN_FIELDS``) for the
planner network. Every time in here comes from sample counts on the master
clock (``pts_ns``), never from wall time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

AUDIO_TOKEN_VERSION = 1

# The float vector of an AudioToken, in this order (AUDIO_TOKEN_VERSION 1):
AUDIO_TOKEN_FIELDS: tuple[str, ...] = (
    "voice_active",             # 1.0 inside a speech segment (onset .. offset incl. hangover), else 0.0
    "speech_probability",       # Silero probability of the newest 32 ms window, 0..1 (0 when gated off)
    "webrtc_voiced",            # 1.0 when webrtcvad calls this 10 ms frame voiced
    "pitch_hz",                 # YIN fundamental of the last pitch window, 0.0 when unvoiced
    "pitch_confidence",         # 1 - YIN aperiodicity, 0..1 (0 when unvoiced)
    "energy_dbfs",              # RMS of this frame after echo cancellation, dBFS (full-scale square = 0), >= -120
    "speaking_rate_syl_per_s",  # syllable nuclei per second of voiced time over the rate window
    "far_end_active",           # 1.0 when the avatar's own playback is audible in the reference
    "double_talk",              # 1.0 when the visitor speaks while the avatar plays (barge-in evidence)
    "echo_erle_db",             # running echo return loss enhancement while only the avatar talks
    "input_ok",                 # 0.0 when the microphone is silent (dead) or clipping
)
AUDIO_TOKEN_SIZE = len(AUDIO_TOKEN_FIELDS)


class InputStatus(enum.Enum):
    """What the microphone signal looks like, before any processing."""

    OK = "ok"
    SILENT = "silent"        # digital silence / below the dead-mic floor for dead_mic_report_ms
    CLIPPING = "clipping"    # too many samples at full scale over the last second


@dataclass(frozen=True)
class SpeechSegment:
    """One stretch of visitor speech found by the VAD, in 16 kHz sample counts and media ns."""

    segment_id: int
    start_sample: int   # first sample (onset - pad), index in the 16 kHz listening stream
    end_sample: int     # one past the last sample (offset + pad)
    start_ns: int       # pts of start_sample on the master clock
    end_ns: int
    discarded: bool = False   # shorter than vad_min_speech_ms: no transcript
    forced_cut: bool = False  # cut at max_segment_ms while speech went on

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class TranscriptEvent:
    """A partial (the segment so far) or final (the whole segment) transcript.

    ``decided_ns`` is the media time at which the text became available: the
    injected clock's ``now_ns()`` when the recognizer runs on a worker, else
    the end of the newest audio the listener had heard.
    """

    kind: str                 # "partial" or "final"
    segment_id: int
    text: str
    start_ns: int             # the audio the text covers
    end_ns: int
    decided_ns: int
    recognizer: str
    compute_ms: float         # decode time on the worker (a measurement, not media time)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    rejected: str = ""        # why a decode was judged not speech ("" = accepted)

    @property
    def is_final(self) -> bool:
        return self.kind == "final"

    def to_json(self) -> dict:
        return {"kind": self.kind, "segment_id": self.segment_id, "text": self.text,
                "start_s": round(self.start_ns / 1e9, 3), "end_s": round(self.end_ns / 1e9, 3),
                "decided_s": round(self.decided_ns / 1e9, 3), "recognizer": self.recognizer,
                "compute_ms": round(self.compute_ms, 1), "rejected": self.rejected}


@dataclass(frozen=True)
class AudioToken:
    """The listening state for one 10 ms frame (160 samples at 16 kHz). See ``AUDIO_TOKEN_FIELDS``.

    ``segment_started`` / ``segment_ended`` mark the frames on which the VAD
    decided a boundary (the boundary itself is in the ``SpeechSegment``, which
    lies earlier by the decision lag); ``events`` are the transcript events
    that became available since the previous token; ``partial_text`` is the
    newest partial of the segment in progress ("" outside speech).
    """

    pts_ns: int
    seq: int
    voice_active: bool
    speech_probability: float
    webrtc_voiced: bool
    pitch_hz: float
    pitch_confidence: float
    energy_dbfs: float
    speaking_rate_syl_per_s: float
    far_end_active: bool
    double_talk: bool
    echo_erle_db: float
    input_status: InputStatus
    segment_id: int = -1
    segment_started: SpeechSegment | None = None
    segment_ended: SpeechSegment | None = None
    partial_text: str = ""
    events: tuple[TranscriptEvent, ...] = field(default_factory=tuple)
    # Inside a segment whose speech has stopped, while the VAD's hangover decides whether it resumes:
    # the visitor is silent *now* although the segment is still open. Turn-taking times its silence (and
    # the end of speech it reports) from here, not from the end of the hangover. Not in the vector.
    voice_paused: bool = False

    def to_vector(self) -> np.ndarray:
        """(AUDIO_TOKEN_SIZE,) float32 in AUDIO_TOKEN_FIELDS order."""
        return np.array([
            float(self.voice_active), self.speech_probability, float(self.webrtc_voiced), self.pitch_hz,
            self.pitch_confidence, self.energy_dbfs, self.speaking_rate_syl_per_s, float(self.far_end_active),
            float(self.double_talk), self.echo_erle_db, float(self.input_status is InputStatus.OK),
        ], dtype=np.float32)
