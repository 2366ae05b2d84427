"""The command line as operators use it: config errors, missing devices, benchmarks, clean shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


def test_config_show_prints_the_merged_result(cli, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("site:\n  name: st-marys\n  device_id: kiosk-07\nloop:\n  tick_rate_hz: 25\n")
    result = cli("config", "show", "--board", "orin-nano-8gb", "--site", str(site),
                 "--set", "display.fullscreen=true", "--json")
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)
    assert merged["board"]["name"] == "orin-nano-8gb"
    assert merged["site"] == {**merged["site"], "name": "st-marys", "device_id": "kiosk-07"}
    assert merged["loop"]["tick_rate_hz"] == 25.0
    assert merged["display"]["fullscreen"] is True


@pytest.mark.parametrize("override, words", [
    ("loop.tick_rate_hz=fast", ["loop.tick_rate_hz", "expected a number"]),
    ("loop.tick_rate_hz=0.1", ["loop.tick_rate_hz", "expected a value in"]),
    ("loop.tick_rate=30", ["loop.tick_rate", "unknown key", "tick_rate_hz"]),
    ("camera.uri=[1, 2]", ["camera.uri", "expected a string"]),
])
def test_bad_config_refuses_to_start_with_the_key_and_the_expectation(cli, override, words):
    result = cli("run", "--set", override, "--duration", "1")
    assert result.returncode == 2
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_site_file_names_the_file(cli, tmp_path):
    site = tmp_path / "broken.yaml"
    site.write_text("display:\n  width_px: 640\n  height_px: [oops\n")
    result = cli("config", "show", "--site", str(site))
    assert result.returncode == 2
    assert str(site) in result.stderr and "not valid YAML" in result.stderr


def test_missing_camera_says_what_was_tried(cli, tmp_path):
    result = cli("run", "--camera", "v4l2:///dev/video97", "--mic", "scenario://demo", "--out", "null://",
                 "--report", str(tmp_path / "r.json"), "--duration", "1")
    assert result.returncode == 1
    assert "/dev/video97" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_microphone_file_says_what_was_tried(cli, tmp_path):
    missing = tmp_path / "nothing-here.wav"
    result = cli("run", "--camera", "scenario://demo", "--mic", f"file://{missing}", "--out", "null://",
                 "--report", str(tmp_path / "r.json"), "--duration", "1")
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_ffmpeg_is_explained(cli, tmp_path):
    # A PATH with python but without ffmpeg.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    result = cli("run", "--out", f"file://{tmp_path / 'x.mp4'}", "--duration", "1",
                 env={"PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "ffmpeg" in result.stderr and "apt-get install ffmpeg" in result.stderr


def test_bench_loop_quick_reports_json(cli):
    result = cli("bench", "loop", "--quick", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    loop = data["benchmarks"]["loop"]
    assert data["machine"]["cores"] >= 1
    assert loop["simulated_10min"]["ticks"] + loop["simulated_10min"]["ticks_dropped"] == 18000
    assert loop["realtime"]["ticks"] > 0
    for key in ("p50", "p95"):
        assert loop["realtime"]["tick_overhead_ms"][key] > 0


def test_unknown_benchmark_is_refused(cli):
    result = cli("bench", "nonsense")
    assert result.returncode == 2 and "available:" in result.stderr


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_sigterm_stops_cleanly_with_a_playable_mp4_and_a_report(tmp_path):
    video = tmp_path / "run.mp4"
    report = tmp_path / "run.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_avatar.cli", "run", "--site", "examples/hospital-reception/site.yaml",
         "--camera", "scenario://demo", "--mic", "scenario://demo", "--out", f"file://{video}",
         "--report", str(report), "--set", "fleet.local_log_path=" + str(tmp_path / "fleet.jsonl")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_line = proc.stderr.readline()  # "running: ..." once every device is open
    assert first_line.startswith("running"), first_line + proc.stderr.read()
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data = json.loads(report.read_text())
    assert data["frames"]["rendered"] > 30
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                            str(video)], capture_output=True, text=True)
    assert sorted(probe.stdout.split()) == ["audio", "video"]
