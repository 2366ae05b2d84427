"""The kiosk hears itself: the avatar's played voice, through a small room, mixed into the scenario microphone.

Why this module exists: a reception kiosk has an open speaker a hand's width
from its microphone, so every word the avatar says comes back into the
microphone. Echo cancellation, voice activity, barge-in (a visible face with
a closed mouth vetoes it) and ASR must all be tested against that, with the
echo of what the speaker *really* played, at the moment it played it: a
replay of the scripted answers would miss every pause, barge-in and
restart. So the echo is taken from the speaker itself through a tap
(``AudioOutput.add_tap``, which passes each played block with its first
sample's index on the master clock), resampled from the speaker's rate to
the microphone's by the listening package's ``ReferenceSignal`` (the same
index-addressed resampler the echo canceller's reference uses, so the two
agree sample for sample), delayed by ``delay_ms`` and convolved with a short
synthetic room impulse response.

The impulse response is deterministic (seeded): a direct path, then a
diffuse tail of Gaussian noise whose amplitude falls by 60 dB in ``rt60_s``,
starting after a first-reflection gap, with ``direct_to_reverb_db`` between
the two energies; its total energy is ``level_db`` relative to the played
signal. It is cut where the tail is 60 dB down.

Threads: the tap runs on the speaker's thread (a PortAudio callback on a
device) and only copies under ``ReferenceSignal``'s lock; ``render`` runs on
the one thread that reads the microphone and does the arithmetic (an FFT
convolution per chunk, skipped while nothing was played).
"""

from __future__ import annotations

import math

import numpy as np

from edge_avatar.scenario.format import Echo

FIRST_REFLECTION_S = 0.0025   # the tail starts after this gap (enclosure and the nearest wall)
HISTORY_MS = 10_000           # speaker history kept: a microphone reader this far behind loses echo
_LN_1000 = math.log(1000.0)   # 60 dB of amplitude


def room_impulse_response(echo: Echo, sample_rate_hz: int, seed: int) -> np.ndarray:
    """The synthetic speaker-to-microphone impulse response (without the bulk delay): (L,) float64.

    ``sum(h ** 2) == 10 ** (level_db / 10)``: a broadband signal comes back
    ``level_db`` relative to what was played.
    """
    length = max(2, int(round(echo.rt60_s * sample_rate_hz)))
    n = np.arange(length, dtype=np.float64)
    rng = np.random.default_rng([seed, 0xEC40])
    tail = rng.standard_normal(length) * np.exp(-_LN_1000 * n / (echo.rt60_s * sample_rate_hz))
    gap = max(1, int(round(FIRST_REFLECTION_S * sample_rate_hz)))
    tail[:gap] = 0.0
    ramp = min(gap, length - gap)
    tail[gap:gap + ramp] *= np.linspace(0.0, 1.0, ramp, endpoint=False)   # reflections build up, no click
    tail_energy = float(np.sum(tail ** 2))
    direct_to_reverb = 10.0 ** (echo.direct_to_reverb_db / 10.0)
    h = tail * math.sqrt(1.0 / (direct_to_reverb * tail_energy)) if tail_energy > 0 else tail
    h[0] = 1.0
    h *= math.sqrt(10.0 ** (echo.level_db / 10.0) / float(np.sum(h ** 2)))
    return h


class SpeakerEcho:
    """What the microphone hears of the speaker: attach ``tap`` to the speaker, then ``render`` mic samples.

    ``render(first, count)`` gives the echo for microphone samples
    ``[first, first + count)`` where sample ``j`` is at master time
    ``j / mic_rate_hz``: the speaker's output at ``j / mic_rate_hz - delay``
    convolved with the room. Output not yet played reads as silence.
    """

    def __init__(self, echo: Echo, speaker_rate_hz: int, mic_rate_hz: int, seed: int):
        from edge_avatar.listening.resample import ReferenceSignal  # noqa: PLC0415 - numpy only, but not at import

        self.echo = echo
        self.mic_rate_hz = mic_rate_hz
        self.reference = ReferenceSignal(speaker_rate_hz, mic_rate_hz, history_ms=HISTORY_MS)
        self.impulse_response = room_impulse_response(echo, mic_rate_hz, seed)   # (L,)
        self.delay_samples = int(round(echo.delay_ms * mic_rate_hz / 1000.0))
        self._spectra: dict[int, np.ndarray] = {}
        # The played signal at the mic rate, final values only: [_played_first, _played_first + len).
        self._played = np.zeros(0, dtype=np.float32)
        self._played_first = 0
        self.chunks_with_echo = 0
        self._energy = 0.0
        self._energy_samples = 0

    @property
    def tap(self):
        """The callable to give ``AudioOutput.add_tap``: ``tap(block, first_sample)``, cheap, thread-safe."""
        return self.reference

    def render(self, first: int, count: int) -> np.ndarray:
        """(count,) float32 echo for microphone samples ``[first, first + count)`` on the master clock."""
        length = len(self.impulse_response)
        start = first - self.delay_samples - length + 1
        played = self._played_range(start, first + count - self.delay_samples)   # (L + count - 1,)
        if not np.any(played):
            return np.zeros(count, dtype=np.float32)
        size = 1 << (len(played) - 1).bit_length()
        spectrum = self._spectra.get(size)
        if spectrum is None:
            spectrum = self._spectra[size] = np.fft.rfft(self.impulse_response, size)
        full = np.fft.irfft(np.fft.rfft(played, size) * spectrum, size)
        out = full[length - 1:length - 1 + count].astype(np.float32)   # the 'valid' part
        self.chunks_with_echo += 1
        self._energy += float(np.sum(out.astype(np.float64) ** 2))
        self._energy_samples += count
        return out

    def stats(self) -> dict:
        level = (10.0 * math.log10(self._energy / self._energy_samples + 1e-20)
                 if self._energy_samples else None)
        return {"level_db": self.echo.level_db, "delay_ms": self.echo.delay_ms, "rt60_s": self.echo.rt60_s,
                "chunks_with_echo": self.chunks_with_echo,
                "echo_dbfs": None if level is None else round(level, 1)}

    def _played_range(self, start: int, end: int) -> np.ndarray:
        """The speaker's output at the mic rate for samples [start, end): cached once it is final."""
        cached_end = self._played_first + len(self._played)
        if start < self._played_first or start > cached_end:
            self._played, self._played_first, cached_end = np.zeros(0, np.float32), start, start
        self._played = self._played[start - self._played_first:]
        self._played_first = start
        # Values whose every input sample has been played are final; later ones are read as they
        # stand now (unplayed input as silence) and not kept.
        ready = self.reference.table.outputs_ready(self.reference.played_samples)
        final_end = min(end, ready)
        if final_end > cached_end:
            self._played = np.concatenate([self._played, self.reference.read(cached_end, final_end - cached_end)])
            cached_end = final_end
        if cached_end >= end:
            return self._played[:end - start]
        return np.concatenate([self._played, self.reference.read(cached_end, end - cached_end)])
