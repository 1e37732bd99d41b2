#!/usr/bin/env python3
"""Frame-to-answer latency of ``slowfast-serve stream`` on a live RTSP camera stand-in.

Starts GStreamer's RTSP server on loopback (tests/rtsp_server.py, run by Debian's python3: a live 320x240,
25 fps H.264 test pattern, a key frame a second) and a real TorchServe serving ``motion_demo`` on free ports,
then follows the stream with the client for ``--seconds`` of stream time, asking every ``--every`` seconds.
Each answer's ``latency_ms`` runs from the moment the window's last frame came out of the decoder (frames are
read by a thread of their own, as they arrive) to the answer: the client's encoding of the window, the upload,
TorchServe's queue and batch delay, the worker's decode, preprocessing and forward.

Example:
    .venv/bin/python -m bench.live_latency --report docs/bench-live.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from bench import REPO
from bench.workloads import machine, publish
from handler.models import get_spec
from slowfast_serve.server.archive import ServingConfig, build_archive
from slowfast_serve.server.torchserve import TorchServe, free_port, free_port_overrides

CLI = str(Path(sys.executable).with_name("slowfast-serve"))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="stream time followed (default: %(default)s)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between requests (default: %(default)s)")
    parser.add_argument("--batch-delay-ms", type=int, default=100, help="the archive's max batch delay")
    parser.add_argument("--report", type=Path, help="write the Markdown report here (and .json beside it)")
    args = parser.parse_args(argv)

    spec = get_spec("motion_demo")
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        root = Path(tmp)
        serving = ServingConfig(max_batch_delay_ms=args.batch_delay_ms)
        mar = build_archive("motion_demo", REPO / spec.bundled_checkpoint, model_store=root / "store", serving=serving)
        server = TorchServe(root / "ts", mar.parent)
        server.start({"motion_demo": mar.name}, overrides=free_port_overrides())
        port = free_port()
        camera = subprocess.Popen(
            ["/usr/bin/python3", str(REPO / "tests" / "rtsp_server.py"), str(port)], stdout=subprocess.PIPE, text=True
        )
        try:
            server.wait_ready("motion_demo")
            assert camera.stdout.readline().strip() == "ready"
            command = [CLI, "stream", f"rtsp://127.0.0.1:{port}/live", "--model", "motion_demo", "--json"]
            command += ["--every", str(args.every), "--max-seconds", str(args.seconds)]
            command += ["--url", server.inference_url, "--key-file", str(server.key_file)]
            started = time.monotonic()
            result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=args.seconds * 5 + 120)
            wall = time.monotonic() - started
        finally:
            camera.kill()
            server.stop()
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    latency = [a["latency_ms"] for a in answers]
    stages = {name: statistics.median(a["timing_ms"][name] for a in answers) for name in answers[0]["timing_ms"]}
    versions = {name: metadata.version(name) for name in ("torch", "av", "torchserve", "openvino")}
    report = {
        "machine": machine(),
        "versions": versions,
        "answers": len(answers),
        "wall_sec": round(wall, 1),
        "latency_ms": {
            "median": statistics.median(latency),
            "p90": _quantile(latency, 0.9),
            "max": max(latency),
            "min": min(latency),
        },
        "server_median_ms": stages,
        "batch_delay_ms": args.batch_delay_ms,
    }
    command = "python -m bench.live_latency " + shlex.join(sys.argv[1:] if argv is None else argv)
    lat = report["latency_ms"]
    text = "\n".join(
        [
            "# Live stream: frame-to-answer latency",
            "",
            f"`{command}` on {report['machine']}; "
            + ", ".join(f"{name} {version}" for name, version in versions.items())
            + ". `slowfast-serve stream` followed GStreamer's RTSP server on "
            "loopback (tests/rtsp_server.py: live 320x240 H.264 at 25 fps) for "
            f"{args.seconds:g} s of stream time, asking `motion_demo` (a real TorchServe, max batch delay "
            f"{args.batch_delay_ms} ms) every {args.every:g} s: {len(answers)} answers.",
            "",
            "| latency (ms), from the window's last frame leaving the decoder to its answer | median | p90 | max |",
            "|---|---|---|---|",
            f"| all answers | {lat['median']:.0f} | {lat['p90']:.0f} | {lat['max']:.0f} |",
            "",
            "Of which, inside the worker (medians, ms): "
            + ", ".join(f"{name} {ms:.0f}" for name, ms in stages.items())
            + f". The rest is the client's encoding of the window (H.264, 256p), the upload and TorchServe's queue "
            f"and batch delay (up to {args.batch_delay_ms} ms when a request arrives alone).",
        ]
    )
    publish(report, text + "\n", args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
