"""Acoustic echo cancellation: the avatar must not hear itself on open speakers.

Why this module exists: a kiosk's speaker is a hand's width from its
microphone, so without cancellation every word the avatar says comes back as
"visitor speech", triggers barge-in and lands in the transcript. The
reference is exact: the speaker calls a tap with every block it plays and its
sample position on the master clock (``edge_avatar.outputs.audio``), and
``ReferenceSignal`` resamples it to 16 kHz addressed by that clock, so the
reference for mic sample ``j`` is what the speaker played at master time
``j / 16000`` (plus ``aec_reference_delay_ms`` for a sound card's own output
+ input latency, which the sample clock cannot see).

Why our own filter: no maintained wheel of speexdsp or the WebRTC audio
processing module installs from PyPI on aarch64 and Python 3.10-3.13
(``speexdsp`` and ``webrtc-audio-processing`` need headers and a compiler,
and the latter is unmaintained), while the algorithm is a page of NumPy:

- a partitioned-block frequency-domain adaptive filter (PBFDAF, overlap-save,
  block = one 10 ms frame of 160 samples, FFT of 320, ``aec_filter_length_ms``
  / 10 ms partitions, gradient-constrained, step normalised per bin by the
  reference power in that bin over the filter span);
- double-talk handling by *two echo path models* (Ochiai et al., 1977; the
  structure Speex's MDF also uses): a background filter adapts on every
  block; the foreground filter, whose output is used, is overwritten by the
  background only when the background has removed more echo for several
  blocks in a row, and the background is reset from the foreground when it
  has clearly diverged. The visitor's voice is not correlated with the
  reference, so during double talk it makes the background worse, never
  better, and the foreground keeps the echo path it learned; nothing has to
  guess "is this double talk" before the filter has converged;
- an optional residual-echo suppressor: a per-bin gain on the output that
  removes what the linear filter leaves, estimated from the echo estimate
  times the measured leakage; it never cuts deeper than
  ``aec_suppression_floor_db`` and backs off where the output is much louder
  than the expected residual (the visitor talking).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_avatar.listening.options import FRAME_SAMPLES, PROCESS_RATE_HZ, ListeningConfig


@dataclass(frozen=True)
class AecFrameInfo:
    far_end_active: bool      # the reference was above the far-end floor within the filter span
    echo_estimate_dbfs: float # level of the foreground filter's echo estimate in this frame
    erle_db: float            # running enhancement (mic / output) over far-end-active frames
    filter_copied: bool       # the background replaced the foreground on this frame


class EchoCanceller:
    """PBFDAF with foreground/background filters; one 160-sample frame per call."""

    COPY_BETTER_RATIO = 0.85   # background error energy below this fraction of the foreground's ...
    COPY_AFTER_FRAMES = 3      # ... for this many frames in a row: copy background -> foreground
    RESET_WORSE_RATIO = 4.0    # background error energy this many times the foreground's: reset it
    ENERGY_SMOOTHING = 0.7     # per frame, for the error energies the two-path logic compares
    ERLE_SMOOTHING = 0.98      # per far-end frame (~0.5 s) for the reported ERLE

    def __init__(self, config: ListeningConfig):
        n = FRAME_SAMPLES
        self.block = n
        self.partitions = max(1, -(-config.aec_filter_length_ms * PROCESS_RATE_HZ // 1000 // n))
        bins = n + 1
        self.step = config.aec_step_size
        self.far_floor_power = 10.0 ** (config.aec_far_end_floor_dbfs / 10.0)
        self.suppress = config.aec_residual_suppression
        self.suppression_floor = 10.0 ** (config.aec_suppression_floor_db / 20.0)
        self._x_spectra = np.zeros((self.partitions, bins), dtype=np.complex128)   # (P, N+1), newest first
        self._x_power = np.zeros((self.partitions, bins))                          # |X|^2 of the same
        self._w_fore = np.zeros((self.partitions, bins), dtype=np.complex128)
        self._w_back = np.zeros((self.partitions, bins), dtype=np.complex128)
        self._x_prev = np.zeros(n)
        self._far_recent = np.zeros(self.partitions, dtype=bool)
        self._e_fore_energy = 0.0
        self._e_back_energy = 0.0
        self._better_frames = 0
        self._erle_mic = 0.0
        self._erle_out = 0.0
        # residual suppressor: overlap-add STFT (sqrt-Hann, 50 %), 10 ms of extra delay
        self._res_window = np.sqrt(np.hanning(2 * n + 1)[:-1])
        self._res_in = np.zeros(n)
        self._res_echo = np.zeros(n)
        self._res_tail = np.zeros(n)
        self._leak = 1.0
        self.copies = 0
        self.resets = 0
        self.frames = 0

    @property
    def delay_samples(self) -> int:
        """Extra delay the output has relative to the input (the suppressor's overlap-add)."""
        return self.block if self.suppress else 0

    def process(self, mic: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, AecFrameInfo]:
        """Cancel the echo of ``reference`` (both (160,) float32, time-aligned) in ``mic``."""
        n = self.block
        d = np.asarray(mic, dtype=np.float64)
        x = np.asarray(reference, dtype=np.float64)
        self.frames += 1
        x_spec = np.fft.rfft(np.concatenate([self._x_prev, x]))    # (N+1,) overlap-save input
        self._x_prev = x
        self._x_spectra[1:] = self._x_spectra[:-1]
        self._x_spectra[0] = x_spec
        self._x_power[1:] = self._x_power[:-1]
        self._x_power[0] = x_spec.real ** 2 + x_spec.imag ** 2
        self._far_recent[1:] = self._far_recent[:-1]
        self._far_recent[0] = float(np.mean(x * x)) > self.far_floor_power
        far_active = bool(self._far_recent.any())

        y_fore = np.fft.irfft(np.einsum("pk,pk->k", self._x_spectra, self._w_fore), 2 * n)[n:]
        y_back = np.fft.irfft(np.einsum("pk,pk->k", self._x_spectra, self._w_back), 2 * n)[n:]
        e_fore = d - y_fore
        e_back = d - y_back
        copied = False
        if far_active:
            self._adapt(e_back)
            ef, eb = float(e_fore @ e_fore), float(e_back @ e_back)
            a = self.ENERGY_SMOOTHING
            self._e_fore_energy = a * self._e_fore_energy + (1 - a) * ef
            self._e_back_energy = a * self._e_back_energy + (1 - a) * eb
            if eb < ef and self._e_back_energy < self.COPY_BETTER_RATIO * self._e_fore_energy:
                self._better_frames += 1
            else:
                self._better_frames = 0
            if self._better_frames >= self.COPY_AFTER_FRAMES:
                self._w_fore[:] = self._w_back
                self._e_fore_energy = self._e_back_energy
                self._better_frames = 0
                self.copies += 1
                copied = True
            elif self._e_back_energy > self.RESET_WORSE_RATIO * self._e_fore_energy + 1e-12:
                self._w_back[:] = self._w_fore
                self._e_back_energy = self._e_fore_energy
                self.resets += 1
            b = self.ERLE_SMOOTHING
            self._erle_mic = b * self._erle_mic + (1 - b) * float(d @ d)
            self._erle_out = b * self._erle_out + (1 - b) * ef
            echo_power = float(y_fore @ y_fore)
            if echo_power > 1e-12:  # leakage: what is left of the echo after the linear filter
                self._leak = float(np.clip(0.98 * self._leak + 0.02 * min(ef / echo_power, 1.0), 1e-4, 1.0))
        erle_db = 10.0 * np.log10((self._erle_mic + 1e-20) / (self._erle_out + 1e-20)) if self._erle_out else 0.0
        out = self._suppress_residual(e_fore, y_fore, far_active) if self.suppress else e_fore
        echo_db = 10.0 * np.log10(float(np.mean(y_fore * y_fore)) + 1e-12)
        return out.astype(np.float32), AecFrameInfo(far_active, max(-120.0, echo_db), float(erle_db), copied)

    def _adapt(self, e_back: np.ndarray) -> None:
        n = self.block
        e_spec = np.fft.rfft(np.concatenate([np.zeros(n), e_back]))   # (N+1,)
        power = self._x_power.sum(axis=0)                               # (N+1,) reference power over the span
        regular = 1e-2 * float(power.mean()) + 1e-10
        gradient = np.conj(self._x_spectra) * (e_spec / (power + regular))[None, :]   # (P, N+1)
        g = np.fft.irfft(gradient, 2 * n, axis=1)
        g[:, n:] = 0.0                                                  # gradient constraint: linear, not circular
        self._w_back += self.step * np.fft.rfft(g, axis=1)

    def _suppress_residual(self, e: np.ndarray, y: np.ndarray, far_active: bool) -> np.ndarray:
        n = self.block
        frame_e = np.concatenate([self._res_in, e]) * self._res_window
        frame_y = np.concatenate([self._res_echo, y]) * self._res_window
        self._res_in, self._res_echo = e, y
        spec_e = np.fft.rfft(frame_e)
        if far_active:
            spec_y = np.fft.rfft(frame_y)
            residual = self._leak * (spec_y.real ** 2 + spec_y.imag ** 2)       # expected residual echo power
            error = spec_e.real ** 2 + spec_e.imag ** 2
            gain = np.clip(1.0 - 2.0 * residual / (error + 1e-20), self.suppression_floor, 1.0)
            spec_e = spec_e * gain
        out_frame = np.fft.irfft(spec_e, 2 * n) * self._res_window
        out = self._res_tail + out_frame[:n]
        self._res_tail = out_frame[n:]
        return out

    def stats(self) -> dict:
        erle = 10.0 * np.log10((self._erle_mic + 1e-20) / (self._erle_out + 1e-20)) if self._erle_out else 0.0
        return {"partitions": self.partitions, "frames": self.frames, "filter_copies": self.copies,
                "background_resets": self.resets, "erle_db": round(float(erle), 2),
                "leak": round(self._leak, 5)}
