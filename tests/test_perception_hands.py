"""Hands on real photos and gesture rules: the open hand of opencv-doc, waving, pointing, thumbs up.

The open hand (opencv-doc's handSrc.jpg, fetched and cached by
``perception.material``) must be found with its 21 landmarks on the fingers
and all five fingers extended. The rules for the other gestures are checked
on hand skeletons in MediaPipe's 21-point topology (there is no thumbs-up or
pointing photo in any package the project may use), upright and rotated, and
the wave on the real hand moved left and right on the media clock.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_avatar.frames import VideoFrame
from edge_avatar.perception.hands import FINGERS, WaveDetector, fingers_extended, static_gesture
from edge_avatar.perception.material import MaterialUnavailable, opencv_doc_image
from edge_avatar.perception.options import PerceptionConfig
from edge_avatar.perception.pipeline import VisionPerception
from edge_avatar.perception.token import GESTURES, TOKEN_SLICES

cv2 = pytest.importorskip("cv2")
STRAIGHT_DEG = PerceptionConfig().finger_extended_min_deg
THUMB_TILT_DEG = PerceptionConfig().thumbs_up_max_tilt_deg


def _material(fn, *args):
    try:
        return fn(*args)
    except MaterialUnavailable as exc:
        pytest.skip(f"test material unavailable: {exc}")


@pytest.fixture(scope="module")
def hand_image():
    return _material(opencv_doc_image, "handSrc.jpg")


@pytest.fixture(scope="module")
def stage():
    s = VisionPerception(PerceptionConfig(redetect_interval_frames=30))
    yield s
    s.close()


# --------------------------------------------------------------------------- the real open hand


def test_open_hand_found_with_five_fingers(stage, hand_image):
    r = stage.analyze_image(hand_image)
    assert r.frame_valid and len(r.hands) == 1 and r.faces == []
    hand = r.hands[0]
    assert hand.landmarks.shape == (21, 3) and hand.score > 0.9
    assert hand.fingers_extended == {f: True for f in FINGERS}
    assert hand.gesture == "open_palm"
    # Fingertips where the photo has them (fingers point right, thumb up): index, middle, ring, pinky, thumb.
    tips = hand.landmarks[[8, 12, 16, 20, 4], :2]
    expected = np.array([[478, 142], [532, 257], [502, 324], [419, 434], [247, 27]])
    assert np.abs(tips - expected).max() < 25, tips
    x1, y1, x2, y2 = hand.box_xyxy
    assert x2 > 500 and y1 < 40 and y2 > 420
    token = r.token()
    hand_0 = token[TOKEN_SLICES["hand_0"]]
    assert hand_0[0] == 1.0 and hand_0[5 + GESTURES.index("open_palm")] == 1.0


def _hand_on_table(hand_image: np.ndarray, dx_px: float) -> np.ndarray:
    """The hand at half size on a 640x480 table, shifted ``dx_px`` to the right (the arm enters from the left)."""
    small = cv2.resize(hand_image, (320, 240), interpolation=cv2.INTER_AREA)
    matrix = np.float32([[1, 0, 100 + dx_px], [0, 1, 120]])
    return cv2.warpAffine(small, matrix, (640, 480), borderMode=cv2.BORDER_REPLICATE)


def _run(stage, frames):
    stage.reset()
    return [stage.process(VideoFrame(int(k * 1e9 / 30), k, f)) for k, f in enumerate(frames)]


def test_waving_hand_is_a_wave_and_a_still_one_is_not(stage, hand_image):
    # 2 Hz, +-90 px (about a third of the hand's width) for 1.5 s at 30 fps.
    waving = [_hand_on_table(hand_image, 90 * math.sin(2 * math.pi * 2.0 * k / 30)) for k in range(45)]
    results = _run(stage, waving)
    assert all(len(r.hands) == 1 for r in results[2:])
    gestures = [r.hands[0].gesture for r in results if r.hands]
    assert gestures[-1] == "wave" and "wave" not in gestures[:10]
    assert results[-1].token()[TOKEN_SLICES["hand_0"]][5 + GESTURES.index("wave")] == 1.0
    still = [_hand_on_table(hand_image, 0.0)] * 30
    gestures = [r.hands[0].gesture for r in _run(stage, still) if r.hands]
    assert len(gestures) == 30 and set(gestures) == {"open_palm"}


# --------------------------------------------------------------------------- rules on hand skeletons


def _skeleton(fingers_out: set[str], thumb: str) -> np.ndarray:
    """(21, 3) upright hand, image coordinates; ``thumb`` is "out", "tucked" or "up" (a fist seen sideways)."""
    pts = np.zeros((21, 3))
    if thumb == "up":  # thumbs-up: knuckles stacked vertically, fingers curled toward the camera's right
        pts[0, :2] = (100, 220)
        bases = {"index": (130, 150), "middle": (132, 170), "ring": (130, 190), "pinky": (126, 208)}
        curl = np.array([(16, 4), (10, 10), (2, 8)])
        pts[1:5, :2] = [(110, 185), (118, 160), (122, 135), (125, 110)]
    else:
        pts[0, :2] = (100, 200)
        bases = {"index": (82, 120), "middle": (100, 116), "ring": (118, 120), "pinky": (134, 128)}
        curl = np.array([(0, -18), (2, -6), (3, 2)])
        pts[1:5, :2] = ([(75, 185), (55, 165), (42, 148), (30, 132)] if thumb == "out"
                        else [(80, 188), (70, 172), (80, 160), (95, 150)])
    for name, base in bases.items():
        mcp, pip, dip, tip = FINGERS[name]
        pts[mcp, :2] = base
        if name in fingers_out:
            pts[[pip, dip, tip], :2] = np.array(base) + np.array([(0, -25), (0, -40), (0, -54)])
        else:
            pts[[pip, dip, tip], :2] = np.array(base) + curl
    return pts


def _rotated(pts: np.ndarray, angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # counter-clockwise in the image
    out = pts.copy()
    out[:, :2] = (pts[:, :2] - pts[0, :2]) @ rot.T + (300, 300)
    return out


def _gesture(pts: np.ndarray) -> str:
    return static_gesture(pts, fingers_extended(pts, STRAIGHT_DEG), THUMB_TILT_DEG)


ALL = {"index", "middle", "ring", "pinky"}


@pytest.mark.parametrize("angle_deg", [0.0, -90.0, 35.0])
def test_static_gestures_from_finger_states(angle_deg):
    assert _gesture(_rotated(_skeleton(ALL, "out"), angle_deg)) == "open_palm"
    assert _gesture(_rotated(_skeleton({"index"}, "tucked"), angle_deg)) == "pointing"
    assert _gesture(_rotated(_skeleton({"index"}, "out"), angle_deg)) == "pointing"  # thumb free
    assert _gesture(_rotated(_skeleton(set(), "tucked"), angle_deg)) == "none"       # a fist
    assert _gesture(_rotated(_skeleton({"index", "middle"}, "tucked"), angle_deg)) == "none"  # victory: no rule


def test_thumbs_up_only_when_the_thumb_points_up():
    up = _skeleton(set(), "up")
    assert fingers_extended(up, STRAIGHT_DEG) == {"thumb": True, "index": False, "middle": False, "ring": False,
                                                  "pinky": False}
    assert _gesture(up) == "thumbs_up"
    assert _gesture(_rotated(up, 25.0)) == "thumbs_up"
    assert _gesture(_rotated(up, 90.0)) == "none"     # thumb sideways
    assert _gesture(_rotated(up, 180.0)) == "none"    # thumbs down is not thumbs up


def test_wave_detector_counts_reversals_on_the_media_clock():
    wave = WaveDetector(window_ns=1_500_000_000, min_reversals=2, min_amplitude_widths=0.25)
    hits = [wave.update(int(k * 1e9 / 30), 300 + 60 * math.sin(2 * math.pi * 2 * k / 30), 100.0, True)
            for k in range(45)]
    assert hits[-1] and not hits[5]
    small = WaveDetector(window_ns=1_500_000_000, min_reversals=2, min_amplitude_widths=0.25)
    jitter = [small.update(int(k * 1e9 / 30), 300 + 8 * math.sin(2 * math.pi * 2 * k / 30), 100.0, True)
              for k in range(45)]
    assert not any(jitter)  # trembling is not waving
    fist = WaveDetector(window_ns=1_500_000_000, min_reversals=2, min_amplitude_widths=0.25)
    closed = [fist.update(int(k * 1e9 / 30), 300 + 60 * math.sin(2 * math.pi * 2 * k / 30), 100.0, False)
              for k in range(45)]
    assert not any(closed)  # a moving fist is not a wave
