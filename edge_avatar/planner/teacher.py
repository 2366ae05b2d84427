"""The reference behaviour engine (the teacher): readable rules from the behaviour literature -> motion frames.

Why this module exists: the planner that ships is a small network, and a
network has to learn *something*. This is that something, written so a
person can read it, test it and change it: every behaviour is a named rule
with its constants in units, and the student is distilled from it
(``train``). It is deterministic: its only randomness comes from the seeded
``BehaviourDrivers`` inside the input vector, and its own state (filters,
timers) is explicit in ``TeacherState``. It implements the loop's
``Planner`` protocol, so it can also drive the avatar directly (slower).

What it does, and where the rule comes from:

- Lip sync (privileged: reads the sentence timelines directly, at 1 ms).
  Phoneme -> viseme (``visemes``); coarticulation by dominance blending of
  neighbouring visemes (Cohen & Massaro 1993): each phoneme's shape holds
  with a dominance that decays with distance, alveolars and velars weakly,
  labials and rounded vowels strongly. Bilabials (p, b, m) override the
  blend and close the lips fully (a plateau over the phoneme with 45 ms
  raised-cosine ramps). The mouth leads the sound by ``LIP_LEAD_MS`` = 20 ms
  (visible articulation precedes the acoustic onset). It was 50 ms; measured
  from the rendered pixels against the muxed audio (``render.lipsync``) that
  put the mouth 35-50 ms ahead on every demo turn, outside the product's
  40 ms lip-sync target, so the lead is now the smallest that still shows
  the lips moving first. Opening scales with the envelope of the audio
  played (loud = wider).
- Speaking: head beats (a small down-nod and a sideways turn) and brow raises
  on stressed syllables (pitch accents; Graf et al. 2002, Cvejic et al.
  2010), a nod at the end of statements and raised brows with a tilt at the
  end of questions, gestures from the reply's intents (repeated nods, a head
  turn and glance toward where it points, open hands with raised brows), a
  head shake around negations, expression from the reply's affect scaled by
  the persona.
- Listening: looks at the visitor's face, with small saccades between the
  eyes and mouth; backchannel nods with a small smile when the visitor pauses
  after falling pitch or a long utterance (Ward & Tsukahara 2000), at most
  one per ``BACKCHANNEL_REFRACTORY_S``; mirrors the visitor's smile to a
  degree set by the persona's smile; a look of concern (inner brows up,
  slight frown, head tilt) when the visitor's valence is negative.
- Turns and idle: gaze aversion while thinking (Andrist et al. 2014:
  cognitive aversions, mostly up and sideways), returning when speaking; a
  short look away at the start of long sentences and back to the listener
  at their end (Kendon 1967); blinks from the drivers (gamma intervals, more
  at turn boundaries, 150 ms); breathing and micro-motion; orienting to a
  newly arrived visitor with an eyebrow flash and a smile (Grammer et al.
  1988).

numpy only: this runs per tick in the generator, the tests and, if wanted,
the live loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_avatar.motion import (
    BLENDSHAPE_INDEX,
    EYE_LIMITS_DEG,
    EYES_SLICE,
    GESTURE_SLICE,
    HEAD_LIMITS_DEG,
    HEAD_SLICE,
    MOTION_FRAME_SIZE,
)
from edge_avatar.planner.inputs import INPUT_INDEX, INPUT_SLICES, PlannerInputs, plateau
from edge_avatar.planner.visemes import (
    MOUTH_INDEX,
    OPENING_MASK,
    PP,
    SIL,
    VISEME_DOMINANCE,
    VISEME_SHAPES,
)

B = BLENDSHAPE_INDEX

# ---- lip sync
LIP_LEAD_MS = 20.0                 # the mouth shows the sound this much before it is heard (see below)
COARTICULATION_DECAY_MS = 45.0     # dominance falls by e every this far outside a phoneme
COARTICULATION_REACH_MS = 300.0    # phonemes farther than this from the mouth's time are ignored
CLOSURE_RAMP_MS = 45.0             # bilabial closure ramps in/out over this
ENERGY_GAIN = (0.55, 0.6)          # opening scale = a + b * envelope (0.55 quiet .. 1.15 loud)
# ---- speaking
BEAT_PEAK_MS = 150.0               # a head beat peaks this long after its stressed vowel starts
BEAT_PITCH_DEG, BEAT_YAW_DEG = 2.2, 1.2
BROW_PEAK_MS = 180.0
BROW_RAISE = 0.3
BROW_MIN_VOWEL_MS = 90.0           # only long primary-stressed vowels (accents) raise the brows
STATEMENT_NOD_MS = 600.0           # the end-of-statement nod lasts this long ...
STATEMENT_NOD_BEFORE_MS = 150.0    # ... and starts this long before the last sound ends
STATEMENT_NOD_DEG = 4.5
QUESTION_TILT_DEG = 3.0
INTENT_NOD_HZ, INTENT_NOD_DEG = 1.4, 3.5
POINT_HEAD_SHARE, POINT_EYE_SHARE = 0.3, 0.25
SHAKE_HZ, SHAKE_DEG = 2.2, 3.0
# ---- listening
BACKCHANNEL_PAUSE_S = 0.25         # the visitor has paused this long ...
BACKCHANNEL_MIN_UTTERANCE_S = 0.8  # ... after saying at least this much ...
BACKCHANNEL_FALL_ST_PER_S = -2.0   # ... with pitch falling at least this fast (or a long utterance)
BACKCHANNEL_LONG_UTTERANCE_S = 2.5
BACKCHANNEL_REFRACTORY_S = 2.0
BACKCHANNEL_NOD_MS, BACKCHANNEL_NOD_DEG = 600.0, 3.5
BACKCHANNEL_SMILE_MS = 1200.0
SACCADE_LISTEN_DEG = (1.5, 1.0)
SACCADE_IDLE_DEG = (8.0, 4.0)
LISTEN_TILT_DEG = 2.5
CONCERN_TILT_DEG = 4.0
# ---- turns and idle
AVERSION_DEG = (14.0, 9.0)
AVERSION_MAX_S = 2.5               # a thinking glance returns after this long
HEAD_GAZE_SHARE = 0.35             # the head turns this share of a gaze shift, the eyes the rest
BREATH_PITCH_DEG = 0.5
MICRO_MOTION_DEG = (0.9, 0.6, 0.5)
# ---- dynamics
HEAD_SPRING_HZ = 1.2
EYE_TAU_MS = 45.0
EXPRESSION_TAU_MS = 220.0
CONCERN_TAU_MS = 600.0
INTENT_ATTACK_MS, INTENT_RELEASE_MS = 250.0, 400.0
LOOK_BLENDSHAPE_GAIN = 0.7         # eyeLook* = angle / range * this (as a face tracker reports them)


MOTION_LOW = np.concatenate([np.zeros(52), -HEAD_LIMITS_DEG, -EYE_LIMITS_DEG, np.zeros(5)])
MOTION_HIGH = np.concatenate([np.ones(52), HEAD_LIMITS_DEG, EYE_LIMITS_DEG, np.ones(5)])


def _clip(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def _bump(u_ms: float, length_ms: float) -> float:
    """sin^2 over [0, length]: a smooth down-and-back."""
    if u_ms <= 0.0 or u_ms >= length_ms:
        return 0.0
    return math.sin(math.pi * u_ms / length_ms) ** 2


def _peak(u_ms: float, peak_ms: float) -> float:
    """(u/p) exp(1 - u/p): rises to 1 at ``peak_ms`` and decays (a gamma-shaped impulse response)."""
    if u_ms <= 0.0:
        return 0.0
    r = u_ms / peak_ms
    return r * math.exp(1.0 - r) if r < 8.0 else 0.0


def _approach(y: float, target: float, dt_ms: float, tau_ms: float) -> float:
    return y + (target - y) * (1.0 - math.exp(-dt_ms / tau_ms))


@dataclass
class TeacherState:
    """Everything the teacher remembers between ticks (reset = a fresh instance)."""

    last_pts_ns: int | None = None
    head: np.ndarray = field(default_factory=lambda: np.zeros(3))        # gaze-driven head yaw, pitch (deg) + unused
    head_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    eyes: np.ndarray = field(default_factory=lambda: np.zeros(2))        # eye yaw, pitch re the head (deg)
    smile: float = 0.0
    concern: float = 0.0
    brows: float = 0.0
    thinking: float = 0.0
    listening: float = 0.0
    intents: np.ndarray = field(default_factory=lambda: np.zeros(3))     # nod, point, open_hands envelopes
    nod_phase_s: float = 0.0
    shake_phase_s: float = 0.0
    prev_pause_s: float = 0.0
    last_backchannel_ns: int = -(10**18)
    backchannels: list = field(default_factory=list)                    # pts of each backchannel (tests, eval)


class TeacherCore:
    """One tick: (pts, input vector, the assembler for the timelines) -> (64,) motion frame."""

    def __init__(self) -> None:
        self.state = TeacherState()

    def reset(self) -> None:
        self.state = TeacherState()

    # ------------------------------------------------------------------ lip sync (privileged)

    def mouth(self, inputs: PlannerInputs, pts_ns: int) -> tuple[np.ndarray, float]:
        """(len(MOUTH_CHANNELS),) mouth shape at the tick and the envelope at the mouth's time."""
        tau_ns = pts_ns + int(LIP_LEAD_MS * 1e6)
        num = np.zeros(VISEME_SHAPES.shape[1])
        den = 0.0
        closure = 0.0
        envelope = 0.0
        for track in inputs.tracks_near(tau_ns, COARTICULATION_REACH_MS, COARTICULATION_REACH_MS):
            t = track.ms(tau_ns)
            i0 = int(np.searchsorted(track.ev_end_ms, t - COARTICULATION_REACH_MS))
            i1 = int(np.searchsorted(track.ev_start_ms, t + COARTICULATION_REACH_MS))
            if i1 <= i0:
                continue
            s, e, v = track.ev_start_ms[i0:i1], track.ev_end_ms[i0:i1], track.ev_viseme[i0:i1]
            distance = np.maximum(0.0, np.maximum(s - t, t - e))
            dominance = VISEME_DOMINANCE[v] * np.exp(-distance / COARTICULATION_DECAY_MS)
            num += dominance @ VISEME_SHAPES[v]
            den += float(dominance.sum())
            for k in np.flatnonzero(v == PP):
                closure = max(closure, plateau(t, float(s[k]), float(e[k]), CLOSURE_RAMP_MS))
            envelope = max(envelope, track.envelope_at(t))
        if den <= 1e-6:
            return VISEME_SHAPES[SIL].copy(), 0.0
        shape = num / den
        shape *= 1.0 + (ENERGY_GAIN[0] + ENERGY_GAIN[1] * envelope - 1.0) * OPENING_MASK
        shape = (1.0 - closure) * shape + closure * VISEME_SHAPES[PP]
        return shape, envelope

    @staticmethod
    def speech_events(inputs: PlannerInputs, pts_ns: int, yaw_sign: float) -> dict[str, float]:
        """Head beats, brow raises and end-of-sentence gestures from the sentence timelines (sound time)."""
        beat_pitch = beat_yaw = brow = stmt_nod = question = 0.0
        for track in inputs.tracks_near(pts_ns, 1200.0, 200.0):
            t = track.ms(pts_ns) + LIP_LEAD_MS   # beats lead the sound like the mouth does
            lo = int(np.searchsorted(track.ev_start_ms, t - 1000.0))
            hi = int(np.searchsorted(track.ev_start_ms, t))
            for k in range(lo, hi):
                w = float(track.ev_stress[k])
                if w <= 0.0:
                    continue
                u = t - float(track.ev_start_ms[k])
                g = _peak(u, BEAT_PEAK_MS)
                beat_pitch += w * g
                beat_yaw += w * g * yaw_sign
                if w >= 1.0 and track.ev_end_ms[k] - track.ev_start_ms[k] >= BROW_MIN_VOWEL_MS:
                    brow = max(brow, _peak(u, BROW_PEAK_MS))
            if track.last_sound_ms > track.first_sound_ms:
                u = track.ms(pts_ns) - (track.last_sound_ms - STATEMENT_NOD_BEFORE_MS)
                n = _bump(u, STATEMENT_NOD_MS)
                if track.sentence_type > 0:
                    stmt_nod = max(stmt_nod, n)
                elif track.sentence_type < 0:
                    question = max(question, n)
        return {"beat_pitch": min(beat_pitch, 1.5), "beat_yaw": max(-1.5, min(beat_yaw, 1.5)), "brow": brow,
                "statement_nod": stmt_nod, "question": question}

    # ------------------------------------------------------------------ one tick

    def step(self, pts_ns: int, x: np.ndarray, inputs: PlannerInputs) -> np.ndarray:
        st = self.state
        dt_ms = 1000.0 / 30.0 if st.last_pts_ns is None else _clip((pts_ns - st.last_pts_ns) / 1e6, 1.0, 500.0)
        st.last_pts_ns = pts_ns
        i = INPUT_INDEX
        sl = INPUT_SLICES
        m = np.zeros(MOTION_FRAME_SIZE, np.float64)

        # ---- who the avatar is
        _rate, p_smile, p_nod, p_motion, formality = (float(v) for v in x[sl["persona"]][:5])
        motion_gain = (0.4 + 1.2 * p_motion) * (1.0 - 0.3 * formality)
        nod_gain = 0.3 + 1.4 * p_nod
        listening, thinking, speaking_turn, idle = (float(v) for v in x[sl["turn_state"]])
        turn_age_s = float(x[i["turn_age"]]) * 3.0
        present = float(x[i["visitor_present"]])
        arrival = float(x[i["visitor_arrival"]])
        sounding = float(x[i["speaking"]])
        rv, ra = (float(v) for v in x[sl["reply_affect"]])
        vv, _va = (float(v) for v in x[sl["visitor_affect"]])
        noise = x[sl["micro_motion"]].astype(np.float64)
        saccade = x[sl["saccade"]].astype(np.float64)
        aversion_dir = x[sl["aversion"]].astype(np.float64)
        reply_weight = speaking_turn + 0.3 * (listening + thinking)

        # ---- lip sync and speech-timed events
        mouth, _envelope = self.mouth(inputs, pts_ns)
        m[MOUTH_INDEX] = mouth
        ev = self.speech_events(inputs, pts_ns, math.tanh(2.0 * noise[0]))

        # ---- gesture intents: envelopes over the sentence they belong to
        target = x[sl["gesture_now"]].astype(np.float64) * sounding
        for g in range(3):
            tau = INTENT_ATTACK_MS if target[g] > st.intents[g] else INTENT_RELEASE_MS
            st.intents[g] = _approach(st.intents[g], target[g], dt_ms, tau)
        nod_env, point_env, open_env = st.intents
        st.nod_phase_s = st.nod_phase_s + dt_ms / 1000.0 if nod_env > 0.05 else 0.0
        nod_wave = 0.5 - 0.5 * math.cos(2 * math.pi * INTENT_NOD_HZ * st.nod_phase_s)
        negation = float(x[i["negation"]])
        st.shake_phase_s = st.shake_phase_s + dt_ms / 1000.0 if negation > 0.02 else 0.0
        shake = negation * math.sin(2 * math.pi * SHAKE_HZ * st.shake_phase_s)
        point_yaw_deg = float(x[i["point_yaw"]]) * 90.0

        # ---- backchannels while listening
        pause_s = float(x[i["pause"]]) * 2.0
        utterance_s = float(x[i["utterance"]]) * 4.0
        slope = float(x[i["pitch_slope"]]) * 20.0
        crossed = st.prev_pause_s < BACKCHANNEL_PAUSE_S <= pause_s
        st.prev_pause_s = pause_s
        if (crossed and listening > 0.5 and present > 0.5 and utterance_s >= BACKCHANNEL_MIN_UTTERANCE_S
                and (slope <= BACKCHANNEL_FALL_ST_PER_S or utterance_s >= BACKCHANNEL_LONG_UTTERANCE_S)
                and pts_ns - st.last_backchannel_ns >= BACKCHANNEL_REFRACTORY_S * 1e9):
            st.last_backchannel_ns = pts_ns
            st.backchannels.append(pts_ns)
            del st.backchannels[:-1000]
        u_bc = (pts_ns - st.last_backchannel_ns) / 1e6
        bc_nod = _bump(u_bc, BACKCHANNEL_NOD_MS)
        bc_smile = math.sin(math.pi * u_bc / BACKCHANNEL_SMILE_MS) if 0 < u_bc < BACKCHANNEL_SMILE_MS else 0.0

        # ---- expression
        concern_target = present * _clip((-vv - 0.15) / 0.5, 0.0, 1.0) \
            + 0.7 * reply_weight * _clip((-rv - 0.2) / 0.6, 0.0, 1.0)
        st.concern = _approach(st.concern, min(concern_target, 1.0), dt_ms, CONCERN_TAU_MS)
        concern = st.concern
        visitor_smile = float(x[i["visitor_smile"]])
        smile_target = (0.06 + 0.12 * p_smile) * present + (0.04 + 0.06 * p_smile) * (1 - present)
        smile_target += reply_weight * max(rv, 0.0) * (0.25 + 0.45 * p_smile)
        smile_target += present * visitor_smile * (0.15 + 0.55 * p_smile) * (1.0 if listening > 0.5 else 0.6)
        smile_target += 0.18 * (0.4 + p_smile) * bc_smile + 0.25 * (0.5 + p_smile) * arrival
        smile_target += 0.08 * open_env
        smile_target *= (1.0 - 0.85 * concern) * (1.0 - 0.3 * formality)
        st.smile = _approach(st.smile, min(smile_target, 0.9), dt_ms, EXPRESSION_TAU_MS)
        st.thinking = _approach(st.thinking, thinking, dt_ms, 300.0)
        st.listening = _approach(st.listening, listening * present, dt_ms, 500.0)
        arousal_gain = 0.6 + 0.4 * max(ra, 0.0) * reply_weight
        brows = arousal_gain * (BROW_RAISE * ev["brow"] * (0.6 + 0.8 * p_motion) + 0.3 * ev["question"]) \
            + 0.35 * arrival * (0.5 + p_smile) + 0.12 * open_env
        st.brows = _approach(st.brows, brows, dt_ms, 60.0)
        smile = st.smile
        m[B["mouthSmileLeft"]] += smile
        m[B["mouthSmileRight"]] += smile
        m[B["cheekSquintLeft"]] += 0.5 * smile
        m[B["cheekSquintRight"]] += 0.5 * smile
        m[B["mouthDimpleLeft"]] += 0.15 * smile
        m[B["mouthDimpleRight"]] += 0.15 * smile
        for side in ("Left", "Right"):
            m[B["eyeSquint" + side]] += 0.25 * smile + 0.1 * concern
            m[B["browOuterUp" + side]] += 0.8 * st.brows
            m[B["browDown" + side]] += 0.12 * st.thinking + 0.05 * concern
            m[B["mouthFrown" + side]] += 0.12 * concern
            m[B["mouthPress" + side]] += 0.1 * concern + 0.1 * st.thinking * (1 - sounding)
            m[B["eyeWide" + side]] += 0.15 * max(ra, 0.0) * speaking_turn + 0.12 * arrival
        m[B["browInnerUp"]] += st.brows + 0.45 * concern
        m[B["browOuterUpLeft"]] += 0.15 * st.thinking
        m[B["mouthRollLower"]] += 0.08 * st.thinking * (1 - sounding)

        # ---- gaze: where the eyes should be, then the head follows a share of it
        visitor_dir = np.array([float(x[i["visitor_yaw"]]) * 45.0, float(x[i["visitor_pitch"]]) * 30.0])
        if present > 0.5:
            gaze = visitor_dir + saccade * SACCADE_LISTEN_DEG * (0.5 + 0.5 * listening)
        else:
            gaze = saccade * SACCADE_IDLE_DEG
        avert = 0.0
        if thinking > 0.5:
            avert = min(1.0, max(0.0, (turn_age_s - 0.1) / 0.25)) * (1.0 if turn_age_s < AVERSION_MAX_S else 0.0)
        elif sounding > 0.5 and present > 0.5:
            avert = 0.45 * (1.0 - min(1.0, float(x[i["sentence_progress"]]) / 0.25))
        gaze = (1 - avert) * gaze + avert * (aversion_dir * AVERSION_DEG)
        gaze[0] += point_env * _clip(point_yaw_deg * POINT_EYE_SHARE, -15.0, 15.0)
        share = HEAD_GAZE_SHARE + 0.25 * arrival
        head_target = np.array([gaze[0] * share, gaze[1] * share, 0.0])
        head_target[0] += point_env * _clip(point_yaw_deg * POINT_HEAD_SHARE, -20.0, 20.0)
        head_target[2] = (LISTEN_TILT_DEG * (0.5 + p_motion) * st.listening + CONCERN_TILT_DEG * concern) \
            + QUESTION_TILT_DEG * ev["question"] * motion_gain
        w = 2 * math.pi * HEAD_SPRING_HZ
        dt_s = dt_ms / 1000.0
        acc = w * w * (head_target - st.head) - 2 * w * st.head_vel
        st.head_vel += acc * dt_s
        st.head += st.head_vel * dt_s
        eye_target = gaze - st.head[:2]
        a = 1.0 - math.exp(-dt_ms / EYE_TAU_MS)
        st.eyes += (eye_target - st.eyes) * a

        # ---- the head: gaze orientation + beats, nods, shakes, breathing, micro-motion
        breath = float(x[i["breath"]])
        head = st.head.copy()
        head[1] -= BEAT_PITCH_DEG * motion_gain * ev["beat_pitch"]
        head[0] += BEAT_YAW_DEG * motion_gain * ev["beat_yaw"]
        head[1] -= STATEMENT_NOD_DEG * nod_gain * ev["statement_nod"]
        head[1] -= INTENT_NOD_DEG * nod_gain * nod_env * nod_wave
        head[1] -= BACKCHANNEL_NOD_DEG * nod_gain * bc_nod
        head[0] += SHAKE_DEG * motion_gain * shake
        head[1] += BREATH_PITCH_DEG * breath * (1.0 if idle > 0.5 or present < 0.5 else 0.6)
        head += np.asarray(MICRO_MOTION_DEG) * noise * motion_gain * (1.0 + 0.3 * sounding)
        m[HEAD_SLICE] = head
        eyes = np.minimum(np.maximum(st.eyes, -EYE_LIMITS_DEG[:2]), EYE_LIMITS_DEG[:2])
        m[EYES_SLICE] = (eyes[0], eyes[1], eyes[0], eyes[1])
        for sign, side in ((1, "Left"), (-1, "Right")):
            yaw, pitch = eyes
            m[B["eyeLookOut" + side]] += max(0.0, sign * yaw / 30.0) * LOOK_BLENDSHAPE_GAIN
            m[B["eyeLookIn" + side]] += max(0.0, -sign * yaw / 30.0) * LOOK_BLENDSHAPE_GAIN
            m[B["eyeLookUp" + side]] += max(0.0, pitch / 25.0) * LOOK_BLENDSHAPE_GAIN
            m[B["eyeLookDown" + side]] += max(0.0, -pitch / 25.0) * LOOK_BLENDSHAPE_GAIN
        blink = float(x[i["blink"]])
        m[B["eyeBlinkLeft"]] = max(m[B["eyeBlinkLeft"]], blink)
        m[B["eyeBlinkRight"]] = max(m[B["eyeBlinkRight"]], blink)

        # ---- gesture channels
        nod_channel = max(ev["statement_nod"] * (0.4 + 0.6 * p_nod), nod_env * nod_wave, bc_nod * (0.3 + 0.7 * p_nod))
        m[GESTURE_SLICE] = (nod_channel, abs(negation), min(1.0, abs(head[2]) / 8.0), point_env, open_env)

        return np.minimum(np.maximum(m, MOTION_LOW), MOTION_HIGH).astype(np.float32)


class TeacherPlanner:
    """The teacher behind the loop's ``Planner`` protocol: ``step(pts_ns, token) -> (64,) float32``."""

    def __init__(self, inputs: PlannerInputs | None = None, seed: int = 0):
        self.inputs = inputs if inputs is not None else PlannerInputs(seed=seed)
        self.core = TeacherCore()
        self.last_inputs: np.ndarray | None = None

    def step(self, pts_ns: int, token: np.ndarray | None) -> np.ndarray:
        self.inputs.observe_token(token, pts_ns)
        x = self.inputs.vector(pts_ns)
        self.last_inputs = x
        return self.core.step(pts_ns, x, self.inputs)

    def step_vector(self, pts_ns: int, x: np.ndarray) -> np.ndarray:
        """One tick on an already assembled input vector (the generator's path)."""
        return self.core.step(pts_ns, x, self.inputs)

    def reset(self) -> None:
        self.inputs.reset()
        self.core.reset()
