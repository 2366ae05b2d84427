"""The per-CPU channel layout: which block this CPU has, and that widening at load changes no output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_avatar.backends import cpu_layout
from edge_avatar.backends.cpu_layout import (
    WIDEN_KEY,
    fold_weight_casts,
    nchwc_block_channels,
    prepare_for_cpu,
    read_cpu_flags,
)

ENGINES = Path(__file__).resolve().parents[1] / "engines"
FACE_MESH = ENGINES / "face_landmarks_detector.onnx"


@pytest.mark.parametrize(("flags", "machine", "block"), [
    ({"fma", "avx2", "avx512f", "avx512bw"}, "x86_64", 16),
    ({"fma", "avx2"}, "x86_64", 8),
    ({"sse4_2", "avx"}, "x86_64", 0),                   # no AVX2: no blocked kernels to match
    ({"fma", "avx2", "avx512f"}, "aarch64", 0),          # not an x86 CPU: nothing is widened
])
def test_the_block_follows_the_cpu_flags(flags, machine, block):
    assert nchwc_block_channels(flags, machine) == block


def test_cpu_flags_are_read_from_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu fma avx2 sse4_2\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n", encoding="utf-8")
    assert read_cpu_flags(cpuinfo) == {"fpu", "fma", "avx2", "sse4_2"}
    assert read_cpu_flags(tmp_path / "missing") == set()


def test_the_committed_face_mesh_keeps_8_channel_layers_and_asks_to_be_widened():
    """The file is laid out for AVX2 (and TensorRT); the manifest and the file agree on what AVX-512 widens."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    proto = onnx.load(str(FACE_MESH))
    assert {p.key: p.value for p in proto.metadata_props}.get(WIDEN_KEY) == "1"
    fold_weight_casts(proto.graph)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    conv_outputs = [inits[n.input[1]].shape[0] for n in proto.graph.node if n.op_type == "Conv"]
    assert conv_outputs.count(8) >= 4
    manifest = json.loads((ENGINES / "manifest.json").read_text(encoding="utf-8"))["models"]
    assert manifest["face_landmarks"]["runs_widened_at_load_on_avx512"] == 4
    assert manifest["face_landmarks"]["narrow_channel_runs_padded"] == 0


def test_widening_the_face_mesh_for_avx512_gives_the_same_numbers():
    import onnxruntime as ort  # noqa: PLC0415

    widened, runs = prepare_for_cpu(FACE_MESH, 16)
    assert runs == 4 and widened is not None
    as_file = ort.InferenceSession(str(FACE_MESH), providers=["CPUExecutionProvider"])
    as_widened = ort.InferenceSession(widened, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(3).random((1, 256, 256, 3), dtype=np.float32)
    name = as_file.get_inputs()[0].name
    for expected, got in zip(as_file.run(None, {name: image}), as_widened.run(None, {name: image})):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("model", "block"), [
    (FACE_MESH, 8),                                      # an AVX2 CPU runs the file as it is
    (FACE_MESH, 0),
    (ENGINES / "renderer_256.onnx", 16),                 # a model without the key is never touched
])
def test_a_model_is_loaded_as_it_is_unless_both_the_cpu_and_the_file_ask(model, block):
    assert prepare_for_cpu(model, block) == (None, 0)


def test_the_onnxruntime_backend_widens_at_load_on_an_avx512_cpu(monkeypatch):
    from edge_avatar.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: PLC0415
    from edge_avatar.config import BackendConfig  # noqa: PLC0415

    config = BackendConfig(name="onnxruntime", intra_op_threads=1)
    image = np.random.default_rng(4).random((1, 256, 256, 3), dtype=np.float32)
    plain = OnnxRuntimeBackend(FACE_MESH, config)
    monkeypatch.setattr(cpu_layout, "nchwc_block_channels", lambda *a, **k: 16)
    wide = OnnxRuntimeBackend(FACE_MESH, config)
    assert plain.io_spec()["channel_runs_widened_for_cpu"] == 0
    assert wide.io_spec()["channel_runs_widened_for_cpu"] == 4
    name = plain.inputs[0].name
    expected, got = plain.run({name: image}), wide.run({name: image})
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    plain.close()
    wide.close()
