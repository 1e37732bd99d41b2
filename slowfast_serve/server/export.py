"""Export a registry model's network to TorchScript, an AOTInductor package or OpenVINO's IR, and check it
against eager.

``slowfast-serve archive --inference export=torchscript|aoti|openvino`` calls this before packaging; run alone,
it writes the artifact and prints the check. The check runs the eager network and the loaded export on the same
random clips at batch sizes 1, 2, 3 and the largest the export takes (a batch size baked into the graph, or a
kernel wrong at one size, shows; OpenVINO runs at most 2 clips per inference, so 1, 2 and 3 are all it
runs) and fails when their outputs disagree beyond float rounding; an OpenVINO export
in bf16 or int8 is held to the bound of its precision instead (:data:`TOLERANCES`). An int8 export is
quantized with clips of the calibration videos, decoded and preprocessed exactly as the service will, and checked
on those clips: random clips lie outside the ranges it was calibrated for, which is not what it will serve.
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

from handler.checkpoints import save_random_checkpoint
from handler.detection import DetectionSpec, KeyframeClip, rois
from handler.detection_pipeline import ActionDetector
from handler.errors import RequestError
from handler.export import (
    EXPORT_FORMATS,
    OPENVINO_CLIPS_PER_INFER,
    ExportMetadata,
    as_pathways,
    export_detection_openvino,
    export_network,
    load_detection_openvino,
)
from handler.labels import label_set, read_labels
from handler.models import REGISTRY, ModelSpec, get_spec
from handler.pipeline import InferenceOptions, VideoClassifier
from handler.request import VideoRequest
from handler.transforms import model_inputs, pack_pathways
from slowfast_serve.cli import UsageError
from slowfast_serve.client.folders import expand

# Largest relative difference (max |export - eager| / max |eager|) accepted: float32 rounding of reordered
# kernels stays orders of magnitude below it; a wrong layout or a baked batch size lands far above.
TOLERANCE = 1e-3
# The same bound for an OpenVINO export in bf16 (8-bit mantissa; measured on motion_demo: 4.5e-3 on random clips).
TOLERANCES = {"fp32": TOLERANCE, "bf16": 5e-2}
# An int8 export is judged by what it answers on the calibration clips, where its output scale may drift while
# its classes hold (motion_demo: logits 0.33 relative, probabilities within 0.15, top-1 98% on new clips): the
# top-1 class of at least this share of clips, every probability within this distance. A broken quantization
# (wrong ranges, a miscompiled layer) answers other classes.
INT8_MIN_TOP1_AGREEMENT = 0.9
INT8_MAX_PROB_DIFF = 0.3
#: Calibration clips used at most (NNCF's default subset size).
MAX_CALIBRATION_CLIPS = 300


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
        max_prob_diff: largest difference of a class probability.
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
    max_prob_diff: float = 0.0
    weights: str = ""
    precision: str = "fp32"
    checked_on: str = "random clips"

    def summary(self) -> str:
        return (
            f"{self.format} {self.precision} export on {self.device} in {self.seconds:.1f} s ({self.size_mb:.1f} MB): "
            f"max |diff| {self.max_abs_diff:.2g} (relative {self.max_rel_diff:.2g}, probabilities "
            f"{self.max_prob_diff:.2g}), top-1 agreement {self.top1_agreement:.0%} at batch sizes {self.batches} "
            f"on {self.checked_on}"
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
    calibration: Sequence[Path] = (),
    enforce: bool = True,
) -> ExportReport:
    """Builds ``spec`` from ``checkpoint`` as ``options`` say (folding, memory format), exports it to
    ``output`` in ``options.export``'s format on ``device`` and checks the loaded artifact against eager.

    Args:
        calibration: video files (or folders of them) for an ``int8`` OpenVINO export's quantization.
        enforce: fail an export beyond its bound. Off only for benchmarks of random-init weights, whose near-equal
            class scores make top-1 agreement of a reduced precision meaningless (the report still says it).

    Raises:
        ValueError: an eager ``options.export``, an export that disagrees with the eager network, int8 without
            calibration videos, or a calibration video that does not decode (its path and the reason).
    """
    if options.export in ("auto", "eager"):
        raise ValueError(f"export={options.export} has nothing to export: the archive ships the checkpoint")
    if options.export == "openvino" and device.type != "cpu":
        raise ValueError(f"export=openvino is built and served on the CPU, not {device}: pass --export-device cpu")
    quiet = {"warmup": False, "decode_workers": 1, "precision": "fp32"}  # the check compares float32 to float32
    as_eager = replace(options, export="eager", channels_last=options.network_channels_last, **quiet)
    eager = VideoClassifier.load(spec, checkpoint, labels, device, options=as_eager)
    # int8 is OpenVINO's only (InferenceOptions refuses it elsewhere): its calibration clips, decoded once.
    calibrated = calibration_clips(eager, calibration) if options.precision == "int8" else None
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
        **_openvino_fields(options, calibration, calibrated),
    )
    example = as_pathways(model_inputs(example_clips(spec, 2).to(device), spec.clip), metadata.channels_last)
    pathways = [] if calibrated is None else [as_pathways(model_inputs(c[None], spec.clip), False) for c in calibrated]
    started = time.perf_counter()
    export_network(eager.model, example, metadata, output, pathways)
    seconds = time.perf_counter() - started
    # An OpenVINO export computes in its own precision (part of the artifact); the others are checked in fp32.
    served = {**quiet, "precision": metadata.precision} if options.export == "openvino" else quiet
    exported = VideoClassifier.load(spec, output, labels, device, options=replace(options, **served))
    # OpenVINO runs at most OPENVINO_CLIPS_PER_INFER clips per inference: 1, 2 and 3 (sliced 2 + 1) are every
    # shape it ever runs; the other exports take up to max_clips_per_forward at once.
    largest = OPENVINO_CLIPS_PER_INFER + 1 if options.export == "openvino" else options.max_clips_per_forward
    batches = sorted({1, 2, 3, largest} & set(range(1, options.max_clips_per_forward + 1)))
    report = ExportReport(
        path=str(output),
        format=options.export,
        device=str(device),
        seconds=round(seconds, 1),
        size_mb=round(output.stat().st_size / 2**20, 1),
        batches=batches,
        weights=eager.weights,
        precision=metadata.precision,
        checked_on="random clips" if calibrated is None else f"{len(calibrated)} calibration clips",
        **agreement(eager, exported, batches, calibrated),
    )
    if metadata.precision == "int8":
        bound = f"top-1 agreement >= {INT8_MIN_TOP1_AGREEMENT:.0%}, probabilities within {INT8_MAX_PROB_DIFF:g}"
        fails = report.top1_agreement < INT8_MIN_TOP1_AGREEMENT or report.max_prob_diff > INT8_MAX_PROB_DIFF
    else:
        bound = f"relative difference {TOLERANCES[metadata.precision]:g} for {metadata.precision}"
        fails = report.max_rel_diff > TOLERANCES[metadata.precision]
    if fails and enforce:
        raise ValueError(
            f"the {options.export} export of {spec.name} disagrees with the eager network: {report.summary()} "
            f"(bound: {bound}); serve it eager, or try another export format or precision"
        )
    return report


def export_detection_checkpoint(
    spec: DetectionSpec, checkpoint: Path, labels: Sequence[str], options: InferenceOptions, output: Path
) -> ExportReport:
    """The AVA detection network of ``checkpoint`` (batch norms folded) as an OpenVINO fp32 ``output``, checked
    against eager on random clips of two aspect ratios (landscape and portrait: the clips are not cropped) with 1
    to 3 RoIs each, scored together as the service scores a batch (three landscape clips: two OpenVINO slices).

    Raises:
        ValueError: the conversion disagrees with eager beyond :data:`TOLERANCE` (relative to the largest score).
    """
    cpu = torch.device("cpu")
    quiet = replace(options, export="eager", channels_last=False, warmup=False, decode_workers=1, precision="fp32")
    eager = ActionDetector.load(spec, checkpoint, labels, cpu, options=quiet)
    generator = torch.Generator().manual_seed(0)
    keyframes = []
    for height, width, count in ((256, 341, 1), (455, 256, 3), (256, 341, 2), (256, 341, 1)):
        clip = torch.randn((3, spec.num_frames, height, width), generator=generator)
        corners = torch.rand((count, 2), generator=generator) * torch.tensor([width / 2, height / 2])
        boxes = torch.cat([corners, corners + torch.tensor([width / 3, height / 3])], dim=1)
        keyframes.append(KeyframeClip(clip, boxes, boxes))
    batch = torch.stack([keyframes[0].clip])
    example = as_pathways(batch if spec.alpha is None else pack_pathways(batch, spec.alpha), channels_last=False)
    metadata = ExportMetadata(
        model=spec.name,
        format="openvino",
        weights=eager.weights,
        num_classes=len(labels),
        device="cpu",
        max_batch=options.max_clips_per_forward,
        channels_last=False,
        fold_batchnorm=True,
        torch_version=torch.__version__,
        **_openvino_fields(replace(quiet, export="openvino"), (), None),
    )
    started = time.perf_counter()
    export_detection_openvino(eager.network, example, rois([keyframes[0].boxes]), metadata, output)
    seconds = time.perf_counter() - started
    exported = ActionDetector(
        spec, load_detection_openvino(output, cpu, spec.name), labels, eager.weights, cpu, options=quiet
    )
    reference, served = torch.cat(eager.score(keyframes)), torch.cat(exported.score(keyframes))
    diff = (served - reference).abs().max().item()
    report = ExportReport(
        path=str(output),
        format="openvino",
        device="cpu",
        seconds=round(seconds, 1),
        size_mb=round(output.stat().st_size / 2**20, 1),
        batches=[len(keyframes)],
        max_abs_diff=float(f"{diff:.3g}"),
        max_rel_diff=float(f"{diff / max(reference.abs().max().item(), 1e-12):.3g}"),
        max_prob_diff=float(f"{diff:.3g}"),  # the scores are probabilities already (sigmoid)
        top1_agreement=(served.argmax(1) == reference.argmax(1)).float().mean().item(),
        weights=eager.weights,
        checked_on="4 random clips of 2 sizes, 1-3 RoIs each",
    )
    if report.max_rel_diff > TOLERANCE:
        raise ValueError(
            f"the OpenVINO network of {spec.name} disagrees with the eager one: {report.summary()} (bound: relative "
            f"difference {TOLERANCE:g})"
        )
    return report


def _openvino_fields(
    options: InferenceOptions, calibration: Sequence[Path], calibrated: torch.Tensor | None
) -> dict[str, str]:
    """The metadata an OpenVINO export adds: its precision, the converter's version, the calibration (the clips
    an int8 export was calibrated on, and where they came from)."""
    if options.export != "openvino":
        return {}
    from importlib import metadata

    described = "" if calibrated is None else f"{len(calibrated)} videos: {', '.join(map(str, calibration))}"
    return {
        "precision": options.precision,
        "openvino_version": metadata.version("openvino"),
        "calibration": described,
    }


def calibration_clips(classifier: VideoClassifier, videos: Sequence[Path]) -> torch.Tensor:
    """``(N, 3, T, S, S)`` float32 normalised clips, one per video (at 0 s, center crop), decoded and
    preprocessed by ``classifier`` exactly as the service prepares a request; folders are searched for videos.
    At most :data:`MAX_CALIBRATION_CLIPS`.

    Raises:
        ValueError: no videos, or a video that does not decode (its path and the service's message).
    """
    if not videos:
        raise ValueError(
            "precision=int8 quantizes with calibration clips: give the archive build videos like those it will "
            "serve (slowfast-serve archive --calibration DIR, make serve ... CALIBRATION=DIR)"
        )
    files = expand(videos)[:MAX_CALIBRATION_CLIPS]
    if not files:
        raise ValueError(f"no videos to calibrate with in {', '.join(map(str, videos))}")
    clips = []
    for path in files:
        try:
            prepared = classifier.prepare(VideoRequest(video=path.read_bytes(), top_k=1, start_sec=0.0))
        except (RequestError, OSError) as e:
            raise ValueError(f"calibration video {path}: {e}") from e
        clips.append(prepared.clips[0].cpu())
    return torch.stack(clips)


def agreement(
    eager: VideoClassifier, exported: VideoClassifier, batches: Sequence[int], clips: torch.Tensor | None = None
) -> dict[str, float]:
    """Output differences of two classifiers on the same clips, one forward per batch size: random clips, or
    consecutive runs of ``clips`` (``(N, 3, T, S, S)``, taken again from the start when they run out)."""
    reference, outputs = [], []
    for seed, batch in enumerate(batches, start=1):
        if clips is None:
            batch_clips = example_clips(eager.spec, batch, seed)
        else:
            batch_clips = clips[torch.arange(sum(batches[: seed - 1]), sum(batches[:seed])) % len(clips)]
        reference.append(eager.scores(batch_clips))
        outputs.append(exported.scores(batch_clips))
    ref, out = torch.cat(reference), torch.cat(outputs)
    diff = (out - ref).abs().max().item()
    as_probabilities = (lambda s: torch.softmax(s, dim=1)) if eager.spec.output == "logits" else (lambda s: s)
    return {
        "max_abs_diff": float(f"{diff:.3g}"),
        "max_rel_diff": float(f"{diff / max(ref.abs().max().item(), 1e-12):.3g}"),
        "max_prob_diff": float(f"{(as_probabilities(out) - as_probabilities(ref)).abs().max().item():.3g}"),
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
    parser.add_argument("--format", required=True, choices=[f for f in EXPORT_FORMATS if f not in ("auto", "eager")])
    parser.add_argument("--output", type=Path, required=True, help="artifact path (.ts.pt / .pt2 / .ov.zip)")
    parser.add_argument(
        "--device", type=torch.device, help=f"where to build and check (default: {default_device()}; openvino: cpu)"
    )
    parser.add_argument("--max-batch", type=int, default=InferenceOptions.max_clips_per_forward, help="largest batch")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16", "int8"], default="fp32", help="openvino only (default: %(default)s)"
    )
    parser.add_argument(
        "--calibration", type=Path, action="append", default=[], metavar="PATH", help="int8: videos or folders"
    )


def run(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    if args.precision != "fp32" and args.format != "openvino":
        raise UsageError(f"--precision {args.precision} is for --format openvino (the torch exports run in fp32)")
    options = InferenceOptions(export=args.format, precision=args.precision, max_clips_per_forward=args.max_batch)
    device = args.device or (torch.device("cpu") if args.format == "openvino" else default_device())
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or save_random_checkpoint(spec, Path(tmp) / "random-init.pyth")
        try:
            labels = read_labels(args.labels) if args.labels else label_set(spec.labels)
            report = export_checkpoint(spec, checkpoint, labels, options, device, args.output, args.calibration)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(report.summary())
    print(asdict(report))
    return 0
