"""The ``perception`` section of the root config (models, tracking, visitor selection, engagement)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PerceptionConfig:
    """How the avatar sees and hears the visitor."""

    enabled: bool = True
