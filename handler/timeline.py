"""Where a ``mode=timeline`` request's windows fall, and how their answers merge into labelled intervals.

Pure Python (no torch): the service places and merges windows with these functions, and the client that cuts a
long video into parts (:mod:`slowfast_serve.client.parts`) uses the same ones, so a timeline assembled from
parts is the one a single request would give, window for window.

Window ``k`` starts at ``start_sec + k * stride_sec``, computed in that order for every ``k`` (a part names its
first window by index rather than by a start time of its own, whose float rounding could differ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

#: A window must start at least this long before the end of the video to hold a frame.
END_MARGIN_SEC = 0.05


def window_count(duration_sec: float, start_sec: float, stride_sec: float) -> int:
    """Windows every ``stride_sec`` from ``start_sec`` while one can still hold a frame (it starts at least
    :data:`END_MARGIN_SEC` before the end); at least 1 (a ``start_sec`` past the end gives one window, whose
    decoding then says how long the video is)."""
    return max(1, math.ceil((duration_sec - END_MARGIN_SEC - start_sec) / stride_sec))


def keyframe_count(duration_sec: float, first_sec: float, stride_sec: float) -> int:
    """An AVA detection timeline's keyframes: every ``stride_sec`` from ``first_sec`` while before the end; at
    least 1 (a first keyframe past the end is refused by the service as out of range)."""
    return max(1, math.ceil((duration_sec - first_sec) / stride_sec))


def window_starts(start_sec: float, stride_sec: float, first: int, count: int) -> list[float]:
    """Starts, in seconds, of windows ``first .. first + count - 1``."""
    return [start_sec + k * stride_sec for k in range(first, first + count)]


def part_starts(
    start_sec: float, stride_sec: float, first: int | None, count: int | None, total: Callable[[], int]
) -> list[float]:
    """Starts of windows ``first .. first + count - 1`` of a timeline's grid (a part of a timeline sent in parts;
    ``first`` ``None``: 0). ``count`` ``None``: every window from ``first`` to the last of the ``total()`` the
    whole video has (called only then: it may have to probe the video). At least one window."""
    first = first or 0
    if count is None:
        count = total() - first
    return window_starts(start_sec, stride_sec, first, max(count, 1))


def timeline_starts(duration_sec: float, start_sec: float, stride_sec: float) -> list[float]:
    """Starts of all the windows of a video of ``duration_sec`` (:func:`window_count` of them)."""
    return window_starts(start_sec, stride_sec, 0, window_count(duration_sec, start_sec, stride_sec))


def intervals(
    starts: Sequence[float], tops: Sequence[dict[str, Any]], stride_sec: float, end_sec: float | None
) -> list[dict[str, Any]]:
    """Runs of consecutive windows with the same top label, merged: ``label``, ``start_sec``, ``end_sec``,
    ``mean_score`` (of the windows' top scores); times rounded to the millisecond.

    Args:
        starts: the windows' starts in seconds, unrounded (:func:`window_starts`).
        tops: each window's top prediction, ``{"label", "score", ...}``.
        stride_sec: each window stands for ``[start, start + stride)``.
        end_sec: the end of the video, where the last window's interval stops short (``None``: not known).
    """
    runs: list[dict[str, Any]] = []
    scores: list[list[float]] = []
    for start, top in zip(starts, tops, strict=True):
        until = start + stride_sec if end_sec is None else min(start + stride_sec, end_sec)
        if runs and runs[-1]["label"] == top["label"]:
            runs[-1]["end_sec"] = round(until, 3)
            scores[-1].append(top["score"])
        else:
            runs.append({"label": top["label"], "start_sec": round(start, 3), "end_sec": round(until, 3)})
            scores.append([top["score"]])
    return [{**run, "mean_score": sum(s) / len(s)} for run, s in zip(runs, scores, strict=True)]
