"""The avatar's face: a reference renderer, the neural renderer distilled from it, and the motion stream.

Why this package exists: the visitor sees a face drawn from each motion
frame (``edge_avatar.motion``, layout v1), and that face has to be both
good-looking and a few milliseconds per frame on the device. So there are two
renderers with one contract, ``render(motion (64,) float32) -> (H, W, 3) uint8``:

- ``teacher.TeacherRenderer``: our own stylised character, ray-cast and
  supersampled with numpy/OpenCV from a chart texture painted by
  ``face_texture``; slow on purpose, exact, used to train and to judge;
- ``neural.NeuralRenderer``: the student network (``student``, trained by
  ``train`` on the teacher's cached renders of ``sampler`` motion), run from
  ``engines/renderer_<size>.onnx`` through ``edge_avatar.backends``; this is
  what the loop uses. It needs numpy and the backend only.

``stream.MotionStream`` sends the same motion frames as ARKit-named JSON
over WebSocket for external 3D avatars; ``options.AvatarOutputConfig`` is the
config section for all of it. ``cli`` adds ``train renderer`` and ``eval
renderer``; ``bench`` adds ``bench renderer``.

Nothing heavy is imported here: importing ``edge_avatar.render`` costs nothing.
"""
