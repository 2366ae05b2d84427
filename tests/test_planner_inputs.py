"""The planner's input vector v1 and its assembler: layout, speech features, sanitising, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from edge_avatar.dialogue.reply import Affect, GestureIntent, Reply
from edge_avatar.planner.inputs import (
    INPUT_FIELDS,
    INPUT_INDEX,
    INPUT_SIZE,
    INPUT_SLICES,
    N_OFFSETS,
    PlannerInputs,
    build_track,
    describe_layout,
)
from edge_avatar.planner.visemes import N_VISEMES, VISEME_INDEX, phoneme_visemes

MS = 1_000_000


def occupancy(x: np.ndarray) -> np.ndarray:
    return x[INPUT_SLICES["visemes"]].reshape(N_OFFSETS, N_VISEMES)


def simple_track(text: str = "Bob is here.", start_ns: int = 0, index: int = 0):
    """_ b A b _ over 0..400 ms, stressed vowel, a loud envelope while it sounds."""
    phonemes = [("_", 0, 50, 0), ("b", 50, 100, 0), ("A", 100, 250, 2), ("b", 250, 300, 0), ("_", 300, 400, 0)]
    env = np.zeros(40, np.float32)
    env[5:30] = 0.8
    words = [("Bob", 50, 300)]
    return build_track(index, start_ns, text, phonemes, words, env, 400.0)


def test_layout_is_contiguous_and_documented():
    assert INPUT_SIZE == 149
    end = 0
    for name, size, low, high in INPUT_FIELDS:
        assert INPUT_SLICES[name] == slice(end, end + size)
        assert low < high
        end += size
    assert end == INPUT_SIZE
    table = describe_layout()
    assert table[0]["name"] == "visitor_present" and table[-1]["start"] + table[-1]["size"] == INPUT_SIZE
    import edge_avatar.planner.inputs as module

    for name, _, _, _ in INPUT_FIELDS:        # every field is in the docstring's table
        assert f"| {name}" in module.__doc__


@pytest.mark.parametrize("symbol, viseme", [("p", "PP"), ("b", "PP"), ("m", "PP"), ("f", "FF"), ("tS", "CH"),
                                            ("s", "SS"), ("aa", "AA"), ("u:", "OU"), ("_", "sil"), ("θ", "TH"),
                                            ("ʃ", "CH"), ("ɑ", "AA"), ("@2", "E"), ("t#", "DD")])
def test_phonemes_map_to_visemes_in_both_alphabets(symbol, viseme):
    assert phoneme_visemes(symbol)[0] == VISEME_INDEX[viseme]


def test_diphthongs_travel():
    assert phoneme_visemes("aI") == (VISEME_INDEX["AA"], VISEME_INDEX["IH"])
    assert phoneme_visemes("oʊ") == (VISEME_INDEX["OH"], VISEME_INDEX["OU"])


def test_speech_windows_read_the_timeline_ahead():
    inputs = PlannerInputs(seed=0)
    inputs.add_speech(simple_track(start_ns=1000 * MS))
    x = inputs.vector(1000 * MS + 40 * MS)      # 40 ms in: silence now, the first b starts in 10 ms
    occ = occupancy(x)
    np.testing.assert_allclose(occ.sum(axis=1), 1.0, atol=1e-5)
    assert occ[0, VISEME_INDEX["PP"]] > 0.2                        # window [23, 57) ms catches the b's start
    assert occ[1, VISEME_INDEX["PP"]] > 0.9                        # +33 ms: [57, 90) is inside the b
    assert occ[2, VISEME_INDEX["AA"]] > 0.6                        # +67 ms: [90, 123) mostly the vowel
    assert occ[4, VISEME_INDEX["AA"]] > 0.9                        # +133 ms: the vowel
    assert x[INPUT_SLICES["stress"]][4] > 0.9
    assert x[INPUT_SLICES["speech_energy"]][4] > 0.5
    assert x[INPUT_INDEX["speaking"]] == 0.0                       # not sounding yet
    x = inputs.vector(1000 * MS + 150 * MS)
    assert x[INPUT_INDEX["speaking"]] == 1.0
    assert 0.3 < x[INPUT_INDEX["sentence_progress"]] < 0.5
    assert x[INPUT_INDEX["sentence_end_near"]] > 0.7
    assert x[INPUT_INDEX["sentence_type"]] == 1.0                  # a statement
    x = inputs.vector(1000 * MS + 450 * MS)
    assert x[INPUT_INDEX["speaking"]] == 0.0
    assert 0.5 < x[INPUT_INDEX["since_sentence_end"]] < 0.7        # exp(-150/300)
    far = PlannerInputs(seed=0).vector(0)
    assert occupancy(far)[:, VISEME_INDEX["sil"]].min() == 1.0     # nothing playing = silence


def test_questions_negations_and_barge_in():
    inputs = PlannerInputs()
    inputs.add_speech(simple_track("Is it not Bob?"))
    x = inputs.vector(150 * MS)
    assert x[INPUT_INDEX["sentence_type"]] == -1.0
    inputs = PlannerInputs()
    phonemes = [("_", 0, 50, 0), ("n", 50, 100, 0), ("0", 100, 250, 2), ("t", 250, 300, 0), ("_", 300, 400, 0)]
    inputs.add_speech(build_track(0, 0, "Not now.", phonemes, [("Not", 50, 300)], np.full(40, 0.5), 400.0))
    assert inputs.vector(150 * MS)[INPUT_INDEX["negation"]] == 1.0
    # a barge-in clears the speaker at 200 ms: what is left ends there, with no end-of-sentence gesture
    inputs.clear_speech(200 * MS)
    assert inputs.tracks[0].last_sound_ms <= 200.0 and inputs.tracks[0].sentence_type == 0
    x = inputs.vector(300 * MS)
    assert x[INPUT_INDEX["speaking"]] == 0.0 and x[INPUT_INDEX["sentence_type"]] == 0.0
    assert inputs.counters["speech_cleared"] == 1


def test_gesture_intents_apply_to_their_sentence_only():
    inputs = PlannerInputs()
    reply = Reply("Bob is here. Bob is there.", "answer", affect=Affect(0.5, 0.2),
                  gestures=(GestureIntent("point", 0.8, 1, "left"),))
    inputs.set_reply(reply)
    inputs.add_speech(simple_track(index=0, start_ns=0))
    inputs.add_speech(simple_track(index=1, start_ns=400 * MS))
    first, second = inputs.vector(150 * MS), inputs.vector(550 * MS)
    g = INPUT_SLICES["gesture_now"]
    assert first[g].tolist() == [0.0, 0.0, 0.0]
    assert second[g].tolist() == pytest.approx([0.0, 0.8, 0.0])
    assert second[INPUT_INDEX["point_yaw"]] == pytest.approx(60 / 90)
    assert second[INPUT_SLICES["reply_affect"]].tolist() == pytest.approx([0.5, 0.2])


def test_visitor_voice_pause_and_falling_pitch():
    inputs = PlannerInputs()
    for k in range(300):                       # 2 s of voice falling 10 semitones over the last 0.6 s, then quiet
        t = k * 10 * MS
        v = np.zeros(11, np.float32)
        v[10] = 1.0
        if t < 2000 * MS:
            v[0], v[1], v[2], v[4], v[5] = 1, 0.9, 1, 0.9, -25
            v[3] = 150 * 2 ** (-10 * max(0.0, t / 1e9 - 1.4) / 0.6 / 12)
        inputs.set_audio(v, t)
        if k % 3 == 2:
            x = inputs.vector(t)
    assert x[INPUT_INDEX["voice_active"]] == 0.0
    assert x[INPUT_INDEX["pause"]] == pytest.approx(0.99 / 2, abs=0.02)
    assert x[INPUT_INDEX["utterance"]] == pytest.approx(2.0 / 4, abs=0.02)
    assert x[INPUT_INDEX["pitch_slope"]] < -0.5                     # < -10 st/s
    assert inputs.counters["audio_tokens"] == 300


def test_bad_input_is_sanitised_and_counted():
    inputs = PlannerInputs()
    token = np.full(107, np.nan, np.float32)
    inputs.set_perception(token, 0)
    x = inputs.vector(0)
    assert np.isfinite(x).all() and x[INPUT_INDEX["visitor_present"]] == 0.0
    assert inputs.counters["nan_values"] == 107
    inputs.set_perception(np.zeros(4, np.float32), 33 * MS)        # a token of the wrong layout
    inputs.vector(33 * MS)
    assert inputs.counters["bad_tokens"] == 1 and inputs.counters["perception_missing_ticks"] >= 1
    inputs.set_persona([np.nan, 2.0, -1.0, 0.5, 0.5, 1, 0, 0])
    x = inputs.vector(66 * MS)
    persona = x[INPUT_SLICES["persona"]]
    assert persona.min() >= 0.0 and persona.max() <= 1.0 and inputs.counters["persona_out_of_range"] == 3
    inputs.set_persona([1.0, 2.0])
    assert inputs.counters["persona_out_of_range"] == 4
    inputs.set_turn_state("dancing", 66 * MS)
    assert inputs.turn_state == "idle" and inputs.counters["unknown_turn_states"] == 1
    inputs.set_audio(np.array([np.inf] * 11, np.float32), 100 * MS)
    assert np.isfinite(inputs.vector(100 * MS + 33 * MS)).all()
    # a sentence with audio but no phonemes gets a timeline from its envelope; one with nothing is counted
    env = np.zeros(100, np.float32)
    env[10:80] = 0.7
    track = build_track(0, 0, "", [], [], env, 1000.0)
    inputs.add_speech(track)
    assert track.synthetic and inputs.counters["synthetic_timelines"] == 1
    inputs.set_speech_timeline([])
    assert inputs.counters["empty_timelines"] >= 1
    x = inputs.vector(500 * MS)
    assert np.all(x >= -4) and np.all(x <= 4)


def test_stale_perception_means_no_visitor():
    from tests.test_planner_teacher import visitor_token

    inputs = PlannerInputs(stale_after_ms=500)
    token = visitor_token()
    inputs.observe_token(token, 0)
    assert inputs.vector(0)[INPUT_INDEX["visitor_present"]] == 1.0
    inputs.observe_token(token, 400 * MS)                         # the same object: perception did not run
    assert inputs.vector(400 * MS)[INPUT_INDEX["visitor_present"]] == 1.0
    inputs.observe_token(token, 600 * MS)
    x = inputs.vector(600 * MS)
    assert x[INPUT_INDEX["visitor_present"]] == 0.0 and x[INPUT_INDEX["perception_fresh"]] == 0.0
    assert x[INPUT_SLICES["engagement"]].tolist() == [0, 0, 0, 1]
    assert inputs.counters["perception_stale_ticks"] == 1
    inputs.observe_token(None, 700 * MS)                          # camera lost
    assert inputs.vector(700 * MS)[INPUT_INDEX["visitor_present"]] == 0.0


def test_the_same_history_gives_the_same_vectors():
    def stream(seed: int) -> np.ndarray:
        inputs = PlannerInputs(seed=seed)
        inputs.add_speech(simple_track(start_ns=500 * MS))
        out = []
        for k in range(120):
            if k == 40:
                inputs.set_turn_state("thinking", k * 33 * MS)
            out.append(inputs.vector(k * 33 * MS))
        return np.array(out)

    assert np.array_equal(stream(1), stream(1))
    assert not np.array_equal(stream(1), stream(2))
    inputs = PlannerInputs()
    a = inputs.vector(0)
    assert np.array_equal(a, inputs.vector(0))                  # asking twice for one pts changes nothing


def test_turn_states_can_be_scheduled_and_a_barge_in_cancels_them():
    inputs = PlannerInputs()
    inputs.vector(0)
    inputs.set_turn_state("speaking", 0)
    inputs.set_turn_state("listening", 2000 * MS)      # the end of the queued speech
    assert inputs.turn_state == "speaking"
    inputs.vector(1000 * MS)
    assert inputs.turn_state == "speaking"
    x = inputs.vector(2100 * MS)
    assert inputs.turn_state == "listening"
    assert x[INPUT_INDEX["turn_age"]] == pytest.approx(0.1 / 3, abs=1e-3)   # since 2.0 s, not since the tick
    inputs.set_turn_state("speaking", 2100 * MS)
    inputs.set_turn_state("listening", 5000 * MS)
    inputs.clear_speech(3000 * MS)                     # barge-in: the scheduled end is gone
    inputs.set_turn_state("thinking", 3000 * MS)
    inputs.vector(6000 * MS)
    assert inputs.turn_state == "thinking"


def test_pause_and_resume_move_the_unheard_speech():
    inputs = PlannerInputs()
    inputs.add_speech(simple_track(start_ns=0))              # _ b A b _ over 0..400 ms
    inputs.vector(0)
    inputs.pause_speech(120 * MS)                             # inside the vowel
    assert inputs.vector(200 * MS)[INPUT_INDEX["speaking"]] == 0.0
    assert inputs.tracks[0].sentence_type == 0                # no end-of-sentence nod at a pause
    inputs.resume_speech(1000 * MS)
    x = inputs.vector(1000 * MS + 150 * MS)                   # 120 + 150 = 270 ms into the sentence: the last b
    assert x[INPUT_INDEX["speaking"]] == 1.0
    assert occupancy(x)[0, VISEME_INDEX["PP"]] > 0.9
    assert inputs.tracks[-1].sentence_type == 1
    assert inputs.counters["speech_paused"] == 1
