"""The speaker: a queue of speech that is always played, silence when empty.

Why this module exists: the speaker's sample position is the master clock
(edge_avatar.clock), so the speaker must never stop. Speech is written into
a bounded sample queue; the device (a PortAudio callback on real hardware, or
the virtual speaker paced by a time base) consumes from it at its rate and
plays silence when it is empty. Every consumed block is passed to *taps*: the
MP4 recorder (so the file holds exactly what was played, in sync) and, later,
the echo canceller's reference signal.

Overflow policy: ``write`` blocks the producer (TTS worker) until there is
room, with a timeout; audio is never dropped silently. ``clear()`` discards
queued speech at once (barge-in) and reports how much was discarded;
``pause()`` holds it (silence plays, the clock runs on) until ``resume()``.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from edge_avatar.clock import TimeBase
from edge_avatar.frames import ns_to_samples

# (samples (N,) float32, position of the first sample) -> None
AudioTap = Callable[[np.ndarray, int], None]


class AudioOutputError(RuntimeError):
    pass


class SampleQueue:
    """A bounded FIFO of float32 samples, safe between one producer and one consumer thread."""

    def __init__(self, capacity_samples: int):
        self._buffer = np.zeros(capacity_samples, dtype=np.float32)
        self._capacity = capacity_samples
        self._read = 0    # total samples ever read
        self._write = 0   # total samples ever written
        self._cond = threading.Condition()

    @property
    def queued_samples(self) -> int:
        with self._cond:
            return self._write - self._read

    def write(self, samples: np.ndarray, timeout_s: float | None = 5.0) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        offset = 0
        with self._cond:
            while offset < len(samples):
                free = self._capacity - (self._write - self._read)
                if free == 0:
                    if not self._cond.wait(timeout_s):
                        raise AudioOutputError(
                            f"speaker queue full for {timeout_s} s ({self._capacity} samples): "
                            "is the audio device consuming?")
                    continue
                n = min(free, len(samples) - offset)
                start = self._write % self._capacity
                first = min(n, self._capacity - start)
                self._buffer[start:start + first] = samples[offset:offset + first]
                self._buffer[:n - first] = samples[offset + first:offset + n]
                self._write += n
                offset += n

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` with queued samples, zero-padding the rest; returns how many were real speech."""
        with self._cond:
            n = min(len(out), self._write - self._read)
            start = self._read % self._capacity
            first = min(n, self._capacity - start)
            out[:first] = self._buffer[start:start + first]
            out[first:n] = self._buffer[:n - first]
            out[n:] = 0.0
            self._read += n
            self._cond.notify_all()
            return n

    def clear(self) -> int:
        with self._cond:
            discarded = self._write - self._read
            self._read = self._write
            self._cond.notify_all()
            return discarded


class AudioOutput:
    """Base class of speakers: queue speech, report the sample position, feed taps."""

    def __init__(self, sample_rate_hz: int, buffer_ms: int, volume: float):
        self.sample_rate_hz = sample_rate_hz
        self.volume = volume
        self._queue = SampleQueue(max(1, sample_rate_hz * buffer_ms // 1000))
        self._taps: list[AudioTap] = []
        self.speech_samples_played = 0
        self.samples_discarded = 0
        self._device_samples = 0  # samples the device has pulled so far (speech + silence)
        self._paused = False

    def add_tap(self, tap: AudioTap) -> None:
        self._taps.append(tap)

    def write(self, samples: np.ndarray, timeout_s: float | None = 5.0) -> int:
        """Queue speech after what is already queued; returns the sample index it will start playing at.

        The index is on the master clock (``samples_to_ns(index, rate)`` is its pts), which is
        how response latency is measured to the first sample the visitor hears.
        """
        start_sample = self._device_samples + self._queue.queued_samples
        self._queue.write(samples, timeout_s)
        return start_sample

    def clear(self) -> int:
        """Discard queued speech (barge-in); returns the number of samples discarded."""
        discarded = self._queue.clear()
        self.samples_discarded += discarded
        return discarded

    def pause(self) -> None:
        """Hold queued speech (play silence) until ``resume()``: a tentative barge-in loses nothing."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def queued_ms(self) -> float:
        return self._queue.queued_samples * 1000.0 / self.sample_rate_hz

    def set_volume(self, volume: float) -> None:
        if not 0.0 <= volume <= 1.0:
            raise ValueError(f"volume {volume} out of range; expected 0.0..1.0")
        self.volume = volume

    def _consume(self, block: np.ndarray, first_sample: int) -> None:
        """Pull the next block from the queue (silence if empty), apply volume, feed the taps."""
        if self._paused:
            block[:] = 0.0
        else:
            self.speech_samples_played += self._queue.read_into(block)
        self._device_samples = first_sample + len(block)
        block *= self.volume
        for tap in self._taps:
            tap(block, first_sample)

    def position_samples(self) -> int:
        raise NotImplementedError

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class VirtualAudioOutput(AudioOutput):
    """A speaker with no sound card: consumes samples as its time base advances.

    Used for file output, tests and benchmarks. Its position is exact (not
    quantised to blocks); the taps receive whole blocks of ``block_ms``.
    """

    def __init__(self, time_base: TimeBase, sample_rate_hz: int = 22050, block_ms: int = 10,
                 buffer_ms: int = 30000, volume: float = 1.0):
        super().__init__(sample_rate_hz, buffer_ms, volume)
        self._time_base = time_base
        self._block_samples = max(1, sample_rate_hz * block_ms // 1000)
        self._origin_ns: int | None = None
        self._consumed = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._origin_ns is None:
                self._origin_ns = self._time_base.monotonic_ns()

    def position_samples(self) -> int:
        with self._lock:
            if self._origin_ns is None:
                return 0
            position = ns_to_samples(self._time_base.monotonic_ns() - self._origin_ns, self.sample_rate_hz)
            # The "device" pulls whole blocks ahead of the position, like a sound card's period.
            while self._consumed <= position:
                block = np.empty(self._block_samples, dtype=np.float32)
                self._consume(block, self._consumed)
                self._consumed += self._block_samples
            return position

    def close(self) -> None:
        self.position_samples()


class SoundDeviceAudioOutput(AudioOutput):
    """A real speaker through PortAudio (python-sounddevice); the callback is the clock."""

    def __init__(self, device: str | int | None, sample_rate_hz: int, block_ms: int, buffer_ms: int,
                 volume: float):
        super().__init__(sample_rate_hz, buffer_ms, volume)
        try:
            import sounddevice  # noqa: PLC0415 - lazy: only real speakers need PortAudio
        except (ImportError, OSError) as exc:
            raise AudioOutputError(
                f"audio output needs python-sounddevice and PortAudio ({exc}); "
                "install with: pip install 'edge-avatar[audio]' and apt-get install libportaudio2, "
                "or use audio_output.uri: virtual://") from None
        self._sd = sounddevice
        self._device = device
        self._block_samples = max(1, sample_rate_hz * block_ms // 1000)
        self._position = 0
        self._lock = threading.Lock()
        self._stream = None
        self.underflows = 0

    def _callback(self, outdata, frames, _time_info, status) -> None:  # PortAudio thread
        if status.output_underflow:
            self.underflows += 1
        block = np.empty(frames, dtype=np.float32)
        with self._lock:
            first = self._position
            self._position += frames
        self._consume(block, first)
        outdata[:, 0] = block

    def start(self) -> None:
        try:
            self._stream = self._sd.OutputStream(
                device=self._device, samplerate=self.sample_rate_hz, channels=1, dtype="float32",
                blocksize=self._block_samples, callback=self._callback)
            self._stream.start()
        except Exception as exc:  # PortAudioError and ValueError for a bad device
            raise AudioOutputError(
                f"cannot open speaker {self._device!r} at {self.sample_rate_hz} Hz: {exc}. "
                f"Available outputs: {self._sd.query_devices()}") from None

    def position_samples(self) -> int:
        with self._lock:
            return self._position

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


def open_audio_output(uri: str, time_base: TimeBase, sample_rate_hz: int, block_ms: int,
                      buffer_ms: int, volume: float) -> AudioOutput:
    """Open the speaker named by ``uri``: ``virtual://``, ``alsa://NAME`` or ``portaudio://INDEX``."""
    scheme, _, rest = uri.partition("://")
    if scheme == "virtual":
        return VirtualAudioOutput(time_base, sample_rate_hz, block_ms, buffer_ms, volume)
    if scheme in ("alsa", "portaudio"):
        device: str | int | None = rest or None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        if device == "default":
            device = None
        return SoundDeviceAudioOutput(device, sample_rate_hz, block_ms, buffer_ms, volume)
    raise AudioOutputError(
        f"audio_output.uri {uri!r}: unknown scheme; expected virtual://, alsa://NAME or portaudio://INDEX")
