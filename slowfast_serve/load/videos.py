"""Videos for load tests and benchmarks: a detailed texture sliding sideways made without ffmpeg (H.264, PyAV's
libx264, 30 fps, any size), a long recording of edited synthetic motions (any length), and real people walking
(OpenCV's pedestrian sample, from a Debian package) for the person detectors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np

from slowfast_serve.evaluation.chapters import edited_video


def moving_texture_video(path: Path, width: int, height: int, seconds: float = 10.0) -> Path:
    """Writes ``seconds`` of a random texture moving 8 pixels a frame (detail that moves, like ffmpeg's
    ``testsrc2``) to ``path`` (mp4, H.264, yuv420p, 30 fps) and returns it."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * 30)):
            shift = (i * 8) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, shift : shift + width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def long_recording(path: Path, minutes: float, size: tuple[int, int] = (128, 96)) -> Path:
    """Writes a recording of about ``minutes`` to ``path`` (H.264 mp4, ``size``, 25 fps): a minute of twelve
    chapters of ``motion_demo``'s synthetic motions (:func:`~slowfast_serve.evaluation.chapters.edited_video`),
    played again and again, joined by ffmpeg's concat demuxer without re-encoding (seconds, not minutes, to make).
    """
    motions = ["moving left", "growing", "moving up", "rotating clockwise", "moving right", "shrinking"]
    data, chapters = edited_video(motions * 2, seed=11, clips_per_chapter=1, size=size)
    piece = path.with_name(f"{path.stem}-piece.mp4")
    piece.write_bytes(data)
    listing = path.with_name(f"{path.stem}-pieces.txt")
    listing.write_text(f"file '{piece.name}'\n" * max(1, round(minutes * 60 / chapters[-1].end_sec)))
    concat = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-i", listing.name, "-c", "copy", path.name]
    result = subprocess.run(concat, cwd=path.parent, capture_output=True, text=True)
    piece.unlink()
    listing.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(concat)} failed ({result.returncode}): {result.stderr}")
    return path


# OpenCV's sample video of people walking across a campus (768x576, 10 fps, 79.5 s, MS-MPEG4 in AVI), as Debian
# ships it in opencv-doc: real pedestrians for the person detectors.
PEDESTRIAN_PACKAGE = "opencv-doc"
PEDESTRIAN_FILE = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


def pedestrians(directory: Path, seconds: float = 6.0, height: int | None = None) -> Path:
    """The first ``seconds`` of OpenCV's pedestrian sample, re-encoded with ffmpeg as H.264 mp4 (scaled to
    ``height``, the width following; default: as it is) into ``directory``.

    Downloads the Debian package (``apt-get download``: a package registry) and unpacks only that file.

    Raises:
        RuntimeError: a step failed (e.g. the registry cannot be reached); its output says why.
    """
    source = directory / PEDESTRIAN_FILE
    steps = [
        ["apt-get", "download", PEDESTRIAN_PACKAGE],
        ["sh", "-c", f"dpkg-deb --fsys-tarfile {PEDESTRIAN_PACKAGE}_*.deb | tar -x {PEDESTRIAN_FILE}"],
    ]
    out = directory / f"pedestrians{'' if height is None else f'-{height}p'}.mp4"
    scale = [] if height is None else ["-vf", f"scale=-2:{height}"]
    encode = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", str(seconds), *scale]
    steps.append([*encode, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)])
    for step in steps[0 if not source.exists() else 2 :]:
        result = subprocess.run(step, cwd=directory, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return out
