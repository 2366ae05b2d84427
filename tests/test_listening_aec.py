"""Echo cancellation in a simulated kiosk room (pyroomacoustics): the avatar must not hear itself,
and must still hear the visitor who talks over it.

The speaker is a real ``VirtualAudioOutput`` whose tap feeds the canceller's
reference with sample positions on the master clock, exactly as on the device;
the room is simulated at 16 kHz and hears the played signal through SciPy's
resampler (not ours), so the reference path has to line up on its own.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from edge_avatar.listening.bench import AVATAR_REPLY, VISITOR_BARGE_IN, espeak_utterance
from edge_avatar.listening.listener import Listener
from edge_avatar.listening.metrics import erle_db, word_error_rate
from edge_avatar.listening.options import ListeningConfig
from edge_avatar.listening.simulate import build_echo_scene, kiosk_room_responses, play_scene

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pyroomacoustics = pytest.importorskip("pyroomacoustics")

CONVERGED_S = 3.0   # ERLE is judged after the filter's first three seconds, as is customary


@pytest.fixture(scope="module")
def room():
    return kiosk_room_responses()


@pytest.fixture(scope="module")
def avatar_speech():
    from edge_avatar.scenario.audio import synthesize_espeak

    # The espeak-ng command line writes 22050 Hz: the speaker's rate.
    return synthesize_espeak(AVATAR_REPLY, voice="en-gb", rate_wpm=165, pitch=50)[0]


@pytest.fixture(scope="module")
def whisper():
    from edge_avatar.listening.asr import WhisperRecognizer

    return WhisperRecognizer(ListeningConfig())


def _run(config, scene, recognizer=None):
    clean = []
    listener = Listener(config, recognizer=recognizer, on_clean_audio=lambda frame, pts: clean.append(frame))
    tokens = play_scene(listener, scene)
    delay = listener.aec.delay_samples if listener.aec is not None else 0
    out = np.concatenate(clean)[delay:delay + len(scene.mic)]
    return listener, tokens, out


def test_room_is_a_plausible_reception_hall(room):
    assert 0.2 < room.rt60_s < 0.8
    assert len(room.speaker_to_mic) > 0.2 * 16000          # a reverberant tail longer than 200 ms


@pytest.mark.parametrize("suppressor", [False, True], ids=["linear", "with_suppressor"])
def test_erle_with_the_avatar_talking_and_the_visitor_silent(room, avatar_speech, suppressor):
    scene = build_echo_scene(avatar_speech, 22050, room, noise_dbfs=-70.0)
    config = ListeningConfig(aec_residual_suppression=suppressor)
    listener, tokens, out = _run(config, scene)
    mic = scene.mic[:len(out)]
    steady = slice(int(CONVERGED_S * 16000), len(out))
    erle = erle_db(mic[steady], out[steady])
    print(f"{'suppressor' if suppressor else 'linear'}: ERLE after {CONVERGED_S:g} s {erle:.1f} dB, "
          f"whole {erle_db(mic, out):.1f} dB, {listener.stats()['aec']}")
    assert erle >= 25.0
    assert listener.reference.missing_samples == 0
    assert any(t.far_end_active for t in tokens)
    if suppressor:
        # no false barge-in: nothing the avatar said is taken for the visitor
        assert [s for s in listener.segments if not s.discarded] == []


def test_without_cancellation_the_avatar_hears_itself(room, avatar_speech):
    scene = build_echo_scene(avatar_speech, 22050, room, noise_dbfs=-70.0)
    listener, _, _ = _run(ListeningConfig(aec_enabled=False), scene)
    false_speech = [s for s in listener.segments if not s.discarded]
    assert false_speech  # the avatar's own voice is taken for a visitor...
    heard_s = sum(s.end_ns - s.start_ns for s in false_speech) / 1e9
    assert heard_s > 0.5 * len(avatar_speech) / 22050  # ... for most of what it said


def test_a_sound_card_latency_is_absorbed_by_the_reference_delay(room, avatar_speech):
    """The echo arrives 60 ms later than the sample clock says (output + input buffering)."""
    scene = build_echo_scene(avatar_speech, 22050, room, noise_dbfs=-70.0)
    late = np.concatenate([np.zeros(960), scene.echo])[:len(scene.echo)]
    shifted = type(scene)(scene.played, scene.speaker_rate_hz, late, scene.near, scene.noise)
    steady = slice(int(CONVERGED_S * 16000), None)
    _, _, out = _run(ListeningConfig(aec_reference_delay_ms=60.0), shifted)
    assert erle_db(shifted.mic[:len(out)][steady], out[steady]) >= 25.0


@pytest.mark.parametrize("suppressor", [False, True], ids=["linear", "with_suppressor"])
def test_double_talk_keeps_the_visitor(room, avatar_speech, whisper, suppressor):
    """The visitor barges in 7 s into the avatar's reply; their words must come through."""
    visitor = espeak_utterance(VISITOR_BARGE_IN)
    scene = build_echo_scene(avatar_speech, 22050, room, visitor=visitor, visitor_start_s=7.0, noise_dbfs=-70.0)
    listener, tokens, out = _run(ListeningConfig(aec_residual_suppression=suppressor), scene, recognizer=whisper)
    texts = [e.text for e in listener.events if e.is_final and e.start_ns >= 6.5e9]
    wer = word_error_rate(VISITOR_BARGE_IN, " ".join(texts))
    # how much of the visitor's voice survives: near-end signal vs everything else in the output
    span = slice(int(7.0 * 16000), int(7.0 * 16000) + len(visitor))
    near = scene.near[span]
    near_to_rest_in_db = 10 * np.log10(np.sum(near ** 2) / np.sum((scene.mic[span] - near) ** 2))
    near_to_rest_out_db = 10 * np.log10(np.sum(near ** 2) / np.sum((out[span] - near) ** 2))
    print(f"double talk ({'suppressor' if suppressor else 'linear'}): {texts} WER {wer.wer:.2f}; visitor-to-rest "
          f"{near_to_rest_in_db:.1f} dB at the mic -> {near_to_rest_out_db:.1f} dB after cancellation")
    assert wer.wer <= 0.15
    assert any(t.double_talk for t in tokens)
    assert near_to_rest_out_db > near_to_rest_in_db + 10.0
