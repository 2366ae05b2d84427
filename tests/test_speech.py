"""Speech: espeak-ng through its C API (timeline sanity, words, stress), sentence streaming, Piper out of process.

espeak-ng is a hard requirement of the project (Makefile: libespeak-ng1); the
Piper tests run when a Piper venv is found and are skipped, with the reason,
when it is not.
"""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from edge_avatar.clock import ManualTimeBase
from edge_avatar.dialogue import load_persona
from edge_avatar.dialogue.options import DialogueConfig
from edge_avatar.outputs.audio import VirtualAudioOutput
from edge_avatar.speech import (
    PAUSE,
    SpeechSegment,
    TTSUnavailable,
    open_engine,
    open_tts,
    resample,
    speak_streaming,
    split_sentences,
    write_wav,
)
from edge_avatar.speech import piper as piper_module

RATE_HZ = 22050


@pytest.fixture(scope="module")
def espeak():
    return open_engine("espeak", RATE_HZ, "en-us", 160)


def _check_timeline(segment: SpeechSegment) -> None:
    duration_ms = segment.duration_ms
    assert segment.audio.dtype == np.float32 and segment.audio.ndim == 1 and len(segment.audio) > 0
    assert np.abs(segment.audio).max() <= 1.0 and np.abs(segment.audio).max() > 0.05  # real speech, not silence
    previous_end = 0.0
    for p in segment.phonemes:
        assert p.phoneme, segment.phonemes
        assert 0.0 <= p.start_ms <= p.end_ms <= duration_ms + 1e-6, p
        assert p.start_ms >= previous_end - 1e-6, "timeline not monotonic"
        assert p.stress in (0, 1, 2)
        previous_end = p.end_ms
    assert segment.phonemes[-1].end_ms <= duration_ms + 1e-6
    # the timeline covers the speech: it ends within the last 60 ms of audio
    assert segment.phonemes[-1].end_ms >= duration_ms - 60.0
    words_start = [w.start_ms for w in segment.words]
    assert words_start == sorted(words_start)
    for w in segment.words:
        assert 0.0 <= w.start_ms <= w.end_ms <= duration_ms + 1e-6


def test_espeak_bilabials_for_bobs_mum(espeak):
    segment = espeak.synthesize_sentence("Bob's mum.")
    _check_timeline(segment)
    symbols = [p.phoneme for p in segment.phonemes]
    assert symbols.count("b") == 2 and symbols.count("m") == 2, symbols
    lips = [p for p in segment.phonemes if p.lips_closed]
    assert len(lips) == 4 and all(p.end_ms > p.start_ms for p in lips)
    assert [w.word for w in segment.words] == ["Bob's", "mum"]
    # each bilabial falls inside its word
    bob, mum = segment.words
    assert all(bob.start_ms <= p.start_ms < bob.end_ms for p in lips[:2])
    assert all(mum.start_ms <= p.start_ms < mum.end_ms for p in lips[2:])
    # the stressed vowel of each word is marked
    assert [p.stress for p in segment.phonemes if p.stress] == [2, 2]


def test_espeak_timeline_words_and_speed(espeak):
    text = "Radiology is on the first floor, in the west wing."
    segment = espeak.synthesize_sentence(text)
    _check_timeline(segment)
    assert [w.word for w in segment.words] == text.rstrip(".").replace(",", "").split()
    assert segment.phonemes[0].phoneme == PAUSE or segment.phonemes[0].start_ms < 30
    assert 1500 < segment.duration_ms < 5000
    assert segment.alphabet == "espeak" and segment.engine == "espeak"
    # on the media clock: shifted by the first sample's pts, nothing else
    on_clock = segment.on_clock(5_000_000_000)
    assert on_clock[0][1] == 5_000_000_000 + int(segment.phonemes[0].start_ms * 1e6)
    assert json.loads(json.dumps(segment.to_json()))["words"][0][0] == "Radiology"


def test_espeak_speaking_rate_changes_duration():
    slow = open_engine("espeak", RATE_HZ, "en-us", 120).synthesize_sentence("Please take the lifts to floor two.")
    fast = open_engine("espeak", RATE_HZ, "en-us", 240).synthesize_sentence("Please take the lifts to floor two.")
    assert fast.duration_ms < 0.75 * slow.duration_ms


def test_espeak_other_rate_unicode_and_bad_input():
    tts = open_engine("espeak", 16000, "en-us+f3", 155)
    segment = tts.synthesize_sentence("The café's crème brûlée costs £3.50 — délicieux!")
    assert segment.sample_rate_hz == 16000
    _check_timeline(segment)
    assert any("caf" in w.word for w in segment.words)
    empty = tts.synthesize("")
    assert len(empty.audio) == 0 and empty.phonemes == ()
    long = tts.synthesize_sentence("word " * 400)
    _check_timeline(long)
    with pytest.raises(Exception, match="unknown voice"):
        open_engine("espeak", RATE_HZ, "no-such-voice-xx", 160)


def test_sentence_streaming_first_chunk_before_the_rest(espeak):
    text = "The cafeteria is on the ground floor. It serves hot meals and coffee. It is open from 7 am to 7 pm."
    before = espeak.sentences_synthesized
    stream = espeak.stream(text)
    first = next(stream)
    assert first.index == 0 and first.text == "The cafeteria is on the ground floor."
    assert espeak.sentences_synthesized == before + 1  # only the first sentence was made before it was handed over
    rest = list(stream)
    assert [s.index for s in rest] == [1, 2]
    whole = espeak.synthesize(text)
    # (espeak-ng's output length varies by a few ms from call to call: it carries state between messages)
    assert whole.duration_ms == pytest.approx(sum(s.duration_ms for s in [first, *rest]), rel=0.02)
    starts = [p.start_ms for p in whole.phonemes]
    assert starts == sorted(starts)


def test_speak_streaming_queues_each_sentence_on_the_speaker(espeak):
    speaker = VirtualAudioOutput(ManualTimeBase(), RATE_HZ, 10, 30000, 1.0)
    seen = []
    queued = speak_streaming(espeak, "Hello there. Radiology is on floor one. Goodbye.", speaker,
                             on_segment=seen.append)
    assert [q.segment.index for q in queued] == [0, 1, 2] and seen == queued
    assert queued[0].first_sample == 0
    for a, b in zip(queued, queued[1:]):
        assert b.first_sample == a.first_sample + len(a.segment.audio)  # back to back on the clock
    assert queued[1].first_sample_pts_ns == queued[1].first_sample * 1_000_000_000 // RATE_HZ
    stopped = speak_streaming(espeak, "One. Two. Three.", speaker, should_stop=lambda: True)
    assert stopped == []


def test_split_sentences():
    assert split_sentences("Dr. Smith is on floor 2. Open 7 a.m. to 7 p.m. daily! Really? Yes.") == [
        "Dr. Smith is on floor 2.", "Open 7 a.m. to 7 p.m. daily!", "Really?", "Yes."]
    assert split_sentences("It costs £3.50 per hour. OK") == ["It costs £3.50 per hour.", "OK"]
    assert split_sentences("   ") == []
    long = ", ".join(["word word word word"] * 30) + "."
    parts = split_sentences(long, max_words=40)
    assert len(parts) > 1 and all(len(p.split()) <= 40 for p in parts)
    assert " ".join(parts) == long


def test_resample_and_wav(tmp_path):
    tone = np.sin(np.linspace(0, 2 * np.pi * 440, 22050)).astype(np.float32)
    out = resample(tone, 22050, 16000)
    assert len(out) == 16000 and out.dtype == np.float32
    path = write_wav(tmp_path / "x.wav", out, 16000)
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 16000 and wav.getnframes() == 16000


def test_open_tts_uses_the_persona_and_falls_back_when_piper_is_missing(monkeypatch, tmp_path):
    persona = load_persona("examples/hospital-reception/persona.yaml")
    tts = open_tts(persona, RATE_HZ)
    assert tts.name == "espeak" and tts.voice == persona.voice and tts.speaking_rate_wpm == persona.speaking_rate_wpm
    monkeypatch.setattr(piper_module, "DEFAULT_VENVS", ())
    monkeypatch.delenv(piper_module.ENV_VAR, raising=False)
    config = DialogueConfig(tts_engine="piper", piper_python=str(tmp_path / "missing" / "python"))
    with pytest.raises(TTSUnavailable, match="pip install piper-tts==1.8.0"):
        open_engine("piper", RATE_HZ, "", 160, piper_python=config.piper_python)
    fallback = open_tts(persona, RATE_HZ, config)
    assert fallback.name == "espeak"
    with pytest.raises(TTSUnavailable):
        open_tts(persona, RATE_HZ, DialogueConfig(tts_engine="piper", piper_python=config.piper_python,
                                                  tts_fallback_to_espeak=False))


# ---------------------------------------------------------------------------- Piper (when installed)


@pytest.fixture(scope="module")
def piper():
    python, reason = piper_module.find_piper_python()
    if python is None:
        pytest.skip(f"Piper not installed: {reason}")
    tts = open_engine("piper", RATE_HZ, "", 160)
    yield tts
    tts.close()


def test_piper_alignments_timeline_and_words(piper):
    segment = piper.synthesize_sentence("Bob's mum went to radiology.")
    _check_timeline(segment)
    assert segment.alphabet == "ipa" and segment.engine == "piper"
    lips = [p.phoneme for p in segment.phonemes if p.lips_closed]
    assert lips.count("b") == 2 and lips.count("m") == 2, [p.phoneme for p in segment.phonemes]
    assert [w.word for w in segment.words] == ["Bob's", "mum", "went", "to", "radiology"]
    assert any(p.stress == 2 for p in segment.phonemes)
    assert not any(p.phoneme in ("ˈ", "ˌ", "ː", " ") for p in segment.phonemes)


def test_piper_streams_by_sentence_and_survives_bad_text(piper):
    before = piper.sentences_synthesized
    stream = piper.stream("Hello. The pharmacy is on the ground floor.")
    first = next(stream)
    assert first.text == "Hello." and piper.sentences_synthesized == before + 1
    assert len(list(stream)) == 1
    odd = piper.synthesize_sentence("¿Qué? 12:30 — ok!")
    assert len(odd.audio) > 0
