"""Calibration feeds for the planner engine: realistic (features, state) pairs for INT8 ranges and verification.

Why this module exists: ``edge-avatar engines build`` quantizes every model
and checks the INT8 candidate against fp32 on held-out data; for the
planner it calls ``edge_avatar.planner.calibration:calibration_feeds``
(the default hook of the ``planner`` family in ``engines.calibration``).
Zeros or noise would calibrate the wrong ranges: the features come from
generated conversations (the same generator the student was trained on)
and each window's ``state_in`` is the state the fp32 engine really has at
that point of its conversation, so the recurrent path is calibrated on the
values it meets on the device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WINDOW_TICKS = 30            # one second per feed: the GRU op sees sequences, as in evaluation
CONVERSATIONS = 6


def calibration_feeds(count: int, seed: int, model_path: str | Path | None = None) -> list[dict[str, np.ndarray]]:
    """``count`` feeds {"features": (30, 1, 149), "state_in": (1, 1, H)} from conversations drawn with ``seed``."""
    from edge_avatar.planner.generate import GeneratorOptions, generate_dataset  # noqa: PLC0415
    from edge_avatar.planner.runtime import DEFAULT_MODEL, NeuralPlanner  # noqa: PLC0415

    conversations = generate_dataset(GeneratorOptions(seed=int(seed), conversations=CONVERSATIONS, target_s=30.0))
    planner = NeuralPlanner(model_path=model_path or DEFAULT_MODEL, verify_sha256=False)
    rng = np.random.default_rng(seed)
    feeds: list[dict[str, np.ndarray]] = []
    try:
        per_conversation = -(-count // len(conversations))
        for conv in conversations:
            n = len(conv.inputs)
            starts = np.sort(rng.integers(0, max(n - WINDOW_TICKS, 1), per_conversation))
            state, done = None, 0
            for start in starts:
                if start > done:            # advance the fp32 state to the window's first tick
                    _, state = planner.run_sequence(conv.inputs[done:start], state)
                    done = int(start)
                feeds.append({"features": np.ascontiguousarray(conv.inputs[start:start + WINDOW_TICKS, None, :]),
                              "state_in": (np.zeros((1, 1, planner.state_size), np.float32) if state is None
                                           else state.astype(np.float32).copy())})
                if len(feeds) == count:
                    return feeds
    finally:
        planner.close()
    return feeds
