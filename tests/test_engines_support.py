"""Support for the engine-build tests (no tests here): small real ONNX models, a test generator, configs."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_avatar.config import load_config

HOOK_MODULE = "edge_avatar_engines_test_hooks"


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def tiny_renderer(path: Path, size_px: int = 4, seed: int = 5, mid_layer: bool = False,
                  mid_name: str = "/mid/MatMul") -> Path:
    """motion (1, 64) + background_rgb (3,) -> image (1, S, S, 3) uint8, like renderer.manifest.json says.

    ``mid_layer``: a third MatMul (named ``mid_name``, exported-style) between the two.
    """
    rng = np.random.default_rng(seed)
    hidden = 32
    w1 = (rng.standard_normal((64, hidden)) * 0.2).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((hidden, size_px * size_px * 3)) * 2.0).astype(np.float32)
    mid = [helper.make_node("MatMul", ["h2", "wm"], ["hm"], name=mid_name)] if mid_layer else []
    nodes = [
        helper.make_node("MatMul", ["motion", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        *mid,
        helper.make_node("MatMul", ["hm" if mid_layer else "h2", "w2"], ["h3"], name="fc2"),
        helper.make_node("Reshape", ["h3", "shape"], ["h4"], name="to_image"),
        helper.make_node("Add", ["h4", "background_rgb"], ["h5"], name="background"),
        helper.make_node("Clip", ["h5", "lo", "hi"], ["h6"], name="clip"),
        helper.make_node("Cast", ["h6"], ["image"], to=TensorProto.UINT8, name="to_uint8"),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([1, size_px, size_px, 3], np.int64), "shape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(255.0, np.float32), "hi")]
    if mid_layer:
        inits.append(numpy_helper.from_array((rng.standard_normal((hidden, hidden)) * 0.2).astype(np.float32), "wm"))
    graph = helper.make_graph(nodes, "tiny_renderer",
                              [helper.make_tensor_value_info("motion", TensorProto.FLOAT, [1, 64]),
                               helper.make_tensor_value_info("background_rgb", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, size_px, size_px, 3])],
                              inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def tiny_convnet(path: Path, seed: int = 3) -> Path:
    """x (1, 3, 8, 8) -> conv 3x3 -> relu -> conv 1x1 -> y (1, 2, 8, 8)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((2, 4, 1, 1)) * 0.5).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "tiny_convnet",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def entry_for(name: str, path: Path, inputs: list[dict], outputs: list[dict], opset: int, **extra) -> dict:
    data = path.read_bytes()
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "kind": "onnx",
            "opset": opset, "inputs": inputs, "outputs": outputs, **extra}


def make_engines_dir(root: Path, convnet: bool = False) -> Path:
    """An engines folder with a renderer-shaped model (and optionally a tiny conv net with a test generator)."""
    engines = root / "engines"
    engines.mkdir(parents=True, exist_ok=True)
    renderer = tiny_renderer(engines / "renderer_4.onnx")
    models = {"renderer_4": entry_for(
        "renderer_4", renderer, [{"name": "motion", "shape": [1, 64], "dtype": "float32"},
                                 {"name": "background_rgb", "shape": [3], "dtype": "float32"}],
        [{"name": "image", "shape": [1, 4, 4, 3], "dtype": "uint8"}], 17)}
    (engines / "renderer.manifest.json").write_text(json.dumps({"manifest_version": 1, "models": models}, indent=2))
    if convnet:
        net = tiny_convnet(engines / "tiny_convnet.onnx")
        models = {"tiny_convnet": entry_for(
            "tiny_convnet", net, [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}],
            [{"name": "y", "shape": [1, 2, 8, 8], "dtype": "float32"}], 13,
            calibration=f"{HOOK_MODULE}:calibration_feeds")}
        (engines / "tiny.manifest.json").write_text(json.dumps({"manifest_version": 1, "models": models}, indent=2))
    return engines


def install_hook(monkeypatch, count_override: int | None = None) -> types.ModuleType:
    """A generator module for tiny_convnet: smooth images (what a camera gives), or ``count_override`` of them."""
    module = types.ModuleType(HOOK_MODULE)

    def calibration_feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        n = count if count_override is None else count_override
        ramp = np.linspace(0.5, 1, 8, dtype=np.float32)
        return [{"x": (rng.uniform(0.2, 1.0, (1, 3, 1, 1)) * ramp[None, None, :, None] * ramp[None, None, None, :]
                       + rng.normal(0, 0.01, (1, 3, 8, 8))).astype(np.float32)} for _ in range(n)]

    module.calibration_feeds = calibration_feeds
    monkeypatch.setitem(sys.modules, HOOK_MODULE, module)
    return module


def config_for(engines: Path, cache: Path, *extra: str):
    return load_config(overrides=[f"perception.engines_dir={engines}", f"backend.engine_cache_dir={cache}", *extra])


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
