"""Synthesised test videos, encoded in memory with PyAV (no binaries in the repository).

Two kinds of content:

- :func:`indexed_frames`: every frame is one flat colour that encodes its index, so a lossless encode
  (``libx264rgb`` with ``crf=0``) lets a test read back exactly which frames a decoder returned;
- :func:`moving_frames`: a textured background with a moving, rotating bar, so resizing and cropping have
  real structure to get wrong.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from slowfast_serve.training.motion_data import encode

__all__ = [
    "LOSSLESS",
    "audio_only",
    "encode",
    "frame_index",
    "indexed_frames",
    "lossless_indexed",
    "moving_frames",
    "moving_videos",
    "with_rotation",
]

LOSSLESS = {"codec": "libx264rgb", "pix_fmt": "rgb24", "options": {"crf": "0"}}


def indexed_frames(num_frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames; frame ``i`` is filled with ``(i % 256, i // 256, 77)``."""
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i] = (i % 256, i // 256, 77)
    return frames


def frame_index(frame: np.ndarray) -> int:
    """The index encoded by :func:`indexed_frames` in an ``(H, W, 3)`` RGB frame."""
    r, g, _ = (int(v) for v in frame[frame.shape[0] // 2, frame.shape[1] // 2])
    return r + 256 * g


def moving_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames: a fixed random texture plus a bright bar that moves and turns."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 160, size=(height, width, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        angle = 0.15 * i
        cx = width * (0.2 + 0.6 * ((i * 7) % max(num_frames, 1)) / max(num_frames, 1))
        cy = height * 0.5
        along = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
        across = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
        bar = (np.abs(along) < width * 0.25) & (np.abs(across) < max(height * 0.05, 1.5))
        frame = texture.copy()
        frame[bar] = (250, 220 - (i * 3) % 200, 40)
        frames[i] = frame
    return frames


def lossless_indexed(num_frames: int, fps: float | Fraction = 30, **kwargs) -> bytes:
    """A lossless mp4 of :func:`indexed_frames` (frame colours decode exactly)."""
    return encode(indexed_frames(num_frames), fps=fps, **LOSSLESS, **kwargs)


def audio_only(seconds: float = 1.0, container: str = "mp4") -> bytes:
    """A file with a single AAC audio stream and no video."""
    sample_rate = 16000
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream("aac", rate=sample_rate)
        samples = np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(sample_rate * seconds))).astype(np.float32)
        frame_size = 1024
        for start in range(0, len(samples) - frame_size, frame_size):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + frame_size], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return buffer.getvalue()


def faststart(data: bytes) -> bytes:
    """The mp4 ``data`` remuxed with its index (moov) before the frames, as streaming exports write it (the
    muxer needs a real file for that)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "faststart.mp4"
        with av.open(io.BytesIO(data)) as source, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
            stream = out.add_stream_from_template(source.streams.video[0])
            for packet in source.demux(source.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    out.mux(packet)
        return path.read_bytes()


def with_rotation(source: Path, out: Path, degrees: int) -> Path:
    """``source`` remuxed (same packets) with display rotation metadata, as a phone writes it."""
    command = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}"]
    subprocess.run([*command, str(out)], check=True)
    return out


def moving_videos(root: Path, sizes: dict[str, tuple[int, int, int]], seconds: int = 3) -> dict[str, Path]:
    """One H.264 mp4 of :func:`moving_frames` per ``name: (height, width, fps)``, ``seconds`` long, in ``root``."""
    paths = {}
    for i, (name, (height, width, fps)) in enumerate(sizes.items()):
        paths[name] = root / f"video{i}.mp4"
        paths[name].write_bytes(encode(moving_frames(seconds * fps, height, width, seed=i), fps=fps))
    return paths
