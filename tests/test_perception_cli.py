"""``edge-avatar perceive IMAGE... --json`` as an operator runs it, and ``bench perception`` in miniature."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_avatar.motion import ARKIT_BLENDSHAPES
from edge_avatar.perception.material import MaterialUnavailable, opencv_doc_file, skimage_image
from edge_avatar.perception.token import EMOTIONS

cv2 = pytest.importorskip("cv2")


def _material(fn, *args):
    try:
        return fn(*args)
    except MaterialUnavailable as exc:
        pytest.skip(f"test material unavailable: {exc}")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for name in ("astronaut", "coffee"):
        paths[name] = folder / f"{name}.png"
        cv2.imwrite(str(paths[name]), _material(skimage_image, name)[:, :, ::-1])
    paths["hand"] = _material(opencv_doc_file, "handSrc.jpg")
    return paths


def test_perceive_json_contract(cli, images, tmp_path):
    proc = cli("perceive", str(images["astronaut"]), str(images["hand"]), str(images["coffee"]), "--json",
               "--draw", str(tmp_path / "drawn"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    astronaut, hand, coffee = doc["images"]

    assert astronaut["frame_valid"] and astronaut["reason"] == "ok" and (astronaut["width"], astronaut["height"]) \
        == (512, 512)
    (face,) = astronaut["faces"]
    assert face["active_visitor"] is True
    assert face["landmark_count"] == 478
    x1, y1, x2, y2 = face["box"]
    assert x1 < 226 < x2 and y1 < 122 < y2
    assert 0 < face["score"] <= 1
    assert list(face["blendshapes"]) == list(ARKIT_BLENDSHAPES)
    assert face["blendshapes"]["mouthSmileLeft"] > 0.7
    assert set(face["head_pose_deg"]) == {"yaw", "pitch", "roll"}
    assert abs(face["head_pose_deg"]["roll"] + 3.2) < 4
    assert {"yaw_deg", "pitch_deg", "looking_at_screen"} <= set(face["gaze"])
    assert list(face["emotion"]) == list(EMOTIONS)
    assert sum(face["emotion"].values()) == pytest.approx(1.0, abs=1e-3)
    assert max(face["emotion"], key=face["emotion"].get) == "happy"

    (h,) = hand["hands"]
    assert len(h["landmarks"]) == 21 and all(len(p) == 3 for p in h["landmarks"])
    assert h["gesture"] == "open_palm" and h["extended_count"] == 5
    assert len(h["box"]) == 4

    assert coffee["faces"] == [] and coffee["reason"] == "no_face"
    drawn = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert drawn == ["astronaut.png", "coffee.png", "handSrc.png"]
    assert "[3/3]" in proc.stderr  # progress on stderr, results on stdout


def test_perceive_landmarks_flag_and_text_output(cli, images):
    proc = cli("perceive", str(images["astronaut"]), "--json", "--landmarks")
    face = json.loads(proc.stdout)["images"][0]["faces"][0]
    assert np.asarray(face["landmarks"]).shape == (478, 3)
    text = cli("perceive", str(images["astronaut"]))
    assert text.returncode == 0 and "active visitor" in text.stdout and "mouthSmile" in text.stdout


def test_perceive_unreadable_file_fails_clearly(cli, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    proc = cli("perceive", str(bad), "--json")
    assert proc.returncode == 1
    entry = json.loads(proc.stdout)["images"][0]
    assert entry["reason"].startswith("unreadable") and entry["faces"] == []


def test_perceive_config_override_is_applied(cli, images):
    proc = cli("perceive", str(images["hand"]), "--json", "--set", "perception.hands_enabled=false")
    assert proc.returncode == 0 and json.loads(proc.stdout)["images"][0]["hands"] == []
    bad = cli("perceive", str(images["hand"]), "--set", "perception.release_distance_m=0.5")
    assert bad.returncode == 2 and "perception.engage_distance_m" in bad.stderr


def test_models_convert_is_wired(cli):
    proc = cli("models", "convert", "--help")
    assert proc.returncode == 0 and "--converter-python" in proc.stdout


def test_bench_perception_in_miniature():
    from edge_avatar.perception.bench import astronaut_sequence, run_sequence
    from edge_avatar.perception.pipeline import VisionPerception

    frames = astronaut_sequence(14)
    assert frames[0].shape == (480, 640, 3)
    stage = VisionPerception()
    try:
        out = run_sequence(stage, frames, warmup=2)
    finally:
        stage.close()
    assert out["frames_timed"] == 12 and out["visitor_found_frac"] == 1.0
    assert out["per_frame_ms"]["p50_ms"] > 0 and "face_mesh" in out["stages_ms_p50"]
