#!/usr/bin/env python3
"""Decoding a request's windows once: one open container decoded forward across the windows
(:func:`handler.decode.iter_clips`) against each window opened and sought to on its own (what a request cost
before; :func:`handler.decode.decode_clip` per window), on the benchmark workloads (10 s H.264 at 30 fps,
x264's default key frame interval of 250 frames).

For each workload and request shape it reports the frames decoded and the wall-clock decode time (median of
``--repeats``, one decoder thread: as a worker decodes when it prepares two requests at once), and checks that
both give the same frames. Shapes: ``1x1`` (one window at 0 s), ``10x1`` (PyTorchVideo's ten spread windows:
they overlap), ``timeline`` (windows side by side over the whole video).

It also times the other opens of the container a request makes besides decoding (reading the header for the
request's checks and estimate, the stream's timing for sampling, and, for MMAction2's and PaddleVideo's
recipes, counting packets): what sharing one open across them could save at most.

Writes ``--report`` (Markdown) and a JSON beside it.

Example:
    .venv/bin/python -m bench.decode_once --workloads 256p 720p 1080p --report docs/bench-decode-once.md
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path

import torch

from bench.workloads import WORKLOADS, describe, machine, make_workload, publish
from handler.container import probe, stream_timing, video_duration
from handler.decode import decode_clip, iter_clips
from handler.decode_indexed import count_packets
from handler.frames import DecodedClip
from handler.models import get_spec
from handler.sampling import view_starts
from handler.timeline import timeline_starts

CLIP = get_spec("slowfast_r50").clip


def shapes(duration: float) -> dict[str, list[tuple[float, float]]]:
    """The windows of each request shape on a video of ``duration`` seconds."""
    spread = view_starts(duration, CLIP.duration_sec, 0.0, 10)
    side_by_side = timeline_starts(duration, 0.0, CLIP.duration_sec)
    return {
        name: [(start, start + CLIP.duration_sec) for start in starts]
        for name, starts in (("1x1", [0.0]), ("10x1", spread), ("timeline", side_by_side))
    }


def decode_once(data: bytes, windows: list[tuple[float, float]]) -> list[DecodedClip]:
    """The windows decoded forward on one open container."""
    return list(iter_clips(data, windows, num_samples=CLIP.num_frames, threads=1))


def decode_apart(data: bytes, windows: list[tuple[float, float]]) -> list[DecodedClip]:
    """Each window opened and sought to on its own."""
    return [decode_clip(data, start_sec=s, end_sec=e, num_samples=CLIP.num_frames, threads=1) for s, e in windows]


def timed(decode: Callable[[], list[DecodedClip]], repeats: int) -> tuple[float, list[DecodedClip]]:
    """Median wall-clock seconds of ``decode`` and its last result."""
    times, clips = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        clips = decode()
        times.append(time.perf_counter() - started)
    return statistics.median(times), clips


def header_reads_ms(data: bytes, repeats: int) -> dict[str, float]:
    """Median milliseconds of each open a request makes besides decoding (20 calls per repeat)."""
    reads = {"header": probe, "timing": stream_timing, "packet count": count_packets}
    return {
        name: round(timed(lambda read=read: [read(data) for _ in range(20)], repeats)[0] / 20 * 1000, 2)
        for name, read in reads.items()
    }


def run(args: argparse.Namespace) -> dict:
    staging = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    rows, opens = [], []
    try:
        for name in args.workloads:
            data = make_workload(staging, name).read_bytes()
            opens.append({"workload": describe(name), "ms": header_reads_ms(data, args.repeats)})
            print(opens[-1], flush=True)
            for shape, windows in shapes(video_duration(data)).items():
                once_s, together = timed(partial(decode_once, data, windows), args.repeats)
                apart_s, alone = timed(partial(decode_apart, data, windows), args.repeats)
                same = all(
                    len(a.frames) == len(b.frames)
                    and all(torch.equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
                    for a, b in zip(together, alone, strict=True)
                )
                row = {
                    "workload": describe(name),
                    "shape": shape,
                    "windows": len(windows),
                    "frames_once": together[-1].decoded_frames,
                    "frames_apart": sum(clip.decoded_frames for clip in alone),
                    "ms_once": round(once_s * 1000, 1),
                    "ms_apart": round(apart_s * 1000, 1),
                    "same_frames": same,
                }
                rows.append(row)
                print(row, flush=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "machine": machine(),
        "versions": {n: metadata.version(n) for n in ("torch", "av")},
        "clip": f"slowfast_r50: {CLIP.num_frames} frames over {CLIP.duration_sec:.3f} s",
        "repeats": args.repeats,
        "results": rows,
        "opens": opens,
    }


def markdown(report: dict, command: str) -> str:
    lines = [
        f"| {r['workload']} | {r['shape']} | {r['windows']} | {r['frames_apart']} → {r['frames_once']} | "
        f"{r['ms_apart']:.0f} → {r['ms_once']:.0f} ({r['ms_apart'] / r['ms_once']:.2f}x) | "
        f"{'yes' if r['same_frames'] else '**no**'} |"
        for r in report["results"]
    ]
    single = {r["workload"]: r["ms_once"] for r in report["results"] if r["shape"] == "1x1"}
    opens = [
        f"| {o['workload']} | {' | '.join(f'{ms:.1f}' for ms in o['ms'].values())} | "
        f"{sum(o['ms'].values()):.1f} ({sum(o['ms'].values()) / single[o['workload']]:.0%} of a 1x1 decode) |"
        for o in report["opens"]
    ]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return f"""# Decoding a request's windows once

Command: `{command}`
Machine: {report["machine"]}; {versions}
Clip: {report["clip"]}; one decoder thread; times are medians of {report["repeats"]} runs. "apart" opens the
video and seeks to the key frame before each window on its own (every request before); "once" decodes the
windows forward on one open container, taking the frames a window shares with the previous one.

| workload | request | windows | frames decoded (apart → once) | decode ms (apart → once) | same frames |
|---|---|---|---|---|---|
{chr(10).join(lines)}

The other opens of the container a request makes (ms each, median): the header read for the request's checks and
memory estimate (every request), the stream's timing (every sampler), the packet count (MMAction2's and
PaddleVideo's recipes, which place clips by decord's frame count). Their sum is the most that sharing one open
with the decode could save per request.

| workload | header | timing | packet count | sum |
|---|---|---|---|---|
{chr(10).join(opens)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["256p", "720p", "1080p"], choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (the median is reported)")
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    report = run(args)
    text = markdown(report, "python -m bench.decode_once " + shlex.join(argv if argv is not None else sys.argv[1:]))
    publish(report, text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
