"""Bilinear upsampling written as a matrix, so that a fixed resize becomes two matrix products.

Why this module exists: the shipped renderer upsamples its geometry fields and
its coarse chart change by 4 with fixed bilinear weights, and ONNX Runtime's
Resize was slow for it (``edge_avatar/render/export.py`` writes them as
``rows @ x @ cols.T`` instead). The matrices follow PyTorch's
``F.interpolate(mode="bilinear", align_corners=False)`` (OpenCV's INTER_LINEAR
for enlarging uses the same half-pixel centres), with any crop of the output
built in. It needs only numpy, so it is tested where torch is not installed.
"""

from __future__ import annotations

import numpy as np


def bilinear_matrix(n_in: int, scale: int, start: int = 0, count: int | None = None) -> np.ndarray:
    """(count, n_in) float32: output rows ``start .. start + count`` of a bilinear upsampling by ``scale`` of
    ``n_in`` samples. Output row i samples the input at (i + 0.5) / scale - 0.5, clamped to the first
    sample on the left and to the last on the right; ``count`` defaults to the rest of the output."""
    n_out = n_in * scale
    count = n_out - start if count is None else count
    if start < 0 or count < 1 or start + count > n_out:
        raise ValueError(f"rows {start}..{start + count} are outside an upsampling of {n_in} by {scale}")
    matrix = np.zeros((count, n_in), np.float64)
    for i in range(count):
        source = max((start + i + 0.5) / scale - 0.5, 0.0)
        left = int(np.floor(source))
        right_share = source - left
        matrix[i, left] += 1.0 - right_share
        matrix[i, min(left + 1, n_in - 1)] += right_share
    return matrix.astype(np.float32)
