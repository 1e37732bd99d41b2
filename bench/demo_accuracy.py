#!/usr/bin/env python3
"""Top-1 accuracy of ``motion_demo`` through a real TorchServe, on new clips of two generators.

- **own**: the training generator (``slowfast_serve.training.motion_data``) at a seed never used for training or
  validation;
- **drawn**: the independent evaluation generator (``slowfast_serve.evaluation.drawn_motion``), written separately
  from the training one and never used for training or model selection.

Builds the archive, starts TorchServe on free loopback ports, sends every clip with the client (4 in flight, so
TorchServe batches them) and reports per-class accuracy, the confusion matrix and accuracy per shape, size,
background and codec.

Example:
    .venv/bin/python -m bench.demo_accuracy --per-class 25 --report docs/demo-accuracy.md
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from bench import REPO
from bench.workloads import machine, publish
from handler.labels import MOTION_CLASSES, label_set
from handler.models import get_spec
from slowfast_serve.client.inference import Client
from slowfast_serve.evaluation.accuracy import Accuracy, Clip, drawn_clips, evaluate, markdown
from slowfast_serve.server.archive import build_archive
from slowfast_serve.server.torchserve import TorchServe, free_port_overrides
from slowfast_serve.training import motion_data

MODEL = "motion_demo"
#: Seeds new to the model: it was trained on the own generator's seed 0 and validated on its seed 1.
OWN_SEED, DRAWN_SEED = 515151, 616161
VERSIONS = ("torch", "torchserve", "av", "numpy", "pillow", "opencv-python-headless")


def own_clips(seed: int, per_class: int) -> list[Clip]:
    """``per_class`` clips of every class from the training generator, each encoding in turn."""

    def make(motion: str, index: int) -> tuple[bytes, dict[str, str]]:
        data, video = motion_data.make_video(motion, seed, index)
        size = video.radius * max(video.scale) / min(video.width, video.height)
        return data, {
            "shape": video.shape,
            "fill": video.fill,
            "background": video.background_kind,
            "codec": f"{video.codec} {video.quality}",
            "size": "tiny" if size < 0.1 else "large" if size > 0.3 else "medium",
        }

    return [(m, lambda m=m, i=i: make(m, i)) for m in MOTION_CLASSES for i in range(per_class)]


def run(args: argparse.Namespace) -> dict:
    spec = get_spec(MODEL)
    checkpoint = args.checkpoint or REPO / spec.bundled_checkpoint
    staging = Path(tempfile.mkdtemp(prefix="demo-acc-", dir="/tmp"))  # short: the workers' sockets live below
    sets: dict[str, Accuracy] = {}
    try:
        mar = build_archive(MODEL, checkpoint, model_store=staging / "store")
        server = TorchServe(staging / "run", mar.parent)
        server.start({MODEL: mar.name}, overrides=free_port_overrides())
        try:
            server.wait_ready(MODEL, timeout=300)
            with Client(server.inference_url, server.token(), model=MODEL) as client:
                for name, clips in (
                    ("own", own_clips(args.own_seed, args.per_class)),
                    ("drawn", drawn_clips(args.drawn_seed, args.per_class)),
                ):
                    sets[name] = evaluate(client, clips, label_set("motion8"), concurrency=args.concurrency)
                    print(f"{name}: top-1 {sets[name].top1:.3f} on {len(clips)} clips", flush=True)
        finally:
            server.stop()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "model": MODEL,
        "checkpoint": str(checkpoint.relative_to(REPO) if checkpoint.is_relative_to(REPO) else checkpoint),
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "machine": machine(),
        "versions": {n: metadata.version(n) for n in VERSIONS},
        "seeds": {"own": args.own_seed, "drawn": args.drawn_seed},
        "sets": {name: accuracy.as_dict() for name, accuracy in sets.items()},
        "_accuracy": sets,
    }


def report_markdown(report: dict, command: str) -> str:
    sets: dict[str, Accuracy] = report["_accuracy"]
    own, drawn = sets["own"], sets["drawn"]
    clip = get_spec(MODEL).clip
    mistakes = "\n".join(
        f"- {m.truth} called {m.predicted} ({m.score:.2f}): " + ", ".join(f"{k} {v}" for k, v in m.attributes.items())
        for accuracy in (own, drawn)
        for m in accuracy.mistakes()
    )
    return f"""# motion_demo accuracy through TorchServe

`{command}` on {report["machine"]}; {", ".join(f"{k} {v}" for k, v in report["versions"].items())}.
Checkpoint `{report["checkpoint"]}` (sha256 {report["checkpoint_sha256"][:12]}), served by TorchServe (one worker,
the repository's config) and called with the client, 4 requests in flight; each clip classified from one
{clip.num_frames} x {clip.sampling_rate} clip ({clip.duration_sec:.1f} s) at 0 s, center crop (the default).

| set | clips | top-1 |
|---|---|---|
| own generator, seed {report["seeds"]["own"]}: new videos, the training set's drawing code | \
{len(own.clips)} | {own.top1:.1%} |
| independent generator, seed {report["seeds"]["drawn"]}: other code, never trained on | \
{len(drawn.clips)} | {drawn.top1:.1%} |

## Independent generator (`slowfast_serve/evaluation/drawn_motion.py`)

{markdown(drawn, breakdowns=("shape", "size", "background", "codec"))}
## Own generator (`slowfast_serve/training/motion_data.py`)

{markdown(own, breakdowns=("shape", "fill", "size", "background", "codec"))}
## Mistakes

{mistakes or "None."}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=25, help="clips per class and set (default: %(default)s)")
    parser.add_argument("--own-seed", type=int, default=OWN_SEED)
    parser.add_argument("--drawn-seed", type=int, default=DRAWN_SEED)
    parser.add_argument("--checkpoint", type=Path, help="another motion_demo checkpoint (default: the bundled one)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--report", type=Path, help="write the Markdown report here (and its JSON beside it)")
    args = parser.parse_args(argv)
    report = run(args)
    text = report_markdown(report, "python -m bench.demo_accuracy " + shlex.join(argv or sys.argv[1:]))
    report.pop("_accuracy")
    publish(report, text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
