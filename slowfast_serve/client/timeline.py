"""Classify a long video window by window (``mode=timeline``) and show the result: the service's labelled
intervals and the events smoothed from its windows (:mod:`slowfast_serve.client.smoothing`, ``--smooth``,
``--min-event-sec``), a PNG timeline plot (``--plot``), and a copy of the video with the current event's label
burned in (``--annotate``). A video of any length: sent in parts when the service's limits require
(:mod:`slowfast_serve.client.parts`; ``--output`` as it goes, resumable; ``--concurrency``, ``--retries``,
``--part-mb``).

The plot has one row per label that some event carries (a bar over each of its events) and, below, the top-1
score of every window. The annotated copy (:func:`~slowfast_serve.client.overlay.burn_in`: H.264 mp4 at the
source frame rate, upright) shows on each frame the label (and mean score) of the event it falls in. The server
answer, with the events added, is printed as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import av
import matplotlib
import requests
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console

from slowfast_serve.client.classify import render
from slowfast_serve.client.errors import ServiceError
from slowfast_serve.client.inference import Timeline
from slowfast_serve.client.options import (
    add_part_arguments,
    add_service_arguments,
    client_from_args,
    part_settings_from_args,
)
from slowfast_serve.client.overlay import burn_in
from slowfast_serve.client.smoothing import Smoothing, events

FAILURES = (ServiceError, OSError, requests.RequestException, av.FFmpegError)


def _events(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    """The events the client added, else the service's intervals."""
    return timeline.get("events", timeline["intervals"])


def plot(answer: dict[str, Any], path: Path, title: str) -> Path:
    """A PNG: labelled events as bars (one row per label), and each window's top-1 score below."""
    timeline = answer["timeline"]
    runs = _events(timeline)
    labels = list(dict.fromkeys(run["label"] for run in runs))
    # A bare Figure (not pyplot): no GUI backend is chosen, so this works on servers without a display.
    figure = Figure(figsize=(10, 1.2 + 0.45 * len(labels) + 1.8))
    bars, scores = figure.subplots(2, 1, sharex=True, height_ratios=[max(len(labels), 1), 2])
    colors = matplotlib.colormaps["tab10"]
    for run in runs:
        row = labels.index(run["label"])
        bars.broken_barh(
            [(run["start_sec"], run["end_sec"] - run["start_sec"])], (row - 0.4, 0.8), color=colors(row % 10)
        )
    bars.set_yticks(range(len(labels)), labels)
    bars.invert_yaxis()
    bars.set_title(title)
    starts = [segment["start_sec"] for segment in timeline["segments"]]
    tops = [segment["predictions"][0]["score"] for segment in timeline["segments"]]
    end = runs[-1]["end_sec"]
    scores.step([*starts, end], [*tops, tops[-1]], where="post", color="black")
    scores.set_ylim(0, 1)
    scores.set_ylabel("top-1 score")
    scores.set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def label_at(intervals: list[dict[str, Any]], seconds: float) -> dict[str, Any] | None:
    """The interval covering ``seconds`` (the last one past the end), or ``None`` before the first."""
    current = None
    for run in intervals:
        if run["start_sec"] <= seconds:
            current = run
    return current


def draw_label(image: Image.Image, text: str) -> Image.Image:
    """Draws ``text`` in white on a black band across the top of ``image`` (in place; returned)."""
    band = max(14, image.height // 12)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, band), fill=(0, 0, 0))
    draw.text((4, 2), text, fill="white", font=ImageFont.load_default(size=band - 6))
    return image


def annotate(source: Path, answer: dict[str, Any], path: Path) -> Path:
    """Re-encodes ``source`` with each frame's interval label drawn in a band at the top (H.264 mp4)."""
    intervals = _events(answer["timeline"])

    def draw(image: Image.Image, seconds: float) -> None:
        run = label_at(intervals, seconds)
        if run is not None:
            draw_label(image, f"{run['label']} ({run['mean_score']:.2f})  {seconds:.1f}s")

    return burn_in(source, path, draw)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path)
    parser.add_argument("--stride-sec", type=float, help="seconds between windows (server default: one clip)")
    parser.add_argument("--top-k", type=int, default=3, help="classes per window (default: %(default)s)")
    parser.add_argument("--plot", type=Path, help="write the timeline plot here (PNG)")
    parser.add_argument("--annotate", type=Path, help="write a copy of the video with the labels burned in (mp4)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON (with the events added)")
    default = Smoothing()
    parser.add_argument(
        "--smooth",
        type=_seconds,
        default=default.seconds,
        metavar="SECONDS",
        help="events: average the scores over this many seconds of windows (default: %(default)s; 0: none)",
    )
    parser.add_argument(
        "--min-event-sec",
        type=_seconds,
        default=default.min_event_sec,
        help="events: merge shorter ones into a neighbour (default: %(default)s; 0: none)",
    )
    add_part_arguments(parser, ".jsonl or .csv")
    add_service_arguments(parser, timeout=900)


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, not {text}")
    return value


def with_events(answer: dict[str, Any], smoothing: Smoothing) -> dict[str, Any]:
    """The answer with ``timeline.events`` (``label``, ``start_sec``, ``end_sec``, ``mean_score``) and the
    ``timeline.smoothing`` they were made with; the service's windows and intervals stay as they came."""
    found = events(Timeline.from_json(answer["timeline"]), smoothing)
    timeline = {**answer["timeline"], "smoothing": asdict(smoothing), "events": [asdict(e) for e in found]}
    return {**answer, "timeline": timeline}


def run(args: argparse.Namespace) -> int:
    console = Console()
    smoothing = Smoothing(args.smooth, args.min_event_sec)
    parts = part_settings_from_args(args)
    answer = (
        client_from_args(args)
        .timeline(
            args.video,
            stride_sec=args.stride_sec,
            top_k=args.top_k,
            parts=parts,
            output=args.output,
            progress=Console(stderr=True),
        )
        .body
    )
    answer = with_events(answer, smoothing)
    if args.json:
        print(json.dumps(answer))
    else:
        render(console, args.video, answer)
    if args.plot:
        console.print(f"plot: {plot(answer, args.plot, f'{args.video.name}: {args.model}')}")
    if args.annotate:
        console.print(f"annotated video: {annotate(args.video, answer, args.annotate)}")
    return 0
