"""Voice activity: webrtcvad as a cheap gate, Silero (ONNX) for the decision, a hysteresis segmenter.

Why this module exists: turn-taking, barge-in and the recognizer all hang on
"is the visitor speaking, and from which sample to which". Two detectors,
each for what it is good at:

- webrtcvad (the GMM VAD from WebRTC, via the ``webrtcvad-wheels`` build
  which installs on current setuptools) costs microseconds per 10 ms frame
  and almost never misses speech, but fires on noise. It is the *gate*: a
  32 ms window with no voiced frame in it (nor in the ``webrtc_gate_hold_ms``
  before it) does not run Silero at all.
- Silero VAD (MIT, shipped as ``silero_vad.onnx`` inside the pinned
  ``silero-vad`` package, run through edge_avatar.backends' ONNX Runtime
  backend, no torch) is the *decision*: a small RNN over 512-sample windows
  with 64 samples of left context, whose (2, 1, 128) state is carried from
  window to window, so the probability reflects the whole stream.

The ``Segmenter`` turns window probabilities into speech segments with
hysteresis (start above ``vad_threshold``, pause below
``vad_release_threshold``, end after ``vad_hangover_ms`` of pause) and
reports each boundary in sample counts; nothing here reads a clock.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_avatar.listening.options import FRAME_SAMPLES, PROCESS_RATE_HZ, ListeningConfig

log = logging.getLogger(__name__)

SILERO_WINDOW_SAMPLES = 512    # 32 ms at 16 kHz: the window the 16 kHz model was trained on
SILERO_CONTEXT_SAMPLES = 64    # the tail of the previous window, prepended to each input
SILERO_STATE_SHAPE = (2, 1, 128)
SILERO_INSTALL_HINT = "pip install --no-deps silero-vad==6.2.3 (the ONNX file needs no torch)"
WEBRTC_INSTALL_HINT = "pip install webrtcvad-wheels"


class VadUnavailable(RuntimeError):
    """A VAD model or package is missing; the message says how to install it."""


def default_silero_model_path() -> Path:
    """``silero_vad/data/silero_vad.onnx`` inside the installed silero-vad package (not imported: it needs torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailable(f"the silero-vad package is not installed; {SILERO_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise VadUnavailable(f"{path} is missing from the silero-vad package; reinstall: {SILERO_INSTALL_HINT}")
    return path


class SileroVad:
    """Silero VAD v5/v6 ONNX, one 512-sample window at a time, state and context carried across calls."""

    def __init__(self, model_path: str | Path | None = None, backend_name: str = "onnxruntime"):
        from edge_avatar.backends import load_backend  # noqa: PLC0415 - imports onnxruntime
        from edge_avatar.config import BackendConfig  # noqa: PLC0415

        self.model_path = Path(model_path) if model_path else default_silero_model_path()
        # One intra-op thread: the model is tiny and the ASR worker needs the cores.
        self._backend = load_backend(backend_name, self.model_path, BackendConfig(intra_op_threads=1))
        self._sr = np.array(PROCESS_RATE_HZ, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros(SILERO_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT_SAMPLES, dtype=np.float32)

    def advance_context(self, window: np.ndarray) -> None:
        """Keep the context in step for a window that was not run (gated off)."""
        self._context = np.asarray(window[-SILERO_CONTEXT_SAMPLES:], dtype=np.float32).copy()

    def probability(self, window: np.ndarray) -> float:
        """Speech probability of one (512,) float32 window; updates the carried state."""
        window = np.asarray(window, dtype=np.float32)
        if window.shape != (SILERO_WINDOW_SAMPLES,):
            raise ValueError(f"Silero needs {SILERO_WINDOW_SAMPLES} samples at 16 kHz, got {window.shape}")
        x = np.concatenate([self._context, window])[None, :]   # (1, 576)
        out = self._backend.run({"input": x, "state": self._state, "sr": self._sr})
        self._state = out["stateN"].astype(np.float32, copy=False)
        self._context = window[-SILERO_CONTEXT_SAMPLES:].copy()
        return float(out["output"].reshape(-1)[0])


class WebRtcGate:
    """webrtcvad on 10 ms frames of 16-bit PCM."""

    def __init__(self, mode: int):
        try:
            import webrtcvad  # noqa: PLC0415 - lazy: optional on machines that only read configs
        except ImportError:
            raise VadUnavailable(f"webrtcvad is not installed; {WEBRTC_INSTALL_HINT}") from None
        self._vad = webrtcvad.Vad(mode)

    def is_voiced(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return bool(self._vad.is_speech(pcm, PROCESS_RATE_HZ))


@dataclass(frozen=True)
class VadWindow:
    """One Silero window's verdict: samples [start, end) of the 16 kHz stream."""

    start_sample: int
    end_sample: int
    probability: float
    ran_model: bool


@dataclass(frozen=True)
class SegmentEvent:
    """A boundary decision of the segmenter.

    kind: "start" (onset, ``sample`` = segment start), "pause" (a pause began; ``sample`` = the end the
    segment would have if the pause lasts), "resume" (speech again before the hangover ran out),
    "end" (``sample`` = segment end; ``discarded`` when too short, ``forced`` when cut at max length).
    """

    kind: str
    segment_id: int
    sample: int
    start_sample: int
    discarded: bool = False
    forced: bool = False


class Segmenter:
    """Hysteresis over window probabilities -> speech segments, all in sample counts."""

    def __init__(self, config: ListeningConfig):
        ms = PROCESS_RATE_HZ // 1000
        self.threshold = config.vad_threshold
        self.release = config.vad_release_threshold
        self.hangover_samples = config.vad_hangover_ms * ms
        self.pad_samples = config.vad_speech_pad_ms * ms
        self.min_speech_samples = config.vad_min_speech_ms * ms
        self.max_segment_samples = config.max_segment_ms * ms
        self.in_speech = False
        self.segment_id = -1
        self.start_sample = 0
        self._pause_start: int | None = None
        self._last_end = 0   # end of the previous segment: the next one may not start before it

    @property
    def pausing(self) -> bool:
        """Inside a segment, the speech has stopped and the hangover is running (it ends unless speech resumes)."""
        return self.in_speech and self._pause_start is not None

    def push(self, window: VadWindow) -> list[SegmentEvent]:
        events: list[SegmentEvent] = []
        p = window.probability
        if not self.in_speech:
            if p >= self.threshold:
                self.in_speech = True
                self.segment_id += 1
                self.start_sample = max(self._last_end, window.start_sample - self.pad_samples, 0)
                self._pause_start = None
                events.append(SegmentEvent("start", self.segment_id, self.start_sample, self.start_sample))
            return events
        if p >= self.threshold:
            if self._pause_start is not None:
                self._pause_start = None
                events.append(SegmentEvent("resume", self.segment_id, window.start_sample, self.start_sample))
        elif p < self.release and self._pause_start is None:
            self._pause_start = window.start_sample
            events.append(SegmentEvent("pause", self.segment_id, self._pause_start + self.pad_samples,
                                       self.start_sample))
        if self._pause_start is not None and window.end_sample - self._pause_start >= self.hangover_samples:
            events.append(self._end(self._pause_start + self.pad_samples, forced=False))
        elif window.end_sample - self.start_sample >= self.max_segment_samples:
            events.append(self._end(window.end_sample, forced=True))
        return events

    def flush(self, stream_end_sample: int) -> list[SegmentEvent]:
        """End an open segment at the end of the stream (a file ran out mid-speech)."""
        if not self.in_speech:
            return []
        end = stream_end_sample if self._pause_start is None else min(stream_end_sample,
                                                                      self._pause_start + self.pad_samples)
        return [self._end(end, forced=False)]

    def _end(self, end_sample: int, forced: bool) -> SegmentEvent:
        self.in_speech = False
        self._pause_start = None
        self._last_end = end_sample
        discarded = end_sample - self.start_sample - 2 * self.pad_samples < self.min_speech_samples
        return SegmentEvent("end", self.segment_id, end_sample, self.start_sample, discarded=discarded,
                            forced=forced)


class VoiceActivityDetector:
    """Per 10 ms frame: the webrtcvad verdict; per 512-sample window: the gated Silero probability.

    Feed frames in order with ``process_frame``; it returns the frame's
    webrtc verdict and the windows completed by this frame (0 or 1).
    """

    def __init__(self, config: ListeningConfig, silero: SileroVad | None = None,
                 webrtc: WebRtcGate | None = None):
        self.config = config
        self.silero = silero or SileroVad(config.silero_model_path or None)
        self.webrtc = webrtc or (WebRtcGate(config.webrtc_mode) if config.webrtc_gate_enabled else None)
        self._hold_frames = max(0, config.webrtc_gate_hold_ms * PROCESS_RATE_HZ // 1000 // FRAME_SAMPLES)
        self._frames_since_voiced = 10**9
        self._gate_open_in_window = False
        self._window = np.zeros(SILERO_WINDOW_SAMPLES, dtype=np.float32)
        self._fill = 0
        self._window_start = 0
        self._next_sample = 0
        self.windows_run = 0
        self.windows_gated = 0
        self.last_probability = 0.0

    def process_frame(self, frame: np.ndarray) -> tuple[bool, list[VadWindow]]:
        voiced = True
        if self.webrtc is not None:
            voiced = self.webrtc.is_voiced(frame)
        self._frames_since_voiced = 0 if voiced else self._frames_since_voiced + 1
        windows: list[VadWindow] = []
        offset = 0
        n = len(frame)
        while offset < n:
            if self._fill == 0:
                self._window_start = self._next_sample + offset
                self._gate_open_in_window = False
            take = min(SILERO_WINDOW_SAMPLES - self._fill, n - offset)
            self._window[self._fill:self._fill + take] = frame[offset:offset + take]
            self._fill += take
            offset += take
            # The gate is open for the window if any frame touching it was voiced or within the hold.
            self._gate_open_in_window |= self._frames_since_voiced <= self._hold_frames
            if self._fill == SILERO_WINDOW_SAMPLES:
                windows.append(self._run_window())
                self._fill = 0
        self._next_sample += n
        return voiced, windows

    def _run_window(self) -> VadWindow:
        start = self._window_start
        if self.webrtc is None or self._gate_open_in_window:
            p = self.silero.probability(self._window)
            self.windows_run += 1
            ran = True
        else:
            self.silero.advance_context(self._window)
            p = 0.0
            self.windows_gated += 1
            ran = False
        self.last_probability = p
        return VadWindow(start, start + SILERO_WINDOW_SAMPLES, p, ran)

    def stats(self) -> dict:
        total = self.windows_run + self.windows_gated
        return {"silero_windows_run": self.windows_run, "silero_windows_gated": self.windows_gated,
                "gated_fraction": round(self.windows_gated / total, 3) if total else 0.0}
