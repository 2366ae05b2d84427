"""A progress bar on stderr for the long planner commands (data generation, training, evaluation).

Why this module exists: ``edge-avatar train planner`` runs for minutes on a
2-core box and the operator must see that it moves and when it will end.
On a terminal it redraws one line; into a log (not a TTY) it writes a line
every 5 %. No dependency (tqdm is not in the project): a dozen lines.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.start_s = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_pct = -1

    def update(self, done: int, note: str = "") -> None:
        done = min(int(done), self.total)
        frac = done / self.total
        pct = int(frac * 100)
        elapsed = time.monotonic() - self.start_s
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        filled = int(frac * self.width)
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {pct:3d}% {done}/{self.total} "
                f"{_fmt(elapsed)} elapsed, {_fmt(eta)} left{(' ' + note) if note else ''}")
        if self.tty:
            self.stream.write("\r" + line + " " * 4)
            if done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif pct // 5 != self._last_pct // 5 or done >= self.total:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last_pct = pct


def _fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}m{seconds % 60:02d}s"
