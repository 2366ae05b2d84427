"""The renderer's export: the shipped ONNX is the committed weights, folded for inference, and draws what the
student draws.

The graph passes need only onnx and ONNX Runtime; the checks against the student need torch (the ``train``
extra) and are skipped without it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_avatar.render.neural import EXPORT_WINDOW_256
from edge_avatar.render.onnx_passes import export_facts, merge_consecutive_slices, store_weights_as_float16

ENGINES = Path(__file__).resolve().parent.parent / "engines"
MANIFEST = json.loads((ENGINES / "renderer.manifest.json").read_text())["models"]["renderer_256"]
BACKGROUND = (28.0, 36.0, 52.0)


def _slice_chain(shared_first: bool = False, same_axis: bool = False) -> onnx.ModelProto:
    """x (1, 3, 8, 10) -> Slice (axis 2) -> Slice (axis 3 or 2) -> y; optionally the first Slice also feeds z."""
    def consts(prefix: str, starts: list[int], ends: list[int], axes: list[int]) -> list[onnx.TensorProto]:
        return [numpy_helper.from_array(np.asarray(v, np.int64), f"{prefix}_{k}")
                for k, v in (("s", starts), ("e", ends), ("a", axes), ("t", [1] * len(axes)))]

    inits = consts("one", [1], [7], [2]) + consts("two", [2] if not same_axis else [1], [9] if not same_axis else [5],
                                                   [3] if not same_axis else [2])
    nodes = [helper.make_node("Slice", ["x", "one_s", "one_e", "one_a", "one_t"], ["mid"]),
             helper.make_node("Slice", ["mid", "two_s", "two_e", "two_a", "two_t"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared_first:
        nodes.append(helper.make_node("Relu", ["mid"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 10])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_merging_two_slices_on_different_axes_gives_one_slice_and_the_same_values():
    x = np.random.default_rng(0).random((1, 3, 8, 10), dtype=np.float32)
    model = _slice_chain()
    before = _run(model, x)
    merged = merge_consecutive_slices(model)
    assert [n.op_type for n in merged.graph.node] == ["Slice"]
    after = _run(merged, x)
    assert after[0].shape == (1, 3, 6, 7)
    np.testing.assert_array_equal(before[0], after[0])


def test_a_chain_of_three_slices_becomes_one_and_a_second_pass_is_harmless():
    inits = [numpy_helper.from_array(np.asarray(v, np.int64), f"{p}_{k}")
             for p, axis, lo, hi in (("a", 1, 1, 3), ("b", 2, 2, 7), ("c", 3, 0, 9))
             for k, v in (("s", [lo]), ("e", [hi]), ("x", [axis]), ("t", [1]))]
    nodes = [helper.make_node("Slice", [src] + [f"{p}_{k}" for k in "sext"], [dst])
             for p, src, dst in (("a", "x", "m1"), ("b", "m1", "m2"), ("c", "m2", "y"))]
    graph = helper.make_graph(nodes, "chain3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(2).random((1, 3, 8, 10), dtype=np.float32)
    before = _run(model, x)
    once = merge_consecutive_slices(model)
    assert [n.op_type for n in once.graph.node] == ["Slice"]
    twice = merge_consecutive_slices(once)
    np.testing.assert_array_equal(_run(twice, x)[0], before[0])
    assert before[0].shape == (1, 2, 5, 9)


@pytest.mark.parametrize("case", ["first slice used elsewhere", "both on one axis", "first slice is an output",
                                  "same axis written negative"])
def test_slices_that_cannot_be_merged_are_left_alone(case):
    model = _slice_chain(shared_first=case == "first slice used elsewhere", same_axis=case == "both on one axis")
    if case == "first slice is an output":
        model.graph.output.append(helper.make_tensor_value_info("mid", TensorProto.FLOAT, None))
    if case == "same axis written negative":   # axis 3 and axis -1 of a 4-D tensor are one axis
        model = _slice_chain()
        axes = next(i for i in model.graph.initializer if i.name == "two_a")
        axes.CopyFrom(numpy_helper.from_array(np.asarray([-1], np.int64), "two_a"))
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.asarray([1], np.int64), "one_s"))
        one_axes = next(i for i in model.graph.initializer if i.name == "one_a")
        one_axes.CopyFrom(numpy_helper.from_array(np.asarray([3], np.int64), "one_a"))
    x = np.random.default_rng(1).random((1, 3, 8, 10), dtype=np.float32)
    before = _run(model, x)
    merged = merge_consecutive_slices(model)
    assert sum(n.op_type == "Slice" for n in merged.graph.node) == 2
    for a, b in zip(before, _run(merged, x)):
        np.testing.assert_array_equal(a, b)


def test_float16_storage_halves_large_weights_and_restores_float32_by_a_cast():
    big = numpy_helper.from_array(np.linspace(-2, 2, 2048, dtype=np.float32).reshape(1, 2048), "w")
    small = numpy_helper.from_array(np.ones((1, 4), np.float32), "b")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2048])], [big, small])
    model = store_weights_as_float16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    names = {i.name: i.data_type for i in model.graph.initializer}
    assert names == {"w__fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT}   # only what is large is halved
    x = np.zeros((1, 2048), np.float32)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, numpy_helper.to_array(big), atol=2e-3)   # float16 rounding of values up to 2


def test_the_manifest_names_the_committed_weights_and_model_by_hash():
    weights = ENGINES / MANIFEST["weights"]["file"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == MANIFEST["weights"]["sha256"]
    model = ENGINES / MANIFEST["file"]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == MANIFEST["sha256"]
    assert MANIFEST["export"]["command"] == "edge-avatar train renderer --export-only"
    assert {k: MANIFEST["export"][k] for k in ("nodes", "operators")} == export_facts(model)


def _motions() -> list[np.ndarray]:
    """Held-out conversation motion, and the same faces turned to the motion frame's limits."""
    from edge_avatar.render.evaluate import held_out_motion

    held = [m.astype(np.float32) for m in held_out_motion(10, 2024)]
    rng = np.random.default_rng(5)
    extremes = []
    for m in held[:8]:
        m = m.copy()
        m[52:55] = rng.choice([-1.0, 1.0], 3) * np.array([45.0, 30.0, 30.0]) * rng.uniform(0.85, 1.0, 3)
        extremes.append(m.astype(np.float32))
    return held + extremes


def test_the_shipped_model_draws_what_the_student_draws():
    """Every fold: the committed ONNX against the committed weights run as the training graph, at held-out motion
    and at the head's limits, over the per-pixel window (outside it the student is not asked: see the next test)."""
    torch = pytest.importorskip("torch")
    from edge_avatar.render.export import load_student

    row, col, win = EXPORT_WINDOW_256
    student = load_student(ENGINES / MANIFEST["weights"]["file"])
    session = ort.InferenceSession(str(ENGINES / MANIFEST["file"]), providers=["CPUExecutionProvider"])
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1) / 255.0
    worst, off = 0, []
    with torch.no_grad():
        for m in _motions():
            ref = student(torch.from_numpy(m).view(1, 64), bg, crop=(row, col, win))["rgb"]
            ref = torch.clamp(ref * 255.0 + 0.5, 0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy().astype(int)
            got = session.run(None, {"motion": m.reshape(1, 64),
                                     "background_rgb": np.asarray(BACKGROUND, np.float32)})[0][0].astype(int)
            diff = np.abs(got[row:row + win, col:col + win] - ref)
            worst = max(worst, int(diff.max()))
            off.append(float((diff > 1).mean()))
    assert worst <= 3, f"the shipped model is {worst} levels away from the student somewhere"
    assert max(off) < 1e-3, f"{max(off):.2%} of a frame is more than one level away from the student"


UPSAMPLINGS = [(48, 4, 0, None), (44, 4, 4, 168), (6, 2, 1, 9), (5, 4, 17, 3), (7, 4, 20, 8)]


@pytest.mark.parametrize("n_in, scale, start, count", UPSAMPLINGS)
def test_the_upsampling_matrices_are_opencv_bilinear_enlarging_cropped(n_in, scale, start, count):
    """Without torch: ``rows @ x @ cols.T`` is OpenCV's INTER_LINEAR enlargement (the same half-pixel
    centres and edge clamping as PyTorch's align_corners=False), then the crop; (7, 4, 20, 8) ends at the
    right edge."""
    cv2 = pytest.importorskip("cv2")
    from edge_avatar.render.upsampling import bilinear_matrix

    x = np.random.default_rng(n_in).standard_normal((n_in, n_in + 1)).astype(np.float32)
    full = cv2.resize(x, ((n_in + 1) * scale, n_in * scale), interpolation=cv2.INTER_LINEAR)
    rows, cols = bilinear_matrix(n_in, scale, start, count), bilinear_matrix(n_in + 1, scale, start, count)
    stop_r = full.shape[0] if count is None else start + count
    stop_c = full.shape[1] if count is None else start + count
    np.testing.assert_allclose(rows @ x @ cols.T, full[start:stop_r, start:stop_c], atol=1e-4)
    np.testing.assert_allclose(rows.sum(1), 1.0, atol=1e-6)       # interpolation shares


def test_an_upsampling_crop_outside_the_output_is_refused():
    from edge_avatar.render.upsampling import bilinear_matrix

    with pytest.raises(ValueError, match="rows 18..21 are outside an upsampling of 5 by 4"):
        bilinear_matrix(5, 4, 18, 3)
    with pytest.raises(ValueError, match="outside an upsampling"):
        bilinear_matrix(5, 4, -1, 3)


@pytest.mark.parametrize("n_in, scale, start, count", UPSAMPLINGS)
def test_the_export_resampling_is_torch_bilinear_interpolation_cropped(n_in, scale, start, count):
    """``BilinearResample`` is ``F.interpolate(..., align_corners=False)`` followed by the crop, edges included."""
    torch = pytest.importorskip("torch")
    from edge_avatar.render.export import BilinearResample
    from edge_avatar.render.upsampling import bilinear_matrix

    x = torch.from_numpy(np.random.default_rng(n_in).standard_normal((2, 3, n_in, n_in + 1)).astype(np.float32))
    full = torch.nn.functional.interpolate(x, scale_factor=float(scale), mode="bilinear", align_corners=False)
    rows_stop = full.shape[-2] if count is None else start + count
    cols_stop = full.shape[-1] if count is None else start + count
    resample = BilinearResample(bilinear_matrix(n_in, scale, start, count),
                                bilinear_matrix(n_in + 1, scale, start, count))
    got = resample(x)
    assert got.shape == (2, 3, rows_stop - start, cols_stop - start)
    assert torch.allclose(got, full[:, :, start:rows_stop, start:cols_stop], atol=1e-5)


def test_the_head_and_its_shadow_stay_inside_the_export_window():
    """What the window rests on, checked with the teacher at the corners of the head's range, jaw open or not,
    cheeks puffed or not: no head and no chin shadow outside it (the shipped model shows only the body there)."""
    from edge_avatar.motion import BLENDSHAPE_INDEX
    from edge_avatar.render.teacher import TeacherRenderer

    row, col, win = EXPORT_WINDOW_256
    assert MANIFEST["export"]["window_256"] == [row, col, win]
    teacher = TeacherRenderer(256, 256, 2)
    outside = np.ones((256, 256), bool)
    outside[row:row + win, col:col + win] = False
    for yaw in (-45.0, 45.0):
        for pitch in (-30.0, 30.0):
            for roll in (-30.0, 30.0):
                for jaw, puff in ((0.0, 0.0), (1.0, 1.0)):
                    m = np.zeros(64, np.float32)
                    m[52:55] = (yaw, pitch, roll)
                    m[BLENDSHAPE_INDEX["jawOpen"]], m[BLENDSHAPE_INDEX["cheekPuff"]] = jaw, puff
                    frame = teacher.render_frame(m)
                    assert frame.head_alpha[outside].max() * 255 < 0.5, (yaw, pitch, roll, jaw)
                    assert np.abs(frame.body_shade[outside] - 1.0).max() * 255 < 0.5, (yaw, pitch, roll, jaw)


def test_exporting_the_committed_weights_reproduces_the_committed_model(tmp_path):
    torch = pytest.importorskip("torch")
    from edge_avatar.render.export import export_onnx, load_student
    from edge_avatar.render.train import PINNED_TORCH

    if torch.__version__.split("+")[0] != PINNED_TORCH:
        pytest.skip(f"torch {torch.__version__} is not the pinned {PINNED_TORCH}: its ONNX bytes may differ")
    out = tmp_path / "renderer_256.onnx"
    export_onnx(load_student(ENGINES / MANIFEST["weights"]["file"]), out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == MANIFEST["sha256"]


def test_a_bad_weights_file_is_refused_by_name(tmp_path):
    pytest.importorskip("torch")
    from edge_avatar.render.export import load_student

    junk = tmp_path / "renderer_256.weights.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="renderer_256.weights.npz"):
        load_student(junk)
    partial = tmp_path / "partial.weights.npz"
    np.savez(partial, body=np.zeros((1, 4, 256, 256), np.float32))
    with pytest.raises(ValueError, match="partial.weights.npz: renderer weights lack static_texture"):
        load_student(partial)
    # every tensor there, one decoder layer of the wrong rank: refused by name, not an IndexError
    with np.load(ENGINES / MANIFEST["weights"]["file"]) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["mouth.conv1.weight"] = arrays["mouth.conv1.weight"].reshape(-1)
    bent = tmp_path / "bent.weights.npz"
    np.savez(bent, **arrays)
    with pytest.raises(ValueError, match="bent.weights.npz"):
        load_student(bent)


def test_export_only_remakes_the_model_from_the_weights_and_keeps_the_training_record(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import shutil

    from edge_avatar.cli import main

    shutil.copy(ENGINES / MANIFEST["weights"]["file"], tmp_path)
    shutil.copy(ENGINES / "renderer.manifest.json", tmp_path)
    assert main(["train", "renderer", "--export-only", "--out", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / "renderer.manifest.json").read_text())["models"]["renderer_256"]
    made = tmp_path / "renderer_256.onnx"
    assert entry["sha256"] == hashlib.sha256(made.read_bytes()).hexdigest()
    assert entry["training"] == MANIFEST["training"] and entry["weights"] == MANIFEST["weights"]
    assert entry["export"]["window_256"] == MANIFEST["export"]["window_256"]

    from edge_avatar.render.export import load_student, save_weights

    other = load_student(tmp_path / "renderer_256.weights.npz")
    with torch.no_grad():
        other.shader2.bias.add_(0.01)                              # other weights than the manifest records
    save_weights(other, tmp_path / "renderer_256.weights.npz")
    made.unlink()
    assert main(["train", "renderer", "--export-only", "--out", str(tmp_path)]) != 0
    assert "is not the file" in capsys.readouterr().out and not made.exists()   # refused before writing

    (tmp_path / "renderer_256.weights.npz").unlink()
    assert main(["train", "renderer", "--export-only", "--out", str(tmp_path)]) != 0
    assert "renderer_256.weights.npz is missing" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["renderer_256", "renderer_512"])
def test_the_recorded_teacher_data_is_what_the_code_would_render(name):
    """The manifest's data keys hash the code that renders the teacher's frames: a change there (even a constant
    that renders nothing) would leave the training record naming data a rerun cannot find."""
    from edge_avatar.render.train import TrainOptions, data_specs

    record = json.loads((ENGINES / "renderer.manifest.json").read_text())["models"][name]["training"]
    specs = data_specs(TrainOptions(**record["options"]))
    assert {n: s.key() for n, s in specs.items()} == record["data"]


@pytest.mark.parametrize("name", ["slim", "wide"])
def test_a_weights_file_brings_back_the_widths_it_was_trained_with(tmp_path, name):
    """A weights file carries no separate note of the decoders' sizes: they are read from the tensors, so a file
    of the first (wide) student and one of the slim default both load, each as itself."""
    torch = pytest.importorskip("torch")
    from edge_avatar.render.export import load_student, save_weights
    from edge_avatar.render.student import WIDTHS, RendererStudent
    from edge_avatar.render.train import initial_tensors

    torch.manual_seed(3)
    student = RendererStudent(256, **initial_tensors(256), widths=WIDTHS[name]).eval()
    path = tmp_path / "renderer_256.weights.npz"
    save_weights(student, path)
    loaded = load_student(path)
    assert loaded.widths == WIDTHS[name]
    other = "wide" if name == "slim" else "slim"
    assert loaded.widths != WIDTHS[other]
    saved = student.state_dict()
    for key, value in loaded.state_dict().items():   # every tensor back, the large ones rounded to float16
        expected = saved[key].half().float() if saved[key].numel() >= 1024 else saved[key]
        assert torch.equal(value, expected), key
