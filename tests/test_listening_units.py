"""Listening building blocks without a recognizer: resampling, reference alignment, VAD, prosody, input checks,
metrics and the config section. Fast: no Whisper here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_avatar.config import ConfigError, _build
from edge_avatar.frames import AudioChunk, samples_to_ns
from edge_avatar.listening.metrics import normalize_words, word_error_rate
from edge_avatar.listening.options import ListeningConfig
from edge_avatar.listening.prosody import ProsodyTracker, YinPitch, energy_dbfs
from edge_avatar.listening.resample import ReferenceSignal, StreamResampler, resample
from edge_avatar.listening.token import AUDIO_TOKEN_FIELDS, AUDIO_TOKEN_SIZE, InputStatus
from edge_avatar.listening.vad import (
    SILERO_WINDOW_SAMPLES,
    Segmenter,
    SileroVad,
    VadWindow,
    VoiceActivityDetector,
)

RATE = 16000


def tone(freq_hz: float, seconds: float, rate: int = RATE, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def espeak(text: str, rate_wpm: int = 150, voice: str = "en-us", pitch: int = 50) -> np.ndarray:
    from edge_avatar.listening.bench import espeak_utterance

    return espeak_utterance(text, voice=voice, rate_wpm=rate_wpm)


# --------------------------------------------------------------------------- resampling and the reference


@pytest.mark.parametrize("freq_hz", [200.0, 1000.0, 3000.0, 6000.0])
def test_resampler_keeps_tones_in_the_passband(freq_hz):
    x = tone(freq_hz, 1.0, 22050)
    y = resample(x, 22050, 16000)
    ref = 0.5 * np.sin(2 * np.pi * freq_hz * np.arange(len(y)) / 16000)
    err = y[100:-100] - ref[100:-100]
    assert 10 * np.log10(np.mean(err ** 2) / np.mean(ref[100:-100] ** 2)) < -60.0


def test_resampler_rejects_what_would_alias():
    y = resample(tone(9000.0, 1.0, 22050), 22050, 16000)   # above the new Nyquist (8 kHz)
    assert np.sqrt(np.mean(y[100:-100] ** 2)) < 0.5 * 10 ** (-60 / 20)


def test_streaming_resampler_equals_the_whole_signal_however_chopped():
    x = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    whole = resample(x, 22050, 16000)
    stream = StreamResampler(22050, 16000)
    pieces, rng, i = [], np.random.default_rng(1), 0
    while i < len(x):
        n = int(rng.integers(1, 700))
        pieces.append(stream.process(x[i:i + n]))
        i += n
    pieces.append(stream.flush())
    assert np.array_equal(np.concatenate(pieces), whole)


def test_reference_is_addressed_by_the_master_clock():
    """Blocks tapped at speaker sample positions read back at the mic rate at the same media time."""
    played = np.random.default_rng(2).standard_normal(22050 * 2).astype(np.float32)
    reference = ReferenceSignal(22050, 16000)
    for first in range(0, len(played), 220):       # the speaker's 10 ms blocks (220 samples at 22050 Hz)
        reference(played[first:first + 220], first)
    expected = resample(played, 22050, 16000)
    got = reference.read(8000, 4000)              # master time 0.5 s .. 0.75 s
    assert np.allclose(got, expected[8000:12000], atol=1e-6)
    assert reference.missing_samples == 0
    reference.read(40000, 160)                    # 2.5 s: not played yet -> zeros, counted
    assert reference.missing_samples > 0


def test_reference_fills_a_gap_in_the_taps_with_silence():
    reference = ReferenceSignal(22050, 16000)
    reference(np.ones(2205, np.float32), 0)
    reference(np.ones(2205, np.float32), 22050)    # 0.9 s never played
    assert reference.gaps == 1
    assert np.allclose(reference.read(6400, 800), 0.0, atol=1e-6)   # 0.4 .. 0.45 s


# --------------------------------------------------------------------------- VAD


@pytest.fixture(scope="module")
def silero():
    return SileroVad()


def test_silero_state_is_carried_whatever_the_chunk_size(silero):
    speech = np.concatenate([np.zeros(8000, np.float32), espeak("Where is the pharmacy, please?"),
                             np.zeros(8000, np.float32)])
    n = len(speech) // SILERO_WINDOW_SAMPLES * SILERO_WINDOW_SAMPLES
    silero.reset()
    direct = [silero.probability(speech[i:i + SILERO_WINDOW_SAMPLES]) for i in range(0, n, SILERO_WINDOW_SAMPLES)]
    config = ListeningConfig(webrtc_gate_enabled=False)
    for frame in (160, 480):
        silero.reset()
        vad = VoiceActivityDetector(config, silero=silero)
        probs = []
        for i in range(0, n, frame):
            probs += [w.probability for w in vad.process_frame(speech[i:i + frame])[1]]
        assert np.allclose(probs[:len(direct)], direct, atol=1e-6)
    assert max(direct) > 0.9 and direct[0] < 0.1


def test_webrtc_gate_skips_silero_in_digital_silence(silero):
    silero.reset()
    vad = VoiceActivityDetector(ListeningConfig(), silero=silero)
    silence = np.zeros(RATE * 2, np.float32)
    for i in range(0, len(silence), 160):
        vad.process_frame(silence[i:i + 160])
    assert vad.stats()["gated_fraction"] > 0.8


def _windows(probs, start=0):
    return [VadWindow(start + i * 512, start + (i + 1) * 512, p, True) for i, p in enumerate(probs)]


def test_segmenter_hysteresis_hangover_and_min_length():
    config = ListeningConfig(vad_hangover_ms=96, vad_min_speech_ms=200, vad_speech_pad_ms=0)
    seg = Segmenter(config)
    events = []
    # speech 10 windows, a 1-window dip (no end), 0.4 (between thresholds), then silence
    for w in _windows([0.1, 0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.4, 0.1, 0.1, 0.1, 0.1]):
        events += seg.push(w)
    kinds = [e.kind for e in events]
    assert kinds == ["start", "pause", "resume", "pause", "end"]
    end = events[-1]
    assert end.start_sample == 512 and end.sample == 12 * 512 and not end.discarded
    # a click: one window of speech -> discarded
    for w in _windows([0.95, 0.1, 0.1, 0.1, 0.1], start=20 * 512):
        events += seg.push(w)
    assert events[-1].kind == "end" and events[-1].discarded


def test_segmenter_says_when_the_voice_has_stopped_inside_an_open_segment():
    """Turn-taking measures silence from the pause, not from the end of the hangover."""
    seg = Segmenter(ListeningConfig(vad_hangover_ms=96, vad_min_speech_ms=32, vad_speech_pad_ms=0))
    states = []
    for w in _windows([0.9, 0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1]):
        seg.push(w)
        states.append((seg.in_speech, seg.pausing))
    # 96 ms of hangover = 3 windows: the pause at window 4 ends the segment at window 6.
    assert states == [(True, False), (True, False), (True, True), (True, False), (True, True), (True, True),
                      (False, False), (False, False)]


def test_segmenter_cuts_at_max_segment_length():
    config = ListeningConfig(max_segment_ms=1000, vad_speech_pad_ms=0)
    seg = Segmenter(config)
    events = []
    for w in _windows([0.9] * 40):
        events += seg.push(w)
    ends = [e for e in events if e.kind == "end"]
    assert ends and ends[0].forced and ends[0].sample - ends[0].start_sample >= 16000


# --------------------------------------------------------------------------- prosody


def test_energy_dbfs_of_known_levels():
    assert energy_dbfs(np.full(160, 0.5, np.float32)) == pytest.approx(-6.02, abs=0.01)
    assert energy_dbfs(tone(1000, 0.1, level=10 ** (-20 / 20) * np.sqrt(2))) == pytest.approx(-20.0, abs=0.05)
    assert energy_dbfs(np.zeros(160, np.float32)) == -120.0


@pytest.mark.parametrize("f0_hz", [85.0, 120.0, 210.0, 330.0])
def test_yin_pitch_of_a_harmonic_voice_like_signal(f0_hz):
    t = np.arange(2048) / RATE
    x = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, 8)).astype(np.float32)   # sawtooth-like
    yin = YinPitch(RATE, 60.0, 400.0, 40, 0.2)
    pitch, confidence = yin.estimate(x)
    assert pitch == pytest.approx(f0_hz, rel=0.01)
    assert confidence > 0.8


def test_yin_calls_noise_unvoiced():
    noise = np.random.default_rng(0).standard_normal(2048).astype(np.float32) * 0.1
    assert YinPitch(RATE, 60.0, 400.0, 40, 0.2).estimate(noise) == (0.0, 0.0)


def _prosody_of(x: np.ndarray):
    tracker = ProsodyTracker(ListeningConfig())
    rows = [tracker.process_frame(x[i:i + 160], True) for i in range(0, len(x) - 159, 160)]
    return np.array(rows)   # (frames, 4): energy, pitch, confidence, rate


def test_pitch_follows_the_voice_register():
    low = _prosody_of(espeak("Good morning, I am here for my appointment.", voice="en-us+m3"))
    high = _prosody_of(espeak("Good morning, I am here for my appointment.", voice="en-us+f3"))
    low_med = np.median(low[low[:, 1] > 0, 1])
    high_med = np.median(high[high[:, 1] > 0, 1])
    assert 70.0 < low_med < 180.0
    assert high_med > 1.4 * low_med


def test_speaking_rate_tracks_tempo():
    text = "The cardiology department is on the second floor, next to the lifts, beside the waiting area."
    slow = _prosody_of(espeak(text, rate_wpm=110))
    fast = _prosody_of(espeak(text, rate_wpm=220))
    slow_rate, fast_rate = float(slow[-1, 3]), float(fast[-1, 3])
    # 27 syllables; ~4 syllables per second of voicing is ordinary conversational speech
    assert 1.5 < slow_rate < 7.0
    assert 1.4 < fast_rate / slow_rate < 3.0


# --------------------------------------------------------------------------- input checks


def _listener_without_asr(**overrides):
    from edge_avatar.listening.listener import Listener

    return Listener(ListeningConfig(**overrides), recognizer=None)


def _feed(listener, x, rate=RATE, chunk_ms=10):
    chunk = rate * chunk_ms // 1000
    tokens = []
    for seq, i in enumerate(range(0, len(x) - chunk + 1, chunk)):
        tokens += listener.process_chunk(AudioChunk(samples_to_ns(i, rate), seq, x[i:i + chunk], rate))
    return tokens


def test_a_dead_microphone_is_reported_silent():
    listener = _listener_without_asr(dead_mic_report_ms=1000)
    tokens = _feed(listener, np.zeros(RATE * 2, np.float32))
    assert tokens[50].input_status is InputStatus.OK          # 0.5 s in: not yet
    assert tokens[-1].input_status is InputStatus.SILENT
    assert listener.stats()["input"]["silent_episodes"] == 1
    stuck = _listener_without_asr(dead_mic_report_ms=1000)    # a stuck DC value is just as dead
    assert _feed(stuck, np.full(RATE * 2, 0.3, np.float32))[-1].input_status is InputStatus.SILENT


def test_a_clipping_microphone_is_reported_and_recovers():
    listener = _listener_without_asr()
    loud = np.clip(tone(300, 1.5, level=1.5), -1.0, 1.0)
    quiet = tone(300, 1.5, level=0.1)
    tokens = _feed(listener, np.concatenate([loud, quiet]))
    assert tokens[120].input_status is InputStatus.CLIPPING
    assert tokens[-1].input_status is InputStatus.OK
    assert listener.stats()["input"]["clipping_episodes"] == 1
    assert tokens[-1].to_vector()[AUDIO_TOKEN_FIELDS.index("input_ok")] == 1.0


def test_a_wrong_sample_rate_is_resampled_and_sample_counts_stay_true():
    x = np.concatenate([np.zeros(44100, np.float32), tone(200, 1.0, 44100, 0.3)])
    listener = _listener_without_asr()
    tokens = _feed(listener, x, rate=44100)
    assert listener.resampled_from_hz == 44100
    assert len(tokens) == pytest.approx(200, abs=2)          # 2 s at 10 ms per token
    assert [t.pts_ns for t in tokens[:3]] == [0, 10_000_000, 20_000_000]


def test_a_gap_in_the_mic_stream_is_filled_and_counted():
    listener = _listener_without_asr()
    x = tone(200, 1.0, level=0.1)
    tokens = _feed(listener, x[:8000])
    tokens += listener.process_chunk(AudioChunk(samples_to_ns(12000, RATE), 999, x[12000:12160], RATE))
    assert listener.gaps == 1
    assert tokens[-1].pts_ns == samples_to_ns(12000, RATE)


def test_token_vector_layout():
    tokens = _feed(_listener_without_asr(), tone(150, 0.3, level=0.2))
    vector = tokens[-1].to_vector()
    assert vector.shape == (AUDIO_TOKEN_SIZE,) and vector.dtype == np.float32
    assert vector[AUDIO_TOKEN_FIELDS.index("energy_dbfs")] == pytest.approx(tokens[-1].energy_dbfs)


# --------------------------------------------------------------------------- metrics and config


def test_wer_normalisation_and_counts():
    assert normalize_words("Dr. Patel at 10:30, OK?") == ["doctor", "patel", "at", "ten", "thirty", "okay"]
    r = word_error_rate("it was the best of times", "it was a best of time s")
    assert (r.substitutions, r.deletions, r.insertions) == (2, 0, 1)
    assert r.wer == pytest.approx(3 / 6)


def test_listening_config_ranges_and_cross_field_rules():
    config = _build(ListeningConfig, {"vad_threshold": 0.6, "aec_filter_length_ms": 120}, "listening.", {})
    assert config.vad_threshold == 0.6
    with pytest.raises(ConfigError, match="listening.vad_threshold"):
        _build(ListeningConfig, {"vad_threshold": 1.5}, "listening.", {})
    with pytest.raises(ConfigError, match="vad_release_threshold"):
        _build(ListeningConfig, {"vad_threshold": 0.3, "vad_release_threshold": 0.4}, "listening.", {})
    with pytest.raises(ConfigError, match="asr_recognizer"):
        _build(ListeningConfig, {"asr_recognizer": "cloud"}, "listening.", {})
    for f in dataclasses.fields(ListeningConfig):
        if f.metadata:
            lo, hi, value = f.metadata["min"], f.metadata["max"], f.default
            assert lo <= value <= hi, f.name
    assert ListeningConfig().validate() == []
