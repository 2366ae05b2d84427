"""The reference behaviour engine: each behaviour the issue names, on real espeak-ng timelines and made-up visitors."""

from __future__ import annotations

import numpy as np
import pytest

from edge_avatar.motion import BLENDSHAPE_INDEX as B
from edge_avatar.perception.token import EMOTION_VALENCE_AROUSAL, EMOTIONS, ENGAGEMENT_STATES, TOKEN_SLICES, empty_token
from edge_avatar.planner.inputs import BLINK_DURATION_MS, BehaviourDrivers, PlannerInputs, track_from_segment
from edge_avatar.planner.metrics import LIPS_CLOSED_GAP, bilabial_closure, lip_gap, motion_energy, mouth_lead_ms
from edge_avatar.planner.teacher import LIP_LEAD_MS, TeacherPlanner
from edge_avatar.planner.visemes import PP

TICK_NS = 1_000_000_000 // 30


@pytest.fixture(scope="module")
def tts():
    from edge_avatar.speech import TTSUnavailable, open_engine

    try:
        return open_engine("espeak", 22050, "en-us", 160)
    except TTSUnavailable as exc:
        pytest.skip(str(exc))


def visitor_token(cx: float = 0.5, cy: float = 0.45, emotion: str = "neutral", smile: float = 0.0) -> np.ndarray:
    token = empty_token()
    s = TOKEN_SLICES
    token[s["frame_valid"]] = 1.0
    token[s["visitor_present"]] = 1.0
    token[s["engagement"]] = 0.0
    token[s["engagement"].start + ENGAGEMENT_STATES.index("engaged")] = 1.0
    token[s["distance_m"]] = 1.0
    token[s["face_box"]] = (cx, cy, 0.12, 0.16)
    token[s["attending"]] = token[s["looking_at_screen"]] = 0.9
    probs = np.full(len(EMOTIONS), 0.01)
    probs[EMOTIONS.index(emotion)] = 1.0
    probs /= probs.sum()
    token[s["emotion"]] = probs
    token[s["valence_arousal"]] = probs @ EMOTION_VALENCE_AROUSAL
    bs = np.zeros(52, np.float32)
    bs[B["mouthSmileLeft"]] = bs[B["mouthSmileRight"]] = smile
    token[s["blendshapes"]] = bs
    return token


def run(planner: TeacherPlanner, seconds: float, token_at=None, start_tick: int = 0, hook=None) -> np.ndarray:
    out = []
    for k in range(start_tick, start_tick + int(seconds * 30)):
        pts = k * TICK_NS
        if hook:
            hook(k, pts)
        token = token_at(k) if token_at else None
        # a new array each tick, as perception makes one each time it runs (the same object = stale)
        out.append(planner.step(pts, None if token is None else token.copy()))
    return np.array(out)


def speaking_planner(tts, text: str, start_ns: int = 300_000_000, seed: int = 0):
    planner = TeacherPlanner(PlannerInputs(seed=seed))
    planner.inputs.set_turn_state("speaking", 0)
    seg = tts.synthesize_sentence(text)
    track = planner.inputs.add_speech(track_from_segment(seg, start_ns))
    return planner, seg, track


def test_bilabials_close_the_lips_and_vowels_open_them(tts):
    planner, seg, track = speaking_planner(tts, "Maybe Bob and Pam bring my map by the pool, please.")
    motion = run(planner, seg.duration_ms / 1000 + 0.6)
    pts = np.arange(len(motion)) * TICK_NS
    bil = np.array([(track.start_ns + int(s * 1e6), track.start_ns + int(e * 1e6))
                    for s, e, v in zip(track.ev_start_ms, track.ev_end_ms, track.ev_viseme) if v == PP])
    assert len(bil) >= 10
    closed, total = bilabial_closure(motion, pts, bil)
    assert closed == total
    # in the middle of each bilabial (shifted by the lead) the lips are pressed and the jaw nearly shut
    for s, e in bil:
        k = int(round(((s + e) / 2 - LIP_LEAD_MS * 1e6) / TICK_NS))
        assert lip_gap(motion[k])[0] < LIPS_CLOSED_GAP or lip_gap(motion[k + 1])[0] < LIPS_CLOSED_GAP
    assert motion[:, B["jawOpen"]].max() > 0.35
    assert motion[:, B["mouthPressLeft"]].max() > 0.5
    assert lip_gap(motion).max() > 0.4


def test_the_mouth_leads_the_sound(tts):
    streams = []
    for text in ("Radiology is on the second floor, turn left when you leave the lift.",
                 "Visiting hours are from two until eight every day.",
                 "Would you like me to call someone for you?"):
        planner, seg, track = speaking_planner(tts, text)
        motion = run(planner, seg.duration_ms / 1000 + 0.6)
        env = np.array([track.envelope_at(track.ms(k * TICK_NS)) for k in range(len(motion))])
        streams.append((motion, env))
    lead = mouth_lead_ms(streams)
    # The lips move first (a positive lead), by about LIP_LEAD_MS: small enough for the 40 ms lip-sync target.
    assert lead > 5.0 and abs(lead - LIP_LEAD_MS) <= 15.0, lead


def test_blinks_have_natural_statistics_and_come_at_turn_boundaries():
    drivers = BehaviourDrivers(seed=3)
    closed_ticks = []
    for k in range(30 * 600):                       # ten minutes of listening
        closed_ticks.append(drivers.advance(k * TICK_NS, "listening")[0])
    starts = np.array(drivers.blinks) / 1e9
    intervals = np.diff(starts)
    assert 2.8 <= intervals.mean() <= 4.2, intervals.mean()
    assert 0.4 <= intervals.std() / intervals.mean() <= 0.8        # gamma-like, not a metronome
    assert intervals.min() >= 0.25
    closed = np.array(closed_ticks)
    per_blink_ticks = (closed > 0.05).sum() / len(starts)
    assert 3.0 <= per_blink_ticks <= 5.5                             # ~150 ms at 30 Hz
    assert closed.max() > 0.8
    # turn boundaries: a blink follows most state changes within 0.4 s
    drivers = BehaviourDrivers(seed=4)
    states = ("listening", "thinking", "speaking")
    followed = changes = 0
    for k in range(30 * 600):
        state = states[(k // 150) % 3]              # a change every 5 s
        drivers.advance(k * TICK_NS, state)
    blinks = np.array(drivers.blinks)
    for change_ns in np.arange(150, 30 * 600, 150) * TICK_NS:
        changes += 1
        followed += bool(((blinks >= change_ns) & (blinks <= change_ns + 400_000_000)).any())
    assert followed / changes >= 0.5
    base_rate = 0.4 / 3.4
    assert followed / changes > 3 * base_rate
    assert BLINK_DURATION_MS == 150.0


def test_a_statement_ends_with_a_nod_and_a_question_does_not(tts):
    planner, seg, track = speaking_planner(tts, "The pharmacy is on the ground floor.")
    motion = run(planner, seg.duration_ms / 1000 + 1.0)
    end_k = int((track.start_ns + track.last_sound_ms * 1e6) / TICK_NS)
    pitch = motion[:, 53]
    nod = motion[:, 59]
    assert pitch[end_k - 6:end_k + 15].min() < np.median(pitch) - 2.5
    assert nod[end_k - 6:end_k + 15].max() > 0.3
    planner, seg, track = speaking_planner(tts, "Is this your first visit to the hospital?")
    motion = run(planner, seg.duration_ms / 1000 + 1.0)
    end_k = int((track.start_ns + track.last_sound_ms * 1e6) / TICK_NS)
    assert motion[end_k - 6:end_k + 15, 59].max() < 0.2
    assert motion[end_k - 6:end_k + 15, B["browInnerUp"]].max() > 0.15      # questions raise the brows


def test_it_looks_at_the_visitor():
    for cx, sign in ((0.8, -1), (0.2, 1)):     # image right = the avatar's right = negative yaw
        planner = TeacherPlanner(PlannerInputs(seed=1))
        planner.inputs.set_turn_state("listening", 0)
        token = visitor_token(cx=cx, cy=0.3)
        motion = run(planner, 3.0, token_at=lambda k, token=token: token)
        yaw_deg, pitch_deg = planner.inputs.visitor_direction_deg(cx, 0.3)
        gaze_yaw = motion[-30:, 52] + motion[-30:, 55]
        gaze_pitch = motion[-30:, 53] + motion[-30:, 56]
        assert np.sign(motion[-30:, 52].mean()) == sign and np.sign(motion[-30:, 55].mean()) == sign
        assert abs(gaze_yaw.mean() - yaw_deg) < 4.0
        assert abs(gaze_pitch.mean() - pitch_deg) < 4.0


def test_concern_when_the_visitor_is_sad():
    def listen(emotion: str) -> np.ndarray:
        planner = TeacherPlanner(PlannerInputs(seed=2))
        planner.inputs.set_turn_state("listening", 0)
        token = visitor_token(emotion=emotion)
        return run(planner, 4.0, token_at=lambda k: token)[-30:]

    sad, neutral = listen("sad"), listen("neutral")
    assert sad[:, B["browInnerUp"]].mean() > neutral[:, B["browInnerUp"]].mean() + 0.2
    assert sad[:, B["mouthSmileLeft"]].mean() < neutral[:, B["mouthSmileLeft"]].mean()
    assert sad[:, B["mouthFrownLeft"]].mean() > 0.05
    assert sad[:, 54].mean() > neutral[:, 54].mean() + 1.5          # an empathic head tilt


def test_it_mirrors_a_smile_by_the_persona():
    def listen(persona_smile: float) -> float:
        planner = TeacherPlanner(PlannerInputs(seed=2))
        vec = planner.inputs._default_persona.copy()
        vec[1] = persona_smile
        planner.inputs.set_persona(vec)
        planner.inputs.set_turn_state("listening", 0)
        token = visitor_token(emotion="happy", smile=0.7)
        return float(run(planner, 4.0, token_at=lambda k: token)[-30:, B["mouthSmileLeft"]].mean())

    assert listen(0.9) > listen(0.1) + 0.15


def test_backchannel_nod_when_the_visitor_pauses_after_falling_pitch():
    def conversation(final_slope_st_per_s: float) -> TeacherPlanner:
        planner = TeacherPlanner(PlannerInputs(seed=5))
        planner.inputs.set_turn_state("listening", 0)
        token = visitor_token()

        def hook(k, pts):
            for t in range(pts - TICK_NS + 1, pts + 1, 10_000_000):   # 10 ms audio tokens up to pts
                t = t - t % 10_000_000
                talking = 1.0 <= t / 1e9 < 3.0
                v = np.zeros(11, np.float32)
                v[10] = 1.0
                v[5] = -65.0
                if talking:
                    v[0], v[1], v[2], v[4], v[5] = 1.0, 0.9, 1.0, 0.9, -25.0
                    v[3] = 150.0 * 2 ** (final_slope_st_per_s * max(0.0, t / 1e9 - 2.4) / 12)
                planner.inputs.set_audio(v, t)

        run(planner, 5.0, token_at=lambda k: token, hook=hook)
        return planner

    falling = conversation(-10.0).core.state.backchannels
    assert len(falling) == 1 and 3.1e9 <= falling[0] <= 3.6e9
    assert conversation(+10.0).core.state.backchannels == []


def test_gaze_aversion_while_thinking_and_return_when_speaking(tts):
    planner = TeacherPlanner(PlannerInputs(seed=6))
    token = visitor_token(cx=0.5, cy=0.45)
    planner.inputs.set_turn_state("listening", 0)
    listening = run(planner, 2.0, token_at=lambda k: token)
    planner.inputs.set_turn_state("thinking", 60 * TICK_NS)
    thinking = run(planner, 1.5, token_at=lambda k: token, start_tick=60)
    seg = tts.synthesize_sentence("The cafe is open from seven in the morning until eight in the evening.")
    planner.inputs.set_turn_state("speaking", 105 * TICK_NS)
    track = planner.inputs.add_speech(track_from_segment(seg, 105 * TICK_NS))
    speaking = run(planner, seg.duration_ms / 1000, token_at=lambda k: token, start_tick=105)

    def gaze_off(m: np.ndarray) -> np.ndarray:
        yaw, pitch = planner.inputs.visitor_direction_deg(0.5, 0.45)
        return np.hypot(m[:, 52] + m[:, 55] - yaw, m[:, 53] + m[:, 56] - pitch)

    assert gaze_off(thinking[15:]).mean() > gaze_off(listening[-30:]).mean() + 6.0
    late = int((track.last_sound_ms - 500) / 1000 * 30)
    assert gaze_off(speaking[late:]).mean() < 4.0


def test_calm_with_no_visitor():
    planner = TeacherPlanner(PlannerInputs(seed=7))
    motion = run(planner, 20.0)
    assert np.isfinite(motion).all()
    assert motion_energy(motion) < 2e-3
    assert np.abs(motion[:, 52:55]).max() < 8.0
    assert motion[:, B["jawOpen"]].max() < 0.06
    assert motion[:, 59].max() < 0.05                     # no nods to nobody
    assert motion[:, B["eyeBlinkLeft"]].max() > 0.8       # but still blinking


def test_it_attends_to_a_newly_arrived_visitor():
    planner = TeacherPlanner(PlannerInputs(seed=8))
    token = visitor_token(cx=0.3)
    motion = run(planner, 5.0, token_at=lambda k: None if k < 60 else token)
    before, after = motion[30:60], motion[62:90]
    assert after[:, B["browOuterUpLeft"]].max() > before[:, B["browOuterUpLeft"]].max() + 0.15   # eyebrow flash
    assert after[:, B["mouthSmileLeft"]].max() > before[:, B["mouthSmileLeft"]].max() + 0.1
    assert (motion[75:, 52] + motion[75:, 55]).mean() > 5.0                                       # turned to them


def test_reproducible():
    a = run(TeacherPlanner(PlannerInputs(seed=9)), 5.0, token_at=lambda k: visitor_token())
    b = run(TeacherPlanner(PlannerInputs(seed=9)), 5.0, token_at=lambda k: visitor_token())
    c = run(TeacherPlanner(PlannerInputs(seed=10)), 5.0, token_at=lambda k: visitor_token())
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
