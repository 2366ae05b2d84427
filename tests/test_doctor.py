"""The doctor tells the truth about this machine and never raises.

Why: `edge-avatar doctor` is what a field engineer runs first on a new kiosk.
These tests run it for real on the development box (no TensorRT, no camera,
ffmpeg installed by `make test`), against real sockets for the broker probe,
and against a simulated Jetson (device-tree model, nv_tegra_release and a fake
`nvpmodel` on PATH) for the Jetson-only paths.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge_avatar import doctor
from edge_avatar.config import load_config
from edge_avatar.doctor import Finding, HostPaths, findings_to_json, format_findings, run_doctor

ALL_CHECKS = {"board", "jetpack", "tensorrt", "cuda", "onnxruntime", "camera", "audio devices", "speaker",
              "ffmpeg", "espeak-ng", "engines", "engine cache", "power mode", "broker"}
NO_TENSORRT = importlib.util.find_spec("tensorrt") is None


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def _with_camera(config, uri: str):
    return config.replace(camera=dataclasses.replace(config.camera, uri=uri))


def _fake_jetson(tmp_path: Path, model: str, release: str) -> HostPaths:
    (tmp_path / "model").write_bytes(model.encode() + b"\x00")
    (tmp_path / "nv_tegra_release").write_text(release)
    (tmp_path / "meminfo").write_text("MemTotal:        7802360 kB\n")
    return HostPaths(device_tree_model=tmp_path / "model", device_tree_compatible=tmp_path / "compatible",
                     tegra_release=tmp_path / "nv_tegra_release", meminfo=tmp_path / "meminfo",
                     asound_cards=tmp_path / "cards", cuda_version_json=tmp_path / "version.json",
                     dev_dir=tmp_path / "dev", engines_dir=tmp_path / "engines",
                     scenario_data_dir=tmp_path / "scenarios")


JP62_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n"
NANO_MODEL = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"


# --------------------------------------------------------------------------- this machine


def test_runs_on_this_machine_without_raising():
    findings = run_doctor(load_config())
    assert findings and all(isinstance(f, Finding) for f in findings)
    assert {f.check for f in findings} == ALL_CHECKS
    assert all(f.status in ("ok", "warn", "missing", "info") for f in findings)
    assert all(f.detail for f in findings)
    assert all(f.fix for f in findings if f.status == "missing"), "everything missing needs a fix"


@pytest.mark.parametrize("board", ["orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "thor", "x86-cpu"])
def test_runs_with_every_board_config(board):
    assert {f.check for f in run_doctor(load_config(board=board))} == ALL_CHECKS


def test_import_does_not_pull_in_device_libraries():
    code = ("import sys, edge_avatar.doctor; "
            "print(','.join(m for m in ('tensorrt', 'cv2', 'sounddevice', 'pycuda', 'pyrealsense2', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_dev_machine_is_reported_as_such():
    board = _by_check(run_doctor(load_config()))["board"]
    assert board.status == "ok" and "development machine" in board.detail


@pytest.mark.skipif(not NO_TENSORRT, reason="TensorRT is installed here")
def test_missing_tensorrt_comes_with_the_jetpack_install_hint():
    on_jetson_config = _by_check(run_doctor(load_config(board="orin-nano-8gb")))["tensorrt"]
    assert on_jetson_config.status == "missing"
    assert "python3-libnvinfer" in on_jetson_config.fix and "JetPack" in on_jetson_config.fix
    on_dev_config = _by_check(run_doctor(load_config(board="x86-cpu")))["tensorrt"]
    assert on_dev_config.status == "info" and "python3-libnvinfer" in on_dev_config.fix
    assert "python3-libnvinfer" in format_findings([on_jetson_config])


def test_finds_ffmpeg():
    ffmpeg = _by_check(run_doctor(load_config()))["ffmpeg"]
    assert ffmpeg.status == "ok", ffmpeg
    assert "ffmpeg" in ffmpeg.detail and "version" in ffmpeg.detail


@pytest.mark.skipif(os.path.exists("/dev/video9"), reason="this machine has a /dev/video9")
def test_missing_v4l2_camera_is_reported_with_a_fix():
    config = _with_camera(load_config(), "v4l2:///dev/video9")
    camera = _by_check(run_doctor(config))["camera"]
    assert camera.status == "missing"
    assert "/dev/video9" in camera.detail
    assert "v4l2-ctl" in camera.fix


def test_file_camera_is_checked_for_existence(tmp_path):
    clip = tmp_path / "visitor.mp4"
    clip.write_bytes(b"\x00" * 16)
    assert _by_check(run_doctor(_with_camera(load_config(), f"file://{clip}")))["camera"].status == "ok"
    absent = _by_check(run_doctor(_with_camera(load_config(), f"file://{tmp_path / 'absent.mp4'}")))["camera"]
    assert absent.status == "missing" and "absent.mp4" in absent.detail


def test_scenario_camera_is_checked_against_the_scenario_data(tmp_path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "demo.yaml").write_text("steps: []\n")
    paths = dataclasses.replace(HostPaths(), scenario_data_dir=tmp_path / "scenarios")
    found = _by_check(run_doctor(load_config(), paths=paths))["camera"]
    assert found.status == "ok"
    absent = _by_check(run_doctor(_with_camera(load_config(), "scenario://lobby"), paths=paths))["camera"]
    assert absent.status == "missing" and "demo" in absent.fix


# --------------------------------------------------------------------------- broker


def test_closed_local_port_is_reported_unreachable():
    # A bound socket that never listens: connecting to it is refused, and holding it keeps the port ours.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        broker = _by_check(run_doctor(load_config(), broker=f"127.0.0.1:{port}"))["broker"]
    assert broker.status == "missing"
    assert f"127.0.0.1:{port}" in broker.detail and "unreachable" in broker.detail
    assert "mosquitto" in broker.fix


def test_listening_local_port_is_reported_reachable():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        broker = _by_check(run_doctor(load_config(), broker=f"127.0.0.1:{port}"))["broker"]
    assert broker.status == "ok"
    assert "reachable" in broker.detail


@pytest.mark.parametrize("text", ["localhost", "localhost:http", ":1883", "host:70000"])
def test_malformed_broker_address_is_a_warning_not_an_exception(text):
    broker = _by_check(run_doctor(load_config(), broker=text))["broker"]
    assert broker.status == "warn" and "HOST:PORT" in broker.fix


def test_without_broker_the_probe_is_skipped():
    assert _by_check(run_doctor(load_config()))["broker"].status == "info"


# --------------------------------------------------------------------------- a simulated Jetson


def test_simulated_orin_nano_reports_board_and_jetpack(tmp_path):
    paths = _fake_jetson(tmp_path, NANO_MODEL, JP62_RELEASE)
    found = _by_check(run_doctor(load_config(board="orin-nano-8gb"), paths=paths))
    assert found["board"].status == "ok" and NANO_MODEL in found["board"].detail
    assert found["jetpack"].status == "ok"
    assert "L4T 36.4.3" in found["jetpack"].detail and "JetPack 6.2" in found["jetpack"].detail


def test_simulated_jetson_with_the_wrong_board_config_names_the_right_one(tmp_path):
    paths = _fake_jetson(tmp_path, "NVIDIA Jetson AGX Orin Developer Kit", JP62_RELEASE)
    board = _by_check(run_doctor(load_config(board="orin-nano-8gb"), paths=paths))["board"]
    assert board.status == "warn" and "--board agx-orin-64gb" in board.fix


def test_thor_config_on_jetpack_6_is_a_warning(tmp_path):
    paths = _fake_jetson(tmp_path, "NVIDIA Jetson AGX Thor Developer Kit", JP62_RELEASE)
    jetpack = _by_check(run_doctor(load_config(board="thor"), paths=paths))["jetpack"]
    assert jetpack.status == "warn" and "JetPack 7" in jetpack.fix


@pytest.mark.parametrize(("reported", "status", "fix_part"), [
    ("NV Power Mode: 25W\n1\n", "ok", ""),
    ("NV Power Mode: 15W\n0\n", "warn", "sudo nvpmodel -m 1"),
    ("NV Power Mode: 25W\n3\n", "warn", "board.nvpmodel_id: 3"),
])
def test_power_mode_is_compared_with_nvpmodel(tmp_path, monkeypatch, reported, status, fix_part):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvpmodel"
    fake.write_text(f"#!/bin/sh\nprintf '{reported.replace(chr(10), chr(92) + 'n')}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    paths = _fake_jetson(tmp_path, NANO_MODEL, JP62_RELEASE)
    power = _by_check(run_doctor(load_config(board="orin-nano-8gb"), paths=paths))["power mode"]
    assert power.status == status, power
    assert fix_part in power.fix


def test_engines_dir_with_manifest_and_models_is_ok(tmp_path):
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "manifest.json").write_text(json.dumps({"models": [{"name": "planner"}, {"name": "renderer"}]}))
    (engines / "planner.onnx").write_bytes(b"onnx")
    paths = dataclasses.replace(HostPaths(), engines_dir=engines)
    found = _by_check(run_doctor(load_config(), paths=paths))["engines"]
    assert found.status == "ok" and "2 entries" in found.detail and "planner.onnx" in found.detail
    empty = dataclasses.replace(HostPaths(), engines_dir=tmp_path / "nothing")
    assert _by_check(run_doctor(load_config(), paths=empty))["engines"].status == "missing"


def test_a_check_that_raises_becomes_a_warning(monkeypatch):
    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "_check_ffmpeg", broken)
    ffmpeg = _by_check(run_doctor(load_config()))["ffmpeg"]
    assert ffmpeg.status == "warn" and "RuntimeError: boom" in ffmpeg.detail


# --------------------------------------------------------------------------- output formats


def test_text_table_and_json_contain_every_check(tmp_path):
    config = _with_camera(load_config(board="orin-nano-8gb"), "v4l2:///dev/video9")
    findings = run_doctor(config, broker="127.0.0.1:1")

    text = format_findings(findings)
    header = text.splitlines()[0]
    assert header.split() == ["CHECK", "STATUS", "DETAIL"]
    for f in findings:
        assert f.check in text and f.detail in text
        if f.status == "missing":
            assert f"fix: {f.fix}" in text
    assert "missing" in text.splitlines()[-1]  # the summary line counts them

    rows = findings_to_json(findings)
    assert json.loads(json.dumps(rows)) == rows
    assert [r["check"] for r in rows] == [f.check for f in findings]
    assert {r["check"] for r in rows} == ALL_CHECKS
    assert all(set(r) == {"check", "status", "detail", "fix"} for r in rows)


def test_format_of_no_findings():
    assert format_findings([]) == "no findings\n"
