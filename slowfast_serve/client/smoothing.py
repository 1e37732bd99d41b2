"""A timeline's events: its windows smoothed into the chapters a person would name.

The service answers a timeline window by window; where an action changes, or where the model hesitates, the
top class of neighbouring windows flickers and the raw intervals (runs of one top class) come out in pieces.
:func:`events` turns the windows into events in two steps, each with its own setting (:class:`Smoothing`):

1. each window's label is the best class of the centred moving average of the scores over ``seconds`` of
   neighbouring windows (the per-window top-k scores, a class missing from a window's top k counting 0);
2. an event shorter than ``min_event_sec`` is merged into the neighbour whose class scores higher over it,
   shortest first, until none is shorter (or one event is left).

The defaults come from a measured example with known change points (docs/timeline.md). Pure Python: the
client alone has no NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slowfast_serve.client.inference import Interval, Segment, Timeline


@dataclass(frozen=True)
class Smoothing:
    """How windows become events.

    Attributes:
        seconds: the span of the moving average of the scores (0: none); it covers the odd number of windows
            nearest to it at the timeline's stride.
        min_event_sec: the shortest event kept; shorter ones join a neighbour (0: none merged).
    """

    seconds: float = 2.5
    min_event_sec: float = 2.0

    def __post_init__(self) -> None:
        if self.seconds < 0 or self.min_event_sec < 0:
            raise ValueError(f"smoothing seconds and min_event_sec must be at least 0, not {self}")

    def windows(self, stride_sec: float) -> int:
        """Windows in the moving average at this stride (odd, at least 1)."""
        count = max(1, round(self.seconds / stride_sec))
        return count if count % 2 else count + 1


RAW = Smoothing(seconds=0.0, min_event_sec=0.0)


def _scores(segment: Segment) -> dict[str, float]:
    return {p.label: p.score for p in segment.predictions}


def smoothed_labels(segments: Sequence[Segment], windows: int) -> list[str]:
    """Each window's best class after averaging every class's score over the ``windows`` centred on it (fewer
    at the ends). Ties go to the class that ranks higher in the window itself."""
    scores = [_scores(segment) for segment in segments]
    half = windows // 2
    labels = []
    for index, own in enumerate(scores):
        around = scores[max(0, index - half) : index + half + 1]
        classes = dict.fromkeys(label for window in around for label in window)
        mean = {label: sum(window.get(label, 0.0) for window in around) / len(around) for label in classes}
        rank = {label: position for position, label in enumerate(own)}
        labels.append(max(mean, key=lambda label: (mean[label], -rank.get(label, len(rank)))))
    return labels


@dataclass
class _Run:
    """Windows ``first`` to ``stop - 1`` carrying one label."""

    label: str
    first: int
    stop: int


def _runs(labels: Sequence[str]) -> list[_Run]:
    runs: list[_Run] = []
    for index, label in enumerate(labels):
        if runs and runs[-1].label == label:
            runs[-1].stop = index + 1
        else:
            runs.append(_Run(label, index, index + 1))
    return runs


def events(timeline: Timeline, smoothing: Smoothing = Smoothing()) -> tuple[Interval, ...]:
    """The timeline's events (label, start, end, mean score of that label over the event's windows), in the
    source's time. A window is placed at the middle of what it saw: it stands from halfway between its middle
    and the previous window's (the first from 0) to halfway to the next one's (the last to the end of the
    video, where the service's last interval ends)."""
    segments = timeline.segments
    if not segments:
        return ()
    # A window is placed at its middle: the frames it saw are centred there, where its label is most true.
    middles = [(segment.start_sec + segment.end_sec) / 2 for segment in segments]
    starts = [0.0, *((a + b) / 2 for a, b in zip(middles, middles[1:], strict=False))]
    ends = [*starts[1:], timeline.intervals[-1].end_sec]
    scores = [_scores(segment) for segment in segments]
    labels = smoothed_labels(segments, smoothing.windows(timeline.stride_sec))
    runs = _runs(labels)

    def seconds(run: _Run) -> float:
        return ends[run.stop - 1] - starts[run.first]

    def support(label: str, run: _Run) -> float:
        return sum(window.get(label, 0.0) for window in scores[run.first : run.stop])

    while len(runs) > 1:
        index = min(range(len(runs)), key=lambda i: seconds(runs[i]))
        short = runs[index]
        if seconds(short) >= smoothing.min_event_sec:
            break
        neighbours = [runs[i].label for i in (index - 1, index + 1) if 0 <= i < len(runs)]
        best = max(neighbours, key=lambda label: support(label, short))
        labels[short.first : short.stop] = [best] * (short.stop - short.first)
        runs = _runs(labels)
    return tuple(
        Interval(
            run.label,
            round(starts[run.first], 3),
            round(ends[run.stop - 1], 3),
            support(run.label, run) / (run.stop - run.first),
        )
        for run in runs
    )
