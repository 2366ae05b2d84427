"""Where things are: the frame, the head's surface chart and the texture patches, shared by teacher and student.

Why this module exists: the reference renderer (the teacher) and the neural
renderer (the student) must agree on a handful of numbers -- how big the head
is in the frame, which texture coordinates a point of the head has, which
rectangles of that texture change with expression -- and those numbers must
not live in two places. Pure Python and numpy-free, so the runtime can import
it without the teacher's OpenCV or the trainer's torch.

Coordinates (right-handed, one *head unit* is about the head's half width):

- World: x to the viewer's right, y up, z towards the viewer. The head's
  centre at rest is the origin; the camera is orthographic, looking down -z.
- Head-local: the same axes before the head turns. The avatar's left is +x
  (it appears on the viewer's right, as in a mirror-free portrait).
- Surface chart (u, v): u is the longitude around the vertical axis in
  radians (0 at the nose, + towards the avatar's left), v is the head-local
  height y. Near the front u ~= x, so features are painted as if on a plane;
  the chart stays one-to-one over every side of the head that can be seen at
  the motion frame's head limits, which is what lets the student learn one
  smooth texture-coordinate field per frame.

Head rotation convention (documented for the planner and for 3D avatars):
yaw + turns the face to the avatar's left (the nose moves to the viewer's
right), pitch + raises the chin (the nose moves up), roll + tilts the head
towards the avatar's left shoulder (the top of the head moves to the viewer's
right). Eye yaw/pitch follow the same signs.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- the frame (fractions of the frame height)

HEAD_UNIT_FRAC = 0.212          # one head unit as a fraction of the frame height
HEAD_CENTER_FRAC = (0.5, 0.405)  # head centre at rest, (x, y) as fractions of (width, height), y down
NECK_PIVOT = (0.0, -0.72, -0.2)  # the head turns about this head-local point (the top of the neck)

# ---------------------------------------------------------------- the head's shape (head units)

HEAD_RADII_UPPER = (0.92, 1.22, 0.98)   # a, b, c above the eyes' plane (includes the hair's volume)
HEAD_RADII_LOWER = (0.92, 1.1, 0.98)   # below it (the jaw; b grows with jawOpen)
JAW_DROP_UNITS = 0.2                   # extra lower radius at jawOpen = 1
CHEEK_PUFF_UNITS = 0.07                # extra lower half-width at cheekPuff = 1
EAR_CENTER = (0.92, -0.06, -0.14)       # the avatar's left ear; the right one is mirrored in x
EAR_RADII = (0.13, 0.23, 0.09)

# ---------------------------------------------------------------- the texture chart

U_RANGE = (-2.4, 2.4)   # radians of longitude that can be seen at |yaw| <= 45 deg
V_RANGE = (-1.52, 1.28)  # head-local heights from below the opened chin to the top of the hair


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle of the (u, v) chart, with its size in texels at a given density."""

    u0: float
    u1: float
    v0: float
    v1: float

    def size_px(self, px_per_unit: float) -> tuple[int, int]:
        """(width, height) in texels."""
        return round((self.u1 - self.u0) * px_per_unit), round((self.v1 - self.v0) * px_per_unit)


TEXTURE_RECT = Rect(U_RANGE[0], U_RANGE[1], V_RANGE[0], V_RANGE[1])

# Texture density of the student at a 256-pixel frame: a head unit spans 0.212 * 256 = 54 screen
# pixels at rest, so 80 texels per unit samples the front of the face 1.5x finer than the screen.
STUDENT_TEXELS_PER_UNIT_256 = 80

# The regions of the chart that change with expression. Everything outside them is the same in every
# frame (hair, ears, forehead, sides), or changes only smoothly (the coarse window: blush, cheek puff).
# The eye patch covers the avatar's LEFT eye and brow (u >= 0); the right one is its mirror image.
EYE_PATCH = Rect(0.0, 0.8, -0.32, 0.68)
MOUTH_PATCH = Rect(-0.6, 0.6, -1.42, -0.12)
COARSE_WINDOW = Rect(-1.2, 1.2, -1.52, 0.88)
COARSE_TEXELS_PER_UNIT = 10

# Texture channels: albedo RGB (0..1), height slope along u and v (dh/du, dh/dv), gloss (0..1).
TEXTURE_CHANNELS = ("red", "green", "blue", "slope_u", "slope_v", "gloss")
SLOPE_SCALE = 1.0   # slopes are stored as slope * SLOPE_SCALE


def texels_per_unit(frame_height_px: int) -> float:
    """The student's texture density for a frame of this height (80 at 256, 160 at 512)."""
    return STUDENT_TEXELS_PER_UNIT_256 * frame_height_px / 256.0


def patch_offset_px(rect: Rect, px_per_unit: float) -> tuple[int, int]:
    """(column, row) of ``rect``'s top-left texel inside the full texture (rows go down in v)."""
    return round((rect.u0 - TEXTURE_RECT.u0) * px_per_unit), round((TEXTURE_RECT.v1 - rect.v1) * px_per_unit)
