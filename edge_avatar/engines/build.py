"""``engines build / verify / bench``: validate, quantize, build, verify, time and choose, per model.

Why this module exists: it is the one place that walks every model through
the steps in order and keeps the cache manifest true after each one:

    validate ONNX vs manifest -> (cached? reuse) -> calibration data -> INT8 Q/DQ (ONNX Runtime)
      -> TensorRT engine (where TensorRT exists) -> verify vs fp32 on held-out data
      -> time fp32 and every verified candidate -> choose the fastest verified one

A failure in one model (a corrupt ONNX, no calibration data, a full disk, a
TensorRT error) is reported with the file and the stage and never touches
another model or the previous good artifacts of the same model: every file
is written atomically and the cache manifest is saved after each model.
A normal boot finds every key unchanged and every file intact and does
nothing but hash the ONNX files and read the manifest.

Progress goes through a ``progress(str)`` callback (the CLI prints it on
stderr), one line per model and stage.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.engines import cache as cache_mod
from edge_avatar.engines.cache import CacheKey, CacheManifest, artifact_file_name, atomic_copy, check_artifact
from edge_avatar.engines.calibration import (
    CalibrationData,
    CalibrationOptions,
    check_data,
    make_perception_data,
    make_sequence_data,
    perception_fingerprint,
    sequence_fingerprint,
)
from edge_avatar.engines.errors import BuildError, CalibrationError, EngineError, ManifestError
from edge_avatar.engines.manifest import ModelEntry, load_entries, sha256_file, validate
from edge_avatar.engines.quantize import QuantPolicy, keep_float_layers, model_recipe, policy_for, quantize_int8
from edge_avatar.engines.verify import VerifyResult, compare

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
FP32 = "fp32"
# A lower precision must beat fp32 by this much to be worth its (verified, but non-zero) error.
MIN_SPEEDUP_FRAC = 0.05


@dataclass(frozen=True)
class BuildOptions:
    models: tuple[str, ...] = ()                  # () = every model in the manifests
    force: bool = False                           # rebuild even when the cache matches
    int8_mode: str = "policy"                     # "policy" | "all" | "none"
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    bench_warmup: int = 10
    bench_iterations: int = 50
    engines_dir: str | None = None                # default: perception.engines_dir, else the repository's engines/


@dataclass(frozen=True)
class Target:
    """One artifact to have for a model: ``backend:precision``."""

    backend: str        # "onnxruntime" | "tensorrt"
    precision: str      # "int8" | "fp16" | "fp32"

    @property
    def id(self) -> str:
        return f"{self.backend}:{self.precision}"

    @property
    def suffix(self) -> str:
        return ".onnx" if self.backend == "onnxruntime" else ".engine"


@dataclass
class ModelReport:
    name: str
    ok: bool = True
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    choice: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "ok": self.ok, "errors": self.errors, "notes": self.notes, "choice": self.choice}


# --------------------------------------------------------------------------- the machine


@dataclass
class Machine:
    """What this machine can build and run for the board config."""

    backend: str                    # the runtime the board wants and this machine has
    ort_runtime: str
    cpu: str
    trt: Any = None
    trt_runtime: str = ""
    gpu: str = ""
    note: str = ""


def detect_machine(config: Any) -> Machine:
    machine = Machine("onnxruntime", cache_mod.onnxruntime_runtime(), cache_mod.cpu_device())
    if config.backend.name == "tensorrt":
        from edge_avatar.backends import BackendUnavailable  # noqa: PLC0415
        from edge_avatar.backends.tensorrt_backend import check_available, import_tensorrt  # noqa: PLC0415

        try:
            check_available()
            trt = import_tensorrt()
        except BackendUnavailable as exc:
            machine.note = (f"board {config.board.name} runs TensorRT, but it is unavailable here ({exc}); "
                            "building the ONNX Runtime INT8 Q/DQ candidates only")
        else:
            from edge_avatar.engines.tensorrt_build import cuda_device_name  # noqa: PLC0415

            machine.backend, machine.trt = "tensorrt", trt
            machine.trt_runtime = cache_mod.tensorrt_runtime(trt)
            machine.gpu = cache_mod.gpu_device(cuda_device_name)
    return machine


def targets_for(machine: Machine, board: Any, policy: QuantPolicy) -> list[Target]:
    """The artifacts a model needs on this machine for this board."""
    targets: list[Target] = []
    if policy.int8:
        targets.append(Target("onnxruntime", "int8"))  # the Q/DQ ONNX: a CPU candidate and TensorRT's input
    if machine.backend == "tensorrt":
        if board.precision == "int8" and policy.int8:
            targets.append(Target("tensorrt", "int8"))
        wanted_float = FP32 if board.precision == FP32 else policy.float_precision
        targets.append(Target("tensorrt", wanted_float))
    return targets


# --------------------------------------------------------------------------- runners


def _backend_config(config: Any, backend: str) -> Any:
    from edge_avatar.config import BackendConfig  # noqa: PLC0415

    providers = ("CPUExecutionProvider",) if backend == "onnxruntime" else config.backend.onnxruntime_providers
    return BackendConfig(name=backend, onnxruntime_providers=providers,
                         intra_op_threads=config.backend.intra_op_threads,
                         engine_cache_dir=config.backend.engine_cache_dir)


def open_runner(config: Any, backend: str, path: Path) -> Any:
    """An ``InferenceBackend`` for ``path``; ``ModelLoadError`` when the file cannot be loaded/deserialized."""
    from edge_avatar.backends import load_backend  # noqa: PLC0415

    return load_backend(backend, path, _backend_config(config, backend))


def run_qdq_reference(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The Q/DQ graph with ONNX Runtime's optimisations off: every QuantizeLinear/DequantizeLinear runs as
    written, in float, so the result is the quantization error alone -- what TensorRT's int32-accumulating
    kernels compute -- without the CPU's fused int8 kernels (which saturate on AVX2 without VNNI)."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, dict(f)))) for f in feeds]


def run_all(runner: Any, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [{k: np.array(v, copy=True) for k, v in runner.run(f).items()} for f in feeds]


# --------------------------------------------------------------------------- the build


class EngineBuilder:
    """Holds the state of one ``engines build|verify|bench`` run over the selected models."""

    def __init__(self, config: Any, options: BuildOptions, progress: Progress | None = None) -> None:
        self.config = config
        self.options = options
        self._say = progress or (lambda message: None)
        self.machine = detect_machine(config)
        self.cache_dir = cache_mod.board_dir(config.backend.engine_cache_dir, config.board.name)
        self.manifest = CacheManifest.load(self.cache_dir)
        if self.manifest.load_problem:
            self._say(f"engine cache: {self.manifest.load_problem}; rebuilding everything")
        engines_dir = options.engines_dir or config.perception.engines_dir or None
        self.entries = load_entries(engines_dir)
        unknown = [m for m in options.models if m not in self.entries]
        if unknown:
            raise EngineError(f"unknown model {unknown[0]!r}; models in the manifests: {', '.join(self.entries)}")
        self.selected = [self.entries[m] for m in (options.models or self._board_models())]
        self._data: dict[str, CalibrationData] = {}
        self._data_errors: dict[str, str] = {}
        self._fingerprints: dict[str, str] = {}

    def _board_models(self) -> tuple[str, ...]:
        """Every model in the manifests but the renderers of another render size than this board's (AGX Orin's
        512 px renderer is not built on a 256 px board unless named with --models)."""
        from edge_avatar.render.neural import renderer_size_for  # noqa: PLC0415 - the runtime's own rule

        width = self.config.render.width_px
        sizes = {n: int(n.split("_", 1)[1]) for n in self.entries
                 if n.startswith("renderer_") and n.split("_", 1)[1].isdigit()}
        size = renderer_size_for(width, sizes.values())
        mine = None if size is None else f"renderer_{size}"
        skipped = [n for n in sizes if n != mine]
        if skipped:
            self._say(f"not built for this board ({width} px render): {', '.join(skipped)}"
                      + ("" if mine else "; no renderer of this size or smaller: the runtime cannot render here"))
        return tuple(n for n in self.entries if n not in skipped)

    # ---- helpers

    def say(self, index: int, entry: ModelEntry, message: str) -> None:
        self._say(f"[{index}/{len(self.selected)}] {entry.name}: {message}")

    def _save_manifest(self) -> None:
        m = self.manifest.data
        m["board"], m["power_mode"] = self.config.board.name, self.config.board.power_mode
        m["machine"] = {"backend": self.machine.backend, "onnxruntime": self.machine.ort_runtime,
                        "tensorrt": self.machine.trt_runtime or None, "cpu": self.machine.cpu,
                        "gpu": self.machine.gpu or None}
        try:
            self.manifest.save()
        except OSError as exc:
            raise cache_mod.CacheWriteError(f"cannot write {self.manifest.path}: {exc}; the previous cache "
                                            "manifest is unchanged") from exc

    def fingerprint(self, entry: ModelEntry) -> str:
        family = "perception" if entry.family == "perception" else entry.name
        if family not in self._fingerprints:
            if entry.family == "perception":
                self._fingerprints[family] = perception_fingerprint(self.options.calibration)
            else:
                self._fingerprints[family] = sequence_fingerprint(entry, self.options.calibration)
        return self._fingerprints[family]

    def recipe(self, entry: ModelEntry) -> str:
        """The INT8 recipe's fingerprint for ``entry``: the common recipe plus the layers its manifest keeps float."""
        try:
            return model_recipe(entry)
        except BuildError as exc:  # no artifact can match it; the build itself reports the field
            return f"invalid: {exc}"

    def key(self, entry: ModelEntry, target: Target, onnx_sha: str) -> CacheKey:
        if target.backend == "tensorrt":
            runtime, device = self.machine.trt_runtime, self.machine.gpu
        else:
            runtime, device = self.machine.ort_runtime, self.machine.cpu
        calibration = self.fingerprint(entry) if target.precision == "int8" else ""
        recipe = self.recipe(entry) if target.precision == "int8" else ""
        return CacheKey(entry.name, onnx_sha, runtime, device, self.config.board.name, self.config.board.power_mode,
                        target.precision, recipe, calibration)

    def data(self, entry: ModelEntry) -> CalibrationData:
        """Calibration + held-out data (perception: one pipeline pass for all selected perception models)."""
        if entry.name in self._data_errors:
            raise CalibrationError(self._data_errors[entry.name])
        if entry.name not in self._data:
            if entry.family == "perception":
                names = [e.name for e in self.selected if e.family == "perception" and e.name not in self._data]
                self._say(f"calibration data: running the fp32 perception pipeline on kiosk frames "
                          f"({self.options.calibration.frames} + {self.options.calibration.held_out_frames} held out)")
                try:
                    made = make_perception_data(self.config, self.options.calibration, names, self._say)
                except CalibrationError as exc:
                    for name in names:
                        self._data_errors[name] = str(exc)
                    raise
                self._data.update(made)
            else:
                try:
                    self._data[entry.name] = make_sequence_data(entry, self.options.calibration)
                except CalibrationError as exc:
                    self._data_errors[entry.name] = f"{entry.name}: {exc}"
                    raise CalibrationError(self._data_errors[entry.name]) from exc
        data = self._data[entry.name]
        check_data(data, entry)
        return data

    # ---- one artifact

    def _build_artifact(self, index: int, entry: ModelEntry, target: Target, key: CacheKey) -> dict[str, Any]:
        data = self.data(entry)
        path = self.cache_dir / entry.name / artifact_file_name(key, target.suffix)
        start = time.monotonic()
        if target.backend == "onnxruntime":
            self.say(index, entry, f"quantizing to INT8 Q/DQ on {len(data.calibration)} calibration samples "
                                   f"({data.description})")
            with tempfile.TemporaryDirectory(prefix="edge-avatar-qdq-") as tmp:
                tmp_path = Path(tmp) / path.name
                facts = quantize_int8(entry.name, entry.path, data, tmp_path, keep_float_layers(entry))
                self._write(entry, target, tmp_path, path)
        else:
            from edge_avatar.engines.tensorrt_build import build_engine  # noqa: PLC0415

            if target.precision == "int8":
                qdq = self.manifest.artifact(entry.name, "onnxruntime:int8")
                if qdq is None or check_artifact(self.manifest, qdq, self.key(entry, Target("onnxruntime", "int8"),
                                                                              key.onnx_sha256)):
                    raise BuildError(entry.name, "tensorrt int8 build", "the INT8 Q/DQ ONNX is not available")
                source = self.manifest.artifact_path(qdq)
            else:
                source = entry.path
            samples = {}
            with contextlib.suppress(CalibrationError):
                samples = {name: [tuple(f[name].shape) for f in data.calibration + data.held_out]
                           for name in (data.calibration[0] if data.calibration else {})}
            self.say(index, entry, f"building the TensorRT {target.precision} engine from {source.name}")
            plan, facts = build_engine(self.machine.trt, entry.name, source, target.precision, self.config.board,
                                       self.cache_dir / f"timing-cache-{self.machine.trt_runtime}.bin",
                                       samples, entry.extra.get("profiles"), self._say)
            try:
                cache_mod.atomic_write_bytes(path, plan)
            except OSError as exc:
                raise BuildError(entry.name, f"writing {path}", f"{exc}; the previous engine is kept") from exc
        return {"backend": target.backend, "precision": target.precision,
                "file": str(path.relative_to(self.cache_dir)), "sha256": sha256_file(path),
                "bytes": path.stat().st_size, "key": key.to_dict(), "built_utc": cache_mod.utc_now(),
                "build_s": round(time.monotonic() - start, 2), "build": facts}

    def _load_problem(self, record: dict[str, Any]) -> str | None:
        """None when a cached artifact still loads (deserializes) here; otherwise why not."""
        if record["backend"] == "tensorrt" and self.machine.backend != "tensorrt":
            return None
        from edge_avatar.backends import ModelLoadError  # noqa: PLC0415

        try:
            open_runner(self.config, record["backend"], self.manifest.artifact_path(record)).close()
        except ModelLoadError as exc:
            return f"the cached file does not load: {exc}"
        return None

    def _write(self, entry: ModelEntry, target: Target, tmp_path: Path, path: Path) -> None:
        try:
            atomic_copy(tmp_path, path)
        except OSError as exc:
            raise BuildError(entry.name, f"writing {path}", f"{exc}; the previous {target.precision} "
                                                            "artifact is kept") from exc

    # ---- verify

    def _verify(self, index: int, entry: ModelEntry, artifacts: dict[str, dict[str, Any]],
                only: set[str] | None) -> dict[str, VerifyResult]:
        """Verify the artifacts (all, or the ids in ``only``) against fp32; records results in the manifest."""
        ids = [i for i in artifacts if only is None or i in only]
        if not ids:
            return {}
        data = self.data(entry)
        reference = open_runner(self.config, "onnxruntime", entry.path)
        try:
            refs = run_all(reference, data.held_out)
        finally:
            reference.close()
        results = {}
        for artifact_id in ids:
            record = artifacts[artifact_id]
            from edge_avatar.backends import ModelLoadError  # noqa: PLC0415

            try:
                runner = open_runner(self.config, record["backend"], self.manifest.artifact_path(record))
            except ModelLoadError as exc:
                result = VerifyResult(entry.name, record["precision"], record["backend"], False, 0,
                                      reason=f"does not load: {exc}")
            else:
                try:
                    result = compare(entry.name, entry.family, record["precision"], record["backend"], refs,
                                     run_all(runner, data.held_out))
                finally:
                    runner.close()
            record["verify"] = {**result.to_dict(), "verified_utc": cache_mod.utc_now()}
            self.say(index, entry, f"verify {artifact_id} on {result.samples} held-out samples: "
                                   f"{'PASS' if result.passed else 'FAIL'} - {result.reason} "
                                   f"({_short_metrics(result.metrics)})")
            if record["backend"] == "onnxruntime" and record["precision"] == "int8" and result.samples:
                exact = compare(entry.name, entry.family, "int8", "qdq-reference", refs,
                                run_qdq_reference(self.manifest.artifact_path(record), data.held_out))
                record["verify"]["qdq_reference"] = {"passed": exact.passed, "metrics": exact.metrics,
                                                     "reason": exact.reason}
                self.say(index, entry, f"  exact Q/DQ arithmetic (what TensorRT computes, no CPU int8 kernels): "
                                       f"{'PASS' if exact.passed else 'FAIL'} ({_short_metrics(exact.metrics)})")
            results[artifact_id] = result
        return results

    # ---- bench and choose

    def _bench(self, index: int, entry: ModelEntry, artifacts: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from edge_avatar.backends import ModelLoadError  # noqa: PLC0415
        from edge_avatar.engines.bench import time_interleaved_ms  # noqa: PLC0415

        candidates = {"onnxruntime:fp32": ("onnxruntime", entry.path)}
        for artifact_id, record in artifacts.items():  # timed even when not verified: the numbers are reported
            if record["backend"] == "onnxruntime" or self.machine.backend == "tensorrt":
                candidates[artifact_id] = (record["backend"], self.manifest.artifact_path(record))
        runners, opened = {}, []
        try:
            for artifact_id, (backend, path) in candidates.items():
                try:
                    runner = open_runner(self.config, backend, path)
                except ModelLoadError as exc:
                    self.say(index, entry, f"bench {artifact_id}: does not load ({exc})")
                    continue
                opened.append(runner)
                runners[artifact_id] = runner.run
            feeds = self._bench_feeds(entry, opened[0] if opened else None)
            timings = time_interleaved_ms(runners, feeds, self.options.bench_warmup, self.options.bench_iterations)
        finally:
            for runner in opened:
                runner.close()
        threads = self.config.backend.intra_op_threads
        self.say(index, entry, "bench (" + f"{threads} thread{'s' if threads != 1 else ''}): " + ", ".join(
            f"{i} p50 {t['p50_ms']:.2f} ms p95 {t['p95_ms']:.2f} ms" for i, t in timings.items()))
        return {"timings_ms": timings, "threads": threads, "iterations": self.options.bench_iterations,
                "onnx_sha256": entry.sha256, "measured_utc": cache_mod.utc_now()}

    def _current_artifacts(self, entry: ModelEntry, artifacts: dict[str, dict[str, Any]],
                           onnx_sha: str) -> dict[str, dict[str, Any]]:
        """The artifacts that are builds of the ONNX ``onnx_sha`` for this machine as it is now: the only ones
        timed and chosen (TensorRT engines only where TensorRT runs)."""
        current = {}
        for artifact_id, art in artifacts.items():
            target = Target(art["backend"], art["precision"])
            if target.backend == "tensorrt" and self.machine.backend != "tensorrt":
                continue
            if check_artifact(self.manifest, art, self.key(entry, target, onnx_sha)) is None:
                current[artifact_id] = art
        return current

    def _bench_feeds(self, entry: ModelEntry, runner: Any) -> dict[str, np.ndarray]:
        with contextlib.suppress(CalibrationError):
            data = self.data(entry)
            if data.held_out:
                return data.held_out[0]
        if runner is None:
            raise EngineError(f"{entry.name}: nothing to time")
        rng = np.random.default_rng(0)
        return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in runner.example_feeds().items()}

    def _choose(self, entry: ModelEntry, record: dict[str, Any], policy: QuantPolicy) -> dict[str, Any]:
        """The fastest candidate that verified; a lower precision must beat fp32 by ``MIN_SPEEDUP_FRAC``."""
        artifacts = record.get("artifacts", {})
        timings = record.get("bench", {}).get("timings_ms", {})
        fp32_ms = timings.get("onnxruntime:fp32", {}).get("p50_ms")
        others: list[str] = []
        usable: list[tuple[float, str]] = []
        for artifact_id, art in artifacts.items():
            verify = art.get("verify", {})
            ms = timings.get(artifact_id, {}).get("p50_ms")
            if not verify.get("passed"):
                others.append(f"{artifact_id} not usable: {verify.get('reason', 'not verified')}")
            elif ms is None:
                others.append(f"{artifact_id} verified but not timed")
            elif fp32_ms is not None and ms >= fp32_ms * (1 - MIN_SPEEDUP_FRAC):
                others.append(f"{artifact_id} verified but not faster on this machine (p50 {ms:.2f} ms vs fp32 "
                              f"{fp32_ms:.2f} ms)")
            else:
                usable.append((ms, artifact_id))
        if not artifacts:
            others.append(f"no INT8 build ({policy.reason.split(':')[0]}, see its policy)" if not policy.int8
                          else "nothing built")
        usable.sort()
        for ms, artifact_id in usable[1:]:
            others.append(f"{artifact_id} verified but slower (p50 {ms:.2f} ms)")
        if usable:
            best_ms, best_id = usable[0]
            art = artifacts[best_id]
            precision, backend, file = art["precision"], art["backend"], art["file"]
            why = (f"{best_id}: verified ({art['verify']['reason']}) and fastest (p50 {best_ms:.2f} ms"
                   + (f" vs fp32 {fp32_ms:.2f} ms)" if fp32_ms is not None else ")"))
        else:
            best_id, precision, backend, file = "onnxruntime:fp32", FP32, "onnxruntime", str(entry.path)
            why = "fp32 ONNX" + (f" (p50 {fp32_ms:.2f} ms)" if fp32_ms is not None else "")
        return {"artifact": best_id, "precision": precision, "backend": backend, "file": file,
                "onnx_sha256": entry.sha256, "reason": why + ("; " + "; ".join(others) if others else ""),
                "chosen_utc": cache_mod.utc_now()}

    # ---- the steps per model

    def build(self) -> list[ModelReport]:
        if self.machine.note:
            self._say(self.machine.note)
        removed = cache_mod.remove_stale_temporaries(self.cache_dir)
        if removed:
            self._say(f"engine cache: removed {removed} temporary file(s) left by an interrupted build")
        reports = []
        for index, entry in enumerate(self.selected, 1):
            reports.append(self._build_model(index, entry))
        return reports

    def _build_model(self, index: int, entry: ModelEntry) -> ModelReport:
        report = ModelReport(entry.name)
        try:
            validate(entry)
        except ManifestError as exc:
            report.ok = False
            report.errors.append(f"invalid ONNX: {exc}")
            self.say(index, entry, f"INVALID - {exc}; previous engines (if any) left in place")
            return report
        self.say(index, entry, f"validated {entry.path.name} against {entry.manifest_path.name} "
                               "(sha256, opset, inputs, outputs)")
        policy = policy_for(entry.name, self.options.int8_mode)
        record = self.manifest.model(entry.name)
        record.update({"source": {"file": str(entry.path), "sha256": entry.sha256, "family": entry.family},
                       "policy": {"int8": policy.int8, "float_precision": policy.float_precision,
                                  "reason": policy.reason}})
        artifacts: dict[str, dict[str, Any]] = record.setdefault("artifacts", {})
        if not policy.int8:
            self.say(index, entry, f"INT8 skipped: {policy.reason}")
        changed: set[str] = set()
        for target in targets_for(self.machine, self.config.board, policy):
            try:
                key = self.key(entry, target, entry.sha256)
                why = "--force" if self.options.force else check_artifact(self.manifest, artifacts.get(target.id), key)
                if why is None:
                    why = self._load_problem(artifacts[target.id])
                if why is None:
                    self.say(index, entry, f"{target.id}: cached ({artifacts[target.id]['file']})")
                    continue
                self.say(index, entry, f"{target.id}: building ({why})")
                artifacts[target.id] = self._build_artifact(index, entry, target, key)
                changed.add(target.id)
                self.say(index, entry, f"{target.id}: built in {artifacts[target.id]['build_s']:.1f} s -> "
                                       f"{artifacts[target.id]['file']}")
            except (EngineError, OSError) as exc:
                report.ok = False
                kept = " (the previous build is kept)" if target.id in artifacts else ""
                report.errors.append(f"{target.id}: {exc}{kept}")
                self.say(index, entry, f"{target.id}: FAILED - {exc}{kept}")
        try:
            unverified = {i for i, a in artifacts.items() if "verify" not in a}
            if changed | unverified:
                self._verify(index, entry, artifacts, changed | unverified)
            # a failed rebuild keeps the old artifact on disk, but it is not a candidate
            current = self._current_artifacts(entry, artifacts, entry.sha256)
            benched_file = record.get("bench", {}).get("onnx_sha256")
            if changed or unverified or benched_file != entry.sha256 or self.options.force:
                record["bench"] = self._bench(index, entry, current)
            record["choice"] = self._choose(entry, {**record, "artifacts": current}, policy)
        except (EngineError, OSError) as exc:
            report.ok = False
            report.errors.append(f"verify/bench: {exc}")
            self.say(index, entry, f"verify/bench FAILED - {exc}")
            record.setdefault("choice", self._choose(entry, record, policy))
        report.choice = record.get("choice", {})
        self.say(index, entry, f"uses {report.choice.get('precision')} ({report.choice.get('backend')}): "
                               f"{report.choice.get('reason')}")
        try:
            self._save_manifest()
        except cache_mod.CacheWriteError as exc:
            report.ok = False
            report.errors.append(str(exc))
            self.say(index, entry, f"FAILED to save the cache manifest - {exc}")
        return report

    def verify(self) -> list[ModelReport]:
        """Re-verify every cached artifact of the selected models (nothing is built)."""
        reports = []
        for index, entry in enumerate(self.selected, 1):
            report = ModelReport(entry.name)
            record = self.manifest.data["models"].get(entry.name, {})
            artifacts = record.get("artifacts", {})
            usable = {}
            for artifact_id, art in artifacts.items():
                target = Target(art["backend"], art["precision"])
                if target.backend == "tensorrt" and self.machine.backend != "tensorrt":
                    continue
                why = check_artifact(self.manifest, art, self.key(entry, target, sha256_file(entry.path)))
                if why is not None:
                    report.notes.append(f"{artifact_id}: stale ({why}); run `edge-avatar engines build`")
                    self.say(index, entry, f"{artifact_id}: stale ({why})")
                    continue
                usable[artifact_id] = art
            if not usable:
                self.say(index, entry, "nothing built to verify (fp32 is used)")
            else:
                try:
                    results = self._verify(index, entry, usable, None)
                    # Failing a tolerance is an answer, not an error: that build is not used (fp32 instead).
                    report.notes += [f"{i}: {'usable' if r.passed else 'NOT USABLE'}: {r.reason}"
                                     for i, r in results.items()]
                    record["choice"] = self._choose(entry, record, policy_for(entry.name, self.options.int8_mode))
                except (EngineError, OSError) as exc:
                    report.ok = False
                    report.errors.append(str(exc))
            report.choice = record.get("choice", {})
            reports.append(report)
        self._save_manifest()
        return reports

    def bench(self) -> dict[str, Any]:
        """Time fp32 and every verified, current artifact of the selected models; re-choose."""
        out: dict[str, Any] = {}
        for index, entry in enumerate(self.selected, 1):
            record = self.manifest.model(entry.name)
            artifacts = self._current_artifacts(entry, record.get("artifacts", {}), sha256_file(entry.path))
            record["bench"] = self._bench(index, entry, artifacts)
            record["choice"] = self._choose(entry, {**record, "artifacts": artifacts},
                                            policy_for(entry.name, self.options.int8_mode))
            out[entry.name] = {"timings_ms": record["bench"]["timings_ms"], "threads": record["bench"]["threads"],
                               "choice": {k: record["choice"][k] for k in ("precision", "backend", "reason")},
                               "verify": {i: a.get("verify", {}).get("metrics") for i, a in artifacts.items()}}
        self._save_manifest()
        return out


def _short_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())


# --------------------------------------------------------------------------- entry points


def build_engines(config: Any, options: BuildOptions | None = None, progress: Progress | None = None
                  ) -> list[ModelReport]:
    """Validate, quantize, build, verify, time and choose every selected model; one report per model."""
    return EngineBuilder(config, options or BuildOptions(), progress).build()


def verify_engines(config: Any, options: BuildOptions | None = None, progress: Progress | None = None
                   ) -> list[ModelReport]:
    return EngineBuilder(config, options or BuildOptions(), progress).verify()


def bench_engines(config: Any, options: BuildOptions | None = None, progress: Progress | None = None
                  ) -> dict[str, Any]:
    """Latency per model, backend and precision (p50/p95 ms) and the resulting choice, as one JSON-able dict."""
    from edge_avatar.bench import machine_info  # noqa: PLC0415

    builder = EngineBuilder(config, options or BuildOptions(), progress)
    if not any(builder.manifest.data["models"].get(e.name, {}).get("artifacts") for e in builder.selected):
        builder.build()  # nothing built yet: build first so there is something to compare
    models = builder.bench()
    return {"machine": machine_info(), "board": config.board.name, "backend": builder.machine.backend,
            "runtimes": {"onnxruntime": builder.machine.ort_runtime, "tensorrt": builder.machine.trt_runtime or None},
            "threads": config.backend.intra_op_threads, "models": models}
