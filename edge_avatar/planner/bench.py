"""``bench planner``: what a tick of the planner costs -- teacher vs student -- and the held-out eval figures.

Why this module exists: the issue's targets are the student at least 10x
cheaper per tick than the teacher and under 1 ms p50 in ONNX Runtime on the
2-core box, and they must be measured on real work, not on zeros. One
held-out conversation is replayed through the real ``PlannerInputs`` and
the teacher, timing each tick's input assembly and teacher step (the
generator's own ``replay`` with ``timings_ns``); then the same input vectors
go through ``NeuralPlanner.step_vector`` (the engine through
``edge_avatar.backends``, as the loop calls it), after a warm-up. Three
numbers per tick, min/p50/p95:

- ``assembly_ms``: building the input vector (shared by both planners);
- ``teacher_ms``: the reference behaviour engine on that vector;
- ``student_ms``: the ONNX engine on that vector, backend call included
  (``NeuralPlanner.step_vector``: what the loop pays);
- ``student_onnxruntime_only_ms``: the same file in a bare ONNX Runtime
  session, to show how much is the runtime and how much the Python around it.

``cost_ratio_p50`` = teacher / student. The eval figures (``evaluate``) run
on 4 held-out conversations with ``--quick``, 24 otherwise. One backend per
run (ONNX Runtime, CPU, the config's thread count: 1).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_avatar.backends import summarize_ms
from edge_avatar.bench import register

TARGET_STUDENT_P50_MS = 1.0
TARGET_RATIO = 10.0


def _summary(samples_ns: list[int]) -> dict[str, float]:
    s = summarize_ms([v / 1e6 for v in samples_ns])
    return {"min": round(s.min_ms, 4), "p50": round(s.p50_ms, 4), "p95": round(s.p95_ms, 4),
            "mean": round(s.mean_ms, 4), "count": s.count}


@register("planner", "planner per tick: teacher vs student (ONNX Runtime) on a held-out conversation, eval figures")
def bench_planner(quick: bool) -> dict[str, Any]:
    from edge_avatar.planner.evaluate import EvalOptions, evaluate_planner  # noqa: PLC0415
    from edge_avatar.planner.generate import ScriptWriter, held_out, load_timelines, replay  # noqa: PLC0415
    from edge_avatar.planner.runtime import DEFAULT_MODEL, NeuralPlanner  # noqa: PLC0415

    timelines = [t for t in load_timelines() if held_out(t.text)]
    rng = np.random.default_rng(20240)
    script = ScriptWriter(rng, timelines, 20.0 if quick else 60.0).write()
    timings: dict[str, list[int]] = {}
    conv = replay(script, 20240, timings_ns=timings)

    planner = NeuralPlanner(model_path=DEFAULT_MODEL)
    planner.warm_up(50)
    for x in conv.inputs[:100]:            # warm the state path too
        planner.step_vector(x)
    planner.reset_state()
    student_ns = []
    for x in conv.inputs:
        t0 = time.perf_counter_ns()
        planner.step_vector(x)
        student_ns.append(time.perf_counter_ns() - t0)
    # The same engine in a bare ONNX Runtime session (no backend wrapper, no feed checks): where the time goes.
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(DEFAULT_MODEL), options, providers=["CPUExecutionProvider"])
    state = np.zeros((1, 1, planner.state_size), np.float32)
    for x in conv.inputs[:100]:
        session.run(None, {"features": x[None, None], "state_in": state})
    bare_ns = []
    for x in conv.inputs:
        feeds = {"features": x[None, None], "state_in": state}
        t0 = time.perf_counter_ns()
        _, state = session.run(None, feeds)
        bare_ns.append(time.perf_counter_ns() - t0)
    teacher, assembly, student = (_summary(timings["teacher"]), _summary(timings["assembly"]),
                                  _summary(student_ns))
    ratio = teacher["p50"] / student["p50"]
    full_ratio = (teacher["p50"] + assembly["p50"]) / (student["p50"] + assembly["p50"])
    evaluation = evaluate_planner(DEFAULT_MODEL, EvalOptions(conversations=4 if quick else 24))
    planner.close()
    return {
        "ticks": int(len(conv.inputs)),
        "backend": "onnxruntime (CPUExecutionProvider, 1 intra-op thread)",
        "model": {"file": str(DEFAULT_MODEL.name), "sha256": planner.manifest.get("sha256", "")[:16],
                  "parameters": planner.manifest.get("training", {}).get("parameters")},
        "assembly_ms": assembly,
        "teacher_ms": teacher,
        "student_ms": student,
        "student_onnxruntime_only_ms": _summary(bare_ns),
        "cost_ratio_p50": round(ratio, 2),
        "cost_ratio_p50_with_assembly": round(full_ratio, 2),
        "targets": {"student_p50_under_1ms": student["p50"] < TARGET_STUDENT_P50_MS,
                    "student_10x_cheaper_than_teacher": ratio >= TARGET_RATIO},
        "eval": {k: evaluation[k] for k in ("conversations", "ticks", "mae", "bilabial_closure", "mouth_lead_ms",
                                           "motion_energy", "targets")},
    }
