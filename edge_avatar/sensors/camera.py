"""Cameras opened by URI: RealSense, V4L2 webcams, Jetson CSI sensors, video files, scenarios.

Why this module exists: the one loop must run from a RealSense in a kiosk, a
USB webcam on a laptop, a file in CI and a scripted scenario in a demo, and
the choice is one line of config (``camera.uri``)::

    realsense://                 first RealSense found; colour + depth aligned to colour
    realsense://SERIAL           that RealSense
    realsense:///path/rec.bag    a RealSense recording (``?loop=1`` repeats it)
    v4l2:///dev/video0           a V4L2 webcam (``v4l2://0`` is the same)
    csi://0                      a Jetson CSI sensor through nvarguscamerasrc (GStreamer)
    file://clip.mp4              a video file paced to the media clock (``?loop=1``)
    scenario://NAME              a scripted scenario (edge_avatar.scenario)

Why these dependencies: pyrealsense2 is the only supported way to get depth
aligned to colour with the factory calibration; OpenCV's VideoCapture covers
V4L2, GStreamer (the Jetson's CSI path through the ISP) and FFmpeg decoding
behind one API, and is on every Jetson image. Both are imported lazily inside
their backend, with an install hint, so ``import edge_avatar`` works on a
laptop that has neither.

Live cameras capture on a daemon thread and keep only the newest frame:
``read_latest()`` never blocks the tick (latest wins; frames replaced before
being read are counted). A device that fails reports ERROR while the thread
reconnects with exponential backoff. A camera that cannot be opened at all
raises ``SourceUnavailable`` naming the URI, what was tried and the fix.
"""

from __future__ import annotations

import abc
import atexit
import collections
import functools
import glob
import logging
import math
import os
import threading
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.clock import MediaClock
from edge_avatar.config import CameraConfig
from edge_avatar.frames import CaptureStatus, VideoFrame
from edge_avatar.sensors.base import CameraSource, SourceUnavailable
from edge_avatar.uri import option_flag as parse_option_flag
from edge_avatar.uri import parse_uri

log = logging.getLogger(__name__)

SUPPORTED_CAMERA_URIS = ("realsense://[SERIAL]", "realsense:///path/recording.bag", "v4l2:///dev/videoN",
                         "csi://SENSOR_ID", "file://clip.mp4[?loop=1]", "scenario://NAME")
CAMERA_INSTALL_HINT = "pip install 'edge-avatar[camera]'"
NS_PER_S = 1_000_000_000
# A live device must deliver its first frame within this long after opening (exposure settles, USB starts).
FIRST_FRAME_TIMEOUT_MS = 5000
# Frames decoded ahead of the clock by the file reader; small, so a seek-free file costs little memory.
FILE_DECODE_AHEAD_FRAMES = 4


# --------------------------------------------------------------------------- URIs


def split_uri(uri: str, allowed_options: tuple[str, ...] | None = ()) -> tuple[str, str, dict[str, str]]:
    """``scheme://target?k=v`` -> (scheme, target, options); unknown options raise SourceUnavailable."""
    return parse_uri(uri, allowed_options, SourceUnavailable)


def option_flag(options: dict[str, str], name: str, uri: str) -> bool:
    return parse_option_flag(options, name, uri, SourceUnavailable)


# --------------------------------------------------------------------------- entry point


def open_camera(config: CameraConfig, clock: MediaClock) -> CameraSource:
    """Build the camera named by ``config.uri``; ``start()`` it to begin capturing.

    Raises ``SourceUnavailable`` at once for an unknown scheme, a missing
    dependency, a missing file or a device that is not there; ``start()``
    raises it if the device is there but cannot be opened.
    """
    uri = config.uri
    scheme, target, _ = split_uri(uri, allowed_options=None)
    if scheme == "scenario":
        # Lazy: the scenario package pulls in its own data and is written alongside this one.
        from edge_avatar.scenario import load_scenario
        from edge_avatar.scenario.sources import ScenarioCamera

        return ScenarioCamera(load_scenario(target), clock, config)
    if scheme == "realsense":
        _, target, options = split_uri(uri, allowed_options=("loop",))
        return RealSenseCamera(config, clock, target, loop=option_flag(options, "loop", uri))
    if scheme == "v4l2":
        _, target, _ = split_uri(uri)
        return V4l2Camera(config, clock, target)
    if scheme == "csi":
        _, target, _ = split_uri(uri)
        return CsiCamera(config, clock, target)
    if scheme == "file":
        _, target, options = split_uri(uri, allowed_options=("loop",))
        return FileCamera(config, clock, target, loop=option_flag(options, "loop", uri))
    raise SourceUnavailable(
        f"camera.uri {uri!r}: unknown scheme {scheme!r}; supported: {', '.join(SUPPORTED_CAMERA_URIS)}")


# --------------------------------------------------------------------------- helpers


def import_cv2(uri: str) -> Any:
    try:
        import cv2  # lazy: only OpenCV-backed sources need it
    except ImportError as exc:
        raise SourceUnavailable(
            f"{uri}: OpenCV is not installed ({exc}); install with: {CAMERA_INSTALL_HINT} "
            "(or pip install opencv-python-headless)") from None
    return cv2


def resize_rgb(image: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """(H, W, C) -> (height_px, width_px, C); OpenCV's area/linear filter when present, else nearest neighbour."""
    h, w = image.shape[:2]
    if (w, h) == (width_px, height_px):
        return image
    try:
        import cv2
    except ImportError:
        rows = ((np.arange(height_px) + 0.5) * h / height_px).astype(np.intp)
        cols = ((np.arange(width_px) + 0.5) * w / width_px).astype(np.intp)
        return image[rows[:, None], cols[None, :]]
    shrinking = width_px < w and height_px < h
    return cv2.resize(image, (width_px, height_px), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_depth(depth_m: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """Nearest neighbour only: averaging depth across an edge invents distances that exist nowhere."""
    h, w = depth_m.shape[:2]
    if (w, h) == (width_px, height_px):
        return depth_m
    rows = ((np.arange(height_px) + 0.5) * h / height_px).astype(np.intp)
    cols = ((np.arange(width_px) + 0.5) * w / width_px).astype(np.intp)
    return depth_m[rows[:, None], cols[None, :]]


def fps_fraction(fps: float) -> Fraction:
    """29.97 -> 30000/1001: exact frame periods for NTSC-style rates, plain integers otherwise."""
    return Fraction(fps).limit_denominator(1001)


def backoff_delays_s(initial_s: float, max_s: float):
    """initial, 2*initial, 4*initial, ... capped at max_s (an endless generator)."""
    delay_s = initial_s
    while True:
        yield delay_s
        delay_s = min(delay_s * 2.0, max_s)


def _close_at_exit(source_ref: weakref.ref) -> None:
    source = source_ref()
    if source is not None:
        source.close()


def close_at_exit(source: CameraSource) -> Any:
    """Close ``source`` at interpreter exit if nobody did: a daemon thread killed inside OpenCV aborts the process."""
    hook = functools.partial(_close_at_exit, weakref.ref(source))
    atexit.register(hook)
    return hook


class DeviceLost(RuntimeError):
    """Raised by a backend's grab when the device stopped delivering; the capture thread reconnects."""


_END_OF_STREAM = object()


# --------------------------------------------------------------------------- live cameras


class LiveCamera(CameraSource):
    """A device read on a daemon thread; the loop takes the newest frame without waiting.

    Backends implement ``_check_present`` (cheap, at construction),
    ``_open_device`` (at start and on every reconnect), ``_grab`` (blocking
    read of one frame: (rgb, depth_m or None), None for "nothing yet", or
    ``_END_OF_STREAM``; raises on device failure) and ``_release_device``.
    The device is owned by the capture thread after ``start()``.
    """

    def __init__(self, uri: str, config: CameraConfig, clock: MediaClock):
        self.uri = uri
        self.config = config
        self.clock = clock
        self._cond = threading.Condition()
        self._latest: VideoFrame | None = None
        self._unread = False
        self._state = "created"  # created -> running <-> failed -> eos | closed
        self._last_error = ""
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exit_hook: Any = None
        self.frames_captured = 0
        self.frames_read = 0
        self.frames_overwritten = 0
        self.device_errors = 0
        self.reconnect_attempts = 0
        self.reconnects = 0
        self.backoff_history_s: collections.deque[float] = collections.deque(maxlen=64)
        self._check_present()

    # -- backend hooks

    def _check_present(self) -> None:
        """Raise SourceUnavailable if the device is plainly not there (cheap; no streaming)."""

    @abc.abstractmethod
    def _open_device(self) -> None: ...

    @abc.abstractmethod
    def _grab(self) -> Any: ...

    @abc.abstractmethod
    def _release_device(self) -> None: ...

    # -- CameraSource

    def start(self) -> None:
        if self._thread is not None:
            return
        self._check_present()
        self._open_device()  # raises SourceUnavailable with the fix
        with self._cond:
            self._state = "running"
        self._thread = threading.Thread(target=self._run, name=f"camera {self.uri}", daemon=True)
        self._thread.start()
        self._exit_hook = close_at_exit(self)

    def read_latest(self, timeout_ms: int = 0) -> tuple[CaptureStatus, VideoFrame | None]:
        """The newest frame not yet returned (OK); otherwise TIMEOUT, or ERROR while the device is down.

        ``timeout_ms`` = 0 (what the tick uses) never waits; a positive value
        waits that long for a new frame.
        """
        if self._thread is None:
            raise RuntimeError(f"{self.uri}: read_latest() before start()")
        with self._cond:
            if not self._unread and timeout_ms > 0 and self._state == "running":
                self._cond.wait_for(lambda: self._unread or self._state != "running", timeout_ms / 1000.0)
            if self._unread:
                self._unread = False
                self.frames_read += 1
                return CaptureStatus.OK, self._latest
            if self._state == "failed":
                return CaptureStatus.ERROR, None
            if self._state in ("eos", "closed"):
                return CaptureStatus.EOS, None
            return CaptureStatus.TIMEOUT, None

    def close(self) -> None:
        self._stop.set()
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=3.0)
            if thread.is_alive():
                log.warning("%s: capture thread still blocked in the driver after 3 s; leaving it (daemon)",
                            self.uri)
        elif thread is None:
            self._release_quietly()
        with self._cond:
            if self._state != "eos":
                self._state = "closed"
            self._cond.notify_all()

    def stats(self) -> dict:
        with self._cond:
            return {
                "uri": self.uri,
                "state": self._state,
                "frames_captured": self.frames_captured,
                "frames_read": self.frames_read,
                "frames_overwritten": self.frames_overwritten,
                "device_errors": self.device_errors,
                "reconnect_attempts": self.reconnect_attempts,
                "reconnects": self.reconnects,
                "last_error": self._last_error,
            }

    # -- capture thread

    def _publish(self, image: np.ndarray, depth_m: np.ndarray | None) -> None:
        pts_ns = self.clock.now_ns()  # at capture, on the media clock
        with self._cond:
            frame = VideoFrame(pts_ns, self._seq, image, depth_m, self.uri)
            self._seq += 1
            if self._unread:
                self.frames_overwritten += 1  # latest wins; counted, never silent
            self._latest, self._unread = frame, True
            self.frames_captured += 1
            self._cond.notify_all()

    def _run(self) -> None:
        delays = backoff_delays_s(self.config.reconnect_backoff_initial_s, self.config.reconnect_backoff_max_s)
        try:
            while not self._stop.is_set():
                try:
                    grabbed = self._grab()
                except Exception as exc:  # noqa: BLE001 - any driver failure means reconnect
                    if self._stop.is_set():
                        return
                    self._on_device_failed(exc)
                    if not self._reconnect(delays):
                        return
                    continue
                if grabbed is _END_OF_STREAM:
                    with self._cond:
                        self._state = "eos"
                        self._cond.notify_all()
                    return
                if grabbed is None:
                    continue
                image, depth_m = grabbed
                self._publish(image, depth_m)
                # Backoff restarts only once the device works again, so a flapping device backs off.
                delays = backoff_delays_s(self.config.reconnect_backoff_initial_s,
                                          self.config.reconnect_backoff_max_s)
        finally:
            self._release_quietly()

    def _on_device_failed(self, exc: BaseException) -> None:
        log.warning("%s: device failed (%s); reconnecting with backoff", self.uri, exc)
        with self._cond:
            self.device_errors += 1
            self._last_error = str(exc)
            self._state = "failed"
            self._cond.notify_all()
        self._release_quietly()

    def _reconnect(self, delays) -> bool:
        """Retry opening with exponential backoff until it works (True) or close() is called (False)."""
        while True:
            delay_s = next(delays)
            self.backoff_history_s.append(delay_s)
            if self._stop.wait(delay_s):
                return False
            self.reconnect_attempts += 1
            try:
                self._open_device()
            except Exception as exc:  # noqa: BLE001 - SourceUnavailable or a driver error: try again later
                log.info("%s: reconnect attempt %d failed: %s", self.uri, self.reconnect_attempts, exc)
                with self._cond:
                    self._last_error = str(exc)
                continue
            with self._cond:
                self.reconnects += 1
                self._state = "running"
                self._cond.notify_all()
            log.info("%s: reconnected after %d attempt(s)", self.uri, self.reconnect_attempts)
            return True

    def _release_quietly(self) -> None:
        try:
            self._release_device()
        except Exception:  # releasing a dead device may fail; nothing to do about it
            log.debug("%s: release failed", self.uri, exc_info=True)


# --------------------------------------------------------------------------- OpenCV: V4L2 and CSI


class OpenCvCamera(LiveCamera):
    """Shared OpenCV VideoCapture handling: BGR -> RGB, resize to the configured size, failure detection."""

    def __init__(self, uri: str, config: CameraConfig, clock: MediaClock):
        self._cv2 = import_cv2(uri)
        self._capture: Any = None
        self._frames_since_open = 0
        super().__init__(uri, config, clock)

    @abc.abstractmethod
    def _make_capture(self) -> Any: ...

    @abc.abstractmethod
    def _open_failed_hint(self) -> str: ...

    def _open_device(self) -> None:
        capture = self._make_capture()
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            raise SourceUnavailable(f"{self.uri}: OpenCV could not open the camera. {self._open_failed_hint()}")
        self._capture = capture
        self._frames_since_open = 0

    def _grab(self) -> Any:
        capture = self._capture
        if capture is None:
            raise DeviceLost("device not open")
        ok, bgr = capture.read()
        if not ok or bgr is None:
            raise DeviceLost("VideoCapture.read() returned no frame (unplugged, or the driver stopped)")
        self._frames_since_open += 1
        rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        return resize_rgb(rgb, self.config.width_px, self.config.height_px), None

    def _release_device(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()


class V4l2Camera(OpenCvCamera):
    """A USB or MIPI webcam through Video4Linux2 (``v4l2:///dev/video0`` or ``v4l2://0``)."""

    def __init__(self, config: CameraConfig, clock: MediaClock, device: str):
        if not device:
            raise SourceUnavailable(f"{config.uri}: no device given; expected e.g. v4l2:///dev/video0")
        self.device_path = f"/dev/video{device}" if device.isdigit() else device
        super().__init__(config.uri, config, clock)

    def _check_present(self) -> None:
        if not os.path.exists(self.device_path):
            found = ", ".join(sorted(glob.glob("/dev/video*"))) or "none"
            raise SourceUnavailable(
                f"{self.uri}: {self.device_path} does not exist; found: {found}. "
                "Plug the camera in and check `v4l2-ctl --list-devices`, then set camera.uri to one of the "
                "devices found (or use file://clip.mp4 or scenario://demo without a camera).")
        if not os.access(self.device_path, os.R_OK | os.W_OK):
            raise SourceUnavailable(
                f"{self.uri}: {self.device_path} exists but this user cannot open it; add the user to the "
                "'video' group (sudo usermod -aG video $USER, then log in again).")

    def _make_capture(self) -> Any:
        cv2 = self._cv2
        capture = cv2.VideoCapture(self.device_path, cv2.CAP_V4L2)
        if capture.isOpened():
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width_px)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height_px)
            capture.set(cv2.CAP_PROP_FPS, self.config.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver keeps one frame: latest wins there too
            timeout_prop = getattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None)
            if timeout_prop is not None:  # OpenCV >= 4.6: a stalled device fails the read instead of hanging
                capture.set(timeout_prop, max(self.config.read_timeout_ms, FIRST_FRAME_TIMEOUT_MS))
        return capture

    def _open_failed_hint(self) -> str:
        return (f"Tried cv2.VideoCapture({self.device_path!r}, cv2.CAP_V4L2). Is it a capture node (a webcam "
                "has several /dev/video* nodes; `v4l2-ctl --list-devices`)? Is another process using it "
                "(`fuser " + self.device_path + "`)?")


class CsiCamera(OpenCvCamera):
    """A Jetson CSI sensor: nvarguscamerasrc (ISP) -> nvvidconv -> appsink, through OpenCV's GStreamer backend."""

    def __init__(self, config: CameraConfig, clock: MediaClock, sensor: str):
        if not sensor.isdigit():
            raise SourceUnavailable(f"{config.uri}: expected csi://SENSOR_ID with a number, e.g. csi://0")
        self.sensor_id = int(sensor)
        super().__init__(config.uri, config, clock)

    def _check_present(self) -> None:
        build = self._cv2.getBuildInformation()
        gstreamer = [line for line in build.splitlines() if "GStreamer:" in line]
        if not gstreamer or "YES" not in gstreamer[0]:
            raise SourceUnavailable(
                f"{self.uri}: this OpenCV ({self._cv2.__version__}) was built without GStreamer, which csi:// "
                "needs (cv2.getBuildInformation() shows GStreamer: NO). On a Jetson use JetPack's OpenCV "
                "(sudo apt-get install nvidia-opencv python3-opencv), create the venv with "
                "--system-site-packages and pip uninstall opencv-python-headless; or use v4l2:// or "
                "realsense:// instead.")

    def gstreamer_pipeline(self) -> str:
        c = self.config
        rate = fps_fraction(c.fps)
        return (f"nvarguscamerasrc sensor-id={self.sensor_id} ! "
                f"video/x-raw(memory:NVMM), width=(int){c.width_px}, height=(int){c.height_px}, "
                f"format=(string)NV12, framerate=(fraction){rate.numerator}/{rate.denominator} ! "
                f"nvvidconv ! video/x-raw, width=(int){c.width_px}, height=(int){c.height_px}, "
                "format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
                "appsink drop=true max-buffers=1 sync=false")

    def _make_capture(self) -> Any:
        return self._cv2.VideoCapture(self.gstreamer_pipeline(), self._cv2.CAP_GSTREAMER)

    def _open_failed_hint(self) -> str:
        return (f"Tried the GStreamer pipeline: {self.gstreamer_pipeline()}. Check the ribbon cable and the "
                f"sensor id, restart the Argus daemon (sudo systemctl restart nvargus-daemon), and test with: "
                f"gst-launch-1.0 nvarguscamerasrc sensor-id={self.sensor_id} num-buffers=1 ! fakesink")


# --------------------------------------------------------------------------- RealSense


class RealSenseCamera(LiveCamera):
    """Intel RealSense colour + depth aligned to colour (depth in metres), live or from a .bag recording."""

    def __init__(self, config: CameraConfig, clock: MediaClock, target: str, loop: bool = False):
        try:
            import pyrealsense2 as rs  # lazy: only RealSense kiosks have it
        except ImportError:
            raise SourceUnavailable(
                f"{config.uri}: pyrealsense2 not installed: {CAMERA_INSTALL_HINT} (on a Jetson, where no "
                "wheel exists, build librealsense with -DBUILD_PYTHON_BINDINGS=ON); or use v4l2:///dev/videoN "
                "for the RealSense's colour stream without depth") from None
        self._rs = rs
        self.bag_path = target if target.startswith("/") or target.endswith(".bag") else ""
        self.serial = "" if self.bag_path else target
        self.loop = loop
        self._pipeline: Any = None
        self._align: Any = None
        self._depth_scale_m = 0.0
        self._playback: Any = None
        self._frames_since_open = 0
        super().__init__(config.uri, config, clock)

    def _check_present(self) -> None:
        rs = self._rs
        if self.bag_path:
            if not Path(self.bag_path).is_file():
                raise SourceUnavailable(f"{self.uri}: recording {self.bag_path} does not exist; record one with "
                                        "`rs-record` or realsense-viewer, or fix the path")
            return
        serials = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
        if not serials:
            raise SourceUnavailable(
                f"{self.uri}: no RealSense found by pyrealsense2 (rs.context().query_devices() is empty). "
                "Check the USB 3 cable and port, run `rs-enumerate-devices`, and install librealsense's udev "
                "rules (99-realsense-libusb.rules).")
        if self.serial and self.serial not in serials:
            raise SourceUnavailable(f"{self.uri}: no RealSense with serial {self.serial}; found: "
                                    f"{', '.join(serials)}")

    def _open_device(self) -> None:
        rs = self._rs
        c = self.config
        rs_config = rs.config()
        if self.bag_path:
            # A recording's streams are what was recorded: take them all, align and resize after.
            rs_config.enable_device_from_file(self.bag_path, repeat_playback=self.loop)
        else:
            if self.serial:
                rs_config.enable_device(self.serial)
            fps = round(c.fps)
            rs_config.enable_stream(rs.stream.color, c.width_px, c.height_px, rs.format.rgb8, fps)
            if c.enable_depth:
                rs_config.enable_stream(rs.stream.depth, c.width_px, c.height_px, rs.format.z16, fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(rs_config)
        except RuntimeError as exc:
            raise SourceUnavailable(
                f"{self.uri}: the RealSense refused the streams (colour rgb8"
                f"{' + depth z16' if c.enable_depth else ''} {c.width_px}x{c.height_px} @ {c.fps:g} fps): {exc}. "
                "List supported modes with `rs-enumerate-devices -c` and set camera.width_px/height_px/fps "
                "to one of them.") from None
        device = profile.get_device()
        self._depth_scale_m = 0.0
        if c.enable_depth:
            try:
                self._depth_scale_m = float(device.first_depth_sensor().get_depth_scale())
            except RuntimeError:
                log.warning("%s: no depth sensor; depth disabled", self.uri)
        self._playback = device.as_playback() if self.bag_path else None
        if self._playback is not None:
            self._playback.set_real_time(True)
        self._align = rs.align(rs.stream.color) if self._depth_scale_m > 0 else None
        self._pipeline = pipeline
        self._frames_since_open = 0

    def _grab(self) -> Any:
        rs = self._rs
        timeout_ms = self.config.read_timeout_ms if self._frames_since_open else FIRST_FRAME_TIMEOUT_MS
        ok, frames = self._pipeline.try_wait_for_frames(max(timeout_ms, 100))
        if not ok:
            if self._playback is not None and not self.loop and \
                    self._playback.current_status() == rs.playback_status.stopped:
                return _END_OF_STREAM
            raise DeviceLost(f"no frames within {timeout_ms} ms")
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return None
        image = np.asanyarray(color.get_data())
        fmt = color.get_profile().format()
        if fmt in (rs.format.bgr8, rs.format.bgra8):
            image = image[..., 2::-1]
        image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)  # copy: librealsense reuses the buffer
        depth_m = None
        depth = frames.get_depth_frame() if self._depth_scale_m > 0 else None
        if depth:
            depth_m = np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(self._depth_scale_m)
            depth_m = resize_depth(depth_m, self.config.width_px, self.config.height_px)
        self._frames_since_open += 1
        return resize_rgb(image, self.config.width_px, self.config.height_px), depth_m

    def _release_device(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop()


# --------------------------------------------------------------------------- video files


class FileCamera(CameraSource):
    """A video file played against the media clock: frame i is due at start + i / fps.

    A thread decodes a few frames ahead (decoding is real work, so it runs
    off the tick); ``read_latest()`` hands out the newest frame that is due
    and counts the due frames it skipped. Frame pts come from the frame count,
    so a file replays identically on any clock. EOS after the last frame,
    unless ``?loop=1``.
    """

    def __init__(self, config: CameraConfig, clock: MediaClock, path: str, loop: bool = False):
        self.uri = config.uri
        self.config = config
        self.clock = clock
        self.path = Path(path)
        self.loop = loop
        if not path:
            raise SourceUnavailable(f"{self.uri}: no file given; expected file://clip.mp4")
        if not self.path.is_file():
            raise SourceUnavailable(f"{self.uri}: video file {self.path.resolve()} does not exist; fix the path "
                                    "(relative paths are from the working directory) or record one")
        self._cv2 = import_cv2(self.uri)
        self._cond = threading.Condition()
        self._decoded: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._decoder_done = False
        self._decoder_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exit_hook: Any = None
        self._origin_ns = 0
        self._fps = fps_fraction(config.fps)
        self._decoder_next_index = 1
        self.frames_decoded = 0
        self.frames_read = 0
        self.frames_overwritten = 0
        self.loops = 0

    @property
    def fps(self) -> Fraction:
        return self._fps

    def _open_capture(self) -> Any:
        capture = self._cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(f"{self.uri}: OpenCV could not decode {self.path}; check it with "
                                    f"`ffprobe {self.path}` (OpenCV uses FFmpeg for files)")
        return capture

    def start(self) -> None:
        if self._thread is not None:
            return
        capture = self._open_capture()
        fps = capture.get(self._cv2.CAP_PROP_FPS)
        if math.isfinite(fps) and 0.0 < fps <= 1000.0:
            self._fps = fps_fraction(fps)
        else:
            log.warning("%s: the file reports no frame rate; pacing at camera.fps = %g", self.uri, self.config.fps)
        ok, bgr = capture.read()
        if not ok:
            capture.release()
            raise SourceUnavailable(f"{self.uri}: {self.path} has no decodable video frame; check it with "
                                    f"`ffprobe {self.path}`")
        self._decoded.append((0, self._convert(bgr)))
        self.frames_decoded = 1
        self._origin_ns = self.clock.now_ns()
        self._thread = threading.Thread(target=self._decode, args=(capture,), name=f"camera {self.uri}",
                                        daemon=True)
        self._thread.start()
        self._exit_hook = close_at_exit(self)

    def frame_pts_ns(self, index: int) -> int:
        """pts of frame ``index`` from the frame count: start + index / fps, exact in integer ns."""
        return self._origin_ns + index * NS_PER_S * self._fps.denominator // self._fps.numerator

    def _convert(self, bgr: np.ndarray) -> np.ndarray:
        rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        return resize_rgb(rgb, self.config.width_px, self.config.height_px)

    def _decode(self, capture: Any) -> None:
        # Each frame is held back until its successor is decoded: a frame whose successor is already
        # due can never be the latest and is dropped (counted) instead of queued, so a clock that jumps
        # ahead is caught up at decoding speed. The last frame has no successor and is always queued.
        pending: tuple[int, np.ndarray] | None = None
        index = 1  # frame 0 was read by start()
        decoded_this_pass = 1
        try:
            while not self._stop.is_set():
                ok, bgr = capture.read()
                if not ok:
                    if self.loop and decoded_this_pass > 0:
                        capture.release()
                        capture = self._open_capture()  # reopening is more reliable than seeking to 0
                        decoded_this_pass = 0
                        self.loops += 1
                        continue
                    break
                decoded_this_pass += 1
                frame = (index, self._convert(bgr))
                index += 1
                with self._cond:
                    self.frames_decoded += 1
                if pending is not None:
                    self._deliver(pending, has_successor=True)
                pending = frame
            if pending is not None and not self._stop.is_set():
                self._deliver(pending, has_successor=False)
        except Exception as exc:  # noqa: BLE001 - a corrupt file ends the stream, and says why
            log.warning("%s: decoding stopped: %s", self.uri, exc)
            self._decoder_error = str(exc)
        finally:
            capture.release()
            with self._cond:
                self._decoder_done = True
                self._cond.notify_all()

    def _deliver(self, frame: tuple[int, np.ndarray], has_successor: bool) -> None:
        index = frame[0]
        stale = has_successor and self.frame_pts_ns(index + 1) <= self.clock.now_ns()
        with self._cond:
            if stale:
                self.frames_overwritten += 1
            else:
                while len(self._decoded) >= FILE_DECODE_AHEAD_FRAMES and not self._stop.is_set():
                    self._cond.wait(0.1)
                self._decoded.append(frame)
            self._decoder_next_index = index + 1
            self._cond.notify_all()

    def read_latest(self, timeout_ms: int | None = None) -> tuple[CaptureStatus, VideoFrame | None]:
        """The newest frame due on the media clock; TIMEOUT if none is new.

        Never waits for the clock. It waits (at most ``read_timeout_ms`` per
        frame) only when a due frame is still being decoded.
        """
        if self._thread is None:
            raise RuntimeError(f"{self.uri}: read_latest() before start()")
        wait_s = (self.config.read_timeout_ms if timeout_ms is None else timeout_ms) / 1000.0
        now_ns = self.clock.now_ns()
        newest: tuple[int, np.ndarray] | None = None
        with self._cond:
            while True:
                while self._decoded and self.frame_pts_ns(self._decoded[0][0]) <= now_ns:
                    if newest is not None:
                        self.frames_overwritten += 1
                    newest = self._decoded.popleft()
                    self._cond.notify_all()  # room for the decoder
                decoder_behind = not self._decoded and not self._decoder_done \
                    and self.frame_pts_ns(self._decoder_next_index) <= now_ns
                if not decoder_behind or wait_s <= 0:
                    break
                if not self._cond.wait_for(lambda: bool(self._decoded) or self._decoder_done, wait_s):
                    break
            if newest is not None:
                index, image = newest
                self.frames_read += 1
                return CaptureStatus.OK, VideoFrame(self.frame_pts_ns(index), index, image, None, self.uri)
            if self._decoder_done and not self._decoded:
                return CaptureStatus.EOS, None
            return CaptureStatus.TIMEOUT, None

    def close(self) -> None:
        self._stop.set()
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=3.0)

    def stats(self) -> dict:
        with self._cond:
            return {
                "uri": self.uri,
                "fps": float(self._fps),
                "frames_decoded": self.frames_decoded,
                "frames_read": self.frames_read,
                "frames_overwritten": self.frames_overwritten,
                "loops": self.loops,
                "decoder_error": self._decoder_error,
                "eos": self._decoder_done and not self._decoded,
            }
