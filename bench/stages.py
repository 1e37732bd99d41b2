#!/usr/bin/env python3
"""Stage micro-benchmark, without TorchServe: decode + preprocess per clip against the hub tutorial's, and the
model forward per batch size.

The tutorial side is the pipeline exactly as the PyTorchVideo hub tutorial writes it (``EncodedVideo.get_clip``,
then ``pytorchvideo.transforms``), built by ``tests/reference.py`` (the parity tests' copy; it never enters the
product), one clip at a time as it is written. Ours is the product's ``VideoClassifier.prepare`` (decode,
gather, interpolate, normalise), measured two ways:

- latency: one clip at a time (every core decodes the one clip: FFmpeg frame threads);
- throughput: ``decode_workers`` clips at once through ``VideoClassifier.prepare_all``, as the handler prepares
  a batch; per clip = wall time / clips.

Both read the same file (the tutorial from disk, as it does; ours from memory, as the handler does) and the
model inputs are compared (max |difference|). The forward is timed per batch size for the precision and memory
format options (random-init weights: speed only).

Example:
    .venv/bin/python -m bench.stages --model slowfast_r50 --repeats 5 --report docs/bench-stages.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch

from bench import REPO
from bench.workloads import WORKLOADS, describe, machine, make_workload, publish
from handler.labels import label_set
from handler.models import REGISTRY, get_spec
from handler.networks import build_model
from handler.pipeline import InferenceOptions, VideoClassifier
from handler.request import VideoRequest
from handler.transforms import model_inputs
from slowfast_serve.load.soak import soak_videos
from tests.reference import tutorial_inputs

# Forward variants: the plain module as the tutorial runs it, the product default, reduced precision.
FORWARD_VARIANTS = {
    "fp32, as the tutorial runs it": InferenceOptions(channels_last=False, fold_batchnorm=False, warmup=False),
    "fp32, batch norms folded, channels_last (default)": InferenceOptions(warmup=False),
    "bf16 autocast, batch norms folded, channels_last": InferenceOptions(precision="bf16", warmup=False),
}


def timed(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall-clock seconds of ``repeats`` calls (after one warm-up call) and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def classifier_for(model: str, options: InferenceOptions) -> VideoClassifier:
    """The product's classifier around a random-init network (speed only: its answers mean nothing)."""
    spec = get_spec(model)
    return VideoClassifier(
        spec, build_model(spec), label_set(spec.labels), "random-init", torch.device("cpu"), options=options
    )


def prepare_rows(model: str, workloads: list[str], repeats: int, start_sec: float) -> list[dict]:
    spec = get_spec(model)
    classifier = classifier_for(model, InferenceOptions(warmup=False))
    parallel = classifier.decode_workers
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name in workloads:
            path = make_workload(Path(directory), name)
            request = VideoRequest(video=path.read_bytes(), top_k=5, start_sec=start_sec)
            tutorial_s, theirs = timed(lambda: tutorial_inputs(path, spec, start_sec), repeats)  # noqa: B023
            latency_s, prepared = timed(lambda: classifier.prepare(request), repeats)  # noqa: B023
            batch_s, _ = timed(lambda: classifier.prepare_all([request] * parallel), repeats)  # noqa: B023
            inputs = model_inputs(prepared.clips, spec.clip)
            ours = inputs if isinstance(inputs, list) else [inputs]
            rows.append(
                {
                    "workload": describe(name),
                    "tutorial_ms": round(tutorial_s * 1000, 1),
                    "ours_latency_ms": round(latency_s * 1000, 1),
                    "ours_decode_ms": round(prepared.decode_ms, 1),
                    "ours_preprocess_ms": round(prepared.preprocess_ms, 1),
                    "ours_per_clip_in_batch_ms": round(batch_s / parallel * 1000, 1),
                    "clips_in_batch": parallel,
                    "speedup_latency": round(tutorial_s / latency_s, 2),
                    "speedup_throughput": round(tutorial_s * parallel / batch_s, 2),
                    "max_abs_difference": max(float((a - b).abs().max()) for a, b in zip(theirs, ours, strict=True)),
                }
            )
    return rows


def forward_rows(model: str, batch_sizes: list[int], repeats: int) -> list[dict]:
    clip = get_spec(model).clip
    rows = []
    for variant, options in FORWARD_VARIANTS.items():
        classifier = classifier_for(model, options)
        for batch_size in batch_sizes:
            clips = torch.randn(batch_size, 3, clip.num_frames, clip.crop_size, clip.crop_size)
            seconds, _ = timed(lambda: classifier.probabilities(clips), repeats)  # noqa: B023
            rows.append(
                {
                    "variant": variant,
                    "batch_size": batch_size,
                    "forward_ms": round(seconds * 1000, 1),
                    "per_clip_ms": round(seconds / batch_size * 1000, 1),
                    "clips_per_s": round(batch_size / seconds, 2),
                }
            )
    return rows


def agreement(clips: int, precision: str = "bf16") -> dict:
    """How far ``precision`` autocast moves the trained motion_demo model's answers from fp32 on ``clips`` new
    synthetic videos (every class, codec and container of slowfast-serve motion-data)."""
    spec = get_spec("motion_demo")
    labels = label_set(spec.labels)
    checkpoint = REPO / spec.bundled_checkpoint
    cpu = torch.device("cpu")
    load = lambda options: VideoClassifier.load(spec, checkpoint, labels, cpu, options=options)  # noqa: E731
    exact, reduced = load(InferenceOptions(warmup=False)), load(InferenceOptions(precision=precision, warmup=False))
    videos = soak_videos(clips, seed=31337)  # every class, codec and container of the generator
    same, gaps = 0, []
    for video in videos:
        clip = exact.prepare(VideoRequest(video=video, top_k=1, start_sec=0.0)).clips
        a, b = exact.probabilities(clip)[0], reduced.probabilities(clip)[0]
        same += int(a.argmax() == b.argmax())
        gaps.append(float((a - b).abs().max()))
    return {
        "model": "motion_demo (trained)",
        "precision": precision,
        "clips": clips,
        "top1_agreement": same / clips,
        "max_abs_probability_difference": max(gaps),
        "mean_max_abs_probability_difference": statistics.mean(gaps),
    }


def run(
    model: str, workloads: list[str], batch_sizes: list[int], repeats: int, start_sec: float, agreement_clips: int = 64
) -> dict:
    return {
        "model": model,
        "start_sec": start_sec,
        "repeats": repeats,
        "machine": machine(),
        "versions": {name: metadata.version(name) for name in ("torch", "torchvision", "av", "pytorchvideo")},
        "default_inference_options": asdict(InferenceOptions()),
        "prepare": prepare_rows(model, workloads, repeats, start_sec),
        "forward": forward_rows(model, batch_sizes, repeats),
        "agreement": agreement(clips=agreement_clips),
    }


def markdown(report: dict, command: str) -> str:
    prepare = "\n".join(
        f"| {r['workload']} | {r['tutorial_ms']:.0f} | {r['ours_latency_ms']:.0f} ({r['ours_decode_ms']:.0f} + "
        f"{r['ours_preprocess_ms']:.0f}) | {r['speedup_latency']:.1f}x | {r['ours_per_clip_in_batch_ms']:.0f} "
        f"| {r['speedup_throughput']:.1f}x | {r['max_abs_difference']:.1e} |"
        for r in report["prepare"]
    )
    forward = "\n".join(
        f"| {r['variant']} | {r['batch_size']} | {r['forward_ms']:.0f} | {r['per_clip_ms']:.0f} "
        f"| {r['clips_per_s']:.2f} |"
        for r in report["forward"]
    )
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    clips = report["prepare"][0]["clips_in_batch"] if report["prepare"] else "-"
    a = report["agreement"]
    return f"""# Stage benchmark ({report["model"]})

Command: `{command}`
Machine: {report["machine"]}; {versions}
Median of {report["repeats"]} runs after a warm-up; clip at start_sec {report["start_sec"]}.

## Decode + preprocess per clip

Tutorial: one clip at a time, as written. Ours, latency: one clip at a time (in brackets: decode + preprocess
of the last run).
Ours, throughput: {clips} clips prepared at once as the handler prepares a batch, wall time / clips.

| workload | tutorial (ms) | ours, latency (ms) | speedup | ours, per clip in a batch (ms) | speedup | max abs diff. |
|---|---|---|---|---|---|---|
{prepare}

## Model forward per batch size (random-init weights)

| variant | batch size | forward (ms) | per clip (ms) | clips/s |
|---|---|---|---|---|
{forward}

## {a["precision"]} against fp32

{a["model"]}, {a["clips"]} new synthetic clips: top-1 agreement {a["top1_agreement"]:.1%}, largest probability
difference {a["max_abs_probability_difference"]:.4f} (mean over clips of the largest:
{a["mean_max_abs_probability_difference"]:.4f}).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="slowfast_r50", choices=sorted(REGISTRY))
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--start-sec", type=float, default=0.0)
    parser.add_argument("--agreement-clips", type=int, default=64, help="motion_demo clips for the bf16 agreement")
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    report = run(args.model, args.workloads, args.batch_sizes, args.repeats, args.start_sec, args.agreement_clips)
    text = markdown(report, "python -m bench.stages " + " ".join(argv if argv is not None else sys.argv[1:]))
    publish(report, text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
