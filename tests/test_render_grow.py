"""Growing the 512 px renderer student from the 256 px one (render/grow.py): the grown student starts by drawing
what the small one draws, enlarged. Needs torch (the ``train`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_avatar.render import layout  # noqa: E402
from edge_avatar.render.grow import grow_student  # noqa: E402
from edge_avatar.render.student import RendererStudent, StudentShape, eyeball_hw  # noqa: E402


def _blank_init(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``RendererStudent``'s arguments at ``size``, random (the shapes are what matters here)."""
    sh = StudentShape(size)
    eye_h, eye_w = sh.patch_hw(layout.EYE_PATCH)
    he, we = eyeball_hw(sh.texels_per_unit)
    return {"static_texture": rng.random((5, *sh.texture_hw), dtype=np.float32),
            "body_rgba": rng.random((4, size, size), dtype=np.float32),
            "base_fields": rng.random((7, *sh.geo_hw), dtype=np.float32),
            "eyeball": rng.random((2, 5, he, we), dtype=np.float32),
            "eye_opening": rng.random((1, eye_h, eye_w), dtype=np.float32),
            "gaze_weight": rng.random((2, 15), dtype=np.float32)}


@pytest.fixture(scope="module")
def grown():
    rng = np.random.default_rng(3)
    small_init, large_init = _blank_init(256, rng), _blank_init(512, rng)
    small = RendererStudent(256, **small_init)
    with torch.no_grad():   # a "trained" small student: its parameters moved away from where they started
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return small, grow_student(small, small_init, large_init, 512), small_init, large_init


def test_every_decoder_draws_the_small_one_s_output_enlarged(grown):
    small, large, _, _ = grown
    v = {"eye": torch.randn(2, 15), "mouth": torch.randn(1, 33), "coarse": torch.randn(1, 56),
         "geo": torch.randn(1, small.geo.fc1.in_features)}
    with torch.no_grad():
        for name, x in v.items():
            a, b = getattr(small, name)(x), getattr(large, name)(x)
            assert b.shape[-2:] == (2 * a.shape[-2], 2 * a.shape[-1]), name
            enlarged = torch.nn.functional.interpolate(a, scale_factor=2.0, mode="nearest")
            torch.testing.assert_close(b, enlarged, rtol=0, atol=1e-5, msg=name)


def test_textures_are_the_large_painting_plus_the_small_one_s_learned_change(grown):
    small, large, small_init, large_init = grown
    learned = small.static_texture.detach()[0] - torch.from_numpy(small_init["static_texture"])
    expected = torch.from_numpy(large_init["static_texture"]) + torch.nn.functional.interpolate(
        learned[None], size=large.static_texture.shape[-2:], mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(large.static_texture.detach()[0], expected)
    # everything that is not a texture nor a decoder's last layer is the small student's
    torch.testing.assert_close(large.shader2.weight, small.shader2.weight)
    torch.testing.assert_close(large.geo.conv2.weight, small.geo.conv2.weight)
    torch.testing.assert_close(large.eye_gaze.weight, small.eye_gaze.weight)


def test_a_size_that_is_not_a_multiple_is_refused(grown):
    small, _, small_init, _ = grown
    with pytest.raises(ValueError, match="cannot grow from a 256px"):
        grow_student(small, small_init, small_init, 384)
