"""Convert a toolbox's SlowFast checkpoint into this project's format, or say what a checkpoint file is.

Reads IN as its bytes say (a torch file, a PaddleVideo ``.pdparams``, a PySlowFast Caffe2 ``.pkl``), without
running anything pickled in it, recognises whose file it is and its architecture, converts it for the registry
entry ``--model`` (key names and tensor layouts: handler/checkpoints.py) and checks it against that entry's
network, key for key and shape for shape. OUT is ``{"model_state": state_dict, "source": {"file", "sha256",
"layout", "format"}}``, a plain ``torch.load(weights_only=True)`` file; served, its responses name the original
file (``"weights": "<IN's name> sha256:<first 12 hex>"``). ``make serve``/``make archive`` convert at build time
on their own: this command is for inspecting a file or converting it once.

Exit status: 0 on success, 2 for a refused file (not a checkpoint, truncated, unsafe, another toolbox's or
architecture's; the message says which ``--model`` fits) or bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handler.checkpoint_files import CheckpointError
from handler.checkpoints import convert_checkpoint, describe_checkpoint
from handler.models import REGISTRY, get_spec
from slowfast_serve.cli import UsageError

REFUSED = 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="IN", help="the checkpoint file as downloaded")
    parser.add_argument(
        "--model", choices=sorted(REGISTRY), metavar="NAME", help="registry entry to convert for (docs/models.md)"
    )
    parser.add_argument("--out", type=Path, help="where to write the converted checkpoint (.pyth)")
    parser.add_argument("--describe", action="store_true", help="only print what IN is and which entries fit it")


def run(args: argparse.Namespace) -> int:
    if not args.describe and (args.model is None or args.out is None):
        raise UsageError("--model and --out are required (or --describe)")
    if not args.checkpoint.is_file():
        raise UsageError(f"{args.checkpoint} is not a file")
    try:
        if args.describe:
            print(describe_checkpoint(args.checkpoint))
            return 0
        if args.out.resolve() == args.checkpoint.resolve():
            raise UsageError("--out must not overwrite IN")
        conversion = convert_checkpoint(args.checkpoint, get_spec(args.model), args.out)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return REFUSED
    print(f"read {args.checkpoint}: {conversion.input}")
    print(
        f"wrote {conversion.path}: {len(conversion.weights.state_dict)} tensors for {args.model} "
        f"({conversion.weights.num_classes} classes), source {conversion.source['format']} "
        f"(weights: {conversion.weights.description})"
    )
    return 0
