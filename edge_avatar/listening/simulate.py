"""A simulated kiosk in a reception hall, for measuring echo cancellation and VAD with the avatar talking.

Why this module exists: echo return loss enhancement can only be measured
where the echo is known, and double talk only judged where the visitor's
own voice is known. pyroomacoustics (MIT; the image-source method in a
shoebox room, with absorption from Sabine's formula for a target RT60) gives
the two room impulse responses that matter -- the kiosk's speaker to its
microphone, and the visitor's mouth to the microphone -- so each component
of the microphone signal is available separately. It is imported only here,
by tests and benchmarks; the device never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_avatar.listening.options import PROCESS_RATE_HZ


@dataclass(frozen=True)
class KioskRoom:
    """Geometry of the simulated reception hall (metres) and its reverberation time."""

    room_dim_m: tuple[float, float, float] = (7.0, 5.5, 3.0)
    rt60_s: float = 0.35
    speaker_m: tuple[float, float, float] = (3.5, 0.45, 1.25)   # kiosk speaker, below the screen
    mic_m: tuple[float, float, float] = (3.62, 0.45, 1.45)      # kiosk mic, ~23 cm from the speaker
    visitor_m: tuple[float, float, float] = (3.45, 1.30, 1.60)  # a visitor's mouth ~0.85 m in front
    max_order: int | None = None      # None: from Sabine's formula


@dataclass(frozen=True)
class RoomResponses:
    """Impulse responses at ``sample_rate_hz``: speaker -> mic and visitor -> mic, (L,) float64 each."""

    speaker_to_mic: np.ndarray
    visitor_to_mic: np.ndarray
    sample_rate_hz: int
    rt60_s: float

    def tail_energy_db(self, after_ms: float) -> float:
        """Energy of speaker_to_mic after ``after_ms`` (counted from its direct path) relative to the total, dB."""
        h = self.speaker_to_mic
        onset = int(np.argmax(np.abs(h)))
        cut = onset + int(after_ms * self.sample_rate_hz / 1000)
        return float(10 * np.log10((np.sum(h[cut:] ** 2) + 1e-30) / np.sum(h ** 2)))


def kiosk_room_responses(room: KioskRoom | None = None, sample_rate_hz: int = PROCESS_RATE_HZ) -> RoomResponses:
    """Simulate the room once (image-source method) and return both impulse responses."""
    try:
        import pyroomacoustics as pra  # noqa: PLC0415 - test/benchmark-only dependency
    except ImportError:
        raise RuntimeError("room simulation needs pyroomacoustics: pip install pyroomacoustics") from None
    room = room or KioskRoom()
    absorption, max_order = pra.inverse_sabine(room.rt60_s, list(room.room_dim_m))
    shoebox = pra.ShoeBox(list(room.room_dim_m), fs=sample_rate_hz, materials=pra.Material(absorption),
                          max_order=room.max_order if room.max_order is not None else max_order)
    shoebox.add_source(list(room.speaker_m))
    shoebox.add_source(list(room.visitor_m))
    shoebox.add_microphone(list(room.mic_m))
    shoebox.compute_rir()
    return RoomResponses(speaker_to_mic=np.asarray(shoebox.rir[0][0], dtype=np.float64),
                         visitor_to_mic=np.asarray(shoebox.rir[0][1], dtype=np.float64),
                         sample_rate_hz=sample_rate_hz, rt60_s=room.rt60_s)


def convolve(signal: np.ndarray, impulse_response: np.ndarray, length: int | None = None) -> np.ndarray:
    """Linear convolution by FFT, cut to ``length`` (default: len(signal)). float64."""
    n = len(signal) + len(impulse_response) - 1
    nfft = 1 << int(np.ceil(np.log2(max(n, 1))))
    y = np.fft.irfft(np.fft.rfft(signal, nfft) * np.fft.rfft(impulse_response, nfft), nfft)[:n]
    return y[:length if length is not None else len(signal)]


def room_noise(sample_count: int, level_dbfs: float, seed: int) -> np.ndarray:
    """White-ish microphone self-noise plus a low hum-free room floor, RMS at ``level_dbfs``; float64."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(sample_count)
    return noise * 10.0 ** (level_dbfs / 20.0)


@dataclass(frozen=True)
class EchoScene:
    """A kiosk scene: what the speaker plays and each part of what the microphone hears.

    ``played`` is the avatar's speech at the speaker's rate, as written to the
    speaker (it starts at speaker sample 0, master time 0); ``echo``, ``near``
    (the visitor through the room) and ``noise`` are the 16 kHz microphone
    components, aligned so that mic sample ``j`` is master time ``j / 16000``.
    """

    played: np.ndarray
    speaker_rate_hz: int
    echo: np.ndarray
    near: np.ndarray
    noise: np.ndarray

    @property
    def mic(self) -> np.ndarray:
        return (self.echo + self.near + self.noise).astype(np.float32)


def active_level_dbfs(x: np.ndarray, sample_rate_hz: int = PROCESS_RATE_HZ) -> float:
    """RMS level of the 10 ms frames within 40 dB of the loudest one (speech without its pauses), dBFS."""
    frame = sample_rate_hz // 100
    n = len(x) // frame
    if n == 0:
        return -120.0
    power = np.mean(np.asarray(x[:n * frame], dtype=np.float64).reshape(n, frame) ** 2, axis=1)
    active = power[power >= power.max() * 1e-4]
    return float(10 * np.log10(np.mean(active) + 1e-30))


def build_echo_scene(played: np.ndarray, speaker_rate_hz: int, responses: RoomResponses,
                     visitor: np.ndarray | None = None, visitor_start_s: float = 0.0,
                     duration_s: float | None = None, noise_dbfs: float = -70.0, seed: int = 0,
                     echo_level_dbfs: float | None = -24.0, visitor_level_dbfs: float = -28.0) -> EchoScene:
    """Place the avatar's speech (from master time 0) and the visitor's dry speech into the simulated room.

    The echo is scaled so its active level at the mic is ``echo_level_dbfs`` (the speaker's volume, in
    effect: the reference is scaled by the same gain, as the speaker's volume is applied before its taps),
    and the visitor's voice at the mic to ``visitor_level_dbfs``.
    """
    from scipy.signal import resample_poly  # noqa: PLC0415 - the "room" resamples with a different filter than ours

    rate = responses.sample_rate_hz
    played = np.asarray(played, dtype=np.float32)
    n = int(round((duration_s if duration_s is not None else len(played) / speaker_rate_hz) * rate))
    from math import gcd  # noqa: PLC0415

    g = gcd(speaker_rate_hz, rate)
    at_mic_rate = resample_poly(played.astype(np.float64), rate // g, speaker_rate_hz // g)
    source = np.zeros(n)
    source[:min(n, len(at_mic_rate))] = at_mic_rate[:n]
    echo = convolve(source, responses.speaker_to_mic, n)
    if echo_level_dbfs is not None and np.any(echo):
        gain = 10.0 ** ((echo_level_dbfs - active_level_dbfs(echo, rate)) / 20.0)
        echo *= gain
        played = (played * gain).astype(np.float32)
    near = np.zeros(n)
    if visitor is not None:
        dry = np.zeros(n)
        first = int(round(visitor_start_s * rate))
        piece = np.asarray(visitor, dtype=np.float64)[:max(0, n - first)]
        dry[first:first + len(piece)] = piece
        near = convolve(dry, responses.visitor_to_mic, n)
        if np.any(near):
            near *= 10.0 ** ((visitor_level_dbfs - active_level_dbfs(near, rate)) / 20.0)
    return EchoScene(played, speaker_rate_hz, echo, near, room_noise(n, noise_dbfs, seed))


def play_scene(listener, scene: EchoScene, chunk_ms: int = 10, tail_s: float = 0.5) -> list:
    """Run ``listener`` on the scene the way the device does: a virtual speaker on a manual time base
    plays ``scene.played`` and feeds its tap (the echo reference) while the mic chunks arrive with pts
    from their sample counts; returns the tokens."""
    from edge_avatar.clock import ManualTimeBase  # noqa: PLC0415
    from edge_avatar.frames import AudioChunk, samples_to_ns  # noqa: PLC0415
    from edge_avatar.outputs.audio import VirtualAudioOutput  # noqa: PLC0415

    time_base = ManualTimeBase(0)
    speaker = VirtualAudioOutput(time_base, scene.speaker_rate_hz, block_ms=10,
                                 buffer_ms=int(1000 * len(scene.played) / scene.speaker_rate_hz) + 1000, volume=1.0)
    listener.attach_speaker(speaker)
    speaker.write(scene.played)
    speaker.start()
    mic = np.concatenate([scene.mic, np.zeros(int(tail_s * PROCESS_RATE_HZ), dtype=np.float32)])
    chunk = PROCESS_RATE_HZ * chunk_ms // 1000
    tokens = []
    for seq, first in enumerate(range(0, len(mic) - chunk + 1, chunk)):
        end_ns = samples_to_ns(first + chunk, PROCESS_RATE_HZ)
        time_base.sleep_until_ns(end_ns)       # the chunk is complete: the speaker has played up to here
        speaker.position_samples()             # the device pulls its blocks; the taps see them
        tokens += listener.process_chunk(AudioChunk(samples_to_ns(first, PROCESS_RATE_HZ), seq,
                                                    mic[first:first + chunk], PROCESS_RATE_HZ))
    tokens += listener.finish_stream()
    return tokens
