"""The microphone track of a scenario: speech placed on a timeline over room noise.

Why this module exists: turn-taking, barge-in and ASR tests need speech
whose every word and boundary is known. Each utterance is either
synthesized by the ``espeak-ng`` command line (deterministic, ~ms per
sentence, in Debian) or cut from a real recording (``wav`` + ``clip_s``);
it is resampled to the track rate, trimmed to its measured speech extent,
normalised to a stated active-speech level and placed so that its first
non-silent 10 ms starts exactly at ``start_s``. Seeded pink-ish room noise at
a stated dBFS lies under everything. The measured extents are the ground
truth (``UtteranceTruth``), with who spoke and whether it was said to the
avatar. From each person's own placed speech the builder also derives how
far their mouth is open every 10 ms (``mouth_openness``), which the frame
renderer uses so that perception sees lips move exactly while that person
talks.

The built track (and the mouth openness) is cached under ``~/.cache/edge-avatar/scenarios/<name>-<hash>/``,
keyed by everything that shapes the sound (the audio part of the YAML, the
recordings' bytes, the espeak-ng install, this module's build version), so a
second load reads one ``.npy`` file and runs nothing.

The resampler is a small windowed-sinc (Kaiser) one in numpy, so the exact
bytes depend on nothing but numpy; the file form's clips are decoded by the
``ffmpeg`` command line, which every format needs anyway.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_avatar.scenario.format import ScenarioError, ScenarioSpec, Utterance

log = logging.getLogger(__name__)

# Bump when anything below changes the produced samples or mouth openness: old caches are then ignored.
AUDIO_BUILD_VERSION = 2
FRAME_S = 0.010          # energy frames for extent and level measurement
MARGIN_S = 0.030         # sound kept either side of the measured speech extent
FADE_S = 0.010           # raised-cosine fade at the ends of each placed utterance
PEAK_LIMIT = 0.89        # normalisation never drives a sample above this
CACHE_KEEP_PER_NAME = 4  # older builds of the same scenario name are pruned
# Mouth openness from a person's speech envelope: a 10 ms frame this far below the utterance's
# loud frames (its 95th percentile) is closed, one at that level is fully open.
MOUTH_FRAME_S = 0.010
MOUTH_RANGE_DB = 30.0
MOUTH_GAMMA = 1.0        # > 1 would open weak syllables less than in proportion
MOUTH_TALKING_DB = 20.0  # frames this close to the loud ones are talking: the lips stay apart ...
MOUTH_TALKING_OPEN = 0.7 # ... at least this far, across gaps shorter than MOUTH_BRIDGE_S
MOUTH_BRIDGE_S = 0.080
MOUTH_SMOOTH_S = 0.020   # the jaw is slow: Gaussian smoothing of the openness (sigma)
MOUTH_LEAD_S = 0.030     # the lips move a little before the sound they shape


class SynthesisError(RuntimeError):
    """espeak-ng or ffmpeg is missing or failed; the message says which and how to fix it."""


@dataclass(frozen=True)
class UtteranceTruth:
    """What the visitor said and when, measured from the audio actually placed in the track."""

    index: int
    start_s: float   # first non-silent 10 ms frame
    end_s: float     # end of the last non-silent 10 ms frame
    text: str
    kind: str        # "say" (espeak-ng), "wav" (real recording) or "file" (given with the clip)
    who: str = "visitor"     # "visitor" or "bystanders[N]"
    addressed: bool = True   # said to the avatar; False: background talk it should not answer

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class AudioTrack:
    """The whole microphone signal of a scenario, mono float32 in [-1, 1]."""

    samples: np.ndarray   # (N,) float32, read-only
    sample_rate_hz: int
    utterances: tuple[UtteranceTruth, ...]
    cache_path: Path | None = None
    from_cache: bool = False
    # who -> (F,) float32 in [0, 1], one value per MOUTH_FRAME_S from t = 0: how far that person's
    # mouth is open (1 = a stressed vowel's full jaw drop). Only people who speak have an entry.
    mouth_open: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-avatar" / "scenarios"


# --------------------------------------------------------------------------- building


def build_audio(spec: ScenarioSpec, cache_dir: str | Path | None = None) -> AudioTrack:
    """The scenario's microphone track at ``spec.audio.sample_rate_hz``, from the cache when possible."""
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = _cache_key(spec)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    entry = cache_root / f"{spec.name}-{digest}"
    cached = _read_cache(entry, spec.audio.sample_rate_hz)
    if cached is not None:
        log.debug("scenario %s: audio from cache %s", spec.name, entry)
        return cached
    mouth_open: dict[str, np.ndarray] = {}
    if spec.file is not None:
        samples, utterances = _build_file_audio(spec)
    else:
        samples, utterances, mouth_open = _build_synthetic_audio(spec)
    samples = samples.astype(np.float32)
    samples.setflags(write=False)
    for series in mouth_open.values():
        series.setflags(write=False)
    _write_cache(entry, samples, spec.audio.sample_rate_hz, utterances, mouth_open, key)
    log.info("scenario %s: built %.1f s of audio with %d utterances (cached in %s)", spec.name,
             len(samples) / spec.audio.sample_rate_hz, len(utterances), entry)
    return AudioTrack(samples=samples, sample_rate_hz=spec.audio.sample_rate_hz, utterances=utterances,
                      cache_path=entry, from_cache=False, mouth_open=mouth_open)


def _build_synthetic_audio(spec: ScenarioSpec) -> tuple[np.ndarray, tuple[UtteranceTruth, ...],
                                                        dict[str, np.ndarray]]:
    rate = spec.audio.sample_rate_hz
    assert spec.duration_s is not None
    total = int(round(spec.duration_s * rate))
    track = room_noise(total, rate, spec.audio.room_noise_dbfs, spec.seed)
    frame = int(round(MOUTH_FRAME_S * rate))
    frames = -(-total // frame)
    mouth_open: dict[str, np.ndarray] = {}
    truths: list[UtteranceTruth] = []
    prev_end_sample = -1
    for i, utt in enumerate(spec.speech):
        path = f"speech[{i}]"
        raw, raw_rate = _utterance_source(spec, utt, path)
        x = resample(raw, raw_rate, rate)
        extent = speech_extent(x, rate)
        if extent is None:
            what = f"{utt.wav.ref} {list(utt.clip_s) if utt.clip_s else ''}" if utt.wav else repr(utt.say)
            raise ScenarioError(spec.source, path, f"no speech found in {what.strip()} (all below the noise floor)")
        a, b = extent
        level = utt.level_dbfs if utt.level_dbfs is not None else spec.audio.speech_level_dbfs
        gain = _normalising_gain(x[a:b], rate, level)
        seg_a, seg_b = max(0, a - int(MARGIN_S * rate)), min(len(x), b + int(MARGIN_S * rate))
        segment = x[seg_a:seg_b] * gain
        _fade(segment, int(FADE_S * rate))
        onset = int(round(utt.start_s * rate))
        end_sample = onset + (b - a)
        if onset < prev_end_sample:
            raise ScenarioError(spec.source, f"{path}.start_s",
                                f"got {utt.start_s}; overlaps speech[{i - 1}], whose speech lasts until "
                                f"{prev_end_sample / rate:.2f} s (measured from its audio); start it later")
        if end_sample > total:
            raise ScenarioError(spec.source, f"{path}.start_s",
                                f"got {utt.start_s}; the utterance lasts {(b - a) / rate:.2f} s and would end "
                                f"after duration_s ({spec.duration_s})")
        place = onset - (a - seg_a)
        lo = max(0, place)
        hi = min(total, place + len(segment))
        track[lo:hi] += segment[lo - place:hi - place]
        truths.append(UtteranceTruth(index=i, start_s=onset / rate, end_s=end_sample / rate, text=utt.text,
                                     kind=utt.kind, who=utt.who, addressed=utt.addressed))
        prev_end_sample = end_sample
        # This person's own voice (no noise, nobody else), on the track's 10 ms grid.
        own = np.zeros(total)
        own[lo:hi] = segment[lo - place:hi - place]
        openness = mouth_openness(own, rate, onset, end_sample)
        series = mouth_open.setdefault(utt.who, np.zeros(frames, dtype=np.float32))
        np.maximum(series, openness[:frames], out=series)
    return np.clip(track, -1.0, 1.0), tuple(truths), mouth_open


def mouth_openness(voice: np.ndarray, sample_rate_hz: int, start_sample: int, end_sample: int) -> np.ndarray:
    """How far a speaker's mouth is open in each 10 ms frame of ``voice`` (their own speech only): (F,) float32.

    Loudness follows the syllables (the jaw opens wider on loud vowels), so
    the openness is the frame level against the utterance's loud frames:
    ``MOUTH_RANGE_DB`` below them is closed, at them fully open. In connected
    speech the lips stay apart between syllables, so while the person is
    talking (within ``MOUTH_TALKING_DB`` of the loud frames, bridging gaps
    under ``MOUTH_BRIDGE_S``) the mouth is at least ``MOUTH_TALKING_OPEN``
    open; it closes in real pauses. That is also what a face tracker needs
    to call the mouth open through a whole sentence, not only on its loudest
    vowels. The result is smoothed like a jaw (``MOUTH_SMOOTH_S``), led a
    little ahead of the sound (``MOUTH_LEAD_S``) and forced closed outside
    ``[start_sample, end_sample)`` widened by the smoothing.
    """
    frame = int(round(MOUTH_FRAME_S * sample_rate_hz))
    levels_db = frame_levels_db(voice, sample_rate_hz, MOUTH_FRAME_S)          # (F,)
    first, last = start_sample // frame, -(-end_sample // frame)
    inside = levels_db[first:last]
    if len(inside) == 0:
        return np.zeros(len(levels_db), dtype=np.float32)
    loud_db = float(np.percentile(inside, 95))
    openness = np.clip((levels_db - (loud_db - MOUTH_RANGE_DB)) / MOUTH_RANGE_DB, 0.0, 1.0) ** MOUTH_GAMMA
    talking = levels_db > loud_db - MOUTH_TALKING_DB
    bridge = int(round(MOUTH_BRIDGE_S / MOUTH_FRAME_S))
    talking_idx = np.nonzero(talking)[0]
    for a, b in zip(talking_idx[:-1], talking_idx[1:]):   # close gaps shorter than the bridge
        if 1 < b - a <= bridge:
            talking[a:b] = True
    openness = np.maximum(openness, MOUTH_TALKING_OPEN * talking)
    sigma = MOUTH_SMOOTH_S / MOUTH_FRAME_S
    taps = np.arange(-int(3 * sigma), int(3 * sigma) + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    openness = np.convolve(openness, kernel / kernel.sum(), mode="same")
    lead = int(round(MOUTH_LEAD_S / MOUTH_FRAME_S))
    openness = np.concatenate([openness[lead:], np.zeros(lead)])
    keep = np.zeros(len(openness), dtype=bool)
    keep[max(0, first - lead - len(taps) // 2):last + len(taps) // 2] = True
    return np.where(keep, np.clip(openness, 0.0, 1.0), 0.0).astype(np.float32)


def _build_file_audio(spec: ScenarioSpec) -> tuple[np.ndarray, tuple[UtteranceTruth, ...]]:
    assert spec.file is not None
    media = spec.file.audio or spec.file.video
    key = "file.audio" if spec.file.audio else "file.video"
    try:
        samples = decode_with_ffmpeg(media.path, spec.audio.sample_rate_hz)
    except SynthesisError as exc:
        raise ScenarioError(spec.source, key, str(exc)) from None
    if spec.duration_s is not None:
        total = int(round(spec.duration_s * spec.audio.sample_rate_hz))
        samples = np.pad(samples[:total], (0, max(0, total - len(samples))))
    truths = tuple(UtteranceTruth(index=i, start_s=u.start_s, end_s=float(u.end_s or u.start_s), text=u.text,
                                  kind="file", who=u.who, addressed=u.addressed) for i, u in enumerate(spec.speech))
    return samples, truths


def _utterance_source(spec: ScenarioSpec, utt: Utterance, path: str) -> tuple[np.ndarray, int]:
    if utt.say is not None:
        try:
            return synthesize_espeak(utt.say, voice=utt.voice or spec.audio.voice,
                                     rate_wpm=utt.rate_wpm or spec.audio.rate_wpm,
                                     pitch=utt.pitch if utt.pitch is not None else spec.audio.pitch)
        except SynthesisError as exc:
            raise ScenarioError(spec.source, f"{path}.say", str(exc)) from None
    assert utt.wav is not None
    return read_audio_file(utt.wav.path, utt.clip_s, spec.source, path)


# --------------------------------------------------------------------------- sources of sound


def synthesize_espeak(text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    """Speak ``text`` with the espeak-ng command line; returns (samples float32, sample rate)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthesisError("espeak-ng is not installed; install it with: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory(prefix="edge-avatar-say-") as tmp:
        out = Path(tmp) / "say.wav"
        try:
            proc = subprocess.run([exe, "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-w", str(out),
                                   "--stdin"], input=text.encode("utf-8"), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SynthesisError(f"espeak-ng failed to run: {exc}") from None
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
            raise SynthesisError(f"espeak-ng -v {voice} failed (exit {proc.returncode}): {stderr or 'no audio'}")
        samples, rate = _read_pcm_wav(out, None)
    return samples, rate


def read_audio_file(path: Path, clip_s: tuple[float, float] | None, source: str = "",
                    key_path: str = "") -> tuple[np.ndarray, int]:
    """Mono float32 samples of a recording (optionally only ``clip_s``) and its sample rate."""
    try:
        samples, rate = _read_pcm_wav(path, clip_s)
    except (wave.Error, EOFError):
        # Not a plain PCM WAV (float WAV, FLAC, MP3...): let ffmpeg decode it.
        try:
            samples, rate = decode_with_ffmpeg(path, 48000), 48000
        except SynthesisError as exc:
            raise ScenarioError(source, f"{key_path}.wav", str(exc)) from None
        if clip_s is not None:
            samples = samples[int(clip_s[0] * rate):int(clip_s[1] * rate)]
    except OSError as exc:
        raise ScenarioError(source, f"{key_path}.wav", f"cannot read {path}: {exc}") from None
    if clip_s is not None:
        length_s = _audio_length_s(path, rate, samples, clip_s)
        if clip_s[1] > length_s + 1e-6:
            raise ScenarioError(source, f"{key_path}.clip_s", f"ends at {clip_s[1]} s but {path.name} is only "
                                                             f"{length_s:.2f} s long")
    return samples, rate


def _audio_length_s(path: Path, rate: int, samples: np.ndarray, clip_s: tuple[float, float]) -> float:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, OSError):
        return clip_s[0] + len(samples) / rate


def _read_pcm_wav(path: Path, clip_s: tuple[float, float] | None) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        first, count = 0, w.getnframes()
        if clip_s is not None:
            first = min(count, int(round(clip_s[0] * rate)))
            count = max(0, min(count, int(round(clip_s[1] * rate))) - first)
        w.setpos(first)
        raw = w.readframes(count)
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = (np.where(value >= 1 << 23, value - (1 << 24), value) / float(1 << 23)).astype(np.float32)
    elif width == 4:
        data = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:  # pragma: no cover - wave accepts only 1..4 byte samples
        raise wave.Error(f"unsupported sample width {width}")
    data = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data
    return data.astype(np.float32), rate


def decode_with_ffmpeg(path: Path, sample_rate_hz: int) -> np.ndarray:
    """Decode any audio (or a video's audio track) to mono float32 at ``sample_rate_hz``."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise SynthesisError("ffmpeg is not installed; install it with: apt-get install ffmpeg")
    cmd = [exe, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sample_rate_hz),
           "-f", "f32le", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SynthesisError(f"ffmpeg failed to run on {path}: {exc}") from None
    if proc.returncode != 0:
        raise SynthesisError(f"ffmpeg could not decode {path}: {proc.stderr.decode('utf-8', 'replace').strip()}")
    if not proc.stdout:
        raise SynthesisError(f"{path} has no audio track")
    return np.frombuffer(proc.stdout, "<f4").astype(np.float32)


def room_noise(sample_count: int, sample_rate_hz: int, level_dbfs: float, seed: int) -> np.ndarray:
    """Seeded noise with a gentle 1/f tilt above 100 Hz (a quiet room), RMS = ``level_dbfs``; float64."""
    if sample_count == 0:
        return np.zeros(0)
    rng = np.random.default_rng([seed, 0x5EED_A0D10])
    spectrum = np.fft.rfft(rng.standard_normal(sample_count))
    freqs_hz = np.fft.rfftfreq(sample_count, 1.0 / sample_rate_hz)
    spectrum *= 1.0 / np.sqrt(np.maximum(freqs_hz, 100.0) / 100.0)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, sample_count)
    rms = float(np.sqrt(np.mean(noise**2)))
    return noise * (10.0 ** (level_dbfs / 20.0) / max(rms, 1e-12))


# --------------------------------------------------------------------------- measurement


def frame_levels_db(x: np.ndarray, sample_rate_hz: int, frame_s: float = FRAME_S) -> np.ndarray:
    """Mean-square level of consecutive frames in dBFS (a full-scale sine is -3 dB): (F,) float64."""
    frame = max(1, int(round(frame_s * sample_rate_hz)))
    count = -(-len(x) // frame)
    padded = np.zeros(count * frame)
    padded[:len(x)] = x
    power = np.mean(padded.reshape(count, frame) ** 2, axis=1)
    return 10.0 * np.log10(power + 1e-20)


def speech_extent(x: np.ndarray, sample_rate_hz: int) -> tuple[int, int] | None:
    """(first, end) sample of the non-silent part of ``x``, at 10 ms resolution; None if all silent.

    A frame is speech when it is within 40 dB of the loudest frame and at
    least 12 dB above the recording's own noise floor (its 5th-percentile
    frame), so a real recording's hiss is not speech and espeak's digital
    silence is handled the same way.
    """
    if len(x) == 0:
        return None
    db = frame_levels_db(x, sample_rate_hz)
    peak = float(db.max())
    if peak < -90.0:
        return None
    threshold = max(peak - 40.0, float(np.percentile(db, 5)) + 12.0)
    active = np.nonzero(db > threshold)[0]
    if len(active) == 0:  # pragma: no cover - the loudest frame is always above peak - 40
        return None
    frame = max(1, int(round(FRAME_S * sample_rate_hz)))
    return int(active[0] * frame), int(min(len(x), (active[-1] + 1) * frame))


def _normalising_gain(speech: np.ndarray, sample_rate_hz: int, level_dbfs: float) -> float:
    db = frame_levels_db(speech, sample_rate_hz)
    loud = db[db > db.max() - 30.0]
    active_db = 10.0 * math.log10(float(np.mean(10.0 ** (loud / 10.0))))
    gain = 10.0 ** ((level_dbfs - active_db) / 20.0)
    peak = float(np.max(np.abs(speech))) if len(speech) else 0.0
    if peak * gain > PEAK_LIMIT:
        log.debug("speech gain limited from %.1f dB to keep peaks below %.2f", 20 * math.log10(gain), PEAK_LIMIT)
        gain = PEAK_LIMIT / peak
    return gain


def _fade(segment: np.ndarray, fade_len: int) -> None:
    fade_len = min(fade_len, len(segment) // 2)
    if fade_len <= 0:
        return
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade_len))
    segment[:fade_len] *= ramp
    segment[len(segment) - fade_len:] *= ramp[::-1]


def resample(x: np.ndarray, from_hz: int, to_hz: int, half_taps: int = 24) -> np.ndarray:
    """Band-limited resampling with a Kaiser-windowed sinc; float32 out, length floor(N * to / from).

    Written here (rather than taken from scipy) so the result depends on
    numpy alone and is the same on every machine that runs the tests.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if from_hz == to_hz:
        return x.astype(np.float32)
    g = math.gcd(from_hz, to_hz)
    up, down = to_hz // g, from_hz // g
    n_out = len(x) * up // down
    cutoff = 0.94 * min(1.0, to_hz / from_hz)  # fraction of the input Nyquist frequency
    half_width = half_taps / cutoff             # kernel half-width in input samples
    reach = int(math.ceil(half_width))
    padded = np.concatenate([np.zeros(reach), x, np.zeros(reach + 1)])
    offsets = np.arange(-reach + 1, reach + 1)  # (T,)
    # The kernel depends only on the output sample's phase between input samples, and there
    # are just `up` phases (320 for 22.05 -> 16 kHz, 1 for 48 -> 16 kHz): tabulate them once.
    phases = np.arange(up) / up                                   # (P,) in [0, 1)
    dist = phases[:, None] - offsets[None, :]                     # (P, T) output pos - input pos
    window = np.i0(8.0 * np.sqrt(np.clip(1.0 - (dist / half_width) ** 2, 0.0, 1.0)))
    window[np.abs(dist) >= half_width] = 0.0
    table = np.sinc(cutoff * dist) * window
    table /= table.sum(axis=1, keepdims=True)                     # unity gain at DC for every phase
    out = np.empty(n_out, dtype=np.float32)
    block = max(256, (1 << 20) // len(offsets))
    for start in range(0, n_out, block):
        k = np.arange(start, min(n_out, start + block), dtype=np.int64)
        base = (k * down) // up                                   # (B,) input sample at or before
        phase = (k * down) % up                                   # (B,)
        taps = padded[base[:, None] + offsets[None, :] + reach]   # (B, T)
        out[start:start + len(k)] = np.einsum("bt,bt->b", taps, table[phase])
    return out


# --------------------------------------------------------------------------- cache


_file_digests: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _file_digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _file_digests[memo] = h.hexdigest()
    return _file_digests[memo]


def _espeak_identity() -> str:
    """Which espeak-ng is installed, without running it: its binary and library files' sizes and times."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return "missing"
    parts = []
    for candidate in [Path(exe).resolve(), *sorted(Path("/usr/lib").glob("*/libespeak-ng.so.1*"))]:
        try:
            stat = candidate.stat()
        except OSError:
            continue
        parts.append(f"{candidate}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(parts)


def _cache_key(spec: ScenarioSpec) -> dict:
    speech = []
    for utt in spec.speech:
        item = dataclasses.asdict(utt)
        item["wav"] = _file_digest(utt.wav.path) if utt.wav is not None else None
        if utt.say is not None:  # resolve defaults so that changing audio.voice rebuilds
            item.update(voice=utt.voice or spec.audio.voice, rate_wpm=utt.rate_wpm or spec.audio.rate_wpm,
                        pitch=utt.pitch if utt.pitch is not None else spec.audio.pitch)
        speech.append(item)
    key: dict = {"build": AUDIO_BUILD_VERSION, "format": spec.version, "name": spec.name,
                 "duration_s": spec.duration_s, "seed": spec.seed, "audio": dataclasses.asdict(spec.audio),
                 "speech": speech}
    if any(u.say is not None for u in spec.speech):
        key["espeak"] = _espeak_identity()
    if spec.file is not None:
        media = spec.file.audio or spec.file.video
        key["file"] = _file_digest(media.path)
    return key


def _read_cache(entry: Path, sample_rate_hz: int) -> AudioTrack | None:
    track_path, truth_path, mouth_path = entry / "track.npy", entry / "truth.json", entry / "mouth.npz"
    if not (track_path.is_file() and truth_path.is_file() and mouth_path.is_file()):
        return None
    try:
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        samples = np.load(track_path, allow_pickle=False)
        if samples.dtype != np.float32 or samples.ndim != 1 or truth["sample_rate_hz"] != sample_rate_hz:
            raise ValueError("unexpected contents")
        utterances = tuple(UtteranceTruth(**u) for u in truth["utterances"])
        with np.load(mouth_path, allow_pickle=False) as archive:
            mouth_open = {who: archive[name] for who, name in truth["mouth"].items()}
        if any(m.dtype != np.float32 or m.ndim != 1 for m in mouth_open.values()):
            raise ValueError("unexpected mouth contents")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable scenario cache %s: %s", entry, exc)
        return None
    samples.setflags(write=False)
    for series in mouth_open.values():
        series.setflags(write=False)
    return AudioTrack(samples=samples, sample_rate_hz=sample_rate_hz, utterances=utterances, cache_path=entry,
                      from_cache=True, mouth_open=mouth_open)


def _write_cache(entry: Path, samples: np.ndarray, sample_rate_hz: int, utterances: tuple[UtteranceTruth, ...],
                 mouth_open: dict[str, np.ndarray], key: dict) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    except OSError as exc:
        log.warning("cannot cache scenario audio in %s: %s", entry.parent, exc)
        return
    try:
        np.save(tmp / "track.npy", samples, allow_pickle=False)
        names = {who: f"m{i}" for i, who in enumerate(sorted(mouth_open))}   # npz member names stay plain
        np.savez(tmp / "mouth.npz", **{names[who]: series for who, series in mouth_open.items()})
        truth = {"sample_rate_hz": sample_rate_hz, "utterances": [dataclasses.asdict(u) for u in utterances],
                 "mouth": names, "key": key}
        (tmp / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race, or the disk is full
        return
    _prune(entry)


def _prune(entry: Path) -> None:
    name = entry.name.rsplit("-", 1)[0]
    siblings = [p for p in entry.parent.glob(f"{name}-*") if p.is_dir() and p.name.rsplit("-", 1)[0] == name]
    siblings.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in siblings[CACHE_KEEP_PER_NAME:]:
        if old != entry:
            shutil.rmtree(old, ignore_errors=True)
