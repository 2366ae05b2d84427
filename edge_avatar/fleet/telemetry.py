"""What a device reports every ``fleet.telemetry_interval_s``: the loop's health and the board's.

Why this module exists: telemetry observes the avatar from outside the media
path. ``TelemetrySource`` calls a function the session provides (returning
the same dict as the session report: frames, stage timings, turns) on the
fleet thread, never on the tick, and adds what the operating system and the
board say: CPU, memory, and on a Jetson the temperatures, rail power and GPU
load.

Board readings come from jetson-stats (``jtop``) when it is installed and its
service answers, because it knows every board's rail names and GPU paths;
otherwise straight from sysfs, which needs nothing installed:
``/sys/class/thermal/thermal_zone*`` (millidegrees C), the INA3221 power
monitors' hwmon files (``in*_input`` mV x ``curr*_input`` mA, labelled by
``in*_label``), and the GPU ``load`` file (per mille). CPU and memory come from
``/proc`` (no psutil: two files, read every few seconds). Every reader is
tolerant: a missing file is an absent field, never an exception.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

# Where the GPU load file lives, by board generation (Nano/TX2/Xavier, then Orin under JetPack 5/6).
GPU_LOAD_PATHS = (
    "devices/gpu.0/load",
    "devices/platform/gpu.0/load",
    "devices/platform/17000000.ga10b/load",
    "devices/platform/17000000.gpu/load",
    "devices/platform/bus@0/17000000.gpu/load",
)
INA3221_DRIVER_DIR = "bus/i2c/drivers/ina3221"
MIN_CPU_JIFFIES = 20  # below this many clock ticks between samples, a CPU percentage is noise


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _read_number(path: Path) -> float | None:
    text = _read(path)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class SysfsProbe:
    """Temperatures, rail power and GPU load from sysfs; roots injectable so tests use a fake tree."""

    name = "sysfs"

    def __init__(self, sysfs_root: str | Path = "/sys"):
        self.root = Path(sysfs_root)

    def temperatures_c(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for zone in sorted(self.root.glob("class/thermal/thermal_zone*")):
            kind = _read(zone / "type") or zone.name
            millideg = _read_number(zone / "temp")
            if millideg is None or millideg <= -40000:  # disabled zones report -256000 on some boards
                continue
            name = kind if kind not in out else f"{kind}.{zone.name.removeprefix('thermal_zone')}"
            out[name] = round(millideg / 1000.0, 1)
        return out

    def power_mw(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for hwmon in sorted(self.root.glob(f"{INA3221_DRIVER_DIR}/*/hwmon/hwmon*")):
            for label_file in sorted(hwmon.glob("in*_label")):
                channel = label_file.name[2:-len("_label")]
                label = _read(label_file)
                millivolt = _read_number(hwmon / f"in{channel}_input")
                milliamp = _read_number(hwmon / f"curr{channel}_input")
                if not label or millivolt is None or milliamp is None or label.lower().startswith("sum of"):
                    continue
                out[label] = round(millivolt * milliamp / 1000.0, 1)
        return out

    def gpu_load_pct(self) -> float | None:
        for rel in GPU_LOAD_PATHS:
            per_mille = _read_number(self.root / rel)
            if per_mille is not None:
                return round(per_mille / 10.0, 1)
        return None

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.name}
        temps, power, gpu = self.temperatures_c(), self.power_mw(), self.gpu_load_pct()
        if temps:
            out["temperatures_c"] = temps
        if power:
            out["power_mw"] = power
        if gpu is not None:
            out["gpu_load_pct"] = gpu
        return out


class JtopProbe:
    """jetson-stats, when installed and its service is running; ``None`` from ``open()`` otherwise."""

    name = "jtop"

    def __init__(self, handle: Any):
        self._jtop = handle

    @classmethod
    def open(cls) -> "JtopProbe | None":
        try:
            from jtop import jtop  # noqa: PLC0415 - optional, Jetson only
        except ImportError:
            return None
        try:
            handle = jtop()
            handle.start()
            if not handle.ok():
                handle.close()
                return None
        except Exception as exc:  # noqa: BLE001 - jtop raises its own types when the service is down
            log.info("jetson-stats installed but not usable (%s); reading sysfs instead", exc)
            return None
        return cls(handle)

    def sample(self) -> dict[str, Any]:
        stats = dict(self._jtop.stats)
        out: dict[str, Any] = {"source": self.name}
        temps = {k.removeprefix("Temp ").strip(): float(v) for k, v in stats.items()
                 if k.startswith("Temp ") and isinstance(v, (int, float)) and v > -40}
        power = {k.removeprefix("Power ").strip(): float(v) for k, v in stats.items()
                 if k.startswith("Power ") and isinstance(v, (int, float))}
        if temps:
            out["temperatures_c"] = temps
        if power:
            out["power_mw"] = power
        if isinstance(stats.get("GPU"), (int, float)):
            out["gpu_load_pct"] = float(stats["GPU"])
        return out

    def close(self) -> None:
        try:
            self._jtop.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass


class HostProbe:
    """CPU use (from /proc/stat deltas), load, memory and this process's resident size."""

    def __init__(self, proc_root: str | Path = "/proc"):
        self.root = Path(proc_root)
        self._last_cpu: tuple[int, int] | None = self._cpu_times()

    def _cpu_times(self) -> tuple[int, int] | None:
        text = _read(self.root / "stat")
        if not text:
            return None
        fields = text.splitlines()[0].split()
        if not fields or fields[0] != "cpu":
            return None
        values = [int(v) for v in fields[1:9]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu_count": os.cpu_count()}
        now = self._cpu_times()
        if now is not None and self._last_cpu is not None and now[0] - self._last_cpu[0] >= MIN_CPU_JIFFIES:
            total, idle = now[0] - self._last_cpu[0], now[1] - self._last_cpu[1]
            out["cpu_pct"] = round(100.0 * (total - idle) / total, 1)
            self._last_cpu = now
        elif self._last_cpu is None:
            self._last_cpu = now
        load = _read(self.root / "loadavg")
        if load:
            try:
                out["load_1m"] = float(load.split()[0])
            except (ValueError, IndexError):
                pass
        meminfo = _read(self.root / "meminfo")
        if meminfo:
            kib: dict[str, int] = {}
            for line in meminfo.splitlines():
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    kib[key] = int(parts[0])
            if "MemTotal" in kib:
                out["memory_total_mb"] = round(kib["MemTotal"] / 1024, 1)
                if "MemAvailable" in kib:
                    out["memory_used_mb"] = round((kib["MemTotal"] - kib["MemAvailable"]) / 1024, 1)
        statm = _read(self.root / "self/statm")
        if statm:
            try:
                out["process_rss_mb"] = round(int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
            except (ValueError, IndexError, OSError):
                pass
        return out


def _pick_summary(summary: Any) -> dict[str, float] | None:
    if not isinstance(summary, Mapping) or not summary.get("count"):
        return None
    return {k: summary[k] for k in ("p50", "p95") if isinstance(summary.get(k), (int, float))}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    lo = int(math.floor(rank))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


class TelemetrySource:
    """One telemetry sample per call of ``sample()``, from the session's stats and the machine.

    ``stats`` returns a mapping shaped like the session report (all keys
    optional): ``frames.rendered``/``frames.dropped`` (counters),
    ``stages_ms.<stage>`` and ``tick_ms`` (summaries with p50/p95),
    ``turns`` (list with ``response_latency_ms``), ``av_offset_ms`` (number or
    summary), ``ticks.late``. fps and dropped frames are computed over the
    interval since the previous sample, response latency over the last
    ``recent_turns`` turns. A failing ``stats`` yields a sample with
    ``stats_error`` rather than no sample.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]] | None = None, *, recent_turns: int = 20,
                 host: HostProbe | None = None, board: Any = None, sysfs_root: str | Path = "/sys",
                 use_jtop: bool = True, monotonic_s: Callable[[], float] = time.monotonic):
        self.stats = stats
        self.recent_turns = recent_turns
        self.host = host or HostProbe()
        self._board = board
        self._sysfs_root = sysfs_root
        self._use_jtop = use_jtop
        self._monotonic_s = monotonic_s
        self._last: tuple[float, int, int] | None = None  # (t_s, frames rendered, frames dropped)
        self._started_s = monotonic_s()

    def _board_probe(self) -> Any:
        if self._board is None:
            self._board = (JtopProbe.open() if self._use_jtop else None) or SysfsProbe(self._sysfs_root)
        return self._board

    def sample(self) -> dict[str, Any]:
        now_s = self._monotonic_s()
        out: dict[str, Any] = {"uptime_s": round(now_s - self._started_s, 1)}
        if self.stats is not None:
            try:
                out.update(self._loop_fields(self.stats(), now_s))
            except Exception as exc:  # noqa: BLE001 - telemetry must not die with the stats function
                out["stats_error"] = f"{type(exc).__name__}: {exc}"[:200]
        system: dict[str, Any] = {}
        for probe in (self.host, self._board_probe()):
            try:
                system.update(probe.sample())
            except Exception as exc:  # noqa: BLE001
                system.setdefault("errors", []).append(f"{type(probe).__name__}: {exc}"[:200])
        out["system"] = system
        return out

    def _loop_fields(self, stats: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        frames = stats.get("frames") or {}
        rendered, dropped = frames.get("rendered"), frames.get("dropped")
        if isinstance(rendered, int) and isinstance(dropped, int):
            if self._last is not None and now_s > self._last[0]:
                dt = now_s - self._last[0]
                out["fps"] = round((rendered - self._last[1]) / dt, 2)
                out["dropped_frames"] = dropped - self._last[2]
            elif isinstance(frames.get("fps"), (int, float)):
                out["fps"] = frames["fps"]
                out["dropped_frames"] = dropped
            out["frames_total"] = {"rendered": rendered, "dropped": dropped}
            self._last = (now_s, rendered, dropped)
        stages = {name: s for name, s in ((n, _pick_summary(v)) for n, v in (stats.get("stages_ms") or {}).items())
                  if s}
        if stages:
            out["stages_ms"] = stages
        tick = _pick_summary(stats.get("tick_ms"))
        if tick:
            out["tick_ms"] = tick
        latencies = [t.get("response_latency_ms") for t in (stats.get("turns") or [])[-self.recent_turns:]
                     if isinstance(t, Mapping)]
        latencies = [v for v in latencies if isinstance(v, (int, float))]
        if latencies:
            out["response_latency_ms"] = {"turns": len(latencies), "p50": round(_percentile(latencies, 50), 1),
                                          "p95": round(_percentile(latencies, 95), 1), "last": latencies[-1]}
        av = stats.get("av_offset_ms")
        if isinstance(av, (int, float)):
            out["av_offset_ms"] = av
        elif _pick_summary(av):
            out["av_offset_ms"] = _pick_summary(av)
        ticks = stats.get("ticks") or {}
        if isinstance(ticks.get("late"), int):
            out["late_ticks_total"] = ticks["late"]
        return out

    def close(self) -> None:
        close = getattr(self._board, "close", None)
        if callable(close):
            close()
