"""Image quality measures for the student against the teacher: PSNR and SSIM, in numpy only.

Why this module exists: the renderer's acceptance figures (PSNR >= 30 dB,
SSIM >= 0.95 at 256x256) are computed in tests, in ``eval renderer`` and in
``bench renderer``, and must be computed the same way everywhere. SSIM is the
standard one (Wang et al. 2004: an 11-tap Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, on 0..255 data), averaged over the RGB channels; it is
written with separable numpy convolutions so that the runtime's dependencies
(numpy, onnxruntime) are enough to measure it -- no scikit-image, no OpenCV.
"""

from __future__ import annotations

import numpy as np

SSIM_SIGMA_PX = 1.5
SSIM_RADIUS_PX = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PIXEL_MAX = 255.0


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 (or 0..255 float) images of the same shape."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(test, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"psnr: shapes differ: {ref.shape} vs {out.shape}")
    mse = float(np.mean((ref - out) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(PIXEL_MAX ** 2 / mse)


def _gaussian_kernel() -> np.ndarray:
    x = np.arange(-SSIM_RADIUS_PX, SSIM_RADIUS_PX + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / SSIM_SIGMA_PX) ** 2)
    return k / k.sum()


def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'Valid' separable filtering of (H, W, C) along H and W."""
    r = len(kernel) // 2
    h, w = img.shape[0] - 2 * r, img.shape[1] - 2 * r
    rows = sum(kernel[i] * img[i:i + h] for i in range(len(kernel)))          # (h, W, C)
    return sum(kernel[i] * rows[:, i:i + w] for i in range(len(kernel)))      # (h, w, C)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean structural similarity of two (H, W, 3) uint8 images (channels averaged)."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(test, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"ssim: shapes differ: {ref.shape} vs {out.shape}")
    if ref.ndim == 2:
        ref, out = ref[..., None], out[..., None]
    k = _gaussian_kernel()
    c1, c2 = (SSIM_K1 * PIXEL_MAX) ** 2, (SSIM_K2 * PIXEL_MAX) ** 2
    mu_x, mu_y = _filter(ref, k), _filter(out, k)
    xx, yy, xy = _filter(ref * ref, k), _filter(out * out, k), _filter(ref * out, k)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))


def mouth_opening(image: np.ndarray) -> float:
    """How open the avatar's mouth is, measured from the pixels alone (about 0 closed, 1 at jawOpen = 1).

    For the end-to-end lip-sync check (mouth opening in the rendered frames against the speech
    envelope). In the box where the mouth is at ordinary head turns (36-64 % of the width, 42-70 % of
    the height, any frame size), the mouth -- lips, teeth, tongue and the inside --
    is whatever is not skin: skin has green/red ~0.7, lips, tongue and the inside < 0.62, teeth > 0.85.
    Its height (in its tallest columns) grows linearly with the jaw; the closed lips' height is
    subtracted and the result scaled so the teacher at jawOpen = 1, head at rest, reads 1.
    """
    h, w = image.shape[:2]
    box = image[int(0.42 * h):int(0.70 * h), int(0.36 * w):int(0.64 * w)].astype(np.float32)
    ratio = box[..., 1] / np.maximum(box[..., 0], 1.0)
    mouth = ((ratio < 0.62) | (ratio > 0.85)) & (box[..., 0] > 60)   # > 60: not the dark background
    heights = np.sort(mouth.sum(axis=0))[::-1]
    height_frac = float(heights[:max(1, int(0.06 * w))].mean()) / h  # the tallest columns: the mouth's middle
    return max(0.0, (height_frac - MOUTH_CLOSED_HEIGHT_FRAC) / MOUTH_OPEN_RANGE_FRAC)


def eye_white_px(image: np.ndarray) -> tuple[int, int]:
    """Pixels of the white of each eye (the avatar's left, right) with the head at rest, from the pixels alone.

    Bright, grey pixels (luma > 150, green > 0.84 red: skin is as bright but much redder) in a box around
    where each eye is at rest, sized from ``layout`` so any frame size works. The teacher shows about 30 per
    eye at 256 px with the eyes open, a few half closed and none closed: the check that a lid really closes.
    """
    from edge_avatar.render import layout  # noqa: PLC0415

    h = image.shape[0]
    unit = layout.HEAD_UNIT_FRAC * h
    counts = []
    for sign in (1, -1):                    # +1: the avatar's left eye, on the viewer's right
        x = layout.HEAD_CENTER_FRAC[0] * image.shape[1] + layout.HEAD_RADII_UPPER[0] * np.sin(sign * 0.38) * unit
        y = layout.HEAD_CENTER_FRAC[1] * h - 0.04 * unit
        patch = image[int(y - 0.14 * unit):int(y + 0.14 * unit) + 1,
                      int(x - 0.22 * unit):int(x + 0.22 * unit) + 1].astype(np.float32)
        luma = patch @ np.array([0.299, 0.587, 0.114], np.float32)
        counts.append(int(((patch[..., 1] > 0.84 * patch[..., 0]) & (luma > 150)).sum()))
    return counts[0], counts[1]


# Calibrated against the teacher (tests/test_render_teacher.py checks them): mouth height / frame height.
MOUTH_CLOSED_HEIGHT_FRAC = 0.040
MOUTH_OPEN_RANGE_FRAC = 0.046
