"""`edge-avatar doctor`: what this machine has, what the configuration needs, and how to close the gap.

Why this module exists: the first hour on a new kiosk is spent finding out that
TensorRT is not visible from the venv, the camera is on /dev/video2 instead of
/dev/video0, the board is in its 15 W mode, or the broker's port is closed. The
doctor looks at the host once, compares it with the frozen ``RootConfig`` and
answers with one ``Finding`` per fact, each with a fix where something is
missing.

Rules the checks keep:

- Nothing here raises: every check runs inside a guard that turns an
  unexpected exception into a ``warn`` finding naming the exception.
- Heavy or device-specific modules (tensorrt, cuda, pycuda, onnxruntime,
  sounddevice, pyrealsense2) are imported inside the check that needs them,
  so ``import edge_avatar.doctor`` costs nothing on a laptop.
- Every external command has a timeout (``COMMAND_TIMEOUT_S``), the broker
  probe is one TCP connect with ``BROKER_TIMEOUT_S``.
- Host paths are gathered in ``HostPaths`` so tests can point the checks at a
  simulated Jetson instead of the real /proc and /etc.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_avatar.config import RootConfig

Status = Literal["ok", "warn", "missing", "info"]

COMMAND_TIMEOUT_S = 5.0   # any external command (nvidia-smi, nvpmodel, dpkg-query, ffmpeg -version)
BROKER_TIMEOUT_S = 2.0    # one TCP connect to the MQTT broker

REPO_ROOT = Path(__file__).resolve().parent.parent

# Substrings of /proc/device-tree/model that identify each Jetson board config.
_BOARD_MODEL_HINTS: dict[str, tuple[str, ...]] = {
    "orin-nano-8gb": ("Orin Nano",),
    "orin-nx-16gb": ("Orin NX",),
    "agx-orin-64gb": ("AGX Orin",),
    "thor": ("Thor",),
}
# Module part numbers in /proc/device-tree/compatible (assumed from public L4T device trees:
# p3767 = Orin NX / Orin Nano family, p3701 = AGX Orin family).
_COMPATIBLE_HINTS: dict[str, str] = {
    "p3767-0000": "orin-nx-16gb",
    "p3767-0003": "orin-nano-8gb",
    "p3767-0005": "orin-nano-8gb",
    "p3701-0005": "agx-orin-64gb",
    "tegra264": "thor",
}
# L4T release -> JetPack release, for the versions this project targets (NVIDIA's JetPack archive).
_JETPACK_FOR_L4T: dict[str, str] = {
    "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "38.2.0": "7.0",
}
_JETPACK_FOR_L4T_MAJOR = {"35": "5.x", "36": "6.x", "38": "7.x"}


@dataclass(frozen=True)
class Finding:
    """One fact about this machine, judged against the configuration."""

    check: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class HostPaths:
    """Where the doctor looks. Defaults are the real host; tests point these at tmp_path."""

    device_tree_model: Path = Path("/proc/device-tree/model")
    device_tree_compatible: Path = Path("/proc/device-tree/compatible")
    tegra_release: Path = Path("/etc/nv_tegra_release")
    meminfo: Path = Path("/proc/meminfo")
    asound_cards: Path = Path("/proc/asound/cards")
    cuda_version_json: Path = Path("/usr/local/cuda/version.json")
    dev_dir: Path = Path("/dev")
    engines_dir: Path = REPO_ROOT / "engines"
    scenario_data_dir: Path = Path(__file__).resolve().parent / "scenario" / "data"


@dataclass
class _Context:
    config: RootConfig
    paths: HostPaths
    broker: str | None
    facts: dict[str, object] = field(default_factory=dict)  # shared between checks (e.g. is_jetson)


# --------------------------------------------------------------------------- public API


def run_doctor(config: RootConfig, broker: str | None = None, *,
               paths: HostPaths | None = None) -> list[Finding]:
    """Run every check against ``config``; never raises. ``broker`` is "host:port" or None."""
    ctx = _Context(config=config, paths=paths or HostPaths(), broker=broker)
    checks: list[tuple[str, Callable[[_Context], Iterable[Finding]]]] = [
        ("board", _check_board),
        ("jetpack", _check_jetpack),
        ("tensorrt", _check_tensorrt),
        ("cuda", _check_cuda),
        ("onnxruntime", _check_onnxruntime),
        ("camera", _check_camera),
        ("audio devices", _check_audio_devices),
        ("speaker", _check_speaker),
        ("ffmpeg", _check_ffmpeg),
        ("espeak-ng", _check_espeak),
        ("engines", _check_engines),
        ("engine cache", _check_engine_cache),
        ("power mode", _check_power_mode),
        ("broker", _check_broker),
    ]
    findings: list[Finding] = []
    for name, check in checks:
        try:
            findings.extend(check(ctx))
        except Exception as exc:  # noqa: BLE001 - a broken check must never take the doctor down
            findings.append(Finding(name, "warn", f"check failed: {type(exc).__name__}: {exc}",
                                    "report this as a bug in edge_avatar.doctor"))
    return findings


def format_findings(findings: list[Finding]) -> str:
    """A plain-text table, one row per finding, with a ``fix:`` line under anything not ok."""
    if not findings:
        return "no findings\n"
    check_w = max(len("CHECK"), *(len(f.check) for f in findings))
    status_w = max(len("STATUS"), *(len(f.status) for f in findings))
    lines = [f"{'CHECK':<{check_w}}  {'STATUS':<{status_w}}  DETAIL",
             f"{'-' * check_w}  {'-' * status_w}  {'-' * 6}"]
    for f in findings:
        lines.append(f"{f.check:<{check_w}}  {f.status:<{status_w}}  {f.detail}")
        if f.fix and f.status in ("missing", "warn"):
            lines.append(f"{'':<{check_w}}  {'':<{status_w}}  fix: {f.fix}")
    counts = {s: sum(1 for f in findings if f.status == s) for s in ("ok", "warn", "missing", "info")}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines) + "\n"


def findings_to_json(findings: list[Finding]) -> list[dict]:
    """Plain dicts (check, status, detail, fix) for ``--json`` and the fleet report."""
    return [dataclasses.asdict(f) for f in findings]


# --------------------------------------------------------------------------- helpers


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace").replace("\x00", " ").strip()
    except OSError:
        return None


def _run(argv: list[str]) -> tuple[int, str] | None:
    """Run a command with a timeout; None when it is not on PATH or cannot run."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _needs_tensorrt(config: RootConfig) -> bool:
    return config.backend.name == "tensorrt" or any(
        p.startswith("Tensorrt") for p in config.backend.onnxruntime_providers)


def _needs_cuda(config: RootConfig) -> bool:
    return config.backend.name == "tensorrt" or any(
        p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in config.backend.onnxruntime_providers)


def _is_jetson(ctx: _Context) -> bool:
    if "is_jetson" not in ctx.facts:
        model = _read_text(ctx.paths.device_tree_model) or ""
        ctx.facts["is_jetson"] = ctx.paths.tegra_release.is_file() or "jetson" in model.lower()
    return bool(ctx.facts["is_jetson"])


def _config_is_jetson(config: RootConfig) -> bool:
    return config.board.name in _BOARD_MODEL_HINTS or config.backend.name == "tensorrt"


def _mem_total_gib(path: Path) -> float | None:
    text = _read_text(path)
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text or "", re.MULTILINE)
    return int(match.group(1)) / (1024 * 1024) if match else None


def _guess_board(model: str, compatible: str) -> str | None:
    for part, board in _COMPATIBLE_HINTS.items():
        if part in compatible:
            return board
    for board, hints in _BOARD_MODEL_HINTS.items():
        if any(h.lower() in model.lower() for h in hints):
            return board
    return None


def _parse_l4t(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> '36.4.3'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    major, minor, patch = match.group(1), match.group(2), match.group(3) or "0"
    return f"{major}.{minor}.{patch}"


def _split_uri(uri: str) -> tuple[str, str]:
    scheme, sep, rest = uri.partition("://")
    return (scheme.lower(), rest) if sep else ("", uri)


# --------------------------------------------------------------------------- checks


def _check_board(ctx: _Context) -> list[Finding]:
    cfg_board = ctx.config.board.name
    model = _read_text(ctx.paths.device_tree_model)
    compatible = _read_text(ctx.paths.device_tree_compatible) or ""
    mem_gib = _mem_total_gib(ctx.paths.meminfo)
    mem = f", {mem_gib:.1f} GiB RAM" if mem_gib is not None else ""
    if not _is_jetson(ctx):
        detail = (f"development machine ({platform.machine() or 'unknown arch'}, "
                  f"{platform.system()} {platform.release()}{mem}), not a Jetson")
        if _config_is_jetson(ctx.config):
            return [Finding("board", "warn", f"{detail}; config is for Jetson board {cfg_board!r}",
                            "run with --board x86-cpu on this machine, or run the doctor on the Jetson")]
        return [Finding("board", "ok", f"{detail}; config board {cfg_board!r}")]
    guess = _guess_board(model or "", compatible)
    shown = model or "unknown Jetson (no /proc/device-tree/model)"
    if cfg_board == guess:
        return [Finding("board", "ok", f"{shown}{mem}; matches config board {cfg_board!r}")]
    if guess is None:
        return [Finding("board", "info", f"{shown}{mem}; no board config is known for it (config: {cfg_board!r})",
                        "copy the closest board_configs/*.yaml and adjust it for this module")]
    return [Finding("board", "warn", f"{shown}{mem} looks like {guess!r} but the config is for {cfg_board!r}",
                    f"start with --board {guess}")]


def _check_jetpack(ctx: _Context) -> list[Finding]:
    release = _read_text(ctx.paths.tegra_release)
    dpkg = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]) if release is not None else None
    jetpack_pkg = dpkg[1] if dpkg and dpkg[0] == 0 and dpkg[1] else None
    if release is None:
        if _config_is_jetson(ctx.config):
            return [Finding("jetpack", "missing", f"no {ctx.paths.tegra_release}: not an L4T system",
                            "flash JetPack 6.2 (Orin) or JetPack 7 (Thor) with SDK Manager, "
                            "or use --board x86-cpu off-Jetson")]
        return [Finding("jetpack", "info", f"no {ctx.paths.tegra_release}: not a Jetson, JetPack not expected")]
    l4t = _parse_l4t(release)
    if l4t is None:
        return [Finding("jetpack", "warn", f"cannot parse {ctx.paths.tegra_release}: {release.splitlines()[0][:80]!r}",
                        "check the JetPack install (cat /etc/nv_tegra_release)")]
    major = l4t.split(".")[0]
    jetpack = _JETPACK_FOR_L4T.get(l4t) or _JETPACK_FOR_L4T_MAJOR.get(major, "unknown")
    detail = f"L4T {l4t} (JetPack {jetpack})"
    if jetpack_pkg:
        detail += f", nvidia-jetpack {jetpack_pkg}"
    if ctx.config.board.name == "thor" and major != "38":
        return [Finding("jetpack", "warn", detail + "; Jetson Thor needs JetPack 7 (L4T r38)",
                        "flash JetPack 7 with SDK Manager")]
    if major == "35":
        return [Finding("jetpack", "warn", detail + "; JetPack 5 ships TensorRT 8.5, this project needs TensorRT 10",
                        "upgrade to JetPack 6.2 (L4T r36.4)")]
    return [Finding("jetpack", "ok", detail)]


def _check_tensorrt(ctx: _Context) -> list[Finding]:
    needed = _needs_tensorrt(ctx.config)
    install = ("on the Jetson: sudo apt-get install python3-libnvinfer (part of JetPack; "
               "`sudo apt-get install nvidia-jetpack` installs all of it), then create the venv with "
               "--system-site-packages so it sees JetPack's TensorRT")
    if not _has_module("tensorrt"):
        if needed:
            return [Finding("tensorrt", "missing",
                            f"python module tensorrt not importable; backend {ctx.config.backend.name!r} needs it",
                            install)]
        return [Finding("tensorrt", "info",
                        f"not installed (not needed: backend is {ctx.config.backend.name!r})", install)]
    try:
        trt = importlib.import_module("tensorrt")
        version = str(getattr(trt, "__version__", "unknown"))
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything (OSError for libnvinfer, ...)
        return [Finding("tensorrt", "missing" if needed else "warn",
                        f"tensorrt is installed but fails to import: {type(exc).__name__}: {exc}", install)]
    major_minor = tuple(int(p) for p in re.findall(r"\d+", version)[:2]) or (0,)
    if major_minor[0] < 10:
        return [Finding("tensorrt", "warn", f"TensorRT {version}; the native backend needs TensorRT 10 "
                        "(named-tensor API, execute_async_v3)", "upgrade to JetPack 6.2 (TensorRT 10.3) or later")]
    if ctx.config.board.name == "thor" and major_minor < (10, 13):
        return [Finding("tensorrt", "warn", f"TensorRT {version}; Jetson Thor (Blackwell) needs 10.13 or later",
                        "flash JetPack 7")]
    return [Finding("tensorrt", "ok", f"TensorRT {version}")]


def _check_cuda(ctx: _Context) -> list[Finding]:
    bindings = []
    if _has_module("cuda"):
        bindings.append(f"cuda-python {_dist_version('cuda-python', 'cuda-bindings') or '?'}")
    if _has_module("pycuda"):
        bindings.append(f"pycuda {_dist_version('pycuda') or '?'}")
    runtime = []
    text = _read_text(ctx.paths.cuda_version_json)
    if text:
        try:
            runtime.append(f"CUDA {json.loads(text)['cuda']['version']} ({ctx.paths.cuda_version_json})")
        except (ValueError, KeyError, TypeError):
            runtime.append(f"{ctx.paths.cuda_version_json} present but unreadable")
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if smi and smi[0] == 0 and smi[1]:
        runtime.append(f"nvidia-smi: {smi[1].splitlines()[0]}")
    parts = bindings + runtime
    detail = "; ".join(parts) if parts else f"no CUDA runtime ({ctx.paths.cuda_version_json} absent, no nvidia-smi)"
    needed = _needs_cuda(ctx.config)
    fix = ("pip install 'edge-avatar[jetson]' (pycuda) or pip install cuda-python matching the JetPack CUDA; "
           "the CUDA toolkit itself comes with JetPack (sudo apt-get install nvidia-jetpack)")
    if not bindings:
        if needed:
            return [Finding("cuda", "missing", detail + "; no Python CUDA bindings (cuda-python or pycuda)", fix)]
        return [Finding("cuda", "info", detail + f"; not needed: backend is {ctx.config.backend.name!r}")]
    if not runtime:
        return [Finding("cuda", "warn" if needed else "info", detail + "; bindings present but no CUDA runtime found",
                        "install the CUDA runtime that matches the bindings (JetPack on a Jetson)")]
    return [Finding("cuda", "ok", detail)]


def _check_onnxruntime(ctx: _Context) -> list[Finding]:
    try:
        ort = importlib.import_module("onnxruntime")
    except Exception as exc:  # noqa: BLE001 - a broken onnxruntime wheel can raise anything on import
        return [Finding("onnxruntime", "missing", f"cannot import onnxruntime: {type(exc).__name__}: {exc}",
                        "pip install onnxruntime (a core dependency: pip install -e .)")]
    version = getattr(ort, "__version__", "?")
    providers = list(ort.get_available_providers())
    detail = f"ONNX Runtime {version}; providers: {', '.join(providers) or 'none'}"
    if ctx.config.backend.name != "onnxruntime":
        return [Finding("onnxruntime", "ok", detail + f" (backend is {ctx.config.backend.name!r})")]
    wanted = list(ctx.config.backend.onnxruntime_providers)
    absent = [p for p in wanted if p not in providers]
    if absent:
        return [Finding("onnxruntime", "warn", detail + f"; configured but unavailable: {', '.join(absent)}",
                        "install an onnxruntime-gpu build for this CUDA/JetPack, or set "
                        "backend.onnxruntime_providers to the available ones")]
    return [Finding("onnxruntime", "ok", detail)]


def _video_nodes(dev_dir: Path) -> list[str]:
    return sorted(glob.glob(str(dev_dir / "video*")))


def _check_camera(ctx: _Context) -> list[Finding]:
    uri = ctx.config.camera.uri
    scheme, rest = _split_uri(uri)
    nodes = _video_nodes(ctx.paths.dev_dir)
    present = ", ".join(nodes) if nodes else "none"
    if scheme in ("v4l2", "csi", ""):
        if scheme == "csi" or (scheme == "v4l2" and rest.isdigit()):
            device = str(ctx.paths.dev_dir / f"video{rest or 0}")
        else:
            device = rest or uri
        if not os.path.exists(device):
            return [Finding("camera", "missing", f"camera.uri {uri}: {device} does not exist (video nodes: {present})",
                            "connect the camera and check `v4l2-ctl --list-devices`; "
                            + (f"or set camera.uri to v4l2://{nodes[0]}" if nodes
                               else "or use camera.uri: scenario://demo for a scripted visitor"))]
        if not os.access(device, os.R_OK | os.W_OK):
            return [Finding("camera", "warn", f"camera.uri {uri}: {device} exists but is not readable by this user",
                            "sudo usermod -aG video $USER, then log in again")]
        return [Finding("camera", "ok", f"camera.uri {uri}: {device} present (video nodes: {present})")]
    if scheme == "realsense":
        if not _has_module("pyrealsense2"):
            return [Finding("camera", "missing",
                            f"camera.uri {uri}: pyrealsense2 not installed (video nodes: {present})",
                            "pip install 'edge-avatar[camera]' (pyrealsense2); on a Jetson build librealsense "
                            "with the RSUSB backend if no wheel exists for it")]
        rs = importlib.import_module("pyrealsense2")
        devices = []
        for dev in rs.context().query_devices():
            try:
                devices.append(f"{dev.get_info(rs.camera_info.name)} "
                               f"#{dev.get_info(rs.camera_info.serial_number)}")
            except Exception:  # noqa: BLE001 - a device that vanishes mid-query
                devices.append("unnamed RealSense")
        serial = rest.strip("/")
        if not devices:
            return [Finding("camera", "missing", f"camera.uri {uri}: no RealSense device found",
                            "plug the camera into a USB 3 port and check `rs-enumerate-devices`")]
        if serial and not any(serial in d for d in devices):
            return [Finding("camera", "missing", f"camera.uri {uri}: serial {serial} not among {', '.join(devices)}",
                            "fix the serial in camera.uri or use realsense:// for the first device")]
        return [Finding("camera", "ok", f"camera.uri {uri}: {', '.join(devices)}")]
    if scheme == "file":
        path = Path(rest).expanduser()
        if not path.is_file():
            return [Finding("camera", "missing", f"camera.uri {uri}: {path.resolve()} not found",
                            "fix the path in camera.uri (relative paths are resolved from the working directory)")]
        return [Finding("camera", "ok", f"camera.uri {uri}: {path.resolve()} ({path.stat().st_size} bytes)")]
    if scheme == "scenario":
        return [_scenario_finding("camera", "camera.uri", uri, rest, ctx.paths.scenario_data_dir)]
    return [Finding("camera", "warn", f"camera.uri {uri}: unknown scheme {scheme!r}",
                    "use v4l2:///dev/videoN, csi://N, realsense://[SERIAL], file://PATH or scenario://NAME")]


def _scenario_finding(check: str, key: str, uri: str, name: str, data_dir: Path) -> Finding:
    name = name.strip("/") or "demo"
    if not data_dir.is_dir():
        return Finding(check, "info", f"{key} {uri}: built-in scenario; no scenario data directory "
                       f"({data_dir}) to check {name!r} against")
    known = sorted({p.stem for p in data_dir.iterdir()})
    if name in known:
        return Finding(check, "ok", f"{key} {uri}: scenario {name!r} found in {data_dir}")
    return Finding(check, "missing", f"{key} {uri}: no scenario {name!r} in {data_dir}",
                   f"use one of: {', '.join(known) or 'none installed'}; reinstall with pip install -e .")


def _sounddevice_devices() -> tuple[list[dict], str | None]:
    """(devices, error). Import is lazy: PortAudio may be absent (OSError) on a headless box."""
    try:
        sd = importlib.import_module("sounddevice")
    except (ImportError, OSError) as exc:
        return [], f"{type(exc).__name__}: {exc}"
    try:
        return [dict(d) for d in sd.query_devices()], None
    except Exception as exc:  # noqa: BLE001 - PortAudioError when the host API cannot start
        return [], f"{type(exc).__name__}: {exc}"


def _check_audio_devices(ctx: _Context) -> list[Finding]:
    mic_uri = ctx.config.microphone.uri
    mic_scheme, _ = _split_uri(mic_uri)
    mic_needs_device = mic_scheme in ("alsa", "portaudio")
    devices, error = _sounddevice_devices()
    fix = ("sudo apt-get install libportaudio2 && pip install 'edge-avatar[audio]'; "
           "check the microphone with `arecord -l`")
    if error is None:
        inputs = [d["name"] for d in devices if d.get("max_input_channels", 0) > 0]
        outputs = [d["name"] for d in devices if d.get("max_output_channels", 0) > 0]
        detail = (f"sounddevice: {len(inputs)} input(s) [{', '.join(inputs[:4])}], "
                  f"{len(outputs)} output(s) [{', '.join(outputs[:4])}]; microphone.uri {mic_uri}")
        if inputs:
            return [Finding("audio devices", "ok", detail)]
        if mic_needs_device:
            return [Finding("audio devices", "missing", detail + " needs an input device", fix)]
        return [Finding("audio devices", "info", detail + " (no input device needed)")]
    cards = _read_text(ctx.paths.asound_cards)
    if cards and "no soundcards" not in cards.lower():
        names = [line.split("]:", 1)[1].strip() for line in cards.splitlines() if "]:" in line]
        detail = (f"sounddevice unavailable ({error}); ALSA cards: {', '.join(names) or cards[:80]}; "
                  f"microphone.uri {mic_uri}")
        return [Finding("audio devices", "warn" if mic_needs_device else "info", detail,
                        fix if mic_needs_device else "")]
    detail = f"no sound devices (sounddevice: {error}; no ALSA cards in {ctx.paths.asound_cards})"
    if mic_needs_device:
        return [Finding("audio devices", "missing", detail + f"; microphone.uri {mic_uri} needs one", fix)]
    return [Finding("audio devices", "info", detail + f"; not needed by microphone.uri {mic_uri}")]


def _check_speaker(ctx: _Context) -> list[Finding]:
    uri = ctx.config.audio_output.uri
    scheme, rest = _split_uri(uri)
    if scheme == "virtual":
        return [Finding("speaker", "ok", f"audio_output.uri {uri}: virtual speaker, paced by the monotonic "
                        "clock (no sound)")]
    if scheme not in ("alsa", "portaudio"):
        return [Finding("speaker", "missing", f"audio_output.uri {uri}: unknown scheme {scheme!r}",
                        "use virtual://, alsa://NAME or portaudio://INDEX")]
    devices, error = _sounddevice_devices()
    if error is not None:
        return [Finding("speaker", "missing", f"audio_output.uri {uri} needs PortAudio: {error}",
                        "sudo apt-get install libportaudio2 && pip install 'edge-avatar[audio]', "
                        "or set audio_output.uri: virtual://")]
    outputs = [(i, d["name"]) for i, d in enumerate(devices) if d.get("max_output_channels", 0) > 0]
    if not outputs:
        return [Finding("speaker", "missing", f"audio_output.uri {uri}: no output device",
                        "connect a speaker (check `aplay -l`), or set audio_output.uri: virtual://")]
    target = rest.strip("/")
    if target in ("", "default"):
        return [Finding("speaker", "ok", f"audio_output.uri {uri}: {len(outputs)} output(s), "
                        f"first: {outputs[0][1]}")]
    if target.isdigit():
        match = [name for i, name in outputs if i == int(target)]
    else:
        match = [name for _, name in outputs if target.lower() in name.lower()]
    if not match:
        listing = "; ".join(f"{i}: {name}" for i, name in outputs)
        return [Finding("speaker", "missing", f"audio_output.uri {uri}: no output named {target!r} ({listing})",
                        "set audio_output.uri to one of the listed outputs (portaudio://INDEX or alsa://NAME)")]
    return [Finding("speaker", "ok", f"audio_output.uri {uri}: {match[0]}")]


def _tool_finding(check: str, argv: list[str], purpose: str, fix: str) -> Finding:
    path = shutil.which(argv[0])
    if path is None:
        return Finding(check, "missing", f"{argv[0]} not on PATH ({purpose})", fix)
    result = _run(argv)
    version = result[1].splitlines()[0] if result and result[1] else "version unknown"
    return Finding(check, "ok", f"{path}: {version[:100]}")


def _check_ffmpeg(ctx: _Context) -> list[Finding]:
    return [_tool_finding("ffmpeg", ["ffmpeg", "-hide_banner", "-version"], "needed to write MP4 output",
                          "sudo apt-get install ffmpeg")]


def _check_espeak(ctx: _Context) -> list[Finding]:
    return [_tool_finding("espeak-ng", ["espeak-ng", "--version"], "needed for speech (phonemes and TTS)",
                          "sudo apt-get install espeak-ng libespeak-ng1")]


def _check_engines(ctx: _Context) -> list[Finding]:
    engines_dir = ctx.paths.engines_dir
    onnx = sorted(p.name for p in engines_dir.glob("*.onnx")) if engines_dir.is_dir() else []
    manifest = engines_dir / "manifest.json"
    parts = []
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            entries = data.get("models", data) if isinstance(data, dict) else data
            parts.append(f"manifest.json with {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
        except (ValueError, OSError, TypeError) as exc:
            return [Finding("engines", "warn", f"{manifest} is not valid JSON: {exc}",
                            "restore engines/manifest.json from the repository")]
    if onnx:
        parts.append(f"{len(onnx)} ONNX model(s): {', '.join(onnx[:6])}{' ...' if len(onnx) > 6 else ''}")
    if not parts:
        return [Finding("engines", "missing", f"no manifest.json and no *.onnx in {engines_dir}",
                        "restore engines/ from the repository checkout (ONNX models and manifest.json)")]
    return [Finding("engines", "ok", f"{engines_dir}: " + "; ".join(parts))]


def _check_engine_cache(ctx: _Context) -> list[Finding]:
    cache = Path(os.path.expanduser(ctx.config.backend.engine_cache_dir))
    tensorrt = ctx.config.backend.name == "tensorrt"
    if not cache.exists():
        detail = f"{cache} does not exist yet"
        if tensorrt:
            return [Finding("engine cache", "warn", detail + "; the first start would build every engine (minutes)",
                            "build on the device before going live: edge-avatar engines build")]
        return [Finding("engine cache", "info", detail + f" (not used by backend {ctx.config.backend.name!r})")]
    if not cache.is_dir():
        return [Finding("engine cache", "missing", f"{cache} exists but is not a directory",
                        "remove it or point backend.engine_cache_dir elsewhere")]
    built = [p for p in cache.rglob("*") if p.suffix in (".engine", ".plan")]
    writable = os.access(cache, os.W_OK)
    detail = f"{cache}: {len(built)} built engine(s){'' if writable else ', not writable'}"
    if not writable:
        return [Finding("engine cache", "warn", detail,
                        "make it writable by the service user, or set backend.engine_cache_dir")]
    if tensorrt and not built:
        return [Finding("engine cache", "warn", detail + "; the first start would build every engine (minutes)",
                        "edge-avatar engines build")]
    return [Finding("engine cache", "ok", detail)]


def _check_power_mode(ctx: _Context) -> list[Finding]:
    board = ctx.config.board
    want = f"{board.power_mode} (ID {board.nvpmodel_id})"
    if shutil.which("nvpmodel") is None:
        if board.nvpmodel_id >= 0:
            return [Finding("power mode", "missing" if _is_jetson(ctx) else "info",
                            f"nvpmodel not on PATH; config wants {want}",
                            "nvpmodel is part of JetPack (nvidia-l4t-nvpmodel)")]
        return [Finding("power mode", "info", "no nvpmodel (not a Jetson); config leaves power management alone")]
    result = _run(["nvpmodel", "-q"])
    if result is None or result[0] != 0:
        return [Finding("power mode", "warn", f"nvpmodel -q failed: {result[1][:120] if result else 'did not run'}",
                        "run the doctor with sudo, or check `sudo nvpmodel -q`")]
    match = re.search(r"NV Power Mode:[ \t]*(\S+)[ \t]*(?:\r?\n\s*(\d+))?", result[1])
    if not match:
        return [Finding("power mode", "warn", f"cannot parse `nvpmodel -q`: {result[1][:120]!r}",
                        "check `sudo nvpmodel -q`")]
    name, mode_id = match.group(1), match.group(2)
    current = f"{name}" + (f" (ID {mode_id})" if mode_id else "")
    if board.nvpmodel_id < 0:
        return [Finding("power mode", "info", f"current {current}; config leaves nvpmodel alone")]
    if name.lower() != board.power_mode.lower():
        return [Finding("power mode", "warn", f"current {current}, config wants {want}",
                        f"sudo nvpmodel -m {board.nvpmodel_id} (check /etc/nvpmodel.conf that ID "
                        f"{board.nvpmodel_id} is {board.power_mode} on this BSP)")]
    if mode_id is not None and int(mode_id) != board.nvpmodel_id:
        return [Finding("power mode", "warn", f"current {current}: the name matches but this BSP numbers it "
                        f"{mode_id}, config says {board.nvpmodel_id}",
                        f"set board.nvpmodel_id: {mode_id} in the site config")]
    return [Finding("power mode", "ok", f"current {current} as configured")]


def _parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _check_broker(ctx: _Context) -> list[Finding]:
    if ctx.broker is None:
        return [Finding("broker", "info", "not checked (pass --broker HOST:PORT)")]
    try:
        host, port = _parse_host_port(ctx.broker)
    except ValueError as exc:
        return [Finding("broker", "warn", str(exc), "pass the broker as HOST:PORT, e.g. localhost:1883")]
    start_ns = time.monotonic_ns()
    try:
        with socket.create_connection((host, port), timeout=BROKER_TIMEOUT_S):
            elapsed_ms = (time.monotonic_ns() - start_ns) / 1e6
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__)
        return [Finding("broker", "missing", f"{host}:{port} unreachable ({reason}, {BROKER_TIMEOUT_S:g} s timeout)",
                        "start the broker (sudo systemctl start mosquitto), or check the host, port and firewall")]
    return [Finding("broker", "ok", f"{host}:{port} reachable (TCP connect in {elapsed_ms:.1f} ms)")]
