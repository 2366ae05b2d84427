"""The planner: how the avatar moves -- lip sync, expression, gaze, head motion, blinks and listening.

Why this package exists: see ARCHITECTURE.md ("Planner (a distilled neural
network) maps the token stream + persona vector + TTS phoneme/prosody
stream to a motion frame per video frame"). The pieces, each in its module:

- ``inputs``: the per-tick input vector v1 (149 floats, a documented table)
  and ``PlannerInputs``, the assembler the session feeds from its threads;
  ``BehaviourDrivers``, the seeded randomness (blinks, breathing, saccades).
- ``visemes``: phonemes (espeak-ng and IPA) -> 14 viseme classes -> ARKit shapes.
- ``teacher``: the reference behaviour engine, readable rules from the
  literature; a ``Planner`` itself (``TeacherPlanner``).
- ``generate``: synthetic conversations with real espeak-ng timelines ->
  (inputs, teacher motion) per tick, seeded and cached.
- ``model`` / ``train`` (torch, the ``train`` extra): the GRU student,
  distillation, ONNX export -> ``engines/planner.onnx``.
- ``runtime``: ``NeuralPlanner``, the student behind the loop's ``Planner``
  protocol through ``edge_avatar.backends`` (never imports torch).
- ``metrics`` / ``evaluate`` / ``bench`` / ``cli``: the figures, the plots,
  ``edge-avatar train|eval planner`` and ``edge-avatar bench planner``.

Nothing is imported here, so building the CLI parser stays free.
"""
