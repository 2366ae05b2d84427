"""Prosody per 10 ms frame: energy (dBFS), pitch (YIN) and speaking rate (syllable nuclei per second).

Why this module exists: the planner mirrors how the visitor speaks (a raised
voice, a fast nervous pace, a rising question) and turn-taking uses a falling
pitch and a dropping energy as end-of-turn cues. These are classic signal
measures that need no model, so they are written here in NumPy:

- energy: RMS of the frame in dBFS (a full-scale square wave is 0 dBFS, a
  full-scale sine -3 dBFS), floored at -120;
- pitch: YIN (de Cheveigne & Kawahara, 2002): the cumulative-mean-normalised
  difference function over a ``pitch_window_ms`` window ending at the frame,
  first dip below the aperiodicity threshold, parabolic refinement; the
  difference function is computed from FFT autocorrelation and running
  energies, so one estimate costs a few FFTs of ~1000 points;
- speaking rate: syllable nuclei as peaks of the smoothed energy envelope
  that stand ``syllable_min_dip_db`` above the dips on both sides, lie within
  ``syllable_floor_db`` of the recent loudest frame and are voiced (the method
  of de Jong & Wempe, 2009, for Praat), counted per second of voiced time over
  ``speaking_rate_window_ms``. Peaks are confirmed with a few frames' delay.
"""

from __future__ import annotations

import collections

import numpy as np

from edge_avatar.listening.options import FRAME_SAMPLES, PROCESS_RATE_HZ, ListeningConfig

ENERGY_FLOOR_DBFS = -120.0


def energy_dbfs(frame: np.ndarray) -> float:
    """RMS level of ``frame`` in dBFS (full-scale square = 0, full-scale sine = -3.01), >= -120."""
    if len(frame) == 0:
        return ENERGY_FLOOR_DBFS
    ms = float(np.mean(np.square(frame, dtype=np.float64)))
    return max(ENERGY_FLOOR_DBFS, 10.0 * np.log10(ms + 1e-30))


class YinPitch:
    """YIN fundamental-frequency estimator over a fixed window."""

    def __init__(self, sample_rate_hz: int, min_hz: float, max_hz: float, window_ms: int, threshold: float):
        self.sample_rate_hz = sample_rate_hz
        self.tau_min = max(2, int(sample_rate_hz / max_hz))
        self.tau_max = int(np.ceil(sample_rate_hz / min_hz))
        self.integration = max(self.tau_max, sample_rate_hz * window_ms // 1000 - self.tau_max)
        self.frame_samples = self.integration + self.tau_max + 1   # samples one estimate needs
        self.threshold = threshold
        self._nfft = 1 << int(np.ceil(np.log2(self.frame_samples + self.integration)))

    def estimate(self, x: np.ndarray) -> tuple[float, float]:
        """(pitch_hz, confidence) of the last ``frame_samples`` of ``x``; (0, 0) when unvoiced."""
        x = np.asarray(x[-self.frame_samples:], dtype=np.float64)
        if len(x) < self.frame_samples:
            return 0.0, 0.0
        x = x - x.mean()
        w, tmax = self.integration, self.tau_max
        # d(tau) = sum_{j<w} (x[j] - x[j+tau])^2 = e0 + e(tau) - 2 r(tau)
        seg = x[:w]
        spec_x = np.fft.rfft(x, self._nfft)
        spec_s = np.fft.rfft(seg, self._nfft)
        r = np.fft.irfft(np.conj(spec_s) * spec_x, self._nfft)[:tmax + 1]   # (tmax+1,) cross-correlation
        sq = np.concatenate([[0.0], np.cumsum(x * x)])
        e = sq[w:w + tmax + 1] - sq[:tmax + 1]                                # energy of x[tau:tau+w]
        d = np.maximum(sq[w] + e - 2.0 * r, 0.0)
        d[0] = 0.0
        if sq[w] <= 1e-10:
            return 0.0, 0.0
        taus = np.arange(1, tmax + 1)
        cmnd = np.ones(tmax + 1)
        cumulative = np.cumsum(d[1:])
        cmnd[1:] = d[1:] * taus / np.maximum(cumulative, 1e-20)
        region = cmnd[self.tau_min:tmax]
        below = np.nonzero(region < self.threshold)[0]
        if len(below) == 0:
            return 0.0, 0.0
        tau = self.tau_min + int(below[0])
        while tau + 1 < tmax and cmnd[tau + 1] < cmnd[tau]:   # walk down to the local minimum
            tau += 1
        a, b, c = cmnd[tau - 1], cmnd[tau], cmnd[tau + 1] if tau + 1 <= tmax else cmnd[tau]
        denom = a - 2.0 * b + c
        shift = 0.5 * (a - c) / denom if abs(denom) > 1e-12 else 0.0
        tau_refined = tau + float(np.clip(shift, -0.5, 0.5))
        return self.sample_rate_hz / tau_refined, float(np.clip(1.0 - b, 0.0, 1.0))


class SyllableRate:
    """Syllable nuclei from the energy envelope, as a rate per second of voiced time."""

    SMOOTH_FRAMES = 3        # ~30 ms moving average of the frame energies (dB)
    MIN_GAP_FRAMES = 8       # two nuclei are at least 80 ms apart (max ~12 syllables/s)
    LOUDEST_DECAY_DB = 0.02  # per frame: the "recent loudest" reference sinks 2 dB/s

    def __init__(self, config: ListeningConfig):
        self.min_dip_db = config.syllable_min_dip_db
        self.floor_db = config.syllable_floor_db
        self.window_frames = config.speaking_rate_window_ms * PROCESS_RATE_HZ // 1000 // FRAME_SAMPLES
        self._raw: collections.deque[float] = collections.deque(maxlen=self.SMOOTH_FRAMES)
        self._env: list[float] = []            # smoothed envelope since the last confirmed nucleus
        self._env_voiced: list[bool] = []
        self._frame = 0
        self._loudest_db = -120.0
        self._candidate: tuple[int, float, bool] | None = None   # (frame, level, voiced)
        self._dip_before = 1e9
        self._last_nucleus = -10**9
        self._nuclei: collections.deque[int] = collections.deque()
        self._voiced_frames: collections.deque[int] = collections.deque()
        self.total_nuclei = 0

    def push(self, level_dbfs: float, voiced: bool) -> float:
        """Add one frame's energy and voicing; returns the current rate in syllables per second of voicing."""
        self._raw.append(level_dbfs)
        env = float(np.mean(self._raw))
        self._loudest_db = max(env, self._loudest_db - self.LOUDEST_DECAY_DB)
        f = self._frame
        self._frame += 1
        if voiced:
            self._voiced_frames.append(f)
        # Track a peak candidate: rising -> remember the maximum; falling min_dip below it -> confirm.
        if self._candidate is None:
            self._dip_before = min(self._dip_before, env)
            if env >= self._dip_before + self.min_dip_db:
                self._candidate = (f, env, voiced)
        else:
            cf, clevel, cvoiced = self._candidate
            if env > clevel:
                self._candidate = (f, env, voiced or (cvoiced and f - cf <= 2))
            elif env <= clevel - self.min_dip_db:
                if (cvoiced and clevel >= self._loudest_db - self.floor_db
                        and cf - self._last_nucleus >= self.MIN_GAP_FRAMES):
                    self._nuclei.append(cf)
                    self._last_nucleus = cf
                    self.total_nuclei += 1
                self._candidate = None
                self._dip_before = env
        horizon = f - self.window_frames
        while self._nuclei and self._nuclei[0] <= horizon:
            self._nuclei.popleft()
        while self._voiced_frames and self._voiced_frames[0] <= horizon:
            self._voiced_frames.popleft()
        voiced_s = len(self._voiced_frames) * FRAME_SAMPLES / PROCESS_RATE_HZ
        return len(self._nuclei) / voiced_s if voiced_s >= 0.3 else 0.0


class ProsodyTracker:
    """Energy, pitch and speaking rate for consecutive 10 ms frames of the (echo-cancelled) mic signal."""

    def __init__(self, config: ListeningConfig):
        self.yin = YinPitch(PROCESS_RATE_HZ, config.pitch_min_hz, config.pitch_max_hz, config.pitch_window_ms,
                            config.pitch_yin_threshold)
        self.rate = SyllableRate(config)
        self._history = np.zeros(self.yin.frame_samples, dtype=np.float32)

    def process_frame(self, frame: np.ndarray, analyse_pitch: bool) -> tuple[float, float, float, float]:
        """(energy_dbfs, pitch_hz, pitch_confidence, speaking_rate_syl_per_s) for this frame.

        ``analyse_pitch`` False (no voice near) skips YIN and reports unvoiced.
        """
        n = len(frame)
        self._history = np.concatenate([self._history[n:], frame]) if n < len(self._history) \
            else np.asarray(frame[-len(self._history):], dtype=np.float32)
        level = energy_dbfs(frame)
        pitch_hz, confidence = self.yin.estimate(self._history) if analyse_pitch else (0.0, 0.0)
        rate = self.rate.push(level, pitch_hz > 0.0)
        return level, pitch_hz, confidence, rate
