"""How big the parts of a long video may be (:mod:`slowfast_serve.client.parts`): the user's settings and what the
service's refusals have taught. No PyAV here: the client imports this before it knows it must cut a file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The limits a 413 names that smaller parts satisfy.
SPLIT_LIMITS = ("max_timeline_windows", "max_decoded_frames", "max_decode_seconds")


@dataclass(frozen=True)
class PartSettings:
    """How a long video is sent.

    Attributes:
        concurrency: parts in flight at once (a worker takes one at a time; more parts than workers wait queued).
        retries: resends of a part that got no answer or a 5xx before giving up.
        part_mb: the largest part uploaded, in MiB (smaller once the service refuses one as too large).
    """

    concurrency: int = 2
    retries: int = 3
    part_mb: float = 64.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or not self.part_mb > 0:
            raise ValueError(f"concurrency >= 1, retries >= 0, part_mb > 0; got {self}")


@dataclass
class Caps:
    """What one part may hold, as learned from the service (``None``: not known to be limited)."""

    bytes: int
    windows: int | None = None
    frames: int | None = None
    refusals: int = 0  # 413s that made the caps smaller (the whole file's included)

    def learn(self, status: int, body: dict[str, Any], windows: int | None, part_bytes: int) -> bool:
        """Shrinks the caps after a 413 for a part of ``windows`` windows (``None``: the whole video, not counted)
        and ``part_bytes`` bytes of video packets (its container adds its own: MPEG-TS about as much again);
        ``False`` when smaller parts would not avoid the error (not such a 413, or one window alone was over).
        """
        limit = body.get("limit")
        if status != 413 or windows == 1 or (limit is None and "code" in body):
            return False  # the handler's own 413 without a limit (frame size, memory) is the same for any part
        name, value = (None, None) if limit is None else (limit.get("name"), limit.get("value"))
        if limit is not None and name not in SPLIT_LIMITS:
            return False
        self.refusals += 1
        if limit is None:  # TorchServe's bare 413: the upload is over max_request_size
            self.bytes = max(min(self.bytes, part_bytes) // 2, 1)
        elif name == "max_timeline_windows":
            self.windows = int(value)
        elif name == "max_decoded_frames" and (self.frames is None or self.frames > value * 0.9):
            self.frames = int(value * 0.9)  # a seek or a second pass over a window decodes some frames twice
        elif windows is not None:  # out of time, or over the frames though planned within them: halve the parts
            self.windows = max(min(self.windows or windows, windows) // 2, 1)
        return True
