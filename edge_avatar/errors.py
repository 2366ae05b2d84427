"""Errors shared across the package, in a module with no imports of its own.

Why a separate module: capability packages (dialogue, perception, ...) raise
``ConfigError`` for their own files, and ``edge_avatar.config`` imports their
option sections; keeping the error here breaks that import cycle.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, always naming the source, the key path and what was expected."""

    def __init__(self, source: str, key_path: str, problem: str):
        self.source = source
        self.key_path = key_path
        self.problem = problem
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem}")
