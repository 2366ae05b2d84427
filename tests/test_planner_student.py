"""The distilled planner (engines/planner.onnx): targets on held-out conversations, streaming, bad input, CLI."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge_avatar.motion import BLENDSHAPE_INDEX as B
from edge_avatar.motion import EYE_LIMITS_DEG, HEAD_LIMITS_DEG
from edge_avatar.planner.inputs import PlannerInputs, build_track
from edge_avatar.planner.metrics import motion_energy
from edge_avatar.planner.runtime import DEFAULT_MODEL, NeuralPlanner, PlannerModelError
from tests.conftest import REPO

TICK_NS = 1_000_000_000 // 30

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="engines/planner.onnx not trained yet")


@pytest.fixture(scope="module")
def held_out_conversations(tmp_path_factory):
    """Three held-out conversations (sentences never trained on), timelines synthesised for two voices only."""
    from edge_avatar.planner.generate import (
        SENTENCES,
        GeneratorOptions,
        generate_conversation,
        held_out,
        load_timelines,
    )
    from edge_avatar.speech import TTSUnavailable

    try:
        timelines = load_timelines(tmp_path_factory.mktemp("timelines"), tuple(s for s in SENTENCES if held_out(s)),
                                   (("en-us", 160), ("en-us+f3", 140)))
    except TTSUnavailable as exc:
        pytest.skip(str(exc))
    options = GeneratorOptions(seed=4242, target_s=25.0, held_out=True)
    return [generate_conversation(options, i, timelines) for i in range(3)]


@pytest.fixture(scope="module")
def planner():
    p = NeuralPlanner()
    yield p
    p.close()


def test_the_student_meets_the_targets_on_held_out_conversations(planner, held_out_conversations):
    from edge_avatar.planner.evaluate import compare, student_motion

    result = compare(held_out_conversations, student_motion(planner, held_out_conversations))
    assert result["bilabial_closure"]["student"]["total"] >= 20
    assert result["bilabial_closure"]["student"]["rate"] >= 0.95
    assert abs(result["mouth_lead_ms"]["difference"]) <= 20.0
    mae = result["mae"]
    assert mae["mouth"] < 0.01 and mae["brows"] < 0.03 and mae["eyes"] < 0.015 and mae["gestures"] < 0.03
    assert mae["head_deg"] < 1.0 and mae["gaze_deg"] < 1.0


def test_streaming_one_tick_at_a_time_equals_the_sequence(planner, held_out_conversations):
    x = held_out_conversations[0].inputs[:300]
    sequence, final_state = planner.run_sequence(x)
    planner.reset_state()
    streamed = np.array([planner.step_vector(v) for v in x])
    np.testing.assert_allclose(streamed, sequence, atol=1e-4)
    np.testing.assert_allclose(planner._state, final_state, atol=1e-4)
    planner.reset_state()
    assert not planner._state.any()


def test_it_implements_the_loop_planner_protocol(planner):
    planner.reset()
    motion = planner.step(0, None)
    assert motion.shape == (64,) and motion.dtype == np.float32
    assert planner.inputs.counters["perception_missing_ticks"] == 1
    assert planner.manifest["input_version"] == 1 and planner.manifest["sha256"]


def test_bad_input_keeps_the_face_calm():
    planner = NeuralPlanner(PlannerInputs(seed=3))
    inputs = planner.inputs
    inputs.set_persona([np.nan, 7.0, -3.0, np.inf, 0.5, 1, 1, 1])
    inputs.set_turn_state("speaking", 0)
    inputs.set_speech_timeline([])                                        # TTS gave nothing
    inputs.add_speech(build_track(0, 2_000_000_000, "", [], [], np.zeros(0, np.float32), 0.0))
    stale = np.zeros(107, np.float32)
    frames = []
    for k in range(300):
        pts = k * TICK_NS
        if k % 10 == 0:
            v = np.full(11, np.nan, np.float32)
            inputs.set_audio(v, pts)
        token = None
        if k < 60:
            token = np.full(107, np.nan, np.float32)                      # NaN everywhere
        elif k < 120:
            token = np.zeros(5, np.float32)                               # the wrong layout
        elif k < 200:
            token = stale                                                 # the same object: stale after 1 s
        frames.append(planner.step(pts, token))
    motion = np.array(frames)
    assert np.isfinite(motion).all()
    assert motion[:, :52].min() >= 0 and motion[:, :52].max() <= 1
    assert np.abs(motion[:, 52:55]).max(axis=0).tolist() <= HEAD_LIMITS_DEG.tolist()
    assert np.abs(motion[:, 55:59]).max() <= EYE_LIMITS_DEG.max()
    assert motion_energy(motion) < 3e-3                                   # calm
    assert np.abs(motion[:, 52:55]).max() < 10.0                          # no wild head turns
    assert motion[:, B["jawOpen"]].max() < 0.15                           # not talking: nothing is playing
    c = inputs.counters
    assert c["nan_values"] > 0 and c["bad_tokens"] > 0 and c["perception_stale_ticks"] > 0
    assert c["persona_out_of_range"] >= 3 and c["empty_timelines"] >= 1
    assert planner.counters["nan_outputs"] == 0
    planner.close()


def test_a_model_that_does_not_match_its_manifest_is_refused(tmp_path):
    shutil.copy(DEFAULT_MODEL, tmp_path / "planner.onnx")
    manifest = json.loads(DEFAULT_MODEL.with_name("planner.manifest.json").read_text())
    manifest["sha256"] = "0" * 64
    (tmp_path / "planner.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PlannerModelError, match="sha256"):
        NeuralPlanner(model_path=tmp_path / "planner.onnx")
    NeuralPlanner(model_path=tmp_path / "planner.onnx", verify_sha256=False).close()


def test_the_runtime_never_imports_torch():
    code = ("import sys; from edge_avatar.planner.runtime import NeuralPlanner; p = NeuralPlanner(); "
            "p.step(0, None); assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr


def test_train_and_eval_are_shared_with_the_renderer():
    from edge_avatar.planner import cli as planner_cli

    for first_renderer in (True, False):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        other = planner_cli.shared_subcommand(sub, "train", "train") if first_renderer else None
        if other is not None:
            other.add_parser("renderer")
        planner_cli.add_subcommands(sub)
        if not first_renderer:
            planner_cli.shared_subcommand(sub, "train", "train").add_parser("renderer")
        args = parser.parse_args(["train", "planner", "--quick", "--steps", "5"])
        assert args.quick and args.steps == 5 and args.func is planner_cli.cmd_train_planner
        assert parser.parse_args(["train", "renderer"]).train_target == "renderer"
        assert parser.parse_args(["eval", "planner"]).func is planner_cli.cmd_eval_planner


def test_build_planner_follows_the_config():
    from dataclasses import replace

    from edge_avatar.config import load_config
    from edge_avatar.planner.options import PlannerConfig
    from edge_avatar.planner.runtime import build_planner
    from edge_avatar.planner.teacher import TeacherPlanner

    config = load_config()
    student = build_planner(config)                       # no planner section yet: the defaults
    assert isinstance(student, NeuralPlanner) and student.step(0, None).shape == (64,)
    student.close()

    class WithPlanner:                                    # what RootConfig looks like once the section is added
        planner = replace(PlannerConfig(), engine="teacher", seed=5)
        backend = config.backend

    teacher = build_planner(WithPlanner())
    assert isinstance(teacher, TeacherPlanner) and teacher.inputs.seed == 5
