"""The ``avatar`` section of the root config: which renderer draws the face, and the motion stream.

Why this module exists: an operator decides whether the kiosk shows the
neural renderer's face, and whether (and to whom) the motion frames are
streamed to a Unity, Unreal or three.js avatar. Those choices belong in the
one frozen config (defaults < board < site < CLI), with units in the names
and ranges in each field's metadata, checked by ``edge_avatar.config``.
``validate()`` adds the rule that spans fields: a stream reachable from
another machine must carry a token.

    avatar:
      renderer: neural
      stream_enabled: true
      stream_host: 0.0.0.0          # exposed: a token is then required
      stream_port: 8765
      stream_token: "a-long-random-secret"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MIN_TOKEN_CHARS = 16


def _range(lo: float | None, hi: float | None, default: Any) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class AvatarOutputConfig:
    """How the avatar is drawn and streamed."""

    # ---- the face on the screen
    renderer: Literal["neural", "teacher", "sketch"] = "neural"  # teacher: the slow reference, for review only
    model_file: str = ""                   # "" = engines/renderer_<render.width_px>.onnx

    # ---- motion frames over WebSocket (ARKit blendshape names, head and eye rotation, pts)
    stream_enabled: bool = False
    stream_host: str = "127.0.0.1"         # loopback only unless the site says otherwise
    stream_port: int = _range(0, 65535, 8765)  # 0: any free port (tests)
    stream_token: str = ""                 # required when stream_host is not loopback
    stream_path: str = "/motion"
    stream_max_clients: int = _range(1, 64, 4)
    stream_queue_frames: int = _range(1, 1000, 8)      # per client; a slow client loses its oldest frames
    stream_send_timeout_ms: int = _range(10, 60000, 2000)  # a client that cannot take a frame this long is dropped
    stream_rate_hz: float = _range(1.0, 120.0, 30.0)   # frames per second sent (the tick may be faster)

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        exposed = self.stream_host not in LOOPBACK_HOSTS
        if self.stream_enabled and exposed and len(self.stream_token) < MIN_TOKEN_CHARS:
            problems.append(("stream_token", f"stream_host {self.stream_host!r} is reachable from other machines: "
                                             f"set a token of at least {MIN_TOKEN_CHARS} characters"))
        if not self.stream_path.startswith("/"):
            problems.append(("stream_path", f"got {self.stream_path!r}; expected a path starting with '/'"))
        return problems

    @property
    def stream_exposed(self) -> bool:
        return self.stream_host not in LOOPBACK_HOSTS
