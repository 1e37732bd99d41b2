"""Classify a live stream: a webcam, an RTSP/HTTP(S) stream, or a file played as one.

Keeps a rolling window of the last ``--window-sec`` seconds of frames (by their timestamps, so at the source's
real frame rate), and every ``--every`` seconds of stream time encodes that window as a small H.264 mp4 (short
side scaled to ``--short-side``, 256 by default: what the model sees anyway) and asks the server. Each answer
is printed with its stream time; with ``--output``, a copy of the stream is written with the latest answer
burned in (as ``slowfast-serve timeline --annotate`` does); with ``--show`` and a display, the annotated frames are
shown live (matplotlib). A file source runs as fast as it decodes unless ``--realtime``.

Sources: a file path; ``rtsp://...``, ``http(s)://...`` URLs (FFmpeg opens them); a V4L2 device such as
``/dev/video0``, or its number (``0``).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import requests
from PIL import Image
from rich.console import Console

from slowfast_serve.client.errors import ServiceError
from slowfast_serve.client.options import add_service_arguments, client_from_args
from slowfast_serve.client.timeline import draw_label

FAILURES = (ServiceError, OSError, av.FFmpegError, requests.RequestException)

DEFAULT_WINDOW_SEC = 64 / 30  # the SlowFast R50 clip: 32 frames x 2 at 30 fps


def open_source(source: str) -> av.container.InputContainer:
    """A webcam (``/dev/videoN`` or ``N``), a URL or a file, opened with PyAV."""
    if source.isdigit():
        source = f"/dev/video{source}"
    if source.startswith("/dev/video"):
        return av.open(source, format="v4l2")
    return av.open(source)


def encode_window(frames: list[tuple[float, Image.Image]], short_side: int) -> bytes:
    """An in-memory H.264 mp4 of ``(seconds, image)`` frames, keeping their timestamps (millisecond ticks),
    scaled so the short side is ``short_side`` (even sizes)."""
    first = frames[0][1]
    scale = short_side / min(first.size)
    width, height = (round(first.width * scale) // 2 * 2, round(first.height * scale) // 2 * 2)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as writer:
        stream = writer.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        start = frames[0][0]
        for seconds, image in frames:
            frame = av.VideoFrame.from_image(image.resize((width, height), Image.BILINEAR))
            frame.pts, frame.time_base = round((seconds - start) * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                writer.mux(packet)
        for packet in stream.encode():
            writer.mux(packet)
    return buffer.getvalue()


class Shower:
    """Shows annotated frames in a matplotlib window (only with ``--show`` and a display)."""

    def __init__(self) -> None:
        import matplotlib.pyplot as plt

        plt.ion()
        self.plt = plt
        self.picture = None

    def show(self, image: Image.Image) -> None:
        if self.picture is None:
            self.picture = self.plt.imshow(image)
            self.plt.axis("off")
        else:
            self.picture.set_data(image)
        self.plt.pause(0.001)


def _follow(args: argparse.Namespace, console: Console) -> int:
    client = client_from_args(args)
    window: collections.deque[tuple[float, Image.Image]] = collections.deque()
    latest: dict[str, Any] | None = None
    next_ask = args.window_sec
    shower = Shower() if args.show and os.environ.get("DISPLAY") else None
    if args.show and shower is None:
        console.print("no display: not showing frames (use --output to write them)", style="yellow")
    started = time.monotonic()
    with open_source(args.source) as container:
        stream = container.streams.video[0]
        writer = out = None
        if args.output:
            writer = av.open(str(args.output), "w")
            out = writer.add_stream("libx264", rate=stream.average_rate or 30)
            out.pix_fmt = "yuv420p"
        origin = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            seconds = float(frame.pts * stream.time_base)
            origin = seconds if origin is None else origin
            seconds -= origin
            if args.realtime:
                time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            image = frame.to_image()
            window.append((seconds, image))
            while window and window[0][0] <= seconds - args.window_sec:
                window.popleft()
            if seconds >= next_ask:
                latest = client.classify(encode_window(list(window), args.short_side), top_k=args.top_k).body
                latest["stream_sec"] = round(seconds, 3)
                top = latest["predictions"][0]
                if args.json:
                    print(json.dumps(latest), flush=True)
                else:
                    console.print(f"{seconds:8.2f}s  {top['label']:<30} {top['score']:.3f}")
                next_ask = seconds + args.every
            if writer or shower:
                shown = image.copy()
                if latest:
                    top = latest["predictions"][0]
                    draw_label(shown, f"{top['label']} ({top['score']:.2f})  {seconds:.1f}s")
                if writer:
                    if out.width == 0:
                        out.width, out.height = shown.width // 2 * 2, shown.height // 2 * 2
                    picture = np.ascontiguousarray(np.asarray(shown)[: out.height, : out.width])
                    for packet in out.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                        writer.mux(packet)
                if shower:
                    shower.show(shown)
            if args.max_seconds and seconds >= args.max_seconds:
                break
        if writer:
            for packet in out.encode():
                writer.mux(packet)
            writer.close()
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="file, rtsp:// or http(s):// URL, /dev/videoN or N")
    parser.add_argument("--every", type=float, default=1.0, help="seconds of stream between requests (default: 1)")
    parser.add_argument("--window-sec", type=float, default=DEFAULT_WINDOW_SEC, help="window length (default: 2.133)")
    parser.add_argument("--short-side", type=int, default=256, help="short side of the frames sent (default: 256)")
    parser.add_argument("--top-k", type=int, default=3, help="classes per answer (default: %(default)s)")
    parser.add_argument("--output", type=Path, help="write the stream with the latest answer burned in (mp4)")
    parser.add_argument("--show", action="store_true", help="show the annotated frames (needs a display)")
    parser.add_argument("--realtime", action="store_true", help="pace a file source at its frame rate")
    parser.add_argument("--max-seconds", type=float, help="stop after this much stream time")
    parser.add_argument("--json", action="store_true", help="print each answer as JSON (with stream_sec)")
    add_service_arguments(parser, timeout=120)


def run(args: argparse.Namespace) -> int:
    try:
        return _follow(args, Console())
    except KeyboardInterrupt:
        return 0
