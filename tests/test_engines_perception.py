"""The engine build on the real perception models, calibrated on real photos through the real pipeline.

Few frames keep it fast; the full build (48 + 24 frames, all six models) is
what ``edge-avatar engines build`` runs and what BENCHMARKS.md records.
Material comes from pinned packages (scikit-image, Debian opencv-doc); a test
skips, saying why, when it cannot be had.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_avatar.config import load_config
from edge_avatar.engines import CalibrationError, resolve_model
from edge_avatar.engines.build import BuildOptions, build_engines
from edge_avatar.engines.cache import CacheManifest, board_dir
from edge_avatar.engines.calibration import CalibrationOptions, make_perception_data
from edge_avatar.engines.manifest import REPO_ENGINES_DIR
from edge_avatar.perception.material import MaterialUnavailable, skimage_image

TINY = CalibrationOptions(frames=6, held_out_frames=4, max_samples=16, max_held_out=12)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    try:
        return skimage_image("astronaut")
    except MaterialUnavailable as exc:
        pytest.skip(f"real test material unavailable: {exc}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, astronaut):
    """face_detector + emotion (INT8 tried) and face_landmarks (INT8 off by policy), built once."""
    cache = tmp_path_factory.mktemp("cache")
    config = load_config(overrides=[f"backend.engine_cache_dir={cache}"])
    lines: list[str] = []
    options = BuildOptions(models=("face_detector", "emotion", "face_landmarks"), calibration=TINY,
                           bench_warmup=1, bench_iterations=3)
    reports = {r.name: r for r in build_engines(config, options, lines.append)}
    manifest = CacheManifest.load(board_dir(cache, config.board.name))
    return config, reports, manifest, lines


def test_build_and_verify_real_models(built) -> None:
    config, reports, manifest, lines = built
    assert all(r.ok for r in reports.values()), {n: r.errors for n, r in reports.items()}
    detector = manifest.data["models"]["face_detector"]["artifacts"]["onnxruntime:int8"]
    assert set(detector["verify"]["metrics"]) >= {"box_iou_mean", "box_iou_p5", "score_abs_diff_p95",
                                                  "detection_count_agreement"}
    assert detector["verify"]["samples"] >= 4 and "qdq_reference" in detector["verify"]
    assert detector["build"]["qdq_nodes"]["QuantizeLinear"] > 10
    assert detector["build"]["float_heads"]                                # box and score heads stay float
    emotion = manifest.data["models"]["emotion"]["artifacts"]["onnxruntime:int8"]
    assert emotion["build"]["dequantize_folded"] > 0                       # FER's int8 weights unpacked first
    assert set(emotion["verify"]["metrics"]) == {"top1_agreement", "probability_mae"}
    mesh = manifest.data["models"]["face_landmarks"]
    assert mesh["artifacts"] == {} and not mesh["policy"]["int8"] and "harmful" in mesh["policy"]["reason"]
    assert mesh["choice"]["precision"] == "fp32"
    for name in ("face_detector", "emotion", "face_landmarks"):
        timings = manifest.data["models"][name]["bench"]["timings_ms"]
        assert timings["onnxruntime:fp32"]["p50_ms"] > 0
        resolved = resolve_model(name, config)
        assert resolved.path.is_file() and resolved.precision in ("fp32", "int8") and resolved.reason
    assert any(line.startswith("[1/3] face_detector: verify onnxruntime:int8") for line in lines)
    assert any("face_landmarks: INT8 skipped: INT8 harmful" in line for line in lines)


def test_failing_int8_is_not_used_and_says_why(built) -> None:
    config, _, manifest, _ = built
    for name in ("face_detector", "emotion"):
        art = manifest.data["models"][name]["artifacts"]["onnxruntime:int8"]
        resolved = resolve_model(name, config)
        if not art["verify"]["passed"]:
            assert resolved.precision == "fp32" and "not usable" in resolved.reason
            assert art["verify"]["reason"].split(";")[0].split(" (")[0] in resolved.reason


def test_perception_calibration_data_is_what_the_models_see(tmp_path: Path, astronaut, monkeypatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    import cv2

    for index in range(4):  # four "captured" frames: the astronaut at the kiosk, in dimming light
        frame = (astronaut.astype(np.float32) * (1.0 - 0.15 * index)).astype(np.uint8)
        cv2.imwrite(str(site / f"site-{index}.png"), frame[:, :, ::-1])
    options = CalibrationOptions(frames=4, held_out_frames=2, calibration_dirs=(str(tmp_path),))
    data = make_perception_data(load_config(), options, ["face_detector", "face_landmarks", "face_blendshapes",
                                                         "emotion"])
    assert "+ 4 site images" in data["face_detector"].description
    assert data["face_landmarks"].calibration[0]["image"].shape == (1, 256, 256, 3)
    assert data["face_blendshapes"].calibration[0]["points"].shape == (1, 146, 2)
    assert data["emotion"].calibration[0]["image"].shape == (1, 64, 64, 1)
    detector = data["face_detector"]
    assert detector.calibration[0]["image"].shape == (1, 192, 192, 3)
    held = {d["image"].tobytes() for d in detector.held_out}
    assert not held & {d["image"].tobytes() for d in detector.calibration}  # held-out frames are never calibrated on


def test_no_calibration_images_at_all_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("edge_avatar.engines.calibration._real_material", lambda: [])
    monkeypatch.setattr("edge_avatar.engines.calibration.site_image_dirs", lambda options: [])
    config = load_config(overrides=[f"backend.engine_cache_dir={tmp_path}"])
    with pytest.raises(CalibrationError, match="no calibration images.*edge-avatar calibrate capture"):
        make_perception_data(config, TINY, ["face_detector"])
    (report,) = build_engines(config, BuildOptions(models=("face_detector",), calibration=TINY,
                                                   bench_warmup=1, bench_iterations=2))
    assert not report.ok and "no calibration images" in report.errors[0]
    assert resolve_model("face_detector", config).precision == "fp32"


def test_truncated_real_model_is_named(tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    shutil.copytree(REPO_ENGINES_DIR, engines)
    path = engines / "face_detection_full_range.onnx"
    path.write_bytes(path.read_bytes()[:4096])
    config = load_config(overrides=[f"perception.engines_dir={engines}", f"backend.engine_cache_dir={tmp_path / 'c'}"])
    (report,) = build_engines(config, BuildOptions(models=("face_detector",), calibration=TINY))
    assert not report.ok
    assert str(path) in report.errors[0] and "bytes: truncated: 4096 bytes" in report.errors[0]


def test_capture_writes_frames_locally(tmp_path: Path) -> None:
    import cv2

    from edge_avatar.clock import AcceleratedTimeBase
    from edge_avatar.engines.capture import capture_site_images, make_clock

    video = tmp_path / "lobby.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for index in range(20):
        writer.write(np.full((120, 160, 3), 10 * index, np.uint8))
    writer.release()
    out = tmp_path / "calibration" / "site"
    lines: list[str] = []
    paths = capture_site_images(load_config(), f"file://{video}", 3, out, interval_s=0.3,
                                clock=make_clock(AcceleratedTimeBase()), progress=lines.append)
    assert len(paths) == 3 and all(p.parent == out and p.suffix == ".png" for p in paths)
    assert "written only to" in lines[0] and "nothing is sent anywhere" in lines[0]
    levels = [float(cv2.imread(str(p)).mean()) for p in paths]
    assert levels == sorted(levels) and levels[-1] > levels[0]           # frames at least 0.3 s apart
    assert not list(out.glob("*.tmp"))


def test_cli_capture_refuses_a_remote_folder(cli) -> None:
    proc = cli("calibrate", "capture", "--camera", "file:///nonexistent.mp4", "--count", "1",
               "--out", "s3://bucket/site/")
    assert proc.returncode == 1 and "local folder only" in proc.stderr
