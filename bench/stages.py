#!/usr/bin/env python3
"""Stage micro-benchmark, without TorchServe: decode + preprocess per clip, ours against the hub tutorial's.

The tutorial side is the pipeline exactly as the PyTorchVideo hub tutorial writes it (``EncodedVideo.get_clip``,
then ``pytorchvideo.transforms``), built by ``tests/reference.py`` (the parity tests' copy; it never enters the
product). Ours is ``handler.pipeline.VideoClassifier.prepare`` minus the model: ``decode_clip`` and
``preprocess_frames``. Both read the same file (the tutorial from disk, as it does; ours from memory, as the
handler does) and produce the same model inputs (checked here, as the parity tests do).

Workloads are made with Debian's ffmpeg (``testsrc2``, H.264, 30 fps): 10 s at 720p (the default), 1080p and
256p. Writes ``--report`` (Markdown) and a JSON beside it.

Example:
    .venv/bin/python bench/stages.py --model slowfast_r50 --repeats 5 --report docs/bench-stages.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from handler.decode import decode_model_clip  # noqa: E402
from handler.models import REGISTRY, get_spec  # noqa: E402
from handler.transforms import model_inputs, preprocess_frames  # noqa: E402
from tests.reference import tutorial_inputs  # noqa: E402

WORKLOADS = {"720p": (1280, 720), "1080p": (1920, 1080), "256p": (456, 256)}


def make_workload(directory: Path, name: str, seconds: float = 10.0) -> Path:
    """A ``seconds``-long H.264 mp4 at 30 fps of ffmpeg's ``testsrc2`` pattern, in the ``name`` resolution."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("bench/stages.py needs ffmpeg (apt-get install ffmpeg; scripts/install.sh --dev installs it)")
    width, height = WORKLOADS[name]
    path = directory / f"{name}.mp4"
    source = f"testsrc2=size={width}x{height}:rate=30:duration={seconds}"
    command = [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", source, "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    subprocess.run([*command, str(path)], check=True)
    return path


def ours(data: bytes, spec, start_sec: float) -> list[torch.Tensor]:
    """The product's decode + preprocess of one clip: the model inputs, each ``(1, 3, T, S, S)`` float32."""
    clip = spec.clip
    inputs = model_inputs(preprocess_frames(decode_model_clip(data, clip, start_sec).frames, clip)[None], clip.alpha)
    return inputs if isinstance(inputs, list) else [inputs]


def timed(function, repeats: int) -> tuple[list[float], object]:
    """Wall-clock seconds of ``repeats`` calls (after one warm-up call) and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return times, result


def run(model: str, workloads: list[str], repeats: int, start_sec: float) -> dict:
    spec = get_spec(model)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name in workloads:
            path = make_workload(Path(directory), name)
            data = path.read_bytes()
            tutorial_times, tutorial_result = timed(partial(tutorial_inputs, path, spec, start_sec), repeats)
            our_times, our_result = timed(partial(ours, data, spec, start_sec), repeats)
            agree = max(float((a - b).abs().max()) for a, b in zip(tutorial_result, our_result, strict=True))
            tutorial_s, our_s = statistics.median(tutorial_times), statistics.median(our_times)
            rows.append(
                {
                    "workload": f"{name} H.264 30 fps, 10 s",
                    "tutorial_s": round(tutorial_s, 4),
                    "ours_s": round(our_s, 4),
                    "speedup": round(tutorial_s / our_s, 2),
                    "max_abs_difference": agree,
                }
            )
    return {
        "model": model,
        "start_sec": start_sec,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads",
        "versions": {name: metadata.version(name) for name in ("torch", "torchvision", "av", "pytorchvideo")},
        "results": rows,
    }


def markdown(report: dict, command: str) -> str:
    rows = "\n".join(
        f"| {r['workload']} | {r['tutorial_s'] * 1000:.0f} | {r['ours_s'] * 1000:.0f} | {r['speedup']:.1f}x "
        f"| {r['max_abs_difference']:.1e} |"
        for r in report["results"]
    )
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return f"""# Stage benchmark: decode + preprocess per clip ({report["model"]})

Command: `{command}`
Machine: {report["machine"]}; {versions}
Median of {report["repeats"]} runs after a warm-up; clip at start_sec {report["start_sec"]}.

| workload | tutorial (ms) | ours (ms) | speedup | max abs difference of the model inputs |
|---|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="slowfast_r50", choices=sorted(REGISTRY))
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--start-sec", type=float, default=0.0)
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    report = run(args.model, args.workloads, args.repeats, args.start_sec)
    command = "bench/stages.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(report, command)
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
        args.report.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
