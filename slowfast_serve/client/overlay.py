"""Copies of a video with something drawn on each frame (the ``--annotate`` of ``timeline`` and ``detect``).

The copy is re-encoded as H.264 mp4 at the source frame rate, frame for frame, upright: a video with display
rotation (phone videos) is turned as the service turns it before it looks at the frames, so that what is drawn
from an answer (boxes in pixels of the upright frame) lands where the service saw it.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

#: Draws on one upright frame (in place), given its time in seconds from the stream start.
Drawer = Callable[[Image.Image, float], None]


def burn_in(source: Path, path: Path, draw: Drawer) -> Path:
    """Re-encodes ``source`` to ``path`` (H.264 mp4, even width and height: an odd last row or column is cut),
    each frame upright and passed through ``draw`` first; returns ``path``."""
    with av.open(str(source)) as reader, av.open(str(path), "w") as writer:
        stream = reader.streams.video[0]
        rate = stream.average_rate or Fraction(30)
        out = writer.add_stream("libx264", rate=rate)
        out.pix_fmt = "yuv420p"
        start = stream.start_time or 0
        for index, frame in enumerate(reader.decode(stream)):
            turns = round(frame.rotation / 90) % 4  # the display matrix's counterclockwise angle, as the service
            image = frame.to_image()
            if turns:
                image = Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(image), turns)))
            if index == 0:
                out.width, out.height = image.width - image.width % 2, image.height - image.height % 2
            seconds = float((frame.pts - start) * stream.time_base) if frame.pts is not None else index / float(rate)
            draw(image, seconds)
            picture = np.asarray(image)[: out.height, : out.width]
            for packet in out.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")):
                writer.mux(packet)
        for packet in out.encode():
            writer.mux(packet)
    return path
