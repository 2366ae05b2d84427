"""Where the avatar's frames go, by URI: an MP4 file with the audio that was played, a window, or nowhere.

Why this module exists: the same loop shows the face on the kiosk's screen,
writes a reviewable MP4 in CI and on a developer's laptop, and runs headless
in benchmarks; the choice is one line of config (``output.uri``)::

    file://out/demo.mp4        H.264 + AAC, constant frame rate, audio in sync
    window://                  an SDL2 window (``?fullscreen=1``, or display.fullscreen)
    null://                    counts frames and audio, shows nothing

Why these dependencies: the ``ffmpeg`` command line is on every Debian,
Ubuntu and JetPack image, encodes H.264 fast (libx264 on CPU) and muxes AAC
with faststart, and running it as a subprocess keeps codec libraries out of
our process (a crash in an encoder cannot take the face down). pygame is the
smallest maintained way to reach SDL2, which draws on X11, Wayland or
directly on KMS on a kiosk with no desktop; it is imported only by
``window://``.

Timing: every frame carries a pts on the media clock, and media time 0 is
the speaker's sample 0, which is also the first sample the audio tap gets.
The MP4 places frame slot n at n / fps and audio sample k at k / rate, so
both streams share that origin and stay in sync by construction: a pts gap
repeats the last frame, a frame for an already-written slot is dropped, and
both are counted.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import threading
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edge_avatar.config import DisplayConfig, OutputConfig
from edge_avatar.frames import RenderedFrame
from edge_avatar.outputs.base import OutputSink, OutputUnavailable
from edge_avatar.runtime.priority import lower_process
from edge_avatar.uri import parse_uri

log = logging.getLogger(__name__)

SUPPORTED_OUTPUT_URIS = ("file://PATH.mp4", "window://[?fullscreen=1]", "null://")
NS_PER_S = 1_000_000_000
FFMPEG_INSTALL_HINT = "install with: sudo apt-get install ffmpeg"
# Frames queued between the tick and the encoder thread: enough to ride out encoder jitter, small in memory.
ENCODER_QUEUE_FRAMES = 8
LOG_TAIL_CHARS = 1500
# SDL drivers that draw nowhere; used only when asked for by SDL_VIDEODRIVER (tests, CI screenshots).
HEADLESS_SDL_DRIVERS = ("offscreen", "dummy")
MUX_TIMEOUT_S = 300


class OutputFailed(OutputUnavailable):
    """An output that opened stopped working (ffmpeg died, the disk filled); the message has ffmpeg's log."""


def split_output_uri(uri: str, allowed_options: tuple[str, ...] | None) -> tuple[str, str, dict[str, str]]:
    """``scheme://target?k=v`` -> (scheme, target, options); unknown options raise OutputUnavailable."""
    return parse_uri(uri, allowed_options, OutputUnavailable, what="output.uri ")


def open_output(config: OutputConfig, display: DisplayConfig, fps: float, audio_sample_rate_hz: int,
                clock: Any = None) -> OutputSink:
    """Open the sink named by ``config.uri``. ``fps`` is the tick rate; the MP4 is written at exactly that rate.

    ``clock`` (a MediaClock, optional) lets ``window://`` hold a frame until its pts.
    """
    uri = config.uri
    scheme, _, _ = split_output_uri(uri, allowed_options=None)
    if scheme == "file":
        _, target, _ = split_output_uri(uri, ())
        return FileMp4Sink(uri, target, display, fps, audio_sample_rate_hz, config.video_crf,
                           preset=config.video_preset, nice_increment=config.encoder_nice)
    if scheme == "window":
        _, _, options = split_output_uri(uri, ("fullscreen",))
        value = options.get("fullscreen")
        fullscreen = display.fullscreen if value is None else value.strip().lower() in ("1", "true", "yes", "on")
        return WindowSink(uri, display, fps, fullscreen, clock)
    if scheme == "null":
        split_output_uri(uri, ())
        return NullSink(uri, fps, audio_sample_rate_hz)
    raise OutputUnavailable(f"output.uri {uri!r}: unknown scheme {scheme!r}; supported: "
                            f"{', '.join(SUPPORTED_OUTPUT_URIS)}")


# --------------------------------------------------------------------------- letterboxing

_cv2_module: Any = None
_cv2_checked = False


def _cv2() -> Any:
    """OpenCV if importable (better filtering), else None; looked up once."""
    global _cv2_module, _cv2_checked  # a memo of an import, not configuration
    if not _cv2_checked:
        try:
            import cv2
            _cv2_module = cv2
        except ImportError:
            _cv2_module = None
        _cv2_checked = True
    return _cv2_module


def resize_image(image: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height_px, width_px, 3): cv2 area/linear filtering, else NumPy nearest neighbour."""
    h, w = image.shape[:2]
    if (w, h) == (width_px, height_px):
        return image
    cv2 = _cv2()
    if cv2 is not None:
        shrinking = width_px < w and height_px < h
        return cv2.resize(image, (width_px, height_px),
                          interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    rows = ((np.arange(height_px) + 0.5) * h / height_px).astype(np.intp)
    cols = ((np.arange(width_px) + 0.5) * w / width_px).astype(np.intp)
    return image[rows[:, None], cols[None, :]]


class Letterbox:
    """Scales an image to fit (width_px, height_px) keeping its aspect, centred on the background colour."""

    def __init__(self, width_px: int, height_px: int, background_rgb: tuple[int, int, int]):
        self.width_px = width_px
        self.height_px = height_px
        self.background = np.empty((height_px, width_px, 3), dtype=np.uint8)
        self.background[:] = np.asarray(background_rgb, dtype=np.uint8)

    def placement(self, width_px: int, height_px: int) -> tuple[int, int, int, int]:
        """(x0, y0, w, h) of a width_px x height_px image scaled into the canvas."""
        scale = min(self.width_px / width_px, self.height_px / height_px)
        w = max(1, min(self.width_px, round(width_px * scale)))
        h = max(1, min(self.height_px, round(height_px * scale)))
        return (self.width_px - w) // 2, (self.height_px - h) // 2, w, h

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        h_in, w_in = image.shape[:2]
        if (w_in, h_in) == (self.width_px, self.height_px):
            return np.ascontiguousarray(image)
        x0, y0, w, h = self.placement(w_in, h_in)
        canvas = self.background.copy()
        canvas[y0:y0 + h, x0:x0 + w] = resize_image(image, w, h)
        return canvas


# --------------------------------------------------------------------------- MP4 through ffmpeg


def fps_fraction(fps: float) -> Fraction:
    """29.97 -> 30000/1001, 30.0 -> 30/1: the exact rate handed to ffmpeg."""
    return Fraction(fps).limit_denominator(1001)


def tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    text = text.strip()
    return ("..." + text[-chars:]) if len(text) > chars else (text or "(empty log)")


class FileMp4Sink(OutputSink):
    """Frames -> ffmpeg (libx264, constant frame rate) and played audio -> WAV; ``close()`` muxes them.

    The tick only copies the frame into a bounded queue; a writer thread
    letterboxes it and feeds ffmpeg's stdin. ffmpeg's stderr goes to a file,
    so a chatty encoder can never block the pipe. Temporaries live next to
    the target (same file system, so the final rename is atomic) and are
    removed once the MP4 is complete.
    """

    def __init__(self, uri: str, path: str, display: DisplayConfig, fps: float, audio_sample_rate_hz: int,
                 crf: int, preset: str = "veryfast", nice_increment: int = 0):
        self.uri = uri
        if not path:
            raise OutputUnavailable(f"{uri}: no file given; expected e.g. file://out/demo.mp4")
        self.ffmpeg = shutil.which("ffmpeg")
        if self.ffmpeg is None:
            raise OutputUnavailable(f"{uri}: ffmpeg not found on PATH ({os.environ.get('PATH', '')}); "
                                    f"{FFMPEG_INSTALL_HINT}; or use output.uri null:// or window://")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputUnavailable(f"{uri}: cannot create {self.path.parent}: {exc.strerror}") from None
        self.fps = fps_fraction(fps)
        self.audio_sample_rate_hz = audio_sample_rate_hz
        # AAC at 128 kb/s for speech at 22.05 kHz and up; less at low rates, where 128k exceeds a frame's bits.
        self.audio_bitrate_bps = min(128_000, 6 * audio_sample_rate_hz)
        self.crf = crf
        self.preset = preset
        # yuv420p needs even sizes: drop one pixel rather than fail.
        self.width_px = display.width_px - display.width_px % 2
        self.height_px = display.height_px - display.height_px % 2
        if (self.width_px, self.height_px) != (display.width_px, display.height_px):
            log.warning("%s: H.264 4:2:0 needs an even size; writing %dx%d instead of %dx%d", uri,
                        self.width_px, self.height_px, display.width_px, display.height_px)
        self._letterbox = Letterbox(self.width_px, self.height_px, display.background_rgb)

        stem = f".{self.path.name}.{os.getpid()}"
        self.video_tmp = self.path.with_name(stem + ".video.mp4")
        self.audio_tmp = self.path.with_name(stem + ".audio.wav")
        self.mux_tmp = self.path.with_name(stem + ".muxed" + (self.path.suffix or ".mp4"))
        self.encode_log = self.path.with_name(stem + ".encode.log")
        self.mux_log = self.path.with_name(stem + ".mux.log")

        self._lock = threading.Lock()   # audio state (the speaker's thread) and the report
        self._closed = False
        self._report: dict[str, Any] = {}
        self._error: BaseException | None = None
        self.frames_presented = 0
        self.frames_written = 0
        self.frames_repeated = 0        # pts gaps filled with the previous frame
        self.frames_dropped = 0         # a second frame for a slot already written
        self.frames_lead_in = 0         # background frames before the first frame (media time 0 .. first pts)
        self.encoder_queue_full = 0     # times the tick had to wait for the encoder
        self._next_slot = 0
        self.audio_samples = 0
        self.audio_gap_samples = 0      # silence inserted where the tap skipped samples
        self.audio_overlap_samples = 0  # samples received twice, ignored

        self._log_file = open(self.encode_log, "wb")  # noqa: SIM115 - lives as long as the encoder
        command = [
            self.ffmpeg, "-hide_banner", "-nostats", "-loglevel", "warning", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width_px}x{self.height_px}",
            "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
            "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-f", "mp4", str(self.video_tmp),
        ]
        log.debug("%s: %s", uri, " ".join(command))
        try:
            # Own session: a Ctrl-C on the terminal reaches us, not the encoder, so close() can still finish.
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._log_file, start_new_session=True)
        except OSError as exc:
            self._log_file.close()
            raise OutputUnavailable(f"{uri}: cannot start {self.ffmpeg}: {exc}; {FFMPEG_INSTALL_HINT}") from None
        # Below the tick's priority: the frame queue absorbs the encoder's waits, the tick has a deadline.
        self.encoder_nice = lower_process(self._proc.pid, nice_increment, "video encoder")

        self._wav = wave.open(str(self.audio_tmp), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(audio_sample_rate_hz)

        self._frames: queue.Queue = queue.Queue(maxsize=ENCODER_QUEUE_FRAMES)
        self._writer = threading.Thread(target=self._write_frames, name=f"encoder {uri}", daemon=True)
        self._writer.start()

    # -- the tick's side

    def slot_of(self, pts_ns: int) -> int:
        """The frame slot a pts falls in: round(pts * fps), with media time 0 as slot 0."""
        return (2 * pts_ns * self.fps.numerator + self.fps.denominator * NS_PER_S) // \
            (2 * self.fps.denominator * NS_PER_S)

    def present(self, frame: RenderedFrame) -> None:
        self._raise_if_failed()
        if self._closed:
            raise OutputFailed(f"{self.uri}: present() after close()")
        self.frames_presented += 1
        slot = self.slot_of(frame.pts_ns)
        if slot < self._next_slot:
            self.frames_dropped += 1  # this slot already has a frame: keep the rate constant
            return
        gap = slot - self._next_slot
        if gap:
            if self.frames_written == 0:
                self.frames_lead_in += gap
                self._enqueue(self._letterbox.background, gap)
            else:
                self.frames_repeated += gap
                self._enqueue(None, gap)  # None: the writer repeats the last frame
        self._enqueue(np.array(frame.image, dtype=np.uint8, copy=True), 1)  # the renderer may reuse its buffer
        self._next_slot = slot + 1

    def _enqueue(self, image: np.ndarray | None, count: int) -> None:
        self.frames_written += count
        item = (image, count)
        try:
            self._frames.put_nowait(item)
            return
        except queue.Full:
            self.encoder_queue_full += 1
        while True:  # back-pressure: a recording must be complete, so wait, but never on a dead encoder
            try:
                self._frames.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is None and self._proc.poll() is not None and not self._closed:
            self._error = OutputFailed(f"ffmpeg exited with code {self._proc.returncode} while recording")
        if self._error is not None:
            raise OutputFailed(f"{self.uri}: the video encoder failed: {self._error}. ffmpeg's log "
                               f"({self.encode_log}): {tail(self.encode_log)}")

    # -- the encoder thread

    def _write_frames(self) -> None:
        stdin = self._proc.stdin
        last: bytes | None = None
        try:
            while True:
                item = self._frames.get()
                if item is None:
                    return
                image, count = item
                if image is not None:
                    last = self._letterbox(image).tobytes()
                if last is None:
                    continue
                for _ in range(count):
                    stdin.write(last)
        except (BrokenPipeError, OSError, ValueError) as exc:
            self._error = exc
            log.error("%s: writing to ffmpeg failed: %s", self.uri, exc)
            while True:  # drain so a waiting tick is released; it then sees _error
                try:
                    if self._frames.get(timeout=1.0) is None:
                        return
                except queue.Empty:
                    return

    # -- the speaker's side

    def audio_tap(self, samples: np.ndarray, first_sample: int) -> None:
        """Append played audio; a gap is filled with silence, a repeat is ignored, so sample k is at k / rate."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)  # (N,)
        with self._lock:
            if self._closed:
                return
            if first_sample > self.audio_samples:
                gap = first_sample - self.audio_samples
                self.audio_gap_samples += gap
                silence = np.zeros(min(gap, self.audio_sample_rate_hz), dtype="<i2").tobytes()
                while gap > 0:
                    n = min(gap, self.audio_sample_rate_hz)
                    self._wav.writeframesraw(silence[:2 * n])
                    gap -= n
                self.audio_samples = first_sample
            elif first_sample < self.audio_samples:
                overlap = min(len(samples), self.audio_samples - first_sample)
                self.audio_overlap_samples += overlap
                samples = samples[overlap:]
            if len(samples) == 0:
                return
            pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
            self._wav.writeframes(pcm.tobytes())  # also patches the header: the WAV stays readable
            self.audio_samples += len(pcm)

    # -- finishing

    def close(self) -> dict:
        with self._lock:
            if self._closed:
                return self._report
            self._closed = True
            self._wav.close()
        self._frames.put(None)
        self._writer.join()
        try:
            self._proc.stdin.close()
        except OSError:
            pass  # already broken: the return code below says why
        return_code = self._proc.wait()
        self._log_file.close()
        if self._error is not None or return_code != 0:
            reason = self._error or f"ffmpeg exited with code {return_code}"
            raise OutputFailed(f"{self.uri}: the video encoder failed ({reason}); ffmpeg's log "
                               f"({self.encode_log}): {tail(self.encode_log)}")

        video_s = self.frames_written * self.fps.denominator / self.fps.numerator
        audio_s = self.audio_samples / self.audio_sample_rate_hz
        if self.frames_written == 0:
            self._remove(self.video_tmp, self.audio_tmp, self.encode_log)
            log.warning("%s: no frames were presented; no file written", self.uri)
            self._report = self._facts(None, 0.0, audio_s)
            return self._report
        self._mux(video_s)
        self._remove(self.video_tmp, self.audio_tmp, self.encode_log, self.mux_log)
        self._report = self._facts(str(self.path), video_s, audio_s)
        log.info("%s: wrote %s (%.2f s video, %.2f s audio, %d frames repeated, %d dropped)", self.uri,
                 self.path, video_s, audio_s, self.frames_repeated, self.frames_dropped)
        return self._report

    def _mux(self, video_s: float) -> None:
        command = [self.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-y",
                   "-i", str(self.video_tmp)]
        if self.audio_samples:
            # Audio is cut (or padded with silence) to exactly the video's length: no -shortest overshoot.
            command += ["-i", str(self.audio_tmp), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                        "-c:a", "aac", "-b:a", str(self.audio_bitrate_bps), "-af", "apad", "-t", f"{video_s:.6f}"]
        else:
            command += ["-map", "0:v:0", "-c:v", "copy"]
        command += ["-movflags", "+faststart", "-f", "mp4", str(self.mux_tmp)]
        with open(self.mux_log, "wb") as mux_log:
            try:
                result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=mux_log, timeout=MUX_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                raise OutputFailed(f"{self.uri}: muxing took over {MUX_TIMEOUT_S} s; log: "
                                   f"{tail(self.mux_log)}") from None
        if result.returncode != 0:
            raise OutputFailed(f"{self.uri}: muxing video and audio failed (ffmpeg exit {result.returncode}); "
                               f"the parts are kept: {self.video_tmp}, {self.audio_tmp}. Log: {tail(self.mux_log)}")
        os.replace(self.mux_tmp, self.path)  # atomic: a reader never sees half an MP4

    def _facts(self, path: str | None, video_s: float, audio_s: float) -> dict:
        return {
            "path": path,
            "frames_written": self.frames_written,
            "video_s": round(video_s, 6),
            "audio_s": round(audio_s, 6),
            "fps": float(self.fps),
            "size_px": [self.width_px, self.height_px],
            "frames_presented": self.frames_presented,
            "frames_repeated": self.frames_repeated,
            "frames_dropped": self.frames_dropped,
            "frames_lead_in": self.frames_lead_in,
            "encoder_queue_full": self.encoder_queue_full,
            "encoder": {"preset": self.preset, "crf": self.crf, "nice": self.encoder_nice},
            "audio_gap_samples": self.audio_gap_samples,
            "audio_overlap_samples": self.audio_overlap_samples,
        }

    @staticmethod
    def _remove(*paths: Path) -> None:
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------- a window


class WindowSink(OutputSink):
    """An SDL2 window (pygame): each frame letterboxed to the window and flipped at its pts."""

    def __init__(self, uri: str, display: DisplayConfig, fps: float, fullscreen: bool, clock: Any = None):
        self.uri = uri
        self.clock = clock
        self.frame_period_ns = int(NS_PER_S / fps)
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame prints a banner on import otherwise
        try:
            import pygame  # lazy: only window:// needs SDL2
        except ImportError:
            raise OutputUnavailable(f"{uri}: pygame (SDL2) is not installed: pip install pygame; or use "
                                    "output.uri file://out/demo.mp4 or null://") from None
        self._pygame = pygame
        no_display = ("{exc}; DISPLAY={display!r}, WAYLAND_DISPLAY={wayland!r}. Set DISPLAY (e.g. DISPLAY=:0 on "
                      "the kiosk), or use output.uri file://out/demo.mp4 or null://")
        try:
            pygame.display.init()
            driver = pygame.display.get_driver()
            requested = os.environ.get("SDL_VIDEODRIVER", "").lower()
            if driver in HEADLESS_SDL_DRIVERS and driver not in requested:
                # SDL falls back to drawing off-screen when it finds no display: nobody would see the face.
                raise pygame.error(f"SDL found no display and fell back to its {driver!r} driver")
            if fullscreen:
                self._screen = pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
                pygame.mouse.set_visible(False)
            else:
                self._screen = pygame.display.set_mode((display.width_px, display.height_px))
            pygame.display.set_caption("edge-avatar")
        except pygame.error as exc:
            pygame.display.quit()
            raise OutputUnavailable(f"{uri}: no display to open a window on: " + no_display.format(
                exc=exc, display=os.environ.get("DISPLAY"), wayland=os.environ.get("WAYLAND_DISPLAY"))) from None
        width_px, height_px = self._screen.get_size()
        self._letterbox = Letterbox(width_px, height_px, display.background_rgb)
        self.frames_presented = 0
        self.frames_late = 0
        self.audio_samples = 0
        self.quit_requested = False  # the window was closed or Esc pressed; the loop may poll this

    def present(self, frame: RenderedFrame) -> None:
        pygame = self._pygame
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                self.quit_requested = True
        if self.clock is not None:
            now_ns = self.clock.now_ns()
            if frame.pts_ns > now_ns:
                # Early: hold it until its pts, but never more than a frame (a wild pts must not freeze us).
                self.clock.sleep_until_ns(min(frame.pts_ns, now_ns + self.frame_period_ns))
            elif now_ns - frame.pts_ns > self.frame_period_ns:
                self.frames_late += 1
        image = self._letterbox(frame.image)
        surface = pygame.image.frombuffer(image.tobytes(), (image.shape[1], image.shape[0]), "RGB")
        self._screen.blit(surface, (0, 0))
        pygame.display.flip()
        self.frames_presented += 1

    def audio_tap(self, samples: np.ndarray, first_sample: int) -> None:
        self.audio_samples = first_sample + len(samples)  # the speaker plays it; we only count

    def close(self) -> dict:
        self._pygame.display.quit()
        return {"path": None, "frames_written": self.frames_presented, "frames_late": self.frames_late,
                "video_s": round(self.frames_presented * self.frame_period_ns / NS_PER_S, 6),
                "audio_s": 0.0}


# --------------------------------------------------------------------------- nowhere


class NullSink(OutputSink):
    """Shows nothing; counts frames and audio so pipeline tests and benchmarks can check the flow."""

    def __init__(self, uri: str = "null://", fps: float = 30.0, audio_sample_rate_hz: int = 22050):
        self.uri = uri
        self.fps = fps
        self.audio_sample_rate_hz = audio_sample_rate_hz
        self.frames_presented = 0
        self.audio_samples = 0
        self.last_pts_ns: int | None = None
        self._lock = threading.Lock()

    def present(self, frame: RenderedFrame) -> None:
        self.frames_presented += 1
        self.last_pts_ns = frame.pts_ns

    def audio_tap(self, samples: np.ndarray, first_sample: int) -> None:
        with self._lock:
            self.audio_samples += len(samples)

    def close(self) -> dict:
        with self._lock:
            return {"path": None, "frames_written": self.frames_presented,
                    "video_s": round(self.frames_presented / self.fps, 6),
                    "audio_s": round(self.audio_samples / self.audio_sample_rate_hz, 6)}
