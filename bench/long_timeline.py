#!/usr/bin/env python3
"""A timeline of an hour of video through the service's default limits, sent in parts by the client, against
one request to the same model served with limits that take it whole.

Makes a recording of ``--minutes`` (slowfast_serve.load.videos.long_recording: 128x96 H.264, 25 fps), starts a
real TorchServe serving ``motion_demo`` twice (the default limits; and ``motion_whole``, limits high enough for
one request), runs ``slowfast-serve timeline VIDEO --json --output timeline.csv`` against the first and times
it (with the client process's peak memory), then sends the whole file to the second and compares the two
timelines window by window.

Example:
    .venv/bin/python -m bench.long_timeline --minutes 60 --report docs/bench-long-timeline.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench import REPO
from bench.workloads import machine, publish
from handler.decode_limits import DecodeLimits
from handler.models import get_spec
from slowfast_serve.client import Client
from slowfast_serve.client.cutting import index_source
from slowfast_serve.load.videos import long_recording
from slowfast_serve.server.archive import ServingConfig, build_archive
from slowfast_serve.server.torchserve import TorchServe, free_port_overrides

CLI = str(Path(sys.executable).with_name("slowfast-serve"))
UNLIMITED = DecodeLimits(max_timeline_windows=10**5, max_decoded_frames=10**8, max_decode_seconds=3600)


def run_watching_memory(command: list[str]) -> tuple[str, float]:
    """Runs ``command``; returns its stdout and its largest resident memory (MB, sampled every 50 ms)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        watched, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed ({process.returncode}): {err.read()[-2000:]}")
        return out.read(), peak / 2**20


def demo_and_whole(store: Path) -> tuple[Path, Path]:
    """Two archives of ``motion_demo`` in ``store``: ``motion_demo.mar`` with the default limits, and
    ``motion_whole.mar``, the same model and weights with limits that take an hour of video in one request."""
    checkpoint = REPO / get_spec("motion_demo").bundled_checkpoint
    demo = build_archive("motion_demo", checkpoint, model_store=store)
    serving = ServingConfig(response_timeout_s=3600)
    whole = build_archive(
        "motion_demo", checkpoint, name="motion_whole", model_store=store, limits=UNLIMITED, serving=serving
    )
    return demo, whole


def compare(parts: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
    """How the two timelines differ: windows with other times or classes, the largest score difference, and
    whether the merged intervals are the same."""
    ours, theirs = parts["segments"], whole["segments"]
    other_windows = sum(
        (a["start_sec"], a["end_sec"], [p["class_id"] for p in a["predictions"]])
        != (b["start_sec"], b["end_sec"], [p["class_id"] for p in b["predictions"]])
        for a, b in zip(ours, theirs, strict=False)
    )
    score_diff = max(
        abs(p["score"] - q["score"])
        for a, b in zip(ours, theirs, strict=False)
        for p, q in zip(a["predictions"], b["predictions"], strict=False)
    )
    runs = [[(i["label"], i["start_sec"], i["end_sec"]) for i in t["intervals"]] for t in (parts, whole)]
    return {
        "windows": [len(ours), len(theirs)],
        "windows_that_differ": other_windows,
        "max_score_difference": score_diff,
        "same_intervals": runs[0] == runs[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="length of the recording (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2, help="parts in flight (default: %(default)s)")
    parser.add_argument("--report", type=Path, help="write the Markdown report here (and .json beside it)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        root = Path(tmp)
        video = long_recording(root / "recording.mp4", args.minutes)
        keys = len(index_source(video).key_pts)
        store = root / "store"
        demo, whole_mar = demo_and_whole(store)
        server = TorchServe(root / "ts", store)
        server.start({"motion_demo": demo.name, "motion_whole": whole_mar.name}, overrides=free_port_overrides())
        try:
            server.wait_ready("motion_demo")
            server.wait_ready("motion_whole")
            command = [CLI, "timeline", str(video), "--model", "motion_demo", "--json", "--output", str(root / "t.csv")]
            command += ["--concurrency", str(args.concurrency)]
            command += ["--url", server.inference_url, "--key-file", str(server.key_file)]
            started = time.monotonic()
            stdout, client_mb = run_watching_memory(command)
            parts_sec = time.monotonic() - started
            answer = json.loads(stdout)
            with Client.from_key_file(server.inference_url, server.key_file, model="motion_whole", timeout=3600) as c:
                started = time.monotonic()
                status, whole = c.send(video, mode="timeline", top_k=3)
                whole_sec = time.monotonic() - started
            if status != 200:
                raise RuntimeError(f"the whole-video request failed: {status} {whole}")
        finally:
            server.stop()
        video_mb = video.stat().st_size / 2**20
    versions = {name: metadata.version(name) for name in ("torch", "av", "torchserve", "openvino")}
    report = {
        "machine": machine(),
        "versions": versions,
        "minutes": answer["video"]["duration_sec"] / 60,
        "video_mb": video_mb,
        "key_frames": keys,
        "parts": answer["parts"],
        "parts_sec": round(parts_sec, 1),
        "whole_sec": round(whole_sec, 1),
        "client_peak_mb": round(client_mb),
        "comparison": compare(answer["timeline"], whole["timeline"]),
    }
    same = report["comparison"]
    command_line = "python -m bench.long_timeline " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(
        [
            "# An hour of video through the default limits, in parts",
            "",
            f"`{command_line}` on {report['machine']}; "
            + ", ".join(f"{name} {version}" for name, version in versions.items())
            + f". A {report['minutes']:.1f}-minute recording ({video_mb:.1f} MB, 128x96 H.264, 25 fps, {keys} key "
            f"frames: one every {report['minutes'] * 60 / keys:.1f} s on average) of `motion_demo`'s synthetic "
            "motions; a real TorchServe serving `motion_demo` with "
            "the default limits (`max_timeline_windows` 120, `max_decoded_frames` 3000, `max_decode_seconds` 20), "
            "and the same model and weights as `motion_whole` with limits that take the whole file in one request.",
            "",
            "| | windows | requests | wall time (s) |",
            "|---|---|---|---|",
            f"| `slowfast-serve timeline --output t.csv --concurrency {args.concurrency}` (parts) | "
            f"{same['windows'][0]} | {answer['parts']['count']} (resized {answer['parts']['resized']} times, "
            f"{answer['parts']['retries']} retries) | {parts_sec:.1f} |",
            f"| one request to `motion_whole` | {same['windows'][1]} | 1 | {whole_sec:.1f} |",
            "",
            f"Windows whose times or classes differ: {same['windows_that_differ']}; largest score difference: "
            f"{same['max_score_difference']:.2g}; merged intervals the same: "
            f"{'yes' if same['same_intervals'] else 'no'}. "
            f"The client's peak memory (resident): {client_mb:.0f} MB, for a {video_mb:.0f} MB file (its index and "
            f"the {args.concurrency} parts in flight, never the whole file).",
        ]
    )
    publish(report, text + "\n", args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
