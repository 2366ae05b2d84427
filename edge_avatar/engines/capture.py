"""``edge-avatar calibrate capture``: save frames from the site's own camera for INT8 calibration, locally.

Why this module exists: the best calibration data is what the kiosk camera
really sees -- its lens, its lobby light, its backlight at 4 pm, visitors at
its distances. This grabs ``count`` frames, one every ``interval_s`` of the
media clock, through the same camera URIs as the avatar
(``edge_avatar.sensors.camera.open_camera``), and writes them as PNG files
into the local calibration folder only (never the network, never a log).
They are pictures of people: the command says so, and
``calibration/README.md`` says how to keep them (and that they are deleted
once the engines are built). OpenCV writes the PNGs (already the camera
dependency).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.engines.cache import atomic_write_bytes
from edge_avatar.engines.errors import EngineError

log = logging.getLogger(__name__)

PRIVACY_NOTICE = ("calibration capture: frames are written only to {out} on this device; nothing is sent anywhere. "
                  "They show visitors' faces: capture with the site's consent and signage, keep the folder readable "
                  "only by the service, and delete it after `edge-avatar engines build` (see calibration/README.md).")


class _TimeBasePosition:
    """A 'speaker' whose sample position follows a time base, so capture has a media clock without audio."""

    sample_rate_hz = 48000

    def __init__(self, time_base: Any) -> None:
        self._time_base = time_base
        self._origin_ns = time_base.monotonic_ns()

    def position_samples(self) -> int:
        return (self._time_base.monotonic_ns() - self._origin_ns) * self.sample_rate_hz // 1_000_000_000


def make_clock(time_base: Any | None = None) -> Any:
    from edge_avatar.clock import MediaClock, RealTimeBase  # noqa: PLC0415

    time_base = time_base or RealTimeBase()
    return MediaClock(_TimeBasePosition(time_base), time_base)


def capture_site_images(config: Any, camera_uri: str, count: int, out_dir: str | Path, interval_s: float = 1.0,
                        clock: Any | None = None, timeout_s: float = 60.0,
                        progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``count`` frames from ``camera_uri``, at least ``interval_s`` apart in media time; returns their paths."""
    import dataclasses  # noqa: PLC0415

    from edge_avatar.frames import CaptureStatus  # noqa: PLC0415
    from edge_avatar.perception.geometry import import_cv2  # noqa: PLC0415
    from edge_avatar.sensors.camera import open_camera  # noqa: PLC0415

    if count < 1:
        raise EngineError(f"--count must be at least 1, got {count}")
    if "://" in str(out_dir):
        raise EngineError(f"--out {out_dir}: calibration images are written to a local folder only")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda message: None)
    say(PRIVACY_NOTICE.format(out=out.resolve()))
    cv2 = import_cv2()
    clock = clock or make_clock()
    camera = open_camera(dataclasses.replace(config.camera, uri=camera_uri), clock)
    camera.start()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    written: list[Path] = []
    last_pts_ns: int | None = None
    deadline_ns = clock.now_ns() + int(timeout_s * 1e9)
    interval_ns = int(interval_s * 1e9)
    try:
        while len(written) < count:
            status, frame = camera.read_latest()
            now_ns = clock.now_ns()
            if status == CaptureStatus.OK and frame is not None:
                if last_pts_ns is None or frame.pts_ns - last_pts_ns >= interval_ns:
                    image = np.ascontiguousarray(frame.image[:, :, ::-1])  # RGB -> BGR for OpenCV
                    ok, encoded = cv2.imencode(".png", image)
                    if not ok:
                        raise EngineError("OpenCV could not encode a frame as PNG")
                    path = out / f"site-{stamp}-{len(written):04d}.png"
                    atomic_write_bytes(path, encoded.tobytes())
                    written.append(path)
                    last_pts_ns = frame.pts_ns
                    say(f"captured {len(written)}/{count}: {path.name} ({frame.image.shape[1]}x{frame.image.shape[0]})")
                    deadline_ns = now_ns + int(timeout_s * 1e9)
            elif status == CaptureStatus.EOS:
                say(f"camera {camera_uri}: end of stream after {len(written)} frames")
                break
            if now_ns > deadline_ns:
                raise EngineError(f"camera {camera_uri}: no usable frame for {timeout_s:g} s "
                                  f"({len(written)}/{count} captured)")
            clock.sleep_until_ns(now_ns + 5_000_000)  # 5 ms between polls
    finally:
        camera.close()
    return written
