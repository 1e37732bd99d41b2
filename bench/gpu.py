#!/usr/bin/env python3
"""GPU benchmarks (bench/gpu_check.sh runs them after the GPU tests): the network alone, and the decode ceiling.

1. Model only: clips/s of ``--model`` (random-init slowfast_r50 by default; speed does not depend on weights) at
   batch sizes ``--batch-sizes`` in fp32 and bf16 autocast, channels_last_3d with folded batch norms (the
   product's defaults), eager and ``torch.compile``-d; CUDA-synchronised wall time, median of ``--repeats``
   after warm-up (compilation happens in the warm-up and is reported separately).
2. Decode ceiling: one 720p request prepared (decode on the CPU, interpolation on the GPU) with one decoder
   thread, timed; ``cores / seconds`` is how many clips/s this machine's CPUs can feed the GPU at most, the bound
   the end-to-end numbers (bench.serving, run next by the check) are read against.

Writes ``--report`` (Markdown) and JSON beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import torch

from bench.workloads import describe, machine, make_workload, publish
from handler.checkpoints import save_random_checkpoint
from handler.labels import label_set
from handler.models import REGISTRY, get_spec
from handler.pipeline import InferenceOptions, VideoClassifier, cpu_count
from handler.request import VideoRequest


def _synchronised(step: object, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        step()  # type: ignore[operator]
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def model_only(classifier: VideoClassifier, batch_sizes: list[int], repeats: int) -> dict:
    """``{batch: {"clips_per_s", "ms", "warmup_s"}}`` for one loaded classifier."""
    spec, results = classifier.spec, {}
    for batch in batch_sizes:
        clips = torch.randn((batch, 3, spec.clip.num_frames, spec.clip.crop_size, spec.clip.crop_size))
        clips = clips.to(classifier.device)
        warmup = sum(_synchronised(lambda: classifier.scores(clips), 2))  # noqa: B023 (compiles here)
        seconds = statistics.median(_synchronised(lambda: classifier.scores(clips), repeats))  # noqa: B023
        results[str(batch)] = {
            "clips_per_s": round(batch / seconds, 1),
            "ms": round(seconds * 1000, 1),
            "warmup_s": round(warmup, 1),
        }
        print(
            f"{classifier.options.precision} compile={classifier.options.compile} batch {batch}: {results[str(batch)]}",
            flush=True,
        )
    return results


def decode_ceiling(classifier: VideoClassifier, video: bytes, repeats: int) -> dict:
    """Seconds to prepare one clip with one decoder thread, and the clips/s all CPU cores could prepare."""
    request = VideoRequest(video=video, top_k=5, start_sec=2.0)
    times = _synchronised(lambda: classifier.prepare(request, threads=1), repeats)
    seconds = statistics.median(times)
    return {
        "prepare_ms": round(seconds * 1000, 1),
        "cores": cpu_count(),
        "ceiling_clips_per_s": round(cpu_count() / seconds, 1),
    }


def markdown(report: dict, command: str) -> str:
    rows = []
    for variant, results in report["model_only"].items():
        for batch, r in results.items():
            rows.append(f"| {variant} | {batch} | {r['clips_per_s']:.1f} | {r['ms']:.1f} | {r['warmup_s']:.1f} |")
    ceiling = report["decode_ceiling"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return f"""# GPU benchmark: {report["model"]} (random-init weights, speed only)

Command: `{command}`
Machine: {report["machine"]}; {versions}

Model only (clips already on the GPU; channels_last_3d, batch norms folded; CUDA-synchronised, median of
{report["repeats"]} after 2 warm-up forwards, which include compilation):

| variant | batch | clips/s | ms per batch | warm-up s |
|---|---|---|---|---|
{chr(10).join(rows)}

Decode ceiling ({report["workload"]}): one clip prepared with one decoder thread in {ceiling["prepare_ms"]:.0f} ms
(decode on the CPU, interpolation on the GPU); {ceiling["cores"]} cores can feed at most
{ceiling["ceiling_clips_per_s"]:.1f} clips/s.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="slowfast_r50", choices=sorted(REGISTRY))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench.gpu: no CUDA device (torch.cuda.is_available() is False): run it on a GPU machine")
    spec = get_spec(args.model)
    device = torch.device("cuda:0")
    base = InferenceOptions(warmup=False, decode_workers=1, max_clips_per_forward=max(args.batch_sizes))
    variants = {"fp32": base, "bf16": replace(base, precision="bf16")}
    if not args.no_compile:
        variants |= {f"{name} compile": replace(options, compile=True) for name, options in list(variants.items())}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        checkpoint = save_random_checkpoint(spec, Path(tmp) / f"{args.model}.pyth")
        labels = label_set(spec.labels)
        results = {}
        for name, options in variants.items():
            classifier = VideoClassifier.load(spec, checkpoint, labels, device, options=options)
            results[name] = model_only(classifier, args.batch_sizes, args.repeats)
            del classifier
            torch.cuda.empty_cache()
        video = make_workload(Path(tmp), "720p", require_ffmpeg=False)
        classifier = VideoClassifier.load(spec, checkpoint, labels, device, options=base)
        ceiling = decode_ceiling(classifier, video.read_bytes(), max(3, args.repeats // 2))
    report = {
        "model": args.model,
        "machine": machine(),
        "versions": {n: metadata.version(n) for n in ("torch", "torchvision", "av", "pytorchvideo")},
        "repeats": args.repeats,
        "model_only": results,
        "workload": describe("720p") + (" (PyAV pattern: no ffmpeg here)" if video.stem.endswith("pyav") else ""),
        "decode_ceiling": ceiling,
    }
    publish(
        report,
        markdown(report, "python -m bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:])),
        args.report,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
