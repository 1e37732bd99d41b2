#!/usr/bin/env python3
"""Model forward time of every registry model on this machine's CPU: one clip of the model's own clip spec,
batch 1, the product's default inference options (fp32, batch norms folded, channels_last_3d), random-init
weights (speed does not depend on them). Median of ``--repeats`` after a warm-up forward. The README's models
table quotes these numbers (a test checks that it matches the committed report).

Example:
    .venv/bin/python -m bench.models --repeats 3 --report docs/bench-models.md
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch

from bench.stages import classifier_for, timed
from bench.workloads import machine, publish
from handler.models import REGISTRY, get_spec
from handler.pipeline import InferenceOptions


def forward_ms(name: str, repeats: int) -> float:
    clip = get_spec(name).clip
    classifier = classifier_for(name, InferenceOptions(warmup=False))
    clips = torch.randn(1, 3, clip.num_frames, clip.crop_size, clip.crop_size)
    seconds, _ = timed(lambda: classifier.probabilities(clips), repeats)
    return round(seconds * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(REGISTRY), choices=sorted(REGISTRY))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    times = {}
    for name in args.models:
        times[name] = forward_ms(name, args.repeats)
        print(f"{name}: {times[name]:.0f} ms", flush=True)
    report = {
        "machine": machine(),
        "versions": {name: metadata.version(name) for name in ("torch", "pytorchvideo")},
        "inference_options": asdict(InferenceOptions(warmup=False)),
        "repeats": args.repeats,
        "forward_ms": times,
    }
    rows = "\n".join(f"| `{name}` | {ms:.0f} |" for name, ms in times.items())
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    text = f"""# Model forward time on the CPU (batch 1)

Command: `python -m bench.models {" ".join(argv if argv is not None else sys.argv[1:])}`
Machine: {report["machine"]}; {versions}
One clip of each model's clip spec, default inference options (fp32, batch norms folded, channels_last_3d),
random-init weights; median of {args.repeats} after a warm-up forward.

| model | forward (ms) |
|---|---|
{rows}
"""
    publish(report, text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
