"""``edge-avatar bench demo``: the headline numbers, from the real demo run the way a user runs it.

Why this module exists: issue 10's targets (the tick rate held with under 1 %
dropped frames, response latency p50 under 800 ms including the end-of-turn
wait, A/V offset within 40 ms on every turn, peak memory under 1.5 GB) are
properties of the whole product on this machine, not of any one stage. So
the benchmark runs ``edge-avatar demo`` in its own process (its peak memory
is then the demo's alone, and nothing of the benchmark's own imports counts)
and reads its report.json, checking each target and saying which were met.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_avatar.bench import register

TARGETS = {
    "dropped_pct_max": 1.0,
    "response_latency_p50_ms_max": 800.0,
    "av_offset_abs_ms_max": 40.0,
    "peak_rss_mb_max": 1536.0,
}


def summarise_demo_report(report: dict[str, Any]) -> dict[str, Any]:
    """The figures issue 10 names, each next to its target and whether it was met."""
    frames = report.get("frames", {})
    latency = report.get("response_latency_ms", {})
    av = report.get("av_offset_ms", {})
    peak = report.get("memory_mb", {}).get("peak_rss")
    turns = report.get("turns", [])
    figures = {
        "frames": {k: frames.get(k) for k in ("rendered", "dropped", "dropped_pct", "fps")},
        "response_latency_ms": latency,
        "end_of_turn_wait_ms": report.get("end_of_turn_wait_ms", {}),
        "response_latency_excluding_wait_ms": report.get("response_latency_excluding_wait_ms", {}),
        "av_offset_ms": av,
        "av_offset_ms_per_turn": [t.get("av_offset_ms") for t in turns],
        "turns": [{k: t.get(k) for k in ("turn_id", "kind", "tier", "response_latency_ms", "end_of_turn_wait_ms",
                                          "reply_compute_ms", "interrupted", "barge_in_stop_ms", "av_offset_ms")}
                  for t in turns],
        "stages_ms": {name: {k: s.get(k) for k in ("p50", "p95")}
                      for name, s in report.get("stages_ms", {}).items() if s.get("count")},
        "peak_rss_mb": peak,
        # the machine while the loop ran: "steal" is time a hypervisor took the vCPUs away (drops follow it)
        "machine_cpu_pct": report.get("machine_cpu_pct"),
        "engines": report.get("perception", {}).get("engines"),
        "planner": report.get("planner", {}).get("kind"),
        "renderer": report.get("renderer", {}).get("kind"),
    }
    offsets = [abs(v) for v in figures["av_offset_ms_per_turn"] if v is not None]
    met = {
        "dropped_pct": frames.get("dropped_pct") is not None
        and frames["dropped_pct"] < TARGETS["dropped_pct_max"],
        "response_latency_p50": latency.get("p50") is not None
        and latency["p50"] < TARGETS["response_latency_p50_ms_max"],
        "av_offset_every_turn": bool(offsets) and len(offsets) == len(turns)
        and max(offsets) <= TARGETS["av_offset_abs_ms_max"],
        "peak_memory": peak is not None and peak < TARGETS["peak_rss_mb_max"],
    }
    return {**figures, "targets": TARGETS, "targets_met": met}


@register("demo", "the bundled demo end to end: drops, response latency, A/V offset per turn, peak memory")
def bench_demo(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edge-avatar-bench-demo-") as tmp:
        out = Path(tmp)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "edge_avatar", "demo", "--out", str(out)],
                                capture_output=True, text=True, timeout=900)
        wall_s = time.monotonic() - started
        if result.returncode != 0:
            return {"error": f"edge-avatar demo exited {result.returncode}", "stderr_tail": result.stderr[-1500:]}
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"command": "edge-avatar demo --out DIR", "wall_s": round(wall_s, 1), **summarise_demo_report(report)}
