"""Microphones opened by URI: sound cards through PortAudio, WAV files, scenarios.

Why this module exists: the listener must hear a USB array mic in a kiosk, a
WAV file in CI and a scripted visitor in a demo through one interface
(``microphone.uri``)::

    default://          the system's default input
    alsa://NAME         an input whose PortAudio name contains NAME (e.g. alsa://USB, alsa://hw:2,0)
    portaudio://INDEX   a PortAudio device by index (see python -m sounddevice)
    file://x.wav        a 16-bit PCM WAV, mono or stereo, played against the media clock (?loop=1)
    scenario://NAME     a scripted scenario (edge_avatar.scenario)

Why these dependencies: python-sounddevice is a thin, maintained binding to
PortAudio, which speaks ALSA (and PulseAudio/PipeWire through ALSA) on the
Jetson and on any Linux box; its callback API lets capture run on the
driver's thread with no polling. WAV files are read with the standard
library's ``wave`` (no dependency for CI); resampling uses SciPy's polyphase
filter when SciPy is installed, else an anti-aliased linear interpolation in
NumPy.

Every chunk is mono float32 in [-1, 1] at ``sample_rate_hz``, ``chunk_ms``
long, and its pts comes from the sample count (start + first sample index *
1e9 // rate), never from wall time. The capture queue is bounded
(``queue_chunks``); when it overflows the OLDEST chunk is dropped and counted,
never silently.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import wave
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.clock import MediaClock
from edge_avatar.config import MicrophoneConfig
from edge_avatar.frames import AudioChunk, CaptureStatus, samples_to_ns
from edge_avatar.sensors.base import MicrophoneSource, SourceUnavailable
from edge_avatar.sensors.camera import option_flag, split_uri

log = logging.getLogger(__name__)

SUPPORTED_MICROPHONE_URIS = ("default://", "alsa://NAME", "portaudio://INDEX", "file://x.wav[?loop=1]",
                             "scenario://NAME")
AUDIO_INSTALL_HINT = "pip install 'edge-avatar[audio]' and sudo apt-get install libportaudio2"
# A PortAudio stream that died is reopened after this backoff (doubling, capped).
RECONNECT_BACKOFF_INITIAL_S = 0.5
RECONNECT_BACKOFF_MAX_S = 10.0
# How finely a paced read re-checks the media clock while it waits (real seconds).
PACED_WAIT_STEP_S = 0.002


def open_microphone(config: MicrophoneConfig, clock: MediaClock) -> MicrophoneSource:
    """Build the microphone named by ``config.uri``; ``start()`` it to begin capturing.

    Raises ``SourceUnavailable`` for an unknown scheme, a missing dependency,
    a missing or unreadable file, or no such input device.
    """
    uri = config.uri
    scheme, target, _ = split_uri(uri, allowed_options=None)
    if scheme == "scenario":
        # Lazy: the scenario package is written alongside this one and carries its own data.
        from edge_avatar.scenario import load_scenario
        from edge_avatar.scenario.sources import ScenarioMicrophone

        return ScenarioMicrophone(load_scenario(target), clock, config)
    if scheme == "file":
        _, target, options = split_uri(uri, allowed_options=("loop",))
        return WavFileMicrophone(config, clock, target, loop=option_flag(options, "loop", uri))
    if scheme in ("default", "alsa", "portaudio"):
        split_uri(uri)  # no options
        device: str | int | None
        if scheme == "default" or target in ("", "default"):
            device = None
        elif scheme == "portaudio":
            if not target.isdigit():
                raise SourceUnavailable(f"{uri}: expected portaudio://INDEX with a number "
                                        "(list them with: python -m sounddevice)")
            device = int(target)
        else:
            device = target
        return SoundDeviceMicrophone(config, clock, device)
    raise SourceUnavailable(
        f"microphone.uri {uri!r}: unknown scheme {scheme!r}; supported: {', '.join(SUPPORTED_MICROPHONE_URIS)}")


# --------------------------------------------------------------------------- the bounded queue


class ChunkQueue:
    """A bounded FIFO of chunks between the driver's thread and the reader; full -> drop the OLDEST, counted."""

    def __init__(self, capacity_chunks: int, name: str):
        self.capacity_chunks = capacity_chunks
        self.name = name
        self._chunks: collections.deque[AudioChunk] = collections.deque()
        self._cond = threading.Condition()
        self.pushed = 0
        self.dropped = 0

    def push(self, chunk: AudioChunk) -> None:
        with self._cond:
            if len(self._chunks) >= self.capacity_chunks:
                self._chunks.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("%s: reader too slow, dropped the oldest chunk (%d dropped so far)",
                                self.name, self.dropped)
            self._chunks.append(chunk)
            self.pushed += 1
            self._cond.notify()

    def pop(self, timeout_s: float) -> AudioChunk | None:
        with self._cond:
            if not self._chunks and timeout_s > 0:
                self._cond.wait_for(lambda: bool(self._chunks), timeout_s)
            return self._chunks.popleft() if self._chunks else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._chunks)


# --------------------------------------------------------------------------- sound cards


def _asound_cards() -> str:
    cards = Path("/proc/asound/cards")
    if not cards.exists():
        return "/proc/asound/cards does not exist: no ALSA sound driver is loaded on this machine"
    text = cards.read_text(errors="replace").strip()
    if not text or "no soundcards" in text:
        return "/proc/asound/cards shows no card"
    first_lines = "; ".join(line.strip() for line in text.splitlines()[::2][:6])
    return f"/proc/asound/cards lists: {first_lines}"


class SoundDeviceMicrophone(MicrophoneSource):
    """A sound-card input through PortAudio; the driver's callback timestamps chunks by sample count."""

    def __init__(self, config: MicrophoneConfig, clock: MediaClock, device: str | int | None):
        self.uri = config.uri
        self.config = config
        self.clock = clock
        self.sample_rate_hz = config.sample_rate_hz
        self.chunk_samples = config.sample_rate_hz * config.chunk_ms // 1000
        try:
            import sounddevice  # lazy: only live microphones need PortAudio
        except (ImportError, OSError) as exc:
            raise SourceUnavailable(
                f"{self.uri}: python-sounddevice / PortAudio is not available ({exc}); install with: "
                f"{AUDIO_INSTALL_HINT}; or use file://x.wav or scenario://demo") from None
        self._sd = sounddevice
        self.device = self._resolve_device(device)
        self._queue = ChunkQueue(config.queue_chunks, f"microphone {self.uri}")
        self._lock = threading.Lock()
        self._stream: Any = None
        self._closing = False
        self._failed = False
        self._origin_ns: int | None = None
        self._next_sample = 0
        self._seq = 0
        self._backoff_s = RECONNECT_BACKOFF_INITIAL_S
        self._next_retry_s = 0.0
        self.device_overflows = 0
        self.reconnects = 0
        self.clock_skew_ms = 0.0

    def _input_devices(self) -> list[dict]:
        return [dict(d, index=i) for i, d in enumerate(self._sd.query_devices())
                if d.get("max_input_channels", 0) > 0]

    def _resolve_device(self, device: str | int | None) -> int | None:
        inputs = self._input_devices()
        listing = "; ".join(f"{d['index']}: {d['name']}" for d in inputs)
        if not inputs:
            raise SourceUnavailable(
                f"{self.uri}: PortAudio finds no input device (sounddevice.query_devices() lists none with "
                f"input channels); {_asound_cards()}. Plug in a microphone and check `arecord -l`, or use "
                "file://x.wav or scenario://demo.")
        if device is None:
            return None
        if isinstance(device, int):
            if any(d["index"] == device for d in inputs):
                return device
            raise SourceUnavailable(f"{self.uri}: no input device with index {device}; inputs: {listing}")
        exact = [d for d in inputs if d["name"] == device]
        matches = exact or [d for d in inputs if device.lower() in d["name"].lower()]
        if len(matches) == 1:
            return matches[0]["index"]
        if not matches:
            raise SourceUnavailable(f"{self.uri}: no input device whose name contains {device!r}; inputs: "
                                    f"{listing}")
        raise SourceUnavailable(f"{self.uri}: {device!r} matches several inputs ({listing}); use "
                                "portaudio://INDEX")

    # -- MicrophoneSource

    def start(self) -> None:
        self._open_stream()

    def _open_stream(self) -> None:
        sd = self._sd
        try:
            sd.check_input_settings(device=self.device, channels=1, dtype="float32",
                                    samplerate=self.sample_rate_hz)
        except Exception as exc:  # noqa: BLE001 - PortAudioError or ValueError
            raise SourceUnavailable(
                f"{self.uri}: the device refuses mono float32 at {self.sample_rate_hz} Hz ({exc}); use an "
                "ALSA plug device that resamples (alsa://default, alsa://pulse or plughw:...), or set "
                "microphone.sample_rate_hz to a rate the device supports") from None
        stream = sd.InputStream(device=self.device, samplerate=self.sample_rate_hz, channels=1, dtype="float32",
                                blocksize=self.chunk_samples, latency="low", callback=self._callback,
                                finished_callback=self._on_finished)
        with self._lock:
            self._stream = stream
            self._failed = False
        stream.start()

    def _callback(self, indata: np.ndarray, frames: int, _time_info: Any, status: Any) -> None:
        # PortAudio's thread: copy out and push, nothing else.
        if getattr(status, "input_overflow", False):
            self.device_overflows += 1  # the driver lost samples before we saw them
        now_ns = self.clock.now_ns()
        with self._lock:
            if self._origin_ns is None:
                # Sample 0 was captured one block plus the input latency before this callback.
                latency_s = float(getattr(self._stream, "latency", 0.0) or 0.0)
                self._origin_ns = now_ns - samples_to_ns(frames, self.sample_rate_hz) - int(latency_s * 1e9)
            first = self._next_sample
            self._next_sample += frames
            seq = self._seq
            self._seq += 1
            pts_ns = self._origin_ns + samples_to_ns(first, self.sample_rate_hz)
            # Positive: chunks arrive later than their sample count says (the mic's crystal is slow).
            self.clock_skew_ms = (now_ns - (self._origin_ns + samples_to_ns(self._next_sample,
                                                                            self.sample_rate_hz))) / 1e6
        samples = np.array(indata[:, 0], dtype=np.float32)  # (frames,) mono; a copy: PortAudio reuses indata
        self._queue.push(AudioChunk(pts_ns, seq, samples, self.sample_rate_hz))

    def _on_finished(self) -> None:
        with self._lock:
            if not self._closing:
                self._failed = True
                self._next_retry_s = time.monotonic() + self._backoff_s
                log.warning("%s: the input stream stopped (device unplugged?); will reopen", self.uri)

    def read(self, timeout_ms: int) -> tuple[CaptureStatus, AudioChunk | None]:
        chunk = self._queue.pop(timeout_ms / 1000.0)
        if chunk is not None:
            return CaptureStatus.OK, chunk
        with self._lock:
            failed = self._failed
        if failed:
            self._try_reopen()
            return CaptureStatus.ERROR, None
        return CaptureStatus.TIMEOUT, None

    def _try_reopen(self) -> None:
        """Reopen a dead stream once its backoff has passed; never waits (the reader must stay responsive)."""
        now_s = time.monotonic()  # backoff bookkeeping only; media time comes from the clock
        if self._closing or now_s < self._next_retry_s:
            return
        try:
            old = self._stream
            if old is not None:
                old.close(ignore_errors=True)
            self._open_stream()
        except Exception as exc:  # noqa: BLE001 - keep trying with a longer wait
            log.info("%s: reopen failed (next try in %.1f s): %s", self.uri, self._backoff_s, exc)
            self._next_retry_s = now_s + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2.0, RECONNECT_BACKOFF_MAX_S)
            return
        self.reconnects += 1
        self._backoff_s = RECONNECT_BACKOFF_INITIAL_S

    def close(self) -> None:
        with self._lock:
            self._closing = True
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)  # close() also stops; a dead device must not make it raise

    def stats(self) -> dict:
        return {
            "uri": self.uri,
            "chunks_captured": self._queue.pushed,
            "chunks_dropped": self._queue.dropped,
            "queued_chunks": len(self._queue),
            "device_overflows": self.device_overflows,
            "reconnects": self.reconnects,
            "clock_skew_ms": round(self.clock_skew_ms, 3),
        }


# --------------------------------------------------------------------------- WAV files


def resample_audio(samples: np.ndarray, rate_in_hz: int, rate_out_hz: int) -> np.ndarray:
    """Resample mono float32 audio. (N,) -> (ceil(N * out / in),).

    SciPy's polyphase filter (``resample_poly``: upsample by L, FIR low-pass,
    downsample by M) when SciPy is present; otherwise a windowed-sinc low-pass
    (when downsampling) followed by linear interpolation, which keeps tones at
    their frequency and stops content above the new Nyquist from folding back.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in_hz == rate_out_hz or len(samples) == 0:
        return samples
    try:
        from scipy.signal import resample_poly  # optional, better quality
    except ImportError:
        return resample_linear(samples, rate_in_hz, rate_out_hz)
    divisor = gcd(rate_in_hz, rate_out_hz)
    return resample_poly(samples, rate_out_hz // divisor, rate_in_hz // divisor).astype(np.float32)


def lowpass_fir(cutoff_cycles_per_sample: float, taps: int = 101) -> np.ndarray:
    """A Hamming-windowed sinc low-pass with unit DC gain; cutoff in cycles per input sample (< 0.5)."""
    n = np.arange(taps) - (taps - 1) / 2.0
    h = 2.0 * cutoff_cycles_per_sample * np.sinc(2.0 * cutoff_cycles_per_sample * n) * np.hamming(taps)
    return (h / h.sum()).astype(np.float32)


def resample_linear(samples: np.ndarray, rate_in_hz: int, rate_out_hz: int) -> np.ndarray:
    """NumPy-only resampler: anti-alias low-pass at 0.9 of the new Nyquist when downsampling, then interpolate."""
    x = np.asarray(samples, dtype=np.float32)
    if rate_out_hz < rate_in_hz:
        x = np.convolve(x, lowpass_fir(0.45 * rate_out_hz / rate_in_hz), mode="same").astype(np.float32)
    n_out = -(-len(x) * rate_out_hz // rate_in_hz)
    positions = np.arange(n_out, dtype=np.float64) * (rate_in_hz / rate_out_hz)  # in input samples
    return np.interp(positions, np.arange(len(x), dtype=np.float64), x).astype(np.float32)


def read_wav_mono(path: Path, uri: str) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV (mono, or stereo downmixed as (L + R) / 2) -> ((N,) float32 in [-1, 1], rate_hz)."""
    convert = (f"convert it with: ffmpeg -i {path} -ac 1 -ar 16000 -c:a pcm_s16le fixed.wav")
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width_bytes, rate_hz, frames = (wav.getnchannels(), wav.getsampwidth(),
                                                      wav.getframerate(), wav.getnframes())
            if wav.getcomptype() != "NONE":
                raise SourceUnavailable(f"{uri}: {path} is compressed ({wav.getcompname()}); expected 16-bit "
                                        f"PCM; {convert}")
            if width_bytes != 2:
                raise SourceUnavailable(f"{uri}: {path} is {8 * width_bytes}-bit PCM; expected 16-bit PCM; "
                                        f"{convert}")
            if channels not in (1, 2):
                raise SourceUnavailable(f"{uri}: {path} has {channels} channels; expected mono or stereo; "
                                        f"{convert}")
            raw = wav.readframes(frames)
    except wave.Error as exc:
        raise SourceUnavailable(f"{uri}: {path} is not a 16-bit PCM WAV file ({exc}); {convert}") from None
    except EOFError:
        raise SourceUnavailable(f"{uri}: {path} is truncated or empty; {convert}") from None
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels == 2:
        pcm = pcm.reshape(-1, 2).mean(axis=1)  # (N, 2) -> (N,)
    return pcm, rate_hz


class WavFileMicrophone(MicrophoneSource):
    """A WAV file heard as if through a microphone, paced by the media clock.

    The whole file is decoded and resampled at construction (a test clip or
    a recorded visitor: seconds to minutes). Chunk k covers samples
    [k * chunk, (k + 1) * chunk); its pts is start + k * chunk * 1e9 // rate and
    ``read()`` hands it out once the clock has passed its last sample, as a
    real microphone would. The last chunk is zero-padded to full length (VAD
    needs fixed frames); EOS follows it unless ``?loop=1``.
    """

    def __init__(self, config: MicrophoneConfig, clock: MediaClock, path: str, loop: bool = False):
        self.uri = config.uri
        self.config = config
        self.clock = clock
        self.loop = loop
        self.path = Path(path)
        self.sample_rate_hz = config.sample_rate_hz
        self.chunk_samples = config.sample_rate_hz * config.chunk_ms // 1000
        if not path:
            raise SourceUnavailable(f"{self.uri}: no file given; expected file://x.wav")
        if not self.path.is_file():
            raise SourceUnavailable(f"{self.uri}: WAV file {self.path.resolve()} does not exist; fix the path "
                                    "(relative paths are from the working directory)")
        samples, self.file_rate_hz = read_wav_mono(self.path, self.uri)
        self._samples = resample_audio(samples, self.file_rate_hz, self.sample_rate_hz)  # (N,) float32
        if len(self._samples) == 0:
            raise SourceUnavailable(f"{self.uri}: {self.path} holds no audio samples")
        self._origin_ns: int | None = None
        self._next_sample = 0
        self._seq = 0
        self._wake = threading.Event()
        self.chunks_read = 0

    @property
    def duration_s(self) -> float:
        return len(self._samples) / self.sample_rate_hz

    def start(self) -> None:
        if self._origin_ns is None:
            self._origin_ns = self.clock.now_ns()

    def chunk_pts_ns(self, first_sample: int) -> int:
        return self._origin_ns + samples_to_ns(first_sample, self.sample_rate_hz)

    def read(self, timeout_ms: int) -> tuple[CaptureStatus, AudioChunk | None]:
        if self._origin_ns is None:
            raise RuntimeError(f"{self.uri}: read() before start()")
        total = len(self._samples)
        start = self._next_sample
        if not self.loop and start >= total:
            return CaptureStatus.EOS, None
        complete_ns = self.chunk_pts_ns(start + self.chunk_samples)
        # Wait for the clock to pass the chunk's last sample, re-checking it in small real-time steps
        # (the clock may run faster than real time in simulation).
        steps_left = max(0, int(timeout_ms / 1000.0 / PACED_WAIT_STEP_S))
        while True:
            remaining_ns = complete_ns - self.clock.now_ns()
            if remaining_ns <= 0:
                break
            if steps_left <= 0 or self._wake.is_set():
                return CaptureStatus.TIMEOUT, None
            self._wake.wait(min(PACED_WAIT_STEP_S, remaining_ns / 1e9))
            steps_left -= 1
        if self.loop:
            samples = self._samples[(start + np.arange(self.chunk_samples)) % total]
        else:
            samples = np.zeros(self.chunk_samples, dtype=np.float32)
            piece = self._samples[start:start + self.chunk_samples]
            samples[:len(piece)] = piece
        chunk = AudioChunk(self.chunk_pts_ns(start), self._seq, samples, self.sample_rate_hz)
        self._next_sample += self.chunk_samples
        self._seq += 1
        self.chunks_read += 1
        return CaptureStatus.OK, chunk

    def close(self) -> None:
        self._wake.set()

    def stats(self) -> dict:
        return {
            "uri": self.uri,
            "file_rate_hz": self.file_rate_hz,
            "chunks_captured": self.chunks_read,
            "chunks_dropped": 0,  # a file is read on demand: nothing can overflow
            "loops": self._next_sample // len(self._samples),
            "reconnects": 0,
        }
