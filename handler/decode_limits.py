"""What decoding one request may cost: the limits (:class:`DecodeLimits`) and their accounting (:class:`Budget`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av

from handler.errors import RequestError


@dataclass(frozen=True)
class DecodeLimits:
    """What one request may cost the worker; exceeding a limit is a 413 that names it and says what to send.

    Attributes:
        max_frame_pixels: largest decoded frame, width x height (a small file can declare an 8K frame).
        max_decoded_frames: frames decoded per request, counting those before the window (from the key frame a
            seek lands on, or from the start when the file cannot seek) and a second pass over a large window.
        max_decode_seconds: wall-clock seconds of decoding per request.
        max_window_mb: memory for the window's decoded frames held at once (YUV, about 1.5 bytes per pixel);
            beyond it the window is decoded twice instead of held (same frames, more time).
        max_timeline_windows: windows of one ``mode=timeline`` request.
        max_request_mb: memory one request may hold while it is prepared, as estimated from the stream header
            before decoding (:func:`handler.pipeline.request_memory_mb`); a request over it gets a 413 that says
            what to send instead.
    """

    max_frame_pixels: int = 4096 * 2304
    max_decoded_frames: int = 3000
    max_decode_seconds: float = 20.0
    max_window_mb: int = 512
    max_timeline_windows: int = 120
    max_request_mb: int = 1024

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"decode limit {name} must be a positive number, got {value!r}")


class Budget:
    """Counts one request's decoding work against its :class:`DecodeLimits` (and carries its thread count to
    every pass over the stream)."""

    def __init__(self, limits: DecodeLimits, threads: int = 0) -> None:
        self.limits = limits
        self.threads = threads
        self.frames = 0
        self.deadline = time.monotonic() + limits.max_decode_seconds

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside is not decoding time (a clip handed out and being used): the deadline moves on."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.deadline += time.monotonic() - started

    def check_size(self, width: int, height: int) -> None:
        """Raises ``FrameTooLarge`` for frames over ``max_frame_pixels``."""
        if width * height > self.limits.max_frame_pixels:
            raise RequestError(
                413,
                "FrameTooLarge",
                f"the video's frames are {width}x{height} ({width * height / 1e6:.1f} MP); this service decodes "
                f"frames of up to {self.limits.max_frame_pixels / 1e6:.1f} MP (e.g. 4096x2304); scale the video "
                "down (e.g. ffmpeg -i in.mp4 -vf scale=-2:720 out.mp4)",
            )

    def spend(self, frame: av.VideoFrame) -> None:
        """Counts one decoded frame; raises a 413 once a limit is exceeded."""
        self.frames += 1
        limits = self.limits
        self.check_size(frame.width, frame.height)
        if self.frames > limits.max_decoded_frames:
            raise RequestError(
                413,
                "DecodeLimitExceeded",
                f"the clip needs more than {limits.max_decoded_frames} decoded frames (frames before start_sec count "
                "when the file has few key frames or no seek index); send a shorter excerpt around the moment, or "
                "re-encode with a key frame every few seconds",
                ("max_decoded_frames", limits.max_decoded_frames),
            )
        if time.monotonic() > self.deadline:
            raise RequestError(
                413,
                "DecodeLimitExceeded",
                f"decoding took longer than {limits.max_decode_seconds:g} s; send a smaller or shorter video "
                "(e.g. scaled to 720p) or an excerpt around the moment",
                ("max_decode_seconds", limits.max_decode_seconds),
            )
