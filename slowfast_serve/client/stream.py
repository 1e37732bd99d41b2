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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from queue import Queue
from typing import Any

import av
import numpy as np
import requests
from PIL import Image
from rich.console import Console

from slowfast_serve.client.errors import ServiceError
from slowfast_serve.client.options import add_service_arguments, client_from_args
from slowfast_serve.client.timeline import draw_label

FAILURES = (ServiceError, OSError, av.FFmpegError, requests.RequestException)  # SourceLostError is an OSError

DEFAULT_WINDOW_SEC = 64 / 30  # the SlowFast R50 clip: 32 frames x 2 at 30 fps


#: Sources that can drop and come back: followed again after a loss (a file's end is its end).
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "srt://", "udp://", "tcp://")


def open_source(source: str, timeout_sec: float = 10.0) -> av.container.InputContainer:
    """A webcam (``/dev/videoN`` or ``N``), a URL or a file, opened with PyAV. Network sources get a read
    timeout (a camera that stops sending is noticed) and RTSP goes over TCP (a stopped server is noticed at
    once, no UDP packets are lost)."""
    if source.isdigit():
        source = f"/dev/video{source}"
    if source.startswith("/dev/video"):
        return av.open(source, format="v4l2")
    if source.startswith(LIVE_SCHEMES):
        options = {"rtsp_transport": "tcp"} if source.startswith(("rtsp://", "rtsps://")) else {}
        return av.open(source, options=options, timeout=(timeout_sec, timeout_sec))
    return av.open(source)


@dataclass
class Backoff:
    """Waits between reconnection attempts: ``first`` seconds, doubling up to ``longest``; gives up once the
    source has been gone ``give_up_sec`` (``None``: never)."""

    first: float = 0.5
    longest: float = 10.0
    give_up_sec: float | None = 300.0

    def delays(self) -> Iterator[float]:
        delay, waited = self.first, 0.0
        while self.give_up_sec is None or waited < self.give_up_sec:
            yield delay
            waited += delay
            delay = min(delay * 2, self.longest)


@dataclass
class TimedFrame:
    """A decoded frame, its stream time (seconds since following began, continuing across reconnections) and
    when it was decoded (``time.monotonic()``)."""

    seconds: float
    image: Image.Image
    decoded_at: float


class SourceLostError(OSError):
    """A live source stayed unreachable for longer than the backoff allows."""


def follow_source(
    source: str, status: Console, backoff: Backoff | None = None, timeout_sec: float = 10.0
) -> Iterator[TimedFrame]:
    """The source's frames, in stream time. A live source (:data:`LIVE_SCHEMES`) that ends or fails after it
    has sent frames is opened again with ``backoff``, saying so on ``status``; stream time then goes on from the
    last frame plus the time the source was gone. A source that cannot be opened at first, and a file's errors,
    are raised; a file ends at its end."""
    live = source.startswith(LIVE_SCHEMES)
    backoff = backoff or Backoff()
    last: TimedFrame | None = None
    lost_at: float | None = None
    delays: Iterator[float] = iter(())
    attempt = 0
    while True:
        try:
            container = open_source(source, timeout_sec)
        except (av.FFmpegError, OSError) as e:
            if last is None or not live:
                raise
            delay = next(delays, None)
            if delay is None:
                raise SourceLostError(f"{source} stayed unreachable for {backoff.give_up_sec:g} s; giving up") from e
            attempt += 1
            status.print(f"  attempt {attempt}: {type(e).__name__}; next in {delay:g} s")
            time.sleep(delay)
            continue
        if lost_at is not None:
            status.print(f"reconnected after {time.monotonic() - lost_at:.1f} s", style="green")
        try:
            with container:
                stream = container.streams.video[0]
                origin = None  # the first frame's own time (timestamps restart with each connection)
                base = 0.0 if last is None else last.seconds + (time.monotonic() - last.decoded_at)
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    own = float(frame.pts * stream.time_base)
                    origin = own if origin is None else origin
                    last = TimedFrame(base + own - origin, frame.to_image(), time.monotonic())
                    yield last
            reason = "the stream ended"
        except (av.FFmpegError, OSError) as e:
            if not live or last is None:
                raise
            reason = f"{type(e).__name__}: {e}"
        if not live:
            return
        lost_at, delays, attempt = time.monotonic(), backoff.delays(), 0
        status.print(f"source lost at {last.seconds:.1f} s ({reason}); reconnecting", style="yellow")


def read_ahead(frames: Iterator[TimedFrame], size: int = 256) -> Iterator[TimedFrame]:
    """``frames`` read by a thread of their own into a queue of ``size``: a live source is read (and its frames
    timed) as it sends while a request is out, not after. Its errors are raised here, in order."""
    done = object()
    queue: Queue[Any] = Queue(maxsize=size)

    def read() -> None:
        try:
            for frame in frames:
                queue.put(frame)
            queue.put(done)
        except BaseException as e:  # noqa: BLE001 - handed over to the consumer, which raises it
            queue.put(e)

    threading.Thread(target=read, name="source", daemon=True).start()
    while (item := queue.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


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
    status = Console(stderr=True)
    window: collections.deque[tuple[float, Image.Image]] = collections.deque()
    latest: dict[str, Any] | None = None
    next_ask = args.window_sec
    shower = Shower() if args.show and os.environ.get("DISPLAY") else None
    if args.show and shower is None:
        console.print("no display: not showing frames (use --output to write them)", style="yellow")
    started = time.monotonic()
    backoff = Backoff(give_up_sec=args.give_up_sec or None)
    writer = out = None
    try:
        for frame in read_ahead(follow_source(args.source, status, backoff, args.read_timeout)):
            seconds, image = frame.seconds, frame.image
            if args.realtime:
                time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            window.append((seconds, image))
            while window and window[0][0] <= seconds - args.window_sec:
                window.popleft()
            if seconds >= next_ask:
                latest = client.classify(encode_window(list(window), args.short_side), top_k=args.top_k).body
                latest["stream_sec"] = round(seconds, 3)
                # From the window's last frame leaving the decoder to its answer: encoding, upload, queue,
                # the worker's decode, preprocessing and forward.
                latest["latency_ms"] = round((time.monotonic() - frame.decoded_at) * 1000, 1)
                top = latest["predictions"][0]
                if args.json:
                    print(json.dumps(latest), flush=True)
                else:
                    console.print(
                        f"{seconds:8.2f}s  {top['label']:<30} {top['score']:.3f}  ({latest['latency_ms']:.0f} ms)"
                    )
                next_ask = seconds + args.every
            if args.output or shower:
                shown = image.copy()
                if latest:
                    top = latest["predictions"][0]
                    draw_label(shown, f"{top['label']} ({top['score']:.2f})  {seconds:.1f}s")
                if args.output:
                    if writer is None:
                        writer = av.open(str(args.output), "w")
                        out = writer.add_stream("libx264", rate=30)
                        out.pix_fmt = "yuv420p"
                        out.width, out.height = shown.width // 2 * 2, shown.height // 2 * 2
                        out.codec_context.time_base = Fraction(1, 1000)
                    picture = np.ascontiguousarray(np.asarray(shown)[: out.height, : out.width])
                    written = av.VideoFrame.from_ndarray(picture, format="rgb24")
                    # Stream time in milliseconds: the copy keeps the source's pace, and its gaps when it dropped.
                    written.pts, written.time_base = round(seconds * 1000), Fraction(1, 1000)
                    for packet in out.encode(written):
                        writer.mux(packet)
                if shower:
                    shower.show(shown)
            if args.max_seconds and seconds >= args.max_seconds:
                break
    finally:
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
    parser.add_argument(
        "--json", action="store_true", help="print each answer as JSON (with stream_sec and latency_ms)"
    )
    parser.add_argument(
        "--give-up-sec",
        type=float,
        default=300,
        help="a live source gone this long ends the command with an error (default: %(default)s; 0: never)",
    )
    parser.add_argument(
        "--read-timeout", type=float, default=10, help="seconds without data before a live source counts as lost"
    )
    add_service_arguments(parser, timeout=120)


def run(args: argparse.Namespace) -> int:
    try:
        return _follow(args, Console())
    except KeyboardInterrupt:
        return 0
