"""Every stage measures itself: durations kept in a bounded ring, summarised as p50/p95.

Why: "where did the time go" is the question users ask most, and the answer
must not cost memory that grows with uptime. A ``StageTimer`` keeps the last
``window`` samples (ns) in a numpy ring and reports min/p50/p95/max in ms.
"""

from __future__ import annotations

import numpy as np


class StageTimer:
    def __init__(self, name: str, window: int = 20000):
        self.name = name
        self._ring_ns = np.zeros(window, dtype=np.int64)
        self._window = window
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0

    def add_ns(self, duration_ns: int) -> None:
        self._ring_ns[self.count % self._window] = duration_ns
        self.count += 1
        self.total_ns += duration_ns
        if duration_ns > self.max_ns:
            self.max_ns = duration_ns

    def recent_ns(self) -> np.ndarray:
        return self._ring_ns[: min(self.count, self._window)]

    def summary_ms(self) -> dict[str, float | int]:
        recent = self.recent_ns()
        if len(recent) == 0:
            return {"count": 0}
        p50, p95 = np.percentile(recent, [50, 95])
        return {
            "count": self.count,
            "min": round(float(recent.min()) / 1e6, 4),
            "p50": round(float(p50) / 1e6, 4),
            "p95": round(float(p95) / 1e6, 4),
            "max": round(self.max_ns / 1e6, 4),
            "mean": round(self.total_ns / self.count / 1e6, 4),
        }
