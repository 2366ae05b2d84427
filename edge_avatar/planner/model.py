"""The student: a small causal network from the per-tick input vector to the motion frame, streaming one tick.

Why this module exists: the device runs the planner as an engine next to
perception and the renderer, once per tick, so it must be small, causal
(it never sees the future beyond the look-ahead the input vector already
carries) and stateful across ticks without Python in between. A GRU gives
exactly that: its hidden state is the only memory (nods that are under way,
how long the visitor has paused, the phase of a gesture), and it is an
explicit ONNX input and output, so the loop carries it from tick to tick and
``reset()`` is "feed zeros". The same graph runs a whole sequence
(training, evaluation) or one tick (the device): the time axis is dynamic.

Shape of the network (per tick; ``B`` batch, ``T`` ticks)::

    x (B, T, 149) -> GRU(149 -> H) = h   (state (1, B, H) in and out)   # what has been going on
    [h, x] -> Linear (H+149)->M, ReLU -> Linear M->64 = y (normalised)    # what to show now
    motion = clamp(y * OUTPUT_SCALE, motion ranges)

The GRU reads the input vector directly (its gates are the nonlinearity);
the readout sees the vector again next to the state, because lip shapes are
mostly a function of the visemes of this tick and the next 133 ms.
Outputs are trained in normalised units (blendshapes and gestures as they
are, angles / ``ANGLE_SCALE_DEG``); the scale is folded into the last layer
and the clamp to the motion frame's ranges is part of the exported graph,
so the engine's output is a valid motion frame (v1) as it is.

The ONNX graph is written node by node (``export_onnx``) rather than by
``torch.onnx.export``: one ``GRU`` operator, the readout and the clamp, ten
nodes in all, time-major so no transposes are needed -- at one tick per
call, ONNX Runtime's cost is mostly per node, and the tracer's version has
half again as many. It is checked against the torch network after export.

torch is imported here: this module belongs to the ``train`` extra and is
never imported by the runtime (``runtime.NeuralPlanner`` runs the ONNX).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge_avatar.motion import EYE_LIMITS_DEG, HEAD_LIMITS_DEG, MOTION_FRAME_SIZE
from edge_avatar.planner.inputs import INPUT_SIZE

ANGLE_SCALE_DEG = 10.0


def output_scale() -> np.ndarray:
    """(64,) what the network's normalised outputs are multiplied by."""
    scale = np.ones(MOTION_FRAME_SIZE, np.float32)
    scale[52:59] = ANGLE_SCALE_DEG
    return scale


def motion_bounds() -> tuple[np.ndarray, np.ndarray]:
    low = np.concatenate([np.zeros(52), -HEAD_LIMITS_DEG, -EYE_LIMITS_DEG, np.zeros(5)]).astype(np.float32)
    high = np.concatenate([np.ones(52), HEAD_LIMITS_DEG, EYE_LIMITS_DEG, np.ones(5)]).astype(np.float32)
    return low, high


class PlannerNet(nn.Module):
    """The student network in normalised output units (batch-first, as trained)."""

    def __init__(self, n_inputs: int = INPUT_SIZE, hidden: int = 128, mid: int = 128,
                 n_outputs: int = MOTION_FRAME_SIZE):
        super().__init__()
        self.hidden = hidden
        self.gru = nn.GRU(n_inputs, hidden, batch_first=True)
        self.mid = nn.Linear(hidden + n_inputs, mid)
        self.out = nn.Linear(mid, n_outputs)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, state = self.gru(x, state)                                    # (B, T, H), (1, B, H)
        y = self.out(torch.relu(self.mid(torch.cat([h, x], dim=-1))))   # (B, T, 64)
        return y, state

    def zero_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(1, batch, self.hidden)

    def motion(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the exported graph computes: motion frame v1 units, clamped."""
        y, state = self(x, state)
        low, high = (torch.from_numpy(v) for v in motion_bounds())
        return torch.minimum(torch.maximum(y * torch.from_numpy(output_scale()), low), high), state


def _gru_onnx_order(w: np.ndarray) -> np.ndarray:
    """torch stacks the GRU gates r, z, n; ONNX stacks z, r, h."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def export_onnx(net: PlannerNet, path: str, opset: int = 17) -> None:
    """Write the streaming graph: features (ticks, 1, F), state_in (1, 1, H) -> motion (ticks, 1, 64), state_out."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    f32 = np.float32
    gru, n_in, hidden = net.gru, net.gru.input_size, net.hidden
    scale = output_scale()
    low, high = motion_bounds()

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(f32)

    bias = np.concatenate([_gru_onnx_order(arr(gru.bias_ih_l0)), _gru_onnx_order(arr(gru.bias_hh_l0))])[None]
    inits = {
        "W": _gru_onnx_order(arr(gru.weight_ih_l0))[None],   # (1, 3H, F)
        "R": _gru_onnx_order(arr(gru.weight_hh_l0))[None],   # (1, 3H, H)
        "B": bias,                                           # (1, 6H)
        "squeeze_axis": np.array([1], np.int64),
        "W1": arr(net.mid.weight).T.copy(),                  # (H + F, M)
        "b1": arr(net.mid.bias),
        "W2": (arr(net.out.weight).T * scale[None, :]).astype(f32),   # (M, 64), output scale folded in
        "b2": (arr(net.out.bias) * scale).astype(f32),
        "low": low, "high": high,
    }
    node = helper.make_node
    nodes = [
        node("GRU", ["features", "W", "R", "B", "", "state_in"], ["h_all", "state_out"], hidden_size=hidden,
             linear_before_reset=1),                                   # h_all (ticks, 1, 1, H)
        node("Squeeze", ["h_all", "squeeze_axis"], ["h"]),             # (ticks, 1, H)
        node("Concat", ["h", "features"], ["hx"], axis=-1),            # (ticks, 1, H + F)
        node("MatMul", ["hx", "W1"], ["mid_mm"]), node("Add", ["mid_mm", "b1"], ["mid_pre"]),
        node("Relu", ["mid_pre"], ["mid"]),
        node("MatMul", ["mid", "W2"], ["out_mm"]), node("Add", ["out_mm", "b2"], ["out"]),
        node("Max", ["out", "low"], ["out_low"]), node("Min", ["out_low", "high"], ["motion"]),
    ]
    graph = helper.make_graph(
        nodes, "edge_avatar_planner",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["ticks", 1, n_in]),
         helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [1, 1, hidden])],
        [helper.make_tensor_value_info("motion", TensorProto.FLOAT, ["ticks", 1, MOTION_FRAME_SIZE]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, 1, hidden])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edge_avatar.planner.train")
    model.ir_version = 8            # readable by ONNX Runtime >= 1.17 and TensorRT 10
    onnx.checker.check_model(model)
    onnx.save(model, path)


def state_dict_to_numpy(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def load_numpy_state(net: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})


def parameter_count(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))
