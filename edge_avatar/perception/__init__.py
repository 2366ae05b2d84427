"""Perception: camera frames (and, later, microphone audio) to the perception token.

Why this package exists: the planner must react to a real visitor -- where
they are, whether they look at the avatar, how they feel, what their hands
say -- so each camera frame becomes a fixed-layout, versioned float vector
(``perception.token``) plus a structured ``PerceptionResult``. The networks
are MediaPipe's face detector, face mesh, blendshape and hand models and the
FER2013 emotion model, converted to ONNX from pinned PyPI packages
(``perception.convert``, ``engines/manifest.json``) and run through
``edge_avatar.backends``.

Modules: ``options`` (the config section), ``pipeline`` (``VisionPerception``,
the loop's stage), ``face``, ``hands``, ``visitor`` (distance, active visitor,
engagement), ``token``, ``geometry``, ``models``, ``convert``, ``material``
(cached real test images and upstream files), ``preview``, ``cli``, ``bench``.

This ``__init__`` imports nothing heavy: the root config imports
``perception.options`` on every start, so the stage is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VisionPerception", "PerceptionResult", "TOKEN_SIZE", "TOKEN_VERSION", "TOKEN_SLICES"]


def __getattr__(name: str) -> Any:
    if name == "VisionPerception":
        from edge_avatar.perception.pipeline import VisionPerception  # noqa: PLC0415

        return VisionPerception
    if name in ("PerceptionResult", "TOKEN_SIZE", "TOKEN_VERSION", "TOKEN_SLICES"):
        from edge_avatar.perception import token  # noqa: PLC0415

        return getattr(token, name)
    raise AttributeError(f"module 'edge_avatar.perception' has no attribute {name!r}")
