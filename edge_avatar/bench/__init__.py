"""Benchmarks: ``edge-avatar bench [NAME] --json``, one JSON out, recorded in BENCHMARKS.md.

Why a registry: every capability adds its own benchmark (perception,
conversation, planner, renderer, engines) and ``bench`` with no name runs all
of them into one document with the machine named, so figures are comparable
run to run. Benchmarks warm up, repeat, and report min/p50/p95; speed targets
live here, never in timed unit tests.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
from typing import Any, Callable

from edge_avatar import __version__

log = logging.getLogger(__name__)

# Modules that register benchmarks when imported; each capability adds its own here.
BENCH_MODULES: tuple[str, ...] = (
    "edge_avatar.bench.loop_bench",
    "edge_avatar.bench.demo_bench",
    "edge_avatar.bench.projection",
    "edge_avatar.listening.bench",
    "edge_avatar.fleet.bench",
    "edge_avatar.perception.bench",
    "edge_avatar.dialogue.bench",
    "edge_avatar.render.bench",
    "edge_avatar.engines.bench",
    "edge_avatar.planner.bench",
)

# name -> (function(quick: bool) -> dict, one-line description)
BENCHMARKS: dict[str, tuple[Callable[[bool], dict[str, Any]], str]] = {}


def register(name: str, description: str):
    def wrap(fn: Callable[[bool], dict[str, Any]]):
        BENCHMARKS[name] = (fn, description)
        return fn
    return wrap


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "machine": platform.machine(), "python": platform.python_version(),
            "edge_avatar": __version__}


def run_benchmarks(names: list[str] | None, quick: bool = False,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    import importlib  # noqa: PLC0415

    for module in BENCH_MODULES:
        importlib.import_module(module)  # registers its benchmarks
    selected = names or sorted(BENCHMARKS)
    unknown = [n for n in selected if n not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark {unknown[0]!r}; available: {', '.join(sorted(BENCHMARKS))}")
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results: dict[str, Any] = {"machine": machine_info(), "generated_utc": generated, "quick": quick,
                               "benchmarks": {}}
    from edge_avatar.bench.speed_probe import SpeedProbe, speed_record  # noqa: PLC0415
    from edge_avatar.runtime.cpu_share import CpuTimes, share_pct  # noqa: PLC0415

    try:
        probe: SpeedProbe | None = SpeedProbe()
    except Exception as exc:  # noqa: BLE001 - the figures still count without the yardstick; say why
        log.warning("bench: no speed probe (%s)", exc)
        probe = None
    for name in selected:
        if progress:
            progress(f"bench {name}: {BENCHMARKS[name][1]}")
        speed_before = probe.measure() if probe else None
        before = CpuTimes.read()
        result = BENCHMARKS[name][0](quick)
        # the machine while it ran: on a VM, "steal" (vCPU time the hypervisor took) slows every figure, and the
        # same VM has slower and faster minutes with no steal at all (the probe); first, so that the Markdown
        # block (which cuts a long result) always shows them
        cpu = result.pop("machine_cpu_pct", None) or share_pct(before, CpuTimes.read())
        speed = speed_record(speed_before, probe.measure() if probe else None)
        results["benchmarks"][name] = {"machine_cpu_pct": cpu, "machine_speed": speed, **result}
    return results
