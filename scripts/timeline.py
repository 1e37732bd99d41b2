#!/usr/bin/env python3
"""Classify a long video window by window (``mode=timeline``) and show the result: a table of labelled
intervals, a PNG timeline plot (``--plot``), and a copy of the video with the current label burned in
(``--annotate``).

The plot has one row per label that some interval carries (a bar over each of its intervals) and, below, the
top-1 score of every window. The annotated copy is re-encoded as H.264 mp4 at the source frame rate; each
frame shows the label (and mean score) of the interval it falls in. The server answer is printed as JSON with
``--json``.

Examples:
    scripts/timeline.py match.mp4 --stride-sec 1 --plot match.png --annotate match-labelled.mp4
    scripts/timeline.py match.mp4 --model motion_demo --json
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import matplotlib
import numpy as np
import requests
from classify import DEFAULT_URL, classify, find_key_file, render
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from torchserve_ctl import ServeError, read_token

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def request_timeline(
    video: Path, *, url: str, model: str, token: str | None, stride_sec: float | None, top_k: int, timeout: float
) -> dict[str, Any]:
    """The server's ``mode=timeline`` answer for ``video``.

    Raises:
        RuntimeError: the server answered with an error (its status, type and message).
    """
    options = {"mode": "timeline", "top_k": top_k, "stride_sec": stride_sec}
    response = classify(video, url=url, model=model, token=token, options=options, timeout=timeout)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if not response.ok:
        raise RuntimeError(f"HTTP {response.status_code} {body.get('type', '')}: {body.get('message', response.text)}")
    return body


def plot(answer: dict[str, Any], path: Path, title: str) -> Path:
    """A PNG: labelled intervals as bars (one row per label), and each window's top-1 score below."""
    timeline = answer["timeline"]
    labels = list(dict.fromkeys(run["label"] for run in timeline["intervals"]))
    figure, (bars, scores) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 1.2 + 0.45 * len(labels) + 1.8), height_ratios=[max(len(labels), 1), 2]
    )
    colors = plt.get_cmap("tab10")
    for run in timeline["intervals"]:
        row = labels.index(run["label"])
        bars.broken_barh(
            [(run["start_sec"], run["end_sec"] - run["start_sec"])], (row - 0.4, 0.8), color=colors(row % 10)
        )
    bars.set_yticks(range(len(labels)), labels)
    bars.invert_yaxis()
    bars.set_title(title)
    starts = [segment["start_sec"] for segment in timeline["segments"]]
    tops = [segment["predictions"][0]["score"] for segment in timeline["segments"]]
    end = timeline["intervals"][-1]["end_sec"]
    scores.step([*starts, end], [*tops, tops[-1]], where="post", color="black")
    scores.set_ylim(0, 1)
    scores.set_ylabel("top-1 score")
    scores.set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
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
    intervals = answer["timeline"]["intervals"]
    with av.open(str(source)) as reader, av.open(str(path), "w") as writer:
        stream = reader.streams.video[0]
        rate = stream.average_rate or Fraction(30)
        out = writer.add_stream("libx264", rate=rate)
        out.pix_fmt = "yuv420p"
        start = stream.start_time or 0
        for index, frame in enumerate(reader.decode(stream)):
            image = frame.to_image()
            if index == 0:
                out.width, out.height = image.width - image.width % 2, image.height - image.height % 2
            seconds = float((frame.pts - start) * stream.time_base) if frame.pts is not None else index / float(rate)
            run = label_at(intervals, seconds)
            if run is not None:
                draw_label(image, f"{run['label']} ({run['mean_score']:.2f})  {seconds:.1f}s")
            picture = np.asarray(image)[: out.height, : out.width]
            for packet in out.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")):
                writer.mux(packet)
        for packet in out.encode():
            writer.mux(packet)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path)
    parser.add_argument("--model", default="slowfast_r50", help="served model name (default: %(default)s)")
    parser.add_argument("--stride-sec", type=float, help="seconds between windows (server default: one clip)")
    parser.add_argument("--top-k", type=int, default=3, help="classes per window (default: %(default)s)")
    parser.add_argument("--plot", type=Path, help="write the timeline plot here (PNG)")
    parser.add_argument("--annotate", type=Path, help="write a copy of the video with the labels burned in (mp4)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON")
    parser.add_argument("--url", default=DEFAULT_URL, help="TorchServe inference address (default: %(default)s)")
    parser.add_argument("--key-file", type=Path, help="TorchServe key_file.json (default: as classify.py)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the request (default: %(default)s)")
    args = parser.parse_args(argv)

    console, errors = Console(), Console(stderr=True)
    try:
        key_file = find_key_file(args.key_file)
        token = read_token(key_file) if key_file else None
        answer = request_timeline(
            args.video,
            url=args.url,
            model=args.model,
            token=token,
            stride_sec=args.stride_sec,
            top_k=args.top_k,
            timeout=args.timeout,
        )
    except (ServeError, RuntimeError, OSError, requests.RequestException) as e:
        errors.print(f"error: {e}")
        return 1
    if args.json:
        print(json.dumps(answer))
    else:
        render(console, args.video, answer)
    if args.plot:
        console.print(f"plot: {plot(answer, args.plot, f'{args.video.name}: {args.model}')}")
    if args.annotate:
        console.print(f"annotated video: {annotate(args.video, answer, args.annotate)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
