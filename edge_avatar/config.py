"""One root configuration, merged once, frozen, with units in every name.

Why this module exists: an operator must be able to read one file and know
what a device will do. The layers are merged in a fixed order,

    built-in defaults < board_configs/<board>.yaml < site YAML < CLI overrides,

then turned into frozen dataclasses. Every key is checked against the schema
below: an unknown key, a wrong type or an out-of-range value refuses to start
with the file it came from, the dotted key path and what was expected. Code
never reads module globals or ``**vars(args)``; it receives the frozen object.

The schema is plain dataclasses (no pydantic) so that the error messages are
ours, the import is free, and the field docs sit next to the fields.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from edge_avatar.dialogue.options import DialogueConfig
from edge_avatar.errors import ConfigError
from edge_avatar.fleet.options import FleetConfig
from edge_avatar.listening.options import ListeningConfig
from edge_avatar.perception.options import PerceptionConfig
from edge_avatar.planner.options import PlannerConfig
from edge_avatar.render.options import AvatarOutputConfig

BOARD_CONFIG_DIR = Path(__file__).resolve().parent.parent / "board_configs"
DEFAULT_BOARD = "x86-cpu"


def _range(min_value: float | None = None, max_value: float | None = None, **kw: Any) -> Any:
    """A dataclass field with an allowed numeric range kept in its metadata."""
    default = kw.pop("default")
    return field(default=default, metadata={"min": min_value, "max": max_value}, **kw)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ThermalConfig:
    """Temperatures at which the device sheds load, then stops; from the module's data sheet."""

    throttle_c: float = _range(30.0, 110.0, default=85.0)
    shutdown_c: float = _range(30.0, 115.0, default=97.0)


@dataclass(frozen=True)
class BoardConfig:
    """What the hardware can do and how hard we are allowed to drive it."""

    name: str = DEFAULT_BOARD
    description: str = "x86-64 development machine, CPU only"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    use_dla: bool = False
    dla_core: int = _range(0, 1, default=0)
    engine_workspace_mb: int = _range(16, 65536, default=1024)
    builder_optimization_level: int = _range(0, 5, default=3)
    power_mode: str = "none"          # nvpmodel mode name, e.g. "15W"; "none" off-Jetson
    nvpmodel_id: int = _range(-1, 16, default=-1)  # -1: leave nvpmodel alone
    gpu_memory_mb: int = _range(0, 262144, default=0)  # shared memory the GPU may use; 0 = no GPU
    thermal: ThermalConfig = field(default_factory=ThermalConfig)


@dataclass(frozen=True)
class CameraConfig:
    """The visitor-facing camera, chosen by URI (see edge_avatar.sensors.camera)."""

    uri: str = "scenario://demo"
    width_px: int = _range(64, 4096, default=640)
    height_px: int = _range(48, 4096, default=480)
    fps: float = _range(1.0, 120.0, default=30.0)
    read_timeout_ms: int = _range(1, 10000, default=200)
    reconnect_backoff_initial_s: float = _range(0.05, 60.0, default=0.5)
    reconnect_backoff_max_s: float = _range(0.1, 600.0, default=10.0)
    enable_depth: bool = True


@dataclass(frozen=True)
class MicrophoneConfig:
    """The microphone; audio is captured mono at ``sample_rate_hz`` in ``chunk_ms`` blocks."""

    uri: str = "scenario://demo"
    sample_rate_hz: int = _range(8000, 48000, default=16000)
    chunk_ms: int = _range(10, 30, default=10)
    queue_chunks: int = _range(8, 10000, default=500)  # 5 s at 10 ms; overflow drops oldest and counts


@dataclass(frozen=True)
class AudioOutputConfig:
    """The speaker. Its sample position is the master clock of the whole device."""

    uri: str = "virtual://"           # "virtual://" paces on the monotonic clock; "alsa://default", "portaudio://N"
    sample_rate_hz: int = _range(8000, 48000, default=22050)
    block_ms: int = _range(5, 100, default=10)
    volume: float = _range(0.0, 1.0, default=0.8)
    buffer_ms: int = _range(50, 60000, default=30000)  # queued speech; overflow blocks the producer, never drops


@dataclass(frozen=True)
class DisplayConfig:
    """What the visitor sees: the window (or the video written for review)."""

    width_px: int = _range(64, 7680, default=512)
    height_px: int = _range(64, 4320, default=512)
    fullscreen: bool = False
    background_rgb: tuple[int, int, int] = (28, 36, 52)
    show_captions: bool = False


@dataclass(frozen=True)
class RenderConfig:
    """The avatar renderer's native image size (the display scales it)."""

    width_px: int = _range(64, 2048, default=256)
    height_px: int = _range(64, 2048, default=256)


@dataclass(frozen=True)
class LoopConfig:
    """The one fixed-rate tick: capture -> perception -> planner -> renderer -> present."""

    tick_rate_hz: float = _range(1.0, 120.0, default=30.0)
    perception_stride_ticks: int = _range(1, 30, default=1)  # run full perception every Nth tick, track between
    # "inline": perception runs inside the tick (a Jetson: engines on the shared CUDA stream, a few ms);
    # "worker": on its own thread, latest frame wins, the tick takes the newest token (a CPU: tens of ms).
    perception_mode: Literal["inline", "worker"] = "inline"
    # A tick that starts later than this skips perception (the planner still runs on the last token).
    late_tick_skip_perception_ms: float = _range(0.0, 1000.0, default=8.0)
    # How much lower the perception worker's CPU priority is than the tick's (nice increment, Linux):
    # when the cores are busy the tick keeps its deadline and perception's token gets older instead.
    perception_worker_nice: int = _range(0, 19, default=10)
    stats_window_ticks: int = _range(100, 1_000_000, default=20000)


@dataclass(frozen=True)
class BackendConfig:
    """Which inference backend runs the models (see edge_avatar.backends)."""

    name: Literal["onnxruntime", "tensorrt", "null"] = "onnxruntime"
    onnxruntime_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = _range(0, 64, default=1)  # 0: let the runtime decide
    # With intra_op_threads other than 1 (0 lets the runtime pick one per core), let ONNX Runtime's idle
    # workers spin-wait for the next op instead of parking. Each
    # session has its own pool, so with the perception models' six sessions on a 2-core box spinning
    # starved the thread doing the work (2 threads: 43 ms a frame, 15 ms parked, 13 ms at 1 thread);
    # a lone model gains from it (the renderer at 2 threads: about 6 ms spinning, 7 ms parked).
    onnxruntime_spin_wait: bool = False
    engine_cache_dir: str = "~/.cache/edge-avatar/engines"


@dataclass(frozen=True)
class OutputConfig:
    """Where the avatar goes: a window, an MP4 with muxed audio, or nowhere."""

    uri: str = "file://out/demo.mp4"  # "window://", "window://?fullscreen=1", "file://x.mp4", "null://"
    report_path: str = "out/report.json"
    video_crf: int = _range(0, 51, default=23)
    # x264 speed preset: a faster one costs bytes, not quality (the crf holds quality), and leaves CPU to the avatar.
    video_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    # The encoder process runs this much below the tick's CPU priority (nice increment); its frame queue
    # absorbs the wait.
    encoder_nice: int = _range(0, 19, default=5)
    # After a file output is finalised: measure lip sync from its pixels and audio (edge_avatar.render.lipsync)
    # and write report.html beside the report. Costs about 0.7x the video's duration on a 2-core CPU.
    measure_lip_sync: bool = True
    write_html_report: bool = True


@dataclass(frozen=True)
class PrivacyConfig:
    """In a hospital nothing personal leaves the device or lands in a log unless the site says so."""

    log_transcripts: bool = False
    publish_transcripts: bool = False
    record_camera: bool = False
    record_microphone: bool = False


@dataclass(frozen=True)
class SiteConfig:
    """Who this device is and where it stands."""

    name: str = "dev-site"
    device_id: str = "dev-device"
    knowledge_file: str = ""
    persona_file: str = ""
    state_dir: str = "~/.local/state/edge-avatar"


@dataclass(frozen=True)
class RootConfig:
    """Everything a device needs to know, frozen after load."""

    board: BoardConfig = field(default_factory=BoardConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)
    audio_output: AudioOutputConfig = field(default_factory=AudioOutputConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    # Capability sections live next to their code (edge_avatar/<capability>/options.py).
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    listening: ListeningConfig = field(default_factory=ListeningConfig)
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    avatar: AvatarOutputConfig = field(default_factory=AvatarOutputConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> "RootConfig":
        """A copy with whole sections replaced (the object itself stays frozen)."""
        return dataclasses.replace(self, **sections)


# --------------------------------------------------------------------------- loading


def available_boards() -> list[str]:
    return sorted(p.stem for p in BOARD_CONFIG_DIR.glob("*.yaml"))


def load_config(
    board: str | None = None,
    site_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    board_dir: Path = BOARD_CONFIG_DIR,
) -> RootConfig:
    """Merge defaults < board < site < CLI overrides once and return the frozen result.

    ``overrides`` are ``dotted.key=value`` strings; the value is parsed as YAML
    (``loop.tick_rate_hz=25``, ``display.fullscreen=true``).
    """
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}

    board_name = board or DEFAULT_BOARD
    board_path = board_dir / f"{board_name}.yaml"
    if not board_path.is_file():
        known = ", ".join(sorted(p.stem for p in board_dir.glob("*.yaml"))) or "none found"
        raise ConfigError("--board", "", f"unknown board {board_name!r}; expected one of: {known} "
                          f"(files in {board_dir})")
    _merge(merged, origins, _read_yaml(board_path), str(board_path))
    merged.setdefault("board", {})
    if not isinstance(merged["board"], dict):
        raise ConfigError(str(board_path), "board", "expected a mapping of BoardConfig fields")
    if merged["board"].get("name", board_name) != board_name:
        raise ConfigError(str(board_path), "board.name",
                          f"is {merged['board']['name']!r} but the file is for board {board_name!r}")
    merged["board"]["name"] = board_name

    if site_file is not None:
        site_path = Path(site_file)
        if not site_path.is_file():
            raise ConfigError(str(site_path), "", "site config file not found")
        _merge(merged, origins, _read_yaml(site_path), str(site_path))

    for item in overrides:
        key_path, sep, raw_value = item.partition("=")
        if not sep or not key_path.strip():
            raise ConfigError("--set", item, "expected KEY.PATH=VALUE, e.g. loop.tick_rate_hz=25")
        raw_value = raw_value.strip()
        if _PLAIN_EXPONENT.fullmatch(raw_value):  # YAML 1.1 reads "1e3" as text; an operator means a number
            raw_value = str(float(raw_value))
        try:
            value = yaml.safe_load(raw_value) if raw_value else ""
        except yaml.YAMLError as exc:
            raise ConfigError("--set", key_path, f"value {raw_value!r} is not valid YAML: {exc}") from None
        nested: Any = value
        for part in reversed(key_path.strip().split(".")):
            nested = {part: nested}
        _merge(merged, origins, nested, "--set")

    if isinstance(merged.get("board"), dict) and merged["board"].get("name") != board_name:
        raise ConfigError(_origin(origins, "board.name"), "board.name",
                          f"board.name is chosen by --board (here {board_name!r}); do not set it elsewhere")
    return _build(RootConfig, merged, "", origins)


_PLAIN_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), "", f"{where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _merge(into: dict[str, Any], origins: dict[str, str], new: Mapping[str, Any], source: str,
           prefix: str = "") -> None:
    for key, value in new.items():
        key = str(key)
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], origins, value, source, path + ".")
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], origins, value, source, path + ".")
        else:
            into[key] = value
        origins[path] = source


def _origin(origins: dict[str, str], path: str) -> str:
    while path:
        if path in origins:
            return origins[path]
        path = path.rpartition(".")[0]
    return "defaults"


def _build(cls: type, data: Any, prefix: str, origins: dict[str, str]) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(_origin(origins, prefix.rstrip(".")), prefix.rstrip("."),
                          f"expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        path = prefix + unknown[0]
        raise ConfigError(_origin(origins, path), path,
                          f"unknown key; expected one of: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = prefix + name
        f = fields[name]
        kwargs[name] = _coerce(hints[name], value, path, origins)
        _check_range(f, kwargs[name], path, origins)
    try:
        instance = cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - the checks above make this unreachable in practice
        raise ConfigError(_origin(origins, prefix.rstrip(".")), prefix.rstrip("."), str(exc)) from None
    _check_cross_fields(instance, prefix, origins)
    return instance


def _coerce(hint: Any, value: Any, path: str, origins: dict[str, str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    source = _origin(origins, path)

    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path + ".", origins)
    if origin is Literal:
        if value not in args:
            raise ConfigError(source, path, f"got {value!r}; expected one of: {', '.join(map(str, args))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"got {value!r}; expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"got {value!r}; expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, path, f"got {value!r}; expected a number")
        if not math.isfinite(value):
            raise ConfigError(source, path, f"got {value!r}; expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"got {value!r}; expected a string")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, path, f"got {value!r}; expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]", origins) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(source, path, f"got {len(value)} items; expected exactly {len(args)}")
        return tuple(_coerce(a, v, f"{path}[{i}]", origins) for i, (a, v) in enumerate(zip(args, value)))
    raise ConfigError(source, path, f"unsupported type in schema: {hint!r}")  # pragma: no cover


def _check_range(f: dataclasses.Field, value: Any, path: str, origins: dict[str, str]) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(_origin(origins, path), path, f"got {value!r}; expected a value in [{lo}, {hi}]")


def _check_cross_fields(instance: Any, prefix: str, origins: dict[str, str]) -> None:
    """Rules that involve more than one field of a section.

    A section class may define ``validate() -> list[tuple[str, str]]`` returning
    (field name, problem) pairs; the first one refuses the config.
    """
    validate = getattr(instance, "validate", None)
    if callable(validate):
        for field_name, problem in validate():
            path = prefix + field_name
            raise ConfigError(_origin(origins, path), path, problem)
    if isinstance(instance, ThermalConfig) and instance.throttle_c >= instance.shutdown_c:
        path = prefix + "throttle_c"
        raise ConfigError(_origin(origins, path), path,
                          f"{instance.throttle_c} must be below shutdown_c ({instance.shutdown_c})")
    if isinstance(instance, CameraConfig) and instance.reconnect_backoff_initial_s > instance.reconnect_backoff_max_s:
        path = prefix + "reconnect_backoff_initial_s"
        raise ConfigError(_origin(origins, path), path, "must not exceed reconnect_backoff_max_s")
    if isinstance(instance, DisplayConfig):
        for i, channel in enumerate(instance.background_rgb):
            if not 0 <= channel <= 255:
                path = f"{prefix}background_rgb[{i}]"
                raise ConfigError(_origin(origins, path), path, f"got {channel}; expected 0..255")
    if isinstance(instance, BoardConfig) and instance.use_dla and instance.precision == "fp32":
        path = prefix + "use_dla"
        raise ConfigError(_origin(origins, path), path, "DLA runs only fp16 or int8; set precision accordingly")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def dump_yaml(config: RootConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
