"""How the machine's CPU time was spent during a run: user, system, idle, and time stolen by a hypervisor.

Why this module exists: the loop's dropped frames and stage times say how the
avatar fared; they cannot say whether the machine itself was there. On a
virtual machine the hypervisor can take a vCPU away (Linux counts that as
*steal*): then a tick that needed 20 ms of CPU gets it 40 ms later and the
frame drops, whatever the avatar does. Measured on the 2-core development VM
(``edge-avatar demo``, same code): 0.4 % of frames dropped with 5 % steal,
9.2 % dropped with 19 % steal. The report carries the machine's shares over
the run so that a bad figure can be told apart from a bad machine.

Linux only (``/proc/stat``); elsewhere ``read`` returns None and the report
says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# The first eight fields of /proc/stat's "cpu" line, in clock ticks summed over every CPU (proc(5)).
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU ticks of the whole machine since boot, per kind."""

    ticks: tuple[int, ...]

    @staticmethod
    def parse(line: str) -> "CpuTimes":
        parts = line.split()
        if not parts or parts[0] != "cpu" or len(parts) < 1 + len(FIELDS):
            raise ValueError(f"{PROC_STAT}: expected a 'cpu' line with {len(FIELDS)} counters, got {line[:80]!r}")
        return CpuTimes(tuple(int(v) for v in parts[1:1 + len(FIELDS)]))

    @staticmethod
    def read(path: Path = PROC_STAT) -> "CpuTimes | None":
        try:
            with open(path, encoding="ascii") as fh:
                return CpuTimes.parse(fh.readline())
        except (OSError, ValueError):
            return None


def share_pct(before: CpuTimes | None, after: CpuTimes | None) -> dict[str, float] | None:
    """Percent of all CPU time between two readings spent in each kind (``FIELDS``); None if either is missing
    or no time passed."""
    if before is None or after is None:
        return None
    spent = [max(0, b - a) for a, b in zip(before.ticks, after.ticks)]   # iowait may go backwards (proc(5))
    total = sum(spent)
    if total <= 0:
        return None
    return {name: round(100.0 * t / total, 1) for name, t in zip(FIELDS, spent)}
