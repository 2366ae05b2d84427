"""Exact-ratio polyphase resampling addressed by absolute sample index, for streams that arrive in pieces.

Why this module exists: the echo canceller needs the speaker's signal
(22050 Hz) at the microphone's rate (16 kHz), sample-aligned by the master
clock, and a microphone at the wrong rate must be converted chunk by chunk
with no seam between chunks. Both are served by one rule: output sample
``j`` is the band-limited value of the input at input position
``j * rate_in / rate_out`` (an exact rational), computed from a windowed-sinc
(Kaiser) polyphase table. Because each output sample depends only on its
index and the input samples around it, any range of output can be computed at
any time from a history buffer: no filter state to keep in step, and the
result does not depend on how the input was chopped. NumPy only (SciPy's
``resample_poly`` works on whole arrays, not on a stream addressed by index).
"""

from __future__ import annotations

import threading
from math import gcd

import numpy as np


class PolyphaseTable:
    """Windowed-sinc interpolation kernels for ``rate_in_hz -> rate_out_hz``.

    ``half_taps`` input samples on each side of the output position are used;
    the low-pass cutoff sits at ``rolloff`` times the lower Nyquist.
    """

    def __init__(self, rate_in_hz: int, rate_out_hz: int, half_taps: int = 24, rolloff: float = 0.94,
                 kaiser_beta: float = 8.0):
        if rate_in_hz <= 0 or rate_out_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in_hz} -> {rate_out_hz}")
        g = gcd(rate_in_hz, rate_out_hz)
        self.rate_in_hz, self.rate_out_hz = rate_in_hz, rate_out_hz
        self.up = rate_out_hz // g     # L: output j sits at input position j * down / up
        self.down = rate_in_hz // g    # M
        self.half_taps = half_taps
        # Cutoff in cycles per input sample: the lower of the two Nyquists, a little inside it.
        cutoff = 0.5 * min(1.0, rate_out_hz / rate_in_hz) * rolloff
        offsets = np.arange(-half_taps + 1, half_taps + 1, dtype=np.float64)       # (2K,) input taps
        phases = np.arange(self.up, dtype=np.float64) / self.up                    # (L,) fractional position
        t = offsets[None, :] - phases[:, None]                                      # (L, 2K) distance in samples
        window = np.i0(kaiser_beta * np.sqrt(np.clip(1.0 - (t / half_taps) ** 2, 0.0, 1.0))) / np.i0(kaiser_beta)
        kernel = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * window
        kernel /= kernel.sum(axis=1, keepdims=True)   # unit DC gain for every phase
        self.kernels = kernel.astype(np.float32)        # (L, 2K)
        self.offsets = offsets.astype(np.int64)

    def input_span(self, out_start: int, out_count: int) -> tuple[int, int]:
        """[first, end) input indices needed for outputs [out_start, out_start + out_count)."""
        first = (out_start * self.down) // self.up - self.half_taps + 1
        last = ((out_start + out_count - 1) * self.down) // self.up + self.half_taps
        return first, last + 1

    def outputs_ready(self, input_end: int) -> int:
        """Outputs [0, n) can be computed once inputs [.., input_end) exist."""
        # need floor(j * down / up) + half_taps < input_end
        limit = input_end - self.half_taps  # floor(j*down/up) <= limit - 1
        if limit <= 0:
            return 0
        return (limit * self.up - 1) // self.down + 1

    def apply(self, x: np.ndarray, x_first: int, out_start: int, out_count: int) -> np.ndarray:
        """Outputs [out_start, out_start + out_count) from ``x`` whose first sample is input index ``x_first``.

        ``x`` must cover ``input_span(out_start, out_count)``.
        """
        j = np.arange(out_start, out_start + out_count, dtype=np.int64)
        pos = j * self.down
        base = pos // self.up                         # (n,) input index at or before the output position
        phase = pos - base * self.up                  # (n,) in [0, up)
        idx = base[:, None] + self.offsets[None, :] - x_first   # (n, 2K)
        return np.einsum("nk,nk->n", x[idx], self.kernels[phase]).astype(np.float32)


def resample(samples: np.ndarray, rate_in_hz: int, rate_out_hz: int) -> np.ndarray:
    """Resample a whole mono signal with the same kernels the streams use. (N,) -> (ceil(N*out/in),)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if rate_in_hz == rate_out_hz or len(x) == 0:
        return x.copy()
    table = PolyphaseTable(rate_in_hz, rate_out_hz)
    n_out = -(-len(x) * table.up // table.down)
    first, end = table.input_span(0, n_out)
    padded = np.zeros(end - first, dtype=np.float32)
    padded[-first:-first + len(x)] = x
    return table.apply(padded, first, 0, n_out)


class StreamResampler:
    """Push input chunks in order, pull every output sample that can already be computed.

    Output lags input by ``half_taps`` input samples (1.1 ms at 22050 Hz).
    ``flush()`` pads with zeros to emit the tail.
    """

    def __init__(self, rate_in_hz: int, rate_out_hz: int):
        self.table = PolyphaseTable(rate_in_hz, rate_out_hz)
        k = self.table.half_taps
        self._buffer = np.zeros(k, dtype=np.float32)   # zeros before input 0
        self._buffer_first = -k
        self._input_end = 0
        self._output_next = 0

    @property
    def output_samples(self) -> int:
        return self._output_next

    def process(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, x])
        self._input_end += len(x)
        return self._emit(self.table.outputs_ready(self._input_end))

    def flush(self) -> np.ndarray:
        total_out = -(-self._input_end * self.table.up // self.table.down)
        self._buffer = np.concatenate([self._buffer, np.zeros(2 * self.table.half_taps + 1, np.float32)])
        return self._emit(total_out)

    def _emit(self, ready: int) -> np.ndarray:
        n = ready - self._output_next
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        out = self.table.apply(self._buffer, self._buffer_first, self._output_next, n)
        self._output_next = ready
        keep_from, _ = self.table.input_span(self._output_next, 1)
        drop = max(0, keep_from - self._buffer_first)
        self._buffer = self._buffer[drop:]
        self._buffer_first += drop
        return out


class ReferenceSignal:
    """The speaker's played samples, tapped at the speaker's rate, read back at the listening rate.

    Install as a tap: ``speaker.add_tap(reference)``; the speaker calls it with
    every block it plays and the block's first sample index on the master
    clock. ``read(j0, n)`` returns samples ``j0 .. j0+n`` at ``rate_out_hz``,
    where sample ``j`` is the sound played at master time ``j / rate_out_hz``.
    Samples never played (before the history, a gap, or not yet played)
    read as zeros and are counted. The tap does nothing but copy under a lock
    (it runs on the sound card's thread).
    """

    def __init__(self, rate_in_hz: int, rate_out_hz: int, history_ms: int = 3000):
        self.table = PolyphaseTable(rate_in_hz, rate_out_hz)
        self.rate_in_hz = rate_in_hz
        self.rate_out_hz = rate_out_hz
        self._capacity = max(4096, rate_in_hz * history_ms // 1000)
        self._ring = np.zeros(self._capacity, dtype=np.float32)
        self._end = 0          # one past the newest input sample written (absolute index)
        self._start = 0        # oldest valid absolute index
        self._lock = threading.Lock()
        self.blocks = 0
        self.gaps = 0
        self.missing_samples = 0   # output samples read before they were played (zeros returned)

    def __call__(self, block: np.ndarray, first_sample: int) -> None:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        n = len(block)
        with self._lock:
            self.blocks += 1
            if first_sample != self._end:
                if self.blocks > 1:
                    self.gaps += 1
                if first_sample > self._end:   # zero-fill a gap (or jump if it is longer than the ring)
                    gap = min(first_sample - self._end, self._capacity)
                    idx = np.arange(first_sample - gap, first_sample) % self._capacity
                    self._ring[idx] = 0.0
                if first_sample < self._start or first_sample - self._end >= self._capacity:
                    self._start = first_sample
                self._end = first_sample
            if n >= self._capacity:
                block, first_sample = block[-self._capacity:], first_sample + n - self._capacity
                n = self._capacity
            start = first_sample % self._capacity
            head = min(n, self._capacity - start)
            self._ring[start:start + head] = block[:head]
            self._ring[:n - head] = block[head:]
            self._end = first_sample + n
            self._start = max(self._start, self._end - self._capacity)

    @property
    def played_samples(self) -> int:
        with self._lock:
            return self._end

    def _read_input(self, first: int, end: int) -> tuple[np.ndarray, int]:
        out = np.zeros(end - first, dtype=np.float32)
        with self._lock:
            lo, hi = max(first, self._start), min(end, self._end)
            if hi > lo:
                idx = np.arange(lo, hi) % self._capacity
                out[lo - first:hi - first] = self._ring[idx]
            missing_after = max(0, end - max(self._end, first))
        return out, missing_after

    def read(self, j0: int, n: int) -> np.ndarray:
        """(n,) float32 reference at the output rate for output samples [j0, j0 + n)."""
        first, end = self.table.input_span(j0, n)
        x, missing_inputs = self._read_input(first, end)
        if missing_inputs > self.table.half_taps:
            self.missing_samples += min(n, missing_inputs * self.table.up // self.table.down)
        return self.table.apply(x, first, j0, n)
