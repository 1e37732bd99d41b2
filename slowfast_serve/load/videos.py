"""Videos for load tests and benchmarks made without ffmpeg: a detailed texture sliding sideways, H.264 (PyAV's
libx264) at 30 fps, in any size."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


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
