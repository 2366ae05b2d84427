"""The reference renderer, judged from its pixels: every blendshape shows, the jaw opens the mouth,
blinks close the eyes, the head and the eyes turn, and the background stays the display's colour."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the teacher draws with OpenCV (pip install opencv-python-headless)")

from edge_avatar.motion import ARKIT_BLENDSHAPES, BLENDSHAPE_INDEX, neutral_motion  # noqa: E402
from edge_avatar.render import layout  # noqa: E402
from edge_avatar.render.metrics import psnr, ssim  # noqa: E402
from edge_avatar.render.sampler import MotionSampler  # noqa: E402
from edge_avatar.render.teacher import TeacherRenderer  # noqa: E402

SIZE = 128
BACKGROUND = (28, 36, 52)


@pytest.fixture(scope="module")
def teacher() -> TeacherRenderer:
    return TeacherRenderer(SIZE, SIZE, supersample=1, background_rgb=BACKGROUND)


@pytest.fixture(scope="module")
def big_teacher() -> TeacherRenderer:
    """256 px: the eyes are large enough to count the white of the eye."""
    return TeacherRenderer(2 * SIZE, 2 * SIZE, supersample=1, background_rgb=BACKGROUND)


@pytest.fixture(scope="module")
def neutral(teacher) -> np.ndarray:
    return teacher.render(neutral_motion()).astype(np.int16)


def motion(head=(0.0, 0.0, 0.0), eyes=(0.0, 0.0, 0.0, 0.0), **blendshapes: float) -> np.ndarray:
    m = neutral_motion()
    for name, value in blendshapes.items():
        m[BLENDSHAPE_INDEX[name]] = value
    m[52:55], m[55:59] = head, eyes
    return m


def screen_box(u: float, v: float, half_w: float, half_h: float, size: int = SIZE) -> tuple[slice, slice]:
    """Rows and columns around a chart point of the head at rest (front of the face: x ~ a sin u)."""
    unit = layout.HEAD_UNIT_FRAC * size
    x = layout.HEAD_CENTER_FRAC[0] * size + layout.HEAD_RADII_UPPER[0] * np.sin(u) * unit
    y = layout.HEAD_CENTER_FRAC[1] * size - v * unit
    return (slice(int(y - half_h * unit), int(y + half_h * unit) + 1),
            slice(int(x - half_w * unit), int(x + half_w * unit) + 1))


def luma(image: np.ndarray) -> np.ndarray:
    return image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114


@pytest.mark.parametrize("name", ARKIT_BLENDSHAPES)
def test_every_blendshape_visibly_changes_the_face(teacher, neutral, name):
    if name == "mouthClose":  # ARKit: mouthClose closes the lips against an open jaw; it needs jawOpen
        before = teacher.render(motion(jawOpen=0.6)).astype(np.int16)
        after = teacher.render(motion(jawOpen=0.6, mouthClose=0.6)).astype(np.int16)
    else:
        before, after = neutral, teacher.render(motion(**{name: 1.0})).astype(np.int16)
    changed = np.abs(after - before).max(axis=-1) > 12
    assert changed.sum() >= 5, f"{name} changed only {changed.sum()} pixels by more than 12 levels"


def test_jaw_open_opens_a_dark_mouth(teacher, neutral):
    rows, cols = screen_box(0.0, -0.58, 0.25, 0.22)
    opened = teacher.render(motion(jawOpen=1.0)).astype(np.int16)
    dark_before = (luma(neutral[rows, cols]) < 90).sum()
    dark_after = (luma(opened[rows, cols]) < 90).sum()
    assert dark_after > dark_before + 20, (dark_before, dark_after)
    assert luma(opened[rows, cols]).mean() < luma(neutral[rows, cols]).mean() - 5


def _white(image: np.ndarray, sign: int) -> int:
    """Pixels of the white of one eye: bright and grey (skin is as bright but much redder)."""
    rows, cols = screen_box(sign * 0.38, 0.04, 0.22, 0.14, size=2 * SIZE)
    patch = image[rows, cols].astype(np.float32)
    return int(((patch[..., 1] > 0.84 * patch[..., 0]) & (luma(patch) > 150)).sum())


@pytest.mark.parametrize("side, sign", [("Left", 1), ("Right", -1)])
def test_a_blink_closes_that_eye_only(big_teacher, side, sign):
    neutral = big_teacher.render(neutral_motion())
    blinked = big_teacher.render(motion(**{f"eyeBlink{side}": 1.0}))
    assert _white(neutral, sign) > 10
    assert _white(blinked, sign) == 0, "a closed eye shows no white"
    assert _white(blinked, -sign) == _white(neutral, -sign), "the other eye stays as it was"


def _mouth_centroid(teacher: TeacherRenderer, head: tuple[float, float, float]) -> np.ndarray:
    """Where the mouth is on screen: the centroid of what opening the jaw changes."""
    closed = teacher.render(motion(head=head)).astype(np.int16)
    opened = teacher.render(motion(head=head, jawOpen=1.0)).astype(np.int16)
    changed = np.abs(opened - closed).max(-1) > 40
    ys, xs = np.nonzero(changed)
    return np.array([xs.mean(), ys.mean()])


def test_head_yaw_and_pitch_move_the_features(teacher):
    base = _mouth_centroid(teacher, (0.0, 0.0, 0.0))
    turned = _mouth_centroid(teacher, (25.0, 0.0, 0.0))
    raised = _mouth_centroid(teacher, (0.0, 20.0, 0.0))
    assert turned[0] - base[0] > 3.0, "yaw + turns the face to the avatar's left: the mouth moves right on screen"
    assert base[1] - raised[1] > 2.0, "pitch + raises the chin: the mouth moves up"


def test_eye_yaw_moves_the_irises(big_teacher):
    def iris_x(image):
        xs = []
        for s in (1, -1):
            rows, cols = screen_box(s * 0.38, 0.02, 0.18, 0.1, size=2 * SIZE)
            p = image[rows, cols].astype(np.float32)
            brown = (p[..., 0] > p[..., 1]) & (p[..., 1] > p[..., 2]) & (p[..., 2] < 0.55 * p[..., 0]) \
                & (luma(p) > 35) & (luma(p) < 140)
            xs.append(np.nonzero(brown)[1].mean() + cols.start)
        return np.array(xs)

    right = iris_x(big_teacher.render(motion(eyes=(25.0, 0.0, 25.0, 0.0))))
    left = iris_x(big_teacher.render(motion(eyes=(-25.0, 0.0, -25.0, 0.0))))
    assert np.all(right - left > 3.0), (left, right)


def test_the_background_is_transparent_and_takes_the_display_colour(teacher):
    frame = teacher.render_frame(neutral_motion())
    assert frame.rgba[0, 0, 3] == 0.0 and frame.head_alpha[0, 0] == 0.0
    image = teacher.render(neutral_motion())
    assert tuple(image[0, 0]) == BACKGROUND
    other = frame.composite((255, 255, 255))
    opaque = frame.rgba[..., 3] >= 1.0
    assert np.array_equal(other[opaque], image[opaque]), "only uncovered pixels take the background"


def test_bad_motion_is_clamped_and_counted(teacher, neutral):
    bad = neutral_motion()
    bad[0], bad[52] = np.nan, 1e6
    before = teacher.values_clamped
    image = teacher.render(bad).astype(np.int16)
    assert teacher.values_clamped - before >= 2
    clean = teacher.render(motion(head=(45.0, 0.0, 0.0))).astype(np.int16)
    assert np.array_equal(image, clean)


def test_the_teacher_is_deterministic(teacher):
    m = MotionSampler(5).sample()
    assert np.array_equal(teacher.render(m), teacher.render(m))


def test_the_sampler_is_seeded_and_reaches_every_blendshape():
    a, b = MotionSampler(11).batch(1500), MotionSampler(11).batch(1500)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[:10], MotionSampler(12).batch(10))
    assert (a[:, :52].max(axis=0) > 0.5).all(), "every blendshape is driven past half its range"
    assert np.abs(a[:, 52]).max() > 30.0, "large head turns are sampled too"


def test_metrics_are_the_usual_ones():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert psnr(x, x) == float("inf") and ssim(x, x) == pytest.approx(1.0)
    noisy = np.clip(x.astype(int) + rng.integers(-8, 9, x.shape), 0, 255).astype(np.uint8)
    assert 30.0 < psnr(x, noisy) < 36.0
    assert ssim(x, noisy) < 1.0


def test_mouth_opening_is_measured_from_the_pixels():
    from edge_avatar.render.metrics import mouth_opening

    teacher = TeacherRenderer(256, 256, supersample=1, background_rgb=BACKGROUND)
    for head in ((0.0, 0.0, 0.0), (15.0, 8.0, 5.0)):
        readings = [mouth_opening(teacher.render(motion(head=head, jawOpen=j))) for j in (0.0, 0.5, 1.0)]
        assert readings[0] < readings[1] < readings[2], (head, readings)
    assert mouth_opening(teacher.render(neutral_motion())) < 0.1
    assert 0.8 < mouth_opening(teacher.render(motion(jawOpen=1.0))) < 1.2
