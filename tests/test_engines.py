"""Engine build on the CPU: manifest validation, the cache key, rebuild rules, verify, choice, resolve_model, bad input.

Real ONNX models run in real ONNX Runtime throughout: a renderer-shaped
network (motion frame + background -> uint8 image, the layout of
renderer.manifest.json) calibrated by the real MotionSampler, and a tiny
conv net fed by a generator named in its manifest. Faults are real too: a
truncated file, a manifest hash that does not match, an empty generator, a
cache manifest recording another runtime version, a full disk (the write
raises ENOSPC), a damaged artifact. Each must give a clear error and leave
the previous good engine in place.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_engines_support import config_for, install_hook, make_engines_dir, tiny_renderer

from edge_avatar.engines import ManifestError, resolve_model
from edge_avatar.engines import build as build_mod
from edge_avatar.engines import cache as cache_mod
from edge_avatar.engines.build import BuildOptions, build_engines, verify_engines
from edge_avatar.engines.cache import CacheKey, CacheManifest, atomic_write_bytes
from edge_avatar.engines.calibration import CalibrationOptions
from edge_avatar.engines.manifest import load_entries, validate
from edge_avatar.engines.quantize import resampling_nodes
from edge_avatar.engines.verify import compare, psnr_db

FAST = BuildOptions(calibration=CalibrationOptions(sequence_samples=24), bench_warmup=1, bench_iterations=3)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    install_hook(monkeypatch)
    engines = make_engines_dir(tmp_path, convnet=True)
    cache = tmp_path / "cache"
    return engines, cache, config_for(engines, cache)


def _manifest(config) -> CacheManifest:
    return CacheManifest.load(cache_mod.board_dir(config.backend.engine_cache_dir, config.board.name))


def _fast_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic timings (INT8 faster) so the choice logic is tested without a noisy clock."""
    def fake_timings(runners, feeds, warmup=0, iterations=0):
        return {name: {"p50_ms": 1.0 if name.endswith(":int8") else 2.0, "p95_ms": 3.0} for name in runners}

    monkeypatch.setattr("edge_avatar.engines.bench.time_interleaved_ms", fake_timings)


# --------------------------------------------------------------------------- manifest validation


def test_validate_accepts_the_real_perception_models() -> None:
    entries = load_entries()
    assert {"face_detector", "face_landmarks", "emotion"} <= set(entries)
    for entry in entries.values():
        if entry.family == "perception":
            validate(entry)  # raises on any mismatch


@pytest.mark.parametrize("damage, field, words", [
    ("truncate", "bytes", "truncated"),
    ("flip", "sha256", "does not match"),
    ("garbage", "file", "truncated or corrupt"),
    ("empty", "bytes", "truncated"),
])
def test_validate_names_file_and_field(setup, damage: str, field: str, words: str) -> None:
    engines, _, _ = setup
    entry = load_entries(engines)["tiny_convnet"]
    data = entry.path.read_bytes()
    if damage == "truncate":
        entry.path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        entry.path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif damage == "garbage":  # same size, matching hash in the manifest, not an ONNX protobuf
        entry.path.write_bytes(b"\xff" * len(data))
        manifest = json.loads((engines / "tiny.manifest.json").read_text())
        manifest["models"]["tiny_convnet"]["sha256"] = cache_mod.hashlib.sha256(b"\xff" * len(data)).hexdigest()
        (engines / "tiny.manifest.json").write_text(json.dumps(manifest))
        entry = load_entries(engines)["tiny_convnet"]
    else:
        entry.path.write_bytes(b"")
    with pytest.raises(ManifestError) as info:
        validate(entry)
    assert info.value.field == field and words in str(info.value)
    assert str(entry.path) in str(info.value)


def test_validate_checks_opset_and_io(setup) -> None:
    engines, _, _ = setup
    path = engines / "tiny.manifest.json"
    manifest = json.loads(path.read_text())
    manifest["models"]["tiny_convnet"]["opset"] = 17
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="opset 13.*says 17"):
        validate(load_entries(engines)["tiny_convnet"])
    manifest["models"]["tiny_convnet"]["opset"] = 13
    manifest["models"]["tiny_convnet"]["inputs"][0]["shape"] = [1, 3, 16, 16]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError) as info:
        validate(load_entries(engines)["tiny_convnet"])
    assert info.value.field == "inputs.x.shape"


def test_single_model_manifest_like_the_planners_is_read(tmp_path: Path) -> None:
    engines = make_engines_dir(tmp_path)
    renderer = json.loads((engines / "renderer.manifest.json").read_text())["models"]["renderer_4"]
    (engines / "renderer.manifest.json").unlink()
    (engines / "planner.manifest.json").write_text(json.dumps({"manifest_version": 1, "model": "planner",
                                                               **renderer}))
    (entry,) = load_entries(engines).values()
    assert entry.name == "planner" and entry.family == "planner" and entry.path.name == "renderer_4.onnx"
    validate(entry)


# --------------------------------------------------------------------------- cache keys and atomic writes


def _key(**changes) -> CacheKey:
    base = dict(model="m", onnx_sha256="a" * 64, runtime="trt-10.3.0", device="jetson-Orin", board="orin-nano-8gb",
                power_mode="25W", precision="int8", recipe="r", calibration="c")
    return CacheKey(**{**base, **changes})


def test_cache_key_changes_with_every_field_and_explains_why() -> None:
    base = _key()
    for field, value in [("onnx_sha256", "b" * 64), ("runtime", "trt-10.13.1"), ("device", "jetson-Thor"),
                         ("board", "thor"), ("power_mode", "15W"), ("precision", "fp16"), ("recipe", "r2"),
                         ("calibration", "c2")]:
        other = _key(**{field: value})
        assert other.digest != base.digest
        assert len(other.differences(base)) == 1
    reason = _key(runtime="trt-10.13.1").differences(base)[0]
    assert "built by TensorRT 10.3.0" in reason and "10.13.1" in reason and "JetPack" in reason
    assert _key().differences(base) == [] and CacheKey.from_dict(base.to_dict()) == base


def test_atomic_write_on_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.engine"
    atomic_write_bytes(target, b"good engine")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_mod.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"half a new engine")
    assert target.read_bytes() == b"good engine"
    assert [p.name for p in tmp_path.iterdir()] == ["model.engine"]  # no temporary left behind


def test_unreadable_cache_manifest_means_empty_cache(tmp_path: Path) -> None:
    (tmp_path / cache_mod.CACHE_MANIFEST_NAME).write_text("{ not json")
    manifest = CacheManifest.load(tmp_path)
    assert manifest.data["models"] == {} and "unreadable" in manifest.load_problem


# --------------------------------------------------------------------------- build, cache hits, rebuilds


def test_build_verifies_times_and_chooses_then_hits_the_cache(setup, monkeypatch) -> None:
    engines, cache, config = setup
    _fast_int8(monkeypatch)
    lines: list[str] = []
    reports = build_engines(config, FAST, lines.append)
    assert all(r.ok for r in reports), [r.errors for r in reports]
    manifest = _manifest(config)
    for name in ("renderer_4", "tiny_convnet"):
        record = manifest.data["models"][name]
        art = record["artifacts"]["onnxruntime:int8"]
        assert art["key"]["runtime"].startswith("ort-") and art["key"]["board"] == "x86-cpu"
        assert (manifest.directory / art["file"]).is_file()
        assert {"metrics", "tolerances", "reason", "qdq_reference"} <= set(art["verify"])
        assert record["choice"]["reason"]
    # The conv net's verdict depends on this CPU's int8 kernels (AVX2 without VNNI saturates); the renderer's not.
    record = manifest.data["models"]["renderer_4"]
    assert record["artifacts"]["onnxruntime:int8"]["verify"]["passed"], record["artifacts"]
    assert record["choice"]["precision"] == "int8" and "verified" in record["choice"]["reason"]
    psnr = manifest.data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]["verify"]["metrics"]["psnr_db_mean"]
    assert psnr >= 35.0
    assert any("[1/2] renderer_4: onnxruntime:int8: building (not built yet)" in line for line in lines)
    assert any("bench" in line for line in lines) and any("uses int8" in line for line in lines)

    resolved = resolve_model("renderer_4", config)
    assert resolved.precision == "int8" and resolved.path.suffix == ".onnx" and resolved.backend == "onnxruntime"
    assert resolved.path.parent.name == "renderer_4" and "verified" in resolved.reason

    lines.clear()
    built = []
    monkeypatch.setattr(build_mod.EngineBuilder, "_build_artifact",
                        lambda self, *a: built.append(a) or pytest.fail("rebuilt a cached artifact"))
    assert all(r.ok for r in build_engines(config, FAST, lines.append))
    assert not built and sum("cached" in line for line in lines) == 2


def test_runtime_upgrade_and_damaged_files_trigger_rebuild(setup, monkeypatch) -> None:
    engines, cache, config = setup
    _fast_int8(monkeypatch)
    build_engines(config, FAST)
    manifest = _manifest(config)

    # Another ONNX Runtime (a pip upgrade): resolve falls back at once, build rebuilds.
    monkeypatch.setattr(cache_mod, "onnxruntime_runtime", lambda: "ort-99.0.0")
    resolved = resolve_model("renderer_4", config)
    assert resolved.precision == "fp32" and "ort-99.0.0" in resolved.reason and "engines build" in resolved.reason
    lines: list[str] = []
    build_engines(config, FAST, lines.append)
    assert any("renderer_4: onnxruntime:int8: building (built with ort-" in line for line in lines)
    assert resolve_model("renderer_4", config).precision == "int8"

    # A damaged artifact (bit rot, a copy cut short): resolve refuses it, build rebuilds it.
    manifest = _manifest(config)
    art = manifest.data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]
    path = manifest.artifact_path(art)
    path.write_bytes(path.read_bytes()[:100])
    assert "damaged" in resolve_model("renderer_4", config).reason
    lines.clear()
    build_engines(config, FAST, lines.append)
    assert any("damaged" in line and "building" in line for line in lines)
    assert resolve_model("renderer_4", config).precision == "int8"

    # A file whose hash was recorded but that does not load (a bad write that was then recorded).
    manifest = _manifest(config)
    art = manifest.data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]
    path = manifest.artifact_path(art)
    path.write_bytes(b"not an onnx file")
    art["sha256"] = cache_mod.hashlib.sha256(b"not an onnx file").hexdigest()
    manifest.save()
    lines.clear()
    build_engines(config, FAST, lines.append)
    assert any("does not load" in line and "building" in line for line in lines)


def test_resolve_model_without_a_build_says_so(setup) -> None:
    engines, cache, config = setup
    resolved = resolve_model("renderer_4", config)
    assert resolved == (engines / "renderer_4.onnx", "fp32", resolved.reason)
    assert "no engine build recorded" in resolved.reason and "engines build" in resolved.reason
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        resolve_model("nope", config)


def test_slower_int8_is_not_chosen(setup, monkeypatch) -> None:
    _, _, config = setup

    def int8_slower(runners, feeds, warmup=0, iterations=0):
        return {name: {"p50_ms": 5.0 if name.endswith(":int8") else 2.0, "p95_ms": 6.0} for name in runners}

    monkeypatch.setattr("edge_avatar.engines.bench.time_interleaved_ms", int8_slower)
    build_engines(config, FAST)
    resolved = resolve_model("renderer_4", config)
    assert resolved.precision == "fp32"
    assert "verified but not faster on this machine (p50 5.00 ms vs fp32 2.00 ms)" in resolved.reason


# --------------------------------------------------------------------------- bad input keeps the previous engine


def test_full_disk_during_build_keeps_previous_engines(setup, monkeypatch) -> None:
    engines, cache, config = setup
    _fast_int8(monkeypatch)
    build_engines(config, FAST)
    before = _manifest(config)
    before_text = before.path.read_text()
    art = before.data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]
    good_bytes = before.artifact_path(art).read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_mod.os, "fsync", no_space)
    lines: list[str] = []
    reports = build_engines(config, BuildOptions(**{**FAST.__dict__, "force": True}), lines.append)
    assert not any(r.ok for r in reports)
    errors = " ".join(e for r in reports for e in r.errors)
    assert "No space left on device" in errors and "previous" in errors
    assert before.path.read_text() == before_text                      # the cache manifest is untouched
    assert before.artifact_path(art).read_bytes() == good_bytes         # and so is the engine
    assert not list(cache.rglob("*.tmp"))
    monkeypatch.undo()
    install_hook(monkeypatch)
    assert resolve_model("renderer_4", config).precision == "int8"     # the runtime still uses it


def test_corrupt_onnx_is_reported_and_previous_engine_kept(setup, monkeypatch) -> None:
    engines, cache, config = setup
    _fast_int8(monkeypatch)
    build_engines(config, FAST)
    onnx_path = engines / "renderer_4.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:300])                 # truncated (an interrupted copy)
    lines: list[str] = []
    reports = {r.name: r for r in build_engines(config, FAST, lines.append)}
    assert not reports["renderer_4"].ok and reports["tiny_convnet"].ok
    assert str(onnx_path) in reports["renderer_4"].errors[0] and "bytes" in reports["renderer_4"].errors[0]
    assert any("renderer_4: INVALID" in line and "left in place" in line for line in lines)
    assert resolve_model("renderer_4", config).precision == "int8"     # built from the good file, still valid


def test_manifest_hash_mismatch_is_named(setup, monkeypatch) -> None:
    engines, cache, config = setup
    path = engines / "tiny.manifest.json"
    manifest = json.loads(path.read_text())
    manifest["models"]["tiny_convnet"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    reports = {r.name: r for r in build_engines(config, FAST)}
    error = reports["tiny_convnet"].errors[0]
    assert "tiny_convnet.onnx" in error and "sha256" in error and "0" * 64 in error and "tiny.manifest.json" in error


def test_empty_calibration_data_is_a_clear_error(setup, monkeypatch) -> None:
    engines, cache, config = setup
    _fast_int8(monkeypatch)
    build_engines(config, FAST)
    art = _manifest(config).data["models"]["tiny_convnet"]["artifacts"]["onnxruntime:int8"]
    before = (_manifest(config).directory / art["file"]).read_bytes()
    install_hook(monkeypatch, count_override=0)                          # the generator now yields nothing
    reports = {r.name: r for r in build_engines(config, BuildOptions(**{**FAST.__dict__, "force": True}))}
    error = " ".join(reports["tiny_convnet"].errors)
    assert "tiny_convnet: no calibration samples" in error and "previous build is kept" in error
    after = _manifest(config).data["models"]["tiny_convnet"]["artifacts"]["onnxruntime:int8"]
    assert after["sha256"] == art["sha256"] and (_manifest(config).directory / after["file"]).read_bytes() == before


def test_a_model_without_a_generator_stays_fp32_with_the_reason(tmp_path, monkeypatch) -> None:
    engines = make_engines_dir(tmp_path, convnet=True)                   # no hook module installed
    config = config_for(engines, tmp_path / "cache")
    reports = {r.name: r for r in build_engines(config, BuildOptions(models=("tiny_convnet",), **{
        k: v for k, v in FAST.__dict__.items() if k != "models"}))}
    assert "cannot be imported" in " ".join(reports["tiny_convnet"].errors)
    assert resolve_model("tiny_convnet", config).precision == "fp32"


def test_verify_reports_per_output_metrics(setup, monkeypatch) -> None:
    _, _, config = setup
    _fast_int8(monkeypatch)
    build_engines(config, FAST)
    reports = {r.name: r for r in verify_engines(config, FAST)}
    assert reports["renderer_4"].ok and "usable: within tolerance" in reports["renderer_4"].notes[0]


# --------------------------------------------------------------------------- the metrics themselves


def test_metrics_fail_with_the_metric_value_and_limit() -> None:
    ref = [{"probabilities": np.array([[0.1, 0.7, 0.2]], np.float32)}] * 4
    bad = [{"probabilities": np.array([[0.6, 0.2, 0.2]], np.float32)}] * 4
    result = compare("emotion", "perception", "int8", "onnxruntime", ref, bad)
    assert not result.passed and "top1_agreement 0 (limit top1_agreement >= 0.9)" in result.reason
    assert compare("emotion", "perception", "int8", "onnxruntime", ref, ref).passed
    image = np.full((4, 4, 3), 100, np.uint8)
    assert psnr_db(image, image + 1, 255.0) == pytest.approx(48.13, abs=0.01)
    empty = compare("face_landmarks", "perception", "int8", "onnxruntime", [], [])
    assert not empty.passed and "no held-out samples" in empty.reason


# --------------------------------------------------------------------------- the CLI


def test_cli_build_verify_bench_and_a_bad_model(cli, tmp_path: Path) -> None:
    engines = make_engines_dir(tmp_path)
    cache = tmp_path / "cache"
    common = ["--engines-dir", str(engines), "--set", f"perception.engines_dir={engines}",
              "--set", f"backend.engine_cache_dir={cache}"]
    proc = cli("engines", "build", *common, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report[0]["model"] == "renderer_4" and report[0]["choice"]["precision"] in ("int8", "fp32")
    assert "[1/1] renderer_4: validated" in proc.stderr and "verify onnxruntime:int8" in proc.stderr

    proc = cli("engines", "verify", *common)
    assert proc.returncode == 0, proc.stderr
    proc = cli("engines", "bench", *common, "--iterations", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    bench = json.loads(proc.stdout)
    timings = bench["models"]["renderer_4"]["timings_ms"]
    assert {"onnxruntime:fp32", "onnxruntime:int8"} <= set(timings) and timings["onnxruntime:fp32"]["p50_ms"] > 0
    assert bench["machine"]["cpu"] and bench["threads"] == 1

    (engines / "renderer_4.onnx").write_bytes(b"\x00" * 10)
    proc = cli("engines", "build", *common)
    assert proc.returncode == 1
    assert "renderer_4.onnx: bytes: truncated" in proc.stdout + proc.stderr


def test_perception_loads_what_the_engine_build_chose_and_reports_it(tmp_path):
    """Without a build the fp32 ONNX is used and the report says why; the choice is visible per model."""
    from edge_avatar.config import load_config
    from edge_avatar.perception.pipeline import VisionPerception

    config = load_config(overrides=[f"backend.engine_cache_dir={tmp_path / 'cache'}", "perception.hands_enabled=false"])
    stage = VisionPerception.from_config(config)
    try:
        choices = stage.models.choices
        assert set(choices) == {"face_detector", "face_landmarks", "face_blendshapes", "emotion"}
        for choice in choices.values():
            assert choice["backend"] == "onnxruntime" and choice["precision"] == "fp32"
            assert "engines build" in choice["reason"]
    finally:
        stage.close()


# --------------------------------------------------------------------------- per-model float layers (manifest)


def _set_quantization(engines: Path, section, mid_layer: bool = False, mid_name: str = "/mid/MatMul") -> None:
    """The renderer_4 entry with a ``quantization`` section (and, with ``mid_layer``, a three-layer model whose
    middle MatMul is named ``mid_name``)."""
    path = engines / "renderer.manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["models"]["renderer_4"]
    if mid_layer:
        data = tiny_renderer(engines / "renderer_4.onnx", mid_layer=True, mid_name=mid_name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    entry["quantization"] = section
    path.write_text(json.dumps(manifest))


def test_manifest_keeps_named_layers_in_float_and_a_change_rebuilds(setup, monkeypatch) -> None:
    engines, _, config = setup
    _fast_int8(monkeypatch)
    options = BuildOptions(**{**FAST.__dict__, "models": ("renderer_4",)})
    _set_quantization(engines, None, mid_layer=True)
    build_engines(config, options)
    plain = _manifest(config).data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]
    assert plain["build"]["float_layers"] == [] and plain["build"]["float_heads"] == ["fc2"]

    _set_quantization(engines, {"keep_float": ["mid"], "why": "measured"}, mid_layer=True)
    lines: list[str] = []
    build_engines(config, options, lines.append)
    assert any("recipe changed" in line for line in lines), lines          # the recipe is part of the key
    art = _manifest(config).data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]
    assert art["build"]["float_layers"] == ["/mid/MatMul"] and art["verify"]["passed"]
    qdq = onnx.load(str(_manifest(config).artifact_path(art)))
    dequantized = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    weighted = [n for n in qdq.graph.node if n.op_type in ("MatMul", "Gemm")]
    inputs_from_dq = {n.name: bool(set(n.input) & dequantized) for n in weighted}
    assert len(weighted) == 3 and sum(inputs_from_dq.values()) == 1, inputs_from_dq   # only the first is INT8
    assert inputs_from_dq["/mid/MatMul"] is False and inputs_from_dq["fc2"] is False
    assert resolve_model("renderer_4", config).precision == "int8"
    _set_quantization(engines, {"keep_float": ["fc1"]}, mid_layer=True)     # edited, not rebuilt
    resolved = resolve_model("renderer_4", config)
    assert resolved.precision == "fp32" and "recipe changed" in resolved.reason, resolved.reason


def test_a_fixed_resampling_layer_stays_float_without_being_listed(setup, monkeypatch) -> None:
    engines, _, config = setup
    _fast_int8(monkeypatch)
    _set_quantization(engines, None, mid_layer=True, mid_name="/resample_fields/MatMul")
    build_engines(config, BuildOptions(**{**FAST.__dict__, "models": ("renderer_4",)}))
    art = _manifest(config).data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]
    assert art["build"]["float_resampling"] == ["/resample_fields/MatMul"] and art["build"]["float_layers"] == []
    qdq = onnx.load(str(_manifest(config).artifact_path(art)))
    dequantized = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    inputs_from_dq = {n.name: bool(set(n.input) & dequantized) for n in qdq.graph.node
                      if n.op_type in ("MatMul", "Gemm")}
    assert inputs_from_dq.pop("/resample_fields/MatMul") is False and inputs_from_dq.pop("fc2") is False
    assert list(inputs_from_dq.values()) == [True], inputs_from_dq         # fc1 (fused with its bias) is INT8


def test_resampling_layers_are_told_by_their_layer_name() -> None:
    names = ["/resample_fields/MatMul", "/resample_coarse/MatMul_1", "/geo/out/Conv", "resample_x", "/a/resample/Gemm",
             "/decoder/unresampled/MatMul"]
    assert resampling_nodes(names) == ["/resample_fields/MatMul", "/resample_coarse/MatMul_1", "/a/resample/Gemm"]


@pytest.mark.parametrize("section, words", [
    ({"keep_float": "fc1"}, "quantization.keep_float must be a list of layer names"),
    ({"keep_float": ["no_such_layer"]}, "matches no Conv/Gemm/MatMul node"),
])
def test_a_bad_float_layer_list_names_the_field_and_keeps_the_previous_build(setup, monkeypatch, section,
                                                                              words) -> None:
    engines, _, config = setup
    _fast_int8(monkeypatch)
    options = BuildOptions(**{**FAST.__dict__, "models": ("renderer_4",)})
    _set_quantization(engines, None, mid_layer=True)
    build_engines(config, options)
    before = _manifest(config).data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]["file"]
    _set_quantization(engines, section)
    reports = build_engines(config, options)
    assert not reports[0].ok and any(words in e for e in reports[0].errors), reports[0].errors
    after = _manifest(config).data["models"]["renderer_4"]["artifacts"]["onnxruntime:int8"]["file"]
    assert after == before                                                 # the previous good build stays


def test_real_renderer_loads_the_mixed_int8_build_when_it_verified_and_was_faster(tmp_path, monkeypatch) -> None:
    """The committed renderer through the whole step: its manifest's float layers, verify, choice, load."""
    pytest.importorskip("onnxruntime.quantization")
    from edge_avatar.config import load_config
    from edge_avatar.render.neural import NeuralRenderer
    from edge_avatar.render.sampler import MotionSampler

    config = load_config(overrides=[f"backend.engine_cache_dir={tmp_path / 'cache'}"])
    before = NeuralRenderer.from_config(config)                       # nothing built yet: fp32, and why
    assert before.engine["precision"] == "fp32" and "engines build" in before.engine["reason"]
    _fast_int8(monkeypatch)                                            # a machine where INT8 is faster
    options = BuildOptions(calibration=CalibrationOptions(sequence_samples=16), bench_warmup=1, bench_iterations=3,
                           models=("renderer_256",))
    reports = build_engines(config, options)
    assert reports[0].ok, reports[0].errors
    art = _manifest(config).data["models"]["renderer_256"]["artifacts"]["onnxruntime:int8"]
    assert any("/geo/" in n for n in art["build"]["float_layers"])   # the manifest's recipe was applied
    assert art["verify"]["passed"] and art["verify"]["metrics"]["psnr_db_mean"] >= 35.0
    after = NeuralRenderer.from_config(config)
    assert after.engine == {"model": "renderer_256", "backend": "onnxruntime", "precision": "int8",
                            "reason": after.engine["reason"]} and after.model_path.name.endswith(".int8.onnx")
    motion = MotionSampler(11).batch(1)[0]
    assert psnr_db(before.render(motion), after.render(motion), 255.0) >= 30.0
    before.close(), after.close()


def test_a_board_builds_the_renderer_of_its_own_render_size_only(tmp_path: Path) -> None:
    """Renderers of other sizes are in the manifest but not this board's (64 px render): skipped, said so, and
    built when named."""
    from test_engines_support import entry_for

    engines = make_engines_dir(tmp_path)
    path = engines / "renderer.manifest.json"
    manifest = json.loads(path.read_text())
    for size in (64, 128):
        model = tiny_renderer(engines / f"renderer_{size}.onnx", size_px=size)
        manifest["models"][f"renderer_{size}"] = entry_for(
            f"renderer_{size}", model, manifest["models"]["renderer_4"]["inputs"],
            [{"name": "image", "shape": [1, size, size, 3], "dtype": "uint8"}], 17)
    path.write_text(json.dumps(manifest))
    config = config_for(engines, tmp_path / "cache", "render.width_px=64", "render.height_px=64")
    said: list[str] = []
    reports = build_engines(config, FAST, progress=said.append)
    assert [r.name for r in reports] == ["renderer_64"]
    assert any("not built for this board (64 px render): renderer_4, renderer_128" in s for s in said), said
    named = build_engines(config, BuildOptions(**{**FAST.__dict__, "models": ("renderer_128",)}))
    assert [r.name for r in named] == ["renderer_128"] and named[0].ok, named[0].errors


def test_a_model_whose_onnx_changed_is_timed_again_even_without_int8_builds(setup, monkeypatch) -> None:
    """A model that is only ever fp32 (no artifact to rebuild) still gets a new timing, and so a reason that
    speaks of the file in use, when its ONNX is not the one the recorded timing was made with."""
    engines, cache, config = setup
    _fast_int8(monkeypatch)
    options = BuildOptions(calibration=FAST.calibration, bench_warmup=1, bench_iterations=3, int8_mode="none")
    build_engines(config, options)
    manifest = _manifest(config)
    record = manifest.data["models"]["renderer_4"]
    assert record["choice"]["precision"] == "fp32" and not record.get("artifacts")
    assert record["bench"]["onnx_sha256"] == record["source"]["sha256"]

    lines: list[str] = []
    build_engines(config, options, lines.append)                        # unchanged: the timing is kept
    assert not any("renderer_4: bench" in line for line in lines)

    record["bench"]["onnx_sha256"] = "0" * 64                            # timed with another file
    record["bench"]["timings_ms"]["onnxruntime:fp32"]["p50_ms"] = 99.0
    manifest.save()
    lines.clear()
    build_engines(config, options, lines.append)
    assert any("renderer_4: bench" in line for line in lines)
    record = _manifest(config).data["models"]["renderer_4"]
    assert record["bench"]["onnx_sha256"] == record["source"]["sha256"]
    assert "99.00" not in record["choice"]["reason"] and "p50 2.00 ms" in record["choice"]["reason"]


def test_an_fp32_choice_made_for_another_file_says_so_until_the_next_build(setup, monkeypatch) -> None:
    engines, cache, config = setup
    _fast_int8(monkeypatch)
    options = BuildOptions(calibration=FAST.calibration, bench_warmup=1, bench_iterations=3, int8_mode="none")
    build_engines(config, options)
    assert "changed since the engine build" not in resolve_model("renderer_4", config).reason
    manifest = _manifest(config)
    manifest.data["models"]["renderer_4"]["choice"]["onnx_sha256"] = "1" * 64     # chosen for another file
    manifest.save()
    resolved = resolve_model("renderer_4", config)
    assert resolved.precision == "fp32" and "changed since the engine build" in resolved.reason
    assert "engines build" in resolved.reason
    build_engines(config, options)
    assert "changed since the engine build" not in resolve_model("renderer_4", config).reason
