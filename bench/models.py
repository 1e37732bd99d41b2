#!/usr/bin/env python3
"""Model forward time of every registry model on this machine's CPU, with the engine a plain archive serves there
(``export=auto``: the OpenVINO fp32 network where its archive-time check against eager passes, else eager) and
with eager: one clip of the model's own clip spec, batch 1, the product's default inference options (fp32, batch
norms folded, channels_last_3d for eager), random-init weights (speed does not depend on them). Median of
``--repeats`` after a warm-up forward. The models tables of docs/models.md quote the default engine and its time (a test
checks that they match the committed report).

Example:
    .venv/bin/python -m bench.models --repeats 3 --report docs/bench-models.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import torch

from bench.stages import timed
from bench.workloads import machine, publish
from handler.checkpoints import save_random_checkpoint
from handler.labels import label_set
from handler.models import REGISTRY, get_spec
from handler.pipeline import InferenceOptions, VideoClassifier
from slowfast_serve.server.archive import cpu_engine

OPTIONS = InferenceOptions(warmup=False)


def forward_ms(classifier: VideoClassifier, repeats: int) -> float:
    """Median milliseconds of one clip's forward (softmax included) after a warm-up."""
    clip = classifier.spec.clip
    clips = torch.randn(1, 3, clip.num_frames, clip.crop_size, clip.crop_size)
    seconds, _ = timed(lambda: classifier.probabilities(clips), repeats)
    return round(seconds * 1000, 1)


def measure(name: str, repeats: int, directory: Path) -> dict:
    """The default CPU engine of ``name`` (built and checked as ``make archive`` does), its forward time, and
    eager's."""
    spec = get_spec(name)
    labels = label_set(spec.labels)
    checkpoint = save_random_checkpoint(spec, directory / f"{name}.pyth")
    cpu = torch.device("cpu")
    engine, _ = cpu_engine(spec, checkpoint, labels, OPTIONS, directory / f"{name}.ov.zip")
    served = VideoClassifier.load(spec, checkpoint, labels, cpu, options=OPTIONS, openvino=engine)
    eager = VideoClassifier.load(spec, checkpoint, labels, cpu, options=replace(OPTIONS, export="eager"))
    row = {
        "engine": served.engine["name"],
        "forward_ms": forward_ms(served, repeats),
        "eager_ms": forward_ms(eager, repeats),
    }
    if engine is not None and engine.file is None:
        row["why_eager"] = engine.unavailable
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(REGISTRY), choices=sorted(REGISTRY))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        rows = {}
        for name in args.models:
            rows[name] = measure(name, args.repeats, Path(tmp))
            print(f"{name}: {rows[name]}", flush=True)
    report = {
        "machine": machine(),
        "versions": {name: metadata.version(name) for name in ("torch", "pytorchvideo", "openvino")},
        "inference_options": asdict(OPTIONS),
        "repeats": args.repeats,
        "engine": {name: row["engine"] for name, row in rows.items()},
        "forward_ms": {name: row["forward_ms"] for name, row in rows.items()},
        "eager_ms": {name: row["eager_ms"] for name, row in rows.items()},
        "why_eager": {name: row["why_eager"] for name, row in rows.items() if "why_eager" in row},
    }
    lines = "\n".join(
        f"| `{name}` | {row['engine']} | {row['forward_ms']:.0f} | {row['eager_ms']:.0f} "
        f"| {row['eager_ms'] / row['forward_ms']:.2f}x |"
        for name, row in rows.items()
    )
    fallbacks = "".join(f"\n- `{name}` is served eager: {why}" for name, why in report["why_eager"].items())
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    text = f"""# Model forward time on the CPU (batch 1)

Command: `python -m bench.models {" ".join(argv if argv is not None else sys.argv[1:])}`
Machine: {report["machine"]}; {versions}
One clip of each model's clip spec, batch 1, random-init weights; median of {args.repeats} after a warm-up forward.
"default CPU engine" is what an archive built with no `EXPORT` serves on a CPU (`export=auto`): the OpenVINO fp32
network, converted and checked against eager as `make archive` does, or eager where that check fails (said
below). Eager: default inference options (fp32, batch norms folded, channels_last_3d).

| model | default CPU engine | forward (ms) | eager forward (ms) | eager / default |
|---|---|---|---|---|
{lines}
{fallbacks}
"""
    publish(report, text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
