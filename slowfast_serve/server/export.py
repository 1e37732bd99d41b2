"""Export a registry model's network to TorchScript or an AOTInductor package, and check it against eager.

``slowfast-serve archive --inference export=torchscript|aoti`` calls this before packaging; run alone, it
writes the artifact and prints the check. The check runs the eager network and the loaded export on the same
random clips at batch sizes 1, 2, 3 and the largest the export takes (a batch size baked into the graph, or a
kernel wrong at one size, shows) and fails when their outputs disagree beyond float rounding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from handler.export import EXPORT_FORMATS, ExportMetadata, as_pathways, export_network
from handler.labels import label_set, read_labels
from handler.models import REGISTRY, ModelSpec, get_spec, save_random_checkpoint
from handler.pipeline import InferenceOptions, VideoClassifier
from handler.transforms import model_inputs

# Largest relative difference (max |export - eager| / max |eager|) accepted: float32 rounding of reordered
# kernels stays orders of magnitude below it; a wrong layout or a baked batch size lands far above.
TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportReport:
    """An export and its agreement with the eager network.

    Attributes:
        path: the artifact.
        format, device: what it is and where it was built (and checked).
        seconds: wall-clock time of tracing / exporting and compiling.
        size_mb: the artifact's size.
        batches: batch sizes checked.
        max_abs_diff: largest ``|export - eager|`` over every output of the checked batches.
        max_rel_diff: ``max_abs_diff / max |eager|``.
        top1_agreement: fraction of clips whose top class is the same.
        weights: the exported weights' description (as responses report it).
    """

    path: str
    format: str
    device: str
    seconds: float
    size_mb: float
    batches: list[int]
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    weights: str = ""

    def summary(self) -> str:
        return (
            f"{self.format} export on {self.device} in {self.seconds:.1f} s ({self.size_mb:.1f} MB): "
            f"max |diff| {self.max_abs_diff:.2g} (relative {self.max_rel_diff:.2g}), "
            f"top-1 agreement {self.top1_agreement:.0%} at batch sizes {self.batches}"
        )


def example_clips(spec: ModelSpec, batch: int, seed: int = 0) -> torch.Tensor:
    """``(batch, 3, T, S, S)`` float32 clips of the spec's size, standard-normal (the range of normalised video)."""
    clip = spec.clip
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, clip.num_frames, clip.crop_size, clip.crop_size), generator=generator)


def export_checkpoint(
    spec: ModelSpec,
    checkpoint: Path,
    labels: Sequence[str],
    options: InferenceOptions,
    device: torch.device,
    output: Path,
) -> ExportReport:
    """Builds ``spec`` from ``checkpoint`` as ``options`` say (folding, memory format), exports it to
    ``output`` in ``options.export``'s format on ``device`` and checks the loaded artifact against eager.

    Raises:
        ValueError: an eager ``options.export``, or an export that disagrees with the eager network.
    """
    if options.export == "eager":
        raise ValueError("export=eager has nothing to export: the archive ships the checkpoint")
    quiet = {"warmup": False, "decode_workers": 1, "precision": "fp32"}  # the check compares float32 to float32
    as_eager = replace(options, export="eager", channels_last=options.network_channels_last, **quiet)
    eager = VideoClassifier.load(spec, checkpoint, labels, device, options=as_eager)
    metadata = ExportMetadata(
        model=spec.name,
        format=options.export,
        weights=eager.weights,
        num_classes=len(labels),
        device=device.type,
        max_batch=options.max_clips_per_forward,
        channels_last=options.network_channels_last,
        fold_batchnorm=options.fold_batchnorm,
        torch_version=torch.__version__,
    )
    example = as_pathways(model_inputs(example_clips(spec, 2).to(device), spec.clip), metadata.channels_last)
    started = time.perf_counter()
    export_network(eager.model, example, metadata, output)
    seconds = time.perf_counter() - started
    exported = VideoClassifier.load(spec, output, labels, device, options=replace(options, **quiet))
    batches = sorted({1, 2, 3, options.max_clips_per_forward} & set(range(1, options.max_clips_per_forward + 1)))
    report = ExportReport(
        path=str(output),
        format=options.export,
        device=str(device),
        seconds=round(seconds, 1),
        size_mb=round(output.stat().st_size / 2**20, 1),
        batches=batches,
        weights=eager.weights,
        **agreement(eager, exported, batches),
    )
    if report.max_rel_diff > TOLERANCE:
        raise ValueError(
            f"the {options.export} export of {spec.name} disagrees with the eager network: {report.summary()} "
            f"(tolerance {TOLERANCE:g}); serve it eager, or try the other export format"
        )
    return report


def agreement(eager: VideoClassifier, exported: VideoClassifier, batches: Sequence[int]) -> dict[str, float]:
    """Output differences of two classifiers on the same random clips, one forward per batch size."""
    reference, outputs = [], []
    for seed, batch in enumerate(batches, start=1):
        clips = example_clips(eager.spec, batch, seed)
        reference.append(eager.scores(clips))
        outputs.append(exported.scores(clips))
    ref, out = torch.cat(reference), torch.cat(outputs)
    diff = (out - ref).abs().max().item()
    return {
        "max_abs_diff": float(f"{diff:.3g}"),
        "max_rel_diff": float(f"{diff / max(ref.abs().max().item(), 1e-12):.3g}"),
        "top1_agreement": (out.argmax(1) == ref.argmax(1)).float().mean().item(),
    }


def default_device() -> torch.device:
    """Where exports are built unless told: the GPU when there is one (an ``aoti`` package runs only on the device
    type it was compiled for, and GPU serving is the product's target), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=sorted(REGISTRY), help="registry model name")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="official-format checkpoint (.pyth with 'model_state')")
    weights.add_argument("--random-init", action="store_true", help="random weights (tests and benchmarks only)")
    parser.add_argument("--labels", type=Path, help="label file; default: the model's label set")
    parser.add_argument("--format", required=True, choices=[f for f in EXPORT_FORMATS if f != "eager"])
    parser.add_argument("--output", type=Path, required=True, help="artifact path (.ts.pt / .pt2)")
    parser.add_argument("--device", type=torch.device, default=default_device(), help="default: %(default)s")
    parser.add_argument("--max-batch", type=int, default=InferenceOptions.max_clips_per_forward, help="aoti's bound")


def run(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    options = InferenceOptions(export=args.format, max_clips_per_forward=args.max_batch)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or save_random_checkpoint(spec, Path(tmp) / "random-init.pyth")
        try:
            labels = read_labels(args.labels) if args.labels else label_set(spec.labels)
            report = export_checkpoint(spec, checkpoint, labels, options, args.device, args.output)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(report.summary())
    print(asdict(report))
    return 0
