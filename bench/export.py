#!/usr/bin/env python3
"""Exported networks against eager: forward time per batch size and output agreement, per model and format.

Each model (random-init weights: speed does not depend on them) is exported to TorchScript and AOTInductor by
``slowfast-serve export`` (which checks every export against eager at batch sizes 1, 2, 3 and the largest),
then eager and each export run the same random clips; the report gives the median forward time of ``--repeats``
after a warm-up, the speed-up over eager, the export's build time and size, and the agreement.

Example:
    .venv/bin/python -m bench.export --models slowfast_r50 x3d_m --batch-sizes 1 4 --report docs/bench-export.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch

from bench.stages import timed
from bench.workloads import machine, publish
from handler.export import SUFFIXES
from handler.labels import label_set
from handler.models import REGISTRY, get_spec, save_random_checkpoint
from handler.pipeline import InferenceOptions, VideoClassifier
from slowfast_serve.server.export import default_device, example_clips, export_checkpoint

FORMATS = ("eager", "torchscript", "aoti")
DEFAULT_MODELS = ["slowfast_r50", "x3d_m", "r2plus1d_r50"]


def measure(model: str, batch_sizes: list[int], repeats: int, device: torch.device, directory: Path) -> dict:
    """Forward milliseconds per format and batch size, and each export's report, for one model."""
    spec = get_spec(model)
    labels = label_set(spec.labels)
    checkpoint = save_random_checkpoint(spec, directory / f"{model}.pyth")
    largest = max(batch_sizes)
    row: dict = {"model": model, "forward_ms": {}, "exports": {}}
    for fmt in FORMATS:
        options = InferenceOptions(export=fmt, warmup=False, decode_workers=1, max_clips_per_forward=largest)
        path = checkpoint
        if fmt != "eager":
            path = directory / f"{model}{SUFFIXES[fmt]}"
            try:
                report = export_checkpoint(spec, checkpoint, labels, options, device, path)
            except Exception as e:  # a network that does not export is a result of this benchmark, not a crash
                row["exports"][fmt] = {"failed": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
                print(f"{model} {fmt}: export failed: {row['exports'][fmt]['failed']}", flush=True)
                continue
            row["exports"][fmt] = {k: v for k, v in asdict(report).items() if k != "path"}
            print(f"{model}: {report.summary()}", flush=True)
        classifier = VideoClassifier.load(spec, path, labels, device, options=options)
        times = {}
        for batch in batch_sizes:
            clips = example_clips(spec, batch)
            seconds, _ = timed(lambda: classifier.scores(clips), repeats)  # noqa: B023
            times[str(batch)] = round(seconds * 1000, 1)
        row["forward_ms"][fmt] = times
        print(f"{model} {fmt}: {times} ms", flush=True)
    return row


def markdown(report: dict, command: str) -> str:
    lines = []
    for row in report["models"]:
        eager = row["forward_ms"]["eager"]
        for fmt in FORMATS:
            export = row["exports"].get(fmt)
            if export and "failed" in export:
                lines.append(f"| `{row['model']}` | {fmt} | export failed: {export['failed']} |")
                continue
            times = row["forward_ms"][fmt]
            cells = " | ".join(f"{times[b]:.0f} ({eager[b] / times[b]:.2f}x)" for b in report["batch_sizes"])
            built = (
                f"{export['seconds']:.0f} s, {export['size_mb']:.0f} MB | {export['max_rel_diff']:.1e} | "
                f"{export['top1_agreement']:.0%}"
                if export
                else "- | - | -"
            )
            lines.append(f"| `{row['model']}` | {fmt} | {cells} | {built} |")
    heads = " | ".join(f"batch {b} ms (vs eager)" for b in report["batch_sizes"])
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return f"""# Exported networks against eager

Command: `{command}`
Machine: {report["machine"]}; device {report["device"]}; {versions}
Network forward only (clips already on the device), fp32, default inference options (batch norms folded;
channels_last_3d for eager and TorchScript, contiguous for AOTInductor: docs/export.md); random-init weights;
median of {report["repeats"]} after a warm-up. Relative difference: largest |export - eager| over the outputs
at the batch sizes slowfast-serve export checks (1, 2, 3 and the export's largest), over the largest |eager|.

| model | format | {heads} | export time, size | rel. diff | top-1 agreement |
|---|---|{"---|" * len(report["batch_sizes"])}---|---|---|
{chr(10).join(lines)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(REGISTRY))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", type=torch.device, default=default_device())
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        rows = [measure(name, args.batch_sizes, args.repeats, args.device, Path(tmp)) for name in args.models]
    report = {
        "machine": machine(),
        "device": str(args.device),
        "versions": {name: metadata.version(name) for name in ("torch", "pytorchvideo")},
        "repeats": args.repeats,
        "batch_sizes": [str(b) for b in args.batch_sizes],
        "models": rows,
    }
    command = "python -m bench.export " + " ".join(argv if argv is not None else sys.argv[1:])
    publish(report, markdown(report, command), args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
