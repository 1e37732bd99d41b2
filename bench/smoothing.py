#!/usr/bin/env python3
"""Timeline events against known change points: how much smoothing, and how short an event may be.

Edited videos of ``motion_demo``'s synthetic motions (:mod:`slowfast_serve.evaluation.chapters`: one motion per
chapter, each chapter two clips of different looks, so a scene cut inside a chapter must not split it) are
classified window by window by the served pipeline itself (``VideoClassifier`` in process, the code a TorchServe
worker runs; ``top_k`` 3 as ``slowfast-serve timeline`` asks), then turned into events with every setting of a
grid (:func:`slowfast_serve.client.smoothing.events`). The report gives, per setting and stride, the events'
count against the chapters', the share of time labelled right and the distance from each true change point to
the nearest event boundary, averaged over the videos. The client's defaults are chosen from it.

Example:
    .venv/bin/python -m bench.smoothing --report docs/bench-smoothing.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch

from bench import REPO
from bench.workloads import machine, publish
from handler.labels import MOTION_CLASSES, label_set
from handler.models import get_spec
from handler.pipeline import VideoClassifier
from handler.request import VideoRequest
from slowfast_serve.client.inference import Timeline
from slowfast_serve.client.smoothing import RAW, Smoothing, events
from slowfast_serve.evaluation.chapters import Agreement, compare, edited_video

MODEL = "motion_demo"
SECONDS = (0.0, 1.0, 2.5, 4.0)
MIN_EVENT_SEC = (0.0, 1.0, 2.0, 3.0)


def chapters_of(seed: int, count: int) -> list[str]:
    """``count`` motions in an order drawn from ``seed``, no two neighbours alike."""
    order = [MOTION_CLASSES[(seed * 3 + 5 * i) % len(MOTION_CLASSES)] for i in range(count)]
    return [m for i, m in enumerate(order) if i == 0 or m != order[i - 1]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="edited videos (default: %(default)s)")
    parser.add_argument("--chapters", type=int, default=6, help="chapters per video (default: %(default)s)")
    parser.add_argument("--strides", type=float, nargs="+", default=[0.5, 1.0], help="timeline strides (s)")
    parser.add_argument("--report", type=Path, help="write the Markdown report here (and .json beside it)")
    args = parser.parse_args(argv)

    spec = get_spec(MODEL)
    classifier = VideoClassifier.load(spec, REPO / spec.bundled_checkpoint, label_set(spec.labels), torch.device("cpu"))
    settings = [Smoothing(s, m) for s in SECONDS for m in MIN_EVENT_SEC]
    results: dict[str, dict[str, list[Agreement]]] = {}
    started = time.monotonic()
    for seed in range(args.videos):
        data, chapters = edited_video(chapters_of(seed, args.chapters), seed=1000 + seed)
        for stride in args.strides:
            request = VideoRequest(video=data, start_sec=0.0, top_k=3, mode="timeline", stride_sec=stride)
            (answer,) = classifier.classify([request])
            timeline = Timeline.from_json(answer["timeline"])
            for setting in settings:
                found = [(e.label, e.start_sec, e.end_sec) for e in events(timeline, setting)]
                key = f"{setting.seconds:g}/{setting.min_event_sec:g}"
                results.setdefault(f"{stride:g}", {}).setdefault(key, []).append(compare(found, chapters))
            print(f"video {seed + 1}/{args.videos}, stride {stride:g} s done", file=sys.stderr, flush=True)
    report = {
        "machine": machine(),
        "videos": args.videos,
        "chapters": args.chapters,
        "default": asdict(Smoothing()),
        "raw": asdict(RAW),
        "seconds": round(time.monotonic() - started, 1),
        "results": {
            stride: {key: [asdict(a) for a in found] for key, found in by_setting.items()}
            for stride, by_setting in results.items()
        },
    }
    publish(report, markdown(report, args), args.report)
    return 0


def _mean(found: list[dict], field: str) -> float:
    return sum(a[field] for a in found) / len(found)


def markdown(report: dict, args: argparse.Namespace) -> str:
    command = "python -m bench.smoothing " + shlex.join(sys.argv[1:])
    default = f"{report['default']['seconds']:g}/{report['default']['min_event_sec']:g}"
    lines = [
        "# Timeline events against known change points",
        "",
        f"`{command}` on {report['machine']}, torch {metadata.version('torch')}, av {metadata.version('av')}, "
        f"{report['seconds']:.0f} s. {report['videos']} edited videos of "
        f"`{MODEL}`'s synthetic motions, {report['chapters']} chapters each (two clips of different looks per "
        "chapter, 320x240, 25 fps, 6 to 8 s per chapter), classified window by window with `top_k` 3, then "
        "turned into events by `slowfast_serve.client.smoothing.events` with each setting: the span of the "
        "moving average of the scores (s) and the shortest event kept (s). `0/0` is the raw windows (each "
        f"window's top class); `{default}` is the client's default.",
        "",
        "Columns: events found (the chapters' count is the ideal), the share of the video's time labelled with "
        "the true chapter, the mean distance from each true change point to the nearest event boundary; means "
        "over the videos.",
    ]
    for stride, by_setting in report["results"].items():
        lines += [
            "",
            f"## Windows every {stride} s",
            "",
            "| smoothing (s) / shortest event (s) | events (ideal " + str(report["chapters"]) + ") | time right "
            "| change point to nearest boundary (s) |",
            "|---|---|---|---|",
        ]
        for key, found in by_setting.items():
            name = f"**{key}** (default)" if key == default else ("0/0 (raw)" if key == "0/0" else key)
            lines.append(
                f"| {name} | {_mean(found, 'events'):.1f} | {100 * _mean(found, 'time_accuracy'):.1f}% "
                f"| {_mean(found, 'boundary_error_sec'):.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
