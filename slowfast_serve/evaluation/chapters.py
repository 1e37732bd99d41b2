"""Edited videos whose true chapters are known, and how far a timeline's events are from them.

:func:`edited_video` cuts clips of the synthetic motion generator (``slowfast_serve.training.motion_data``) into
one video: each chapter is one motion, shown by ``clips_per_chapter`` clips of different looks (a scene cut
inside a chapter that must not split it), all scaled to one size and frame rate. :func:`compare` measures
events (label, start, end) against the chapters: how many there are, the share of the video's time they label
correctly, and how far each true change point is from the nearest event boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image

from slowfast_serve.training.motion_data import encode, render, sample


@dataclass(frozen=True)
class Chapter:
    """One true chapter: ``label`` over ``[start_sec, end_sec)``."""

    label: str
    start_sec: float
    end_sec: float


def edited_video(
    motions: Sequence[str],
    seed: int,
    clips_per_chapter: int = 2,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
) -> tuple[bytes, list[Chapter]]:
    """An H.264 mp4 (``size`` = width, height; ``fps``) of one chapter per motion, and its chapters."""
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    chapters = []
    for motion in motions:
        start = len(frames) / fps
        for _ in range(clips_per_chapter):
            video = sample(motion, rng, encoding=0)
            rendered = render(video, rng)
            # Resampled to the common rate by time: output frame k shows the source frame at k / fps seconds.
            count = int(len(rendered) * fps / float(video.fps))
            picks = [min(int(k * float(video.fps) / fps), len(rendered) - 1) for k in range(count)]
            frames += [np.asarray(Image.fromarray(rendered[i]).resize(size, Image.BILINEAR)) for i in picks]
        chapters.append(Chapter(motion, round(start, 3), round(len(frames) / fps, 3)))
    return encode(np.stack(frames), fps=Fraction(fps)), chapters


@dataclass(frozen=True)
class Agreement:
    """Events against the true chapters.

    Attributes:
        events: how many events there are (the chapters' count is the ideal).
        time_accuracy: the share of the video's time whose event label is the true one.
        boundary_error_sec: mean distance from each true change point to the nearest event boundary.
    """

    events: int
    time_accuracy: float
    boundary_error_sec: float


def compare(events: Sequence[tuple[str, float, float]], chapters: Sequence[Chapter], step: float = 0.02) -> Agreement:
    """``events`` as ``(label, start_sec, end_sec)`` against ``chapters`` (sampled every ``step`` seconds)."""
    end = chapters[-1].end_sec
    times = np.arange(0.0, end, step)

    def label_at(spans: Sequence[tuple[str, float, float]], t: float) -> str | None:
        return next((label for label, start, stop in spans if start <= t < stop), None)

    truth = [(c.label, c.start_sec, c.end_sec) for c in chapters]
    right = sum(label_at(events, t) == label_at(truth, t) for t in times)
    boundaries = [start for _, start, _ in events[1:]]
    changes = [c.start_sec for c in chapters[1:]]
    errors = [min((abs(change - b) for b in boundaries), default=end) for change in changes]
    return Agreement(len(events), right / len(times), sum(errors) / len(errors) if errors else 0.0)
