"""Build ``model_store/<name>.mar`` for a registry model with torch-model-archiver.

The archive holds everything a worker needs and nothing from this checkout: the handler entry
(``ts_handler.py``), the ``handler`` package, the checkpoint (serialized file), ``labels.json`` and
``model-config.yaml`` (TorchServe batching/worker settings plus the ``handler:`` section). Before packaging,
the checkpoint is loaded into the architecture and the label count is checked against the classifier head, so
a mismatch fails here rather than in a worker. Beside the archive, ``<name>.build.json`` records its inputs.

With ``--inference export=torchscript|aoti`` the serialized file is the exported network instead of the
checkpoint (slowfast-serve export builds it, on ``--export-device``, and checks it against eager first).

A toolbox's own file (an MMAction2 ``.pth``, a PaddleVideo ``.pdparams``, a PySlowFast ``.pyth`` or Caffe2 ``.pkl``)
is taken as downloaded for the registry entries serving that toolbox's checkpoints: it is recognised and converted
here (handler/checkpoints.py), and the archive holds the converted file, ``{"model_state": ..., "source": {...}}``,
whose responses name the original file; the build record notes the conversion.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from handler.checkpoints import archive_checkpoint, save_random_checkpoint
from handler.decode_limits import DecodeLimits
from handler.detection import (
    DETECTION_MODELS,
    SERVED_MODELS,
    DetectionSpec,
    save_random_detection_checkpoint,
)
from handler.detection_pipeline import ActionDetector, check_detection_options
from handler.errors import RequestError
from handler.export import AUTO_OPENVINO_FILE, SUFFIXES
from handler.labels import label_set, read_labels, save_labels
from handler.models import RANDOM_INIT, ModelSpec, get_spec
from handler.persons import DETECTORS, TORCHVISION_DETECTORS, load_person_detector, save_random_person_detector
from handler.pipeline import CpuEngine, InferenceOptions, VideoClassifier
from handler.request import DEFAULT_MAX_BOXES, DEFAULT_TOP_K, parse_views
from handler.settings import DetectionSettings, HandlerSettings, decode_limits, inference_options
from slowfast_serve.checkout import WORKSPACE
from slowfast_serve.cli import UsageError
from slowfast_serve.server import HANDLER
from slowfast_serve.server.export import ExportReport, default_device, export_checkpoint, export_detection_checkpoint
from slowfast_serve.server.weights import find_person_detector, model_checkpoint

DEFAULT_STORE = WORKSPACE / "model_store"


@dataclass(frozen=True)
class ServingConfig:
    """TorchServe's per-model settings written to ``model-config.yaml`` (frontend keys, exact spellings)."""

    batch_size: int = 4
    max_batch_delay_ms: int = 100
    min_workers: int = 1
    max_workers: int = 1
    response_timeout_s: int = 120
    startup_timeout_s: int = 300

    def as_yaml(self) -> dict[str, int]:
        return {
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "minWorkers": self.min_workers,
            "maxWorkers": self.max_workers,
            "responseTimeout": self.response_timeout_s,
            "startupTimeout": self.startup_timeout_s,
        }


PERSONS_FILE = "persons.pth"  # a torchvision person detector's weights inside an AVA detection archive


@dataclass(frozen=True)
class DetectionBuild:
    """How an AVA detection archive finds and bounds its boxes (``--max-boxes``, ``--detector``,
    ``--detector-checkpoint``, ``--detector-threshold``; docs/detection.md).

    Attributes:
        max_boxes: the most boxes one keyframe is scored with.
        detector: the person detector for requests without boxes (:data:`handler.persons.DETECTORS`), or ``None``.
        detector_checkpoint: a torchvision detector's weights (default: torch.hub's cache, else a download; with
            ``--random-init``, random weights, marked so).
        detector_threshold: the lowest person score kept (default: the detector's own).
    """

    max_boxes: int = DEFAULT_MAX_BOXES
    detector: str | None = None
    detector_checkpoint: Path | None = None
    detector_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.detector_checkpoint is not None and self.detector not in TORCHVISION_DETECTORS:
            raise ValueError(
                f"--detector-checkpoint is the weights of a torchvision detector ({', '.join(TORCHVISION_DETECTORS)}); "
                f"the detector is {self.detector or 'none'}"
            )
        shipped = Path(PERSONS_FILE) if self.detector in TORCHVISION_DETECTORS else None
        DetectionSettings(self.max_boxes, self.detector, shipped, self.detector_threshold)  # the other checks

    def weights(self, random_init: bool) -> str:
        """The detector's weights as a build record keeps them: a resolved path, ``random-init`` or ``""``."""
        if self.detector not in TORCHVISION_DETECTORS:
            return ""
        if self.detector_checkpoint is not None:
            return str(self.detector_checkpoint.resolve())
        return RANDOM_INIT if random_init else str(find_person_detector(self.detector).resolve())

    def record(self, random_init: bool) -> dict[str, Any]:
        """What a build record keeps of it (the detector's weights resolved)."""
        return {**asdict(self), "detector_checkpoint": self.weights(random_init)}


@dataclass(frozen=True)
class BuildRecord:
    """What went into an archive; ``slowfast-serve`` rebuilds when the wanted record differs."""

    name: str
    model: str
    checkpoint: str
    checkpoint_size: int
    checkpoint_mtime: float
    labels: str
    weights: str
    serving: dict
    top_k: int
    views: str = "1x1"
    limits: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)
    version: str = ""  # the handler package's content hash (handler_version()) inside the archive
    export: dict = field(default_factory=dict)  # export_model.ExportReport of an exported network
    conversion: dict = field(default_factory=dict)  # a toolbox's file converted at build time: its source record
    calibration: list = field(default_factory=list)  # an int8 export's calibration videos (resolved paths)
    detection: dict = field(default_factory=dict)  # an AVA detection archive's DetectionBuild.record()

    @staticmethod
    def inputs(
        name: str, model: str, checkpoint: Path | None, labels: Path | None, serving: ServingConfig, top_k: int
    ) -> dict[str, Any]:
        """The record's fields that name the archive and the files it was built from (``checkpoint`` ``None``:
        random-init weights)."""
        return {
            "name": name,
            "model": model,
            "checkpoint": RANDOM_INIT if checkpoint is None else str(Path(checkpoint).resolve()),
            "checkpoint_size": 0 if checkpoint is None else Path(checkpoint).stat().st_size,
            "checkpoint_mtime": 0.0 if checkpoint is None else Path(checkpoint).stat().st_mtime,
            "labels": str(labels.resolve()) if labels else "",
            "serving": serving.as_yaml(),
            "top_k": top_k,
        }

    @staticmethod
    def path_for(name: str, model_store: Path) -> Path:
        return model_store / f"{name}.build.json"

    def matches(
        self,
        model: str,
        checkpoint: str,
        labels: str,
        serving: dict,
        top_k: int,
        limits: DecodeLimits,
        inference: InferenceOptions,
        views: str = "1x1",
        calibration: Sequence[Path] = (),
        detection: dict | None = None,
    ) -> bool:
        """Whether this record was built from these inputs (and the checkpoint file is unchanged since).

        ``checkpoint`` is a resolved path or ``"random-init"``; ``labels`` a resolved path or ``""``.
        """
        # The handler code is an input too: an archive holding an older handler package is stale.
        wanted = (
            model,
            checkpoint,
            labels,
            serving,
            top_k,
            views,
            asdict(limits),
            asdict(inference),
            handler_version(),
            calibration_record(calibration, inference),
            detection or {},
        )
        mine = (
            self.model,
            self.checkpoint,
            self.labels,
            self.serving,
            self.top_k,
            self.views,
            self.limits,
            self.inference,
            self.version,
            self.calibration,
            self.detection,
        )
        if mine != wanted:
            return False
        if checkpoint == RANDOM_INIT:
            return True
        path = Path(checkpoint)
        return path.exists() and (path.stat().st_size, path.stat().st_mtime) == (
            self.checkpoint_size,
            self.checkpoint_mtime,
        )

    @classmethod
    def load(cls, name: str, model_store: Path) -> BuildRecord | None:
        try:
            return cls(**json.loads(cls.path_for(name, model_store).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def build_archive(
    model: str,
    checkpoint: Path | None,
    *,
    labels: Path | None = None,
    name: str | None = None,
    model_store: Path = DEFAULT_STORE,
    serving: ServingConfig | None = None,
    top_k: int = DEFAULT_TOP_K,
    limits: DecodeLimits | None = None,
    inference: InferenceOptions | None = None,
    views: str = "1x1",
    export_device: torch.device | None = None,
    calibration: Sequence[Path] = (),
    enforce: bool = True,
    detection: DetectionBuild | None = None,
) -> Path:
    """Validates the inputs and writes ``<model_store>/<name>.mar``; returns its path.

    Args:
        model: registry name.
        checkpoint: official-format checkpoint, or the toolbox's own file for an entry serving that toolbox's
            checkpoints (converted here); ``None`` builds a random-init one (tests and benchmarks only).
        labels: label file (any format :func:`handler.labels.read_labels` reads); default: the model's label set.
        name: TorchServe model name and archive file name; default: ``model``.
        model_store: output directory.
        serving: TorchServe batching and worker settings.
        top_k: default number of classes per response.
        limits: per-request decoding bounds (default: :class:`DecodeLimits`'s).
        inference: how workers run the model (default: :class:`InferenceOptions`'s).
        views: default views per request, ``CLIPSxCROPS`` (e.g. ``10x3``).
        export_device: where an ``inference.export`` other than eager is built and checked (default: the GPU when
            there is one; the CPU for ``openvino``); an ``aoti`` package then runs only on that device type.
        calibration: videos or folders of them, for an ``export=openvino precision=int8`` archive's quantization.
        enforce: fail an export that disagrees with eager beyond its bound (off for benchmarks of random weights:
            :func:`~slowfast_serve.server.export.export_checkpoint`).
        detection: an AVA detection model's boxes and person detector (default: :class:`DetectionBuild`'s).
    """
    limits = limits or DecodeLimits()
    inference = inference or InferenceOptions()
    name = name or model
    serving = serving or ServingConfig()
    if model in DETECTION_MODELS:
        return build_detection_archive(
            model, checkpoint, labels, name, model_store, serving, top_k, limits, inference, detection
        )
    if detection is not None:
        raise ValueError(f"the detection settings (boxes, person detector) apply to {', '.join(DETECTION_MODELS)}")
    spec = get_spec(model)
    try:
        parse_views(views)
    except RequestError as e:
        raise ValueError(e.message) from None
    model_store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"archive-{name}-") as tmp:
        staging = Path(tmp)
        random_init = checkpoint is None
        if checkpoint is None:
            checkpoint = save_random_checkpoint(spec, staging / f"{model}-random-init.pyth")
        class_names = read_labels(labels) if labels else label_set(spec.labels)
        # A toolbox's own file is converted once, here: the worker then loads a plain weights_only torch file.
        shipped, conversion = archive_checkpoint(checkpoint, spec, staging)
        serialized, report = shipped, None
        extra = staging / "extra"  # the archiver copies this directory's *contents* into the archive root
        extra.mkdir()
        openvino = None
        if inference.export in ("auto", "eager"):
            checking = InferenceOptions(export="eager", channels_last=False, warmup=False, decode_workers=1)  # check
            weights = VideoClassifier.load(spec, shipped, class_names, torch.device("cpu"), options=checking).weights
            if inference.export == "auto":
                openvino, report = cpu_engine(spec, shipped, class_names, inference, extra / AUTO_OPENVINO_FILE)
        else:  # the export loads and checks the checkpoint itself: no second load
            serialized = staging / f"{name}{SUFFIXES[inference.export]}"
            device = export_device or (torch.device("cpu") if inference.export == "openvino" else default_device())
            report = export_checkpoint(
                spec, shipped, class_names, inference, device, serialized, calibration, enforce=enforce
            )
            weights = report.weights
            print(report.summary(), file=sys.stderr)

        settings = HandlerSettings(
            model=model,
            checkpoint=shipped,
            labels=extra / "labels.json",
            top_k=top_k,
            views=views,
            limits=limits,
            inference=inference,
            openvino=openvino,
        )
        package(name, settings, class_names, serialized, serving, model_store)
        record = BuildRecord(
            **BuildRecord.inputs(name, model, None if random_init else checkpoint, labels, serving, top_k),
            weights=weights,
            views=views,
            limits=asdict(limits),
            calibration=calibration_record(calibration, inference),
            inference=asdict(inference),
            version=handler_version(),
            export=_export_record(report, serialized, openvino),
            conversion={**conversion.source, "archived_as": shipped.name} if conversion else {},
        )
    BuildRecord.path_for(name, model_store).write_text(json.dumps(asdict(record), indent=2) + "\n")
    return model_store / f"{name}.mar"


def build_detection_archive(
    model: str,
    checkpoint: Path | None,
    labels: Path | None,
    name: str,
    model_store: Path,
    serving: ServingConfig,
    top_k: int,
    limits: DecodeLimits,
    inference: InferenceOptions,
    detection: DetectionBuild | None,
) -> Path:
    """:func:`build_archive` of an AVA detection model: its checkpoint (the official format), labels, the person
    detector (a torchvision detector's weights as ``persons.pth``) and the ``detection:`` settings. The network,
    the labels and the detector are loaded together first, as a worker will."""
    spec = DETECTION_MODELS[model]
    detection = detection or DetectionBuild()
    if inference.export not in ("auto", "eager"):  # a forced OpenVINO archive would serve nothing on a GPU
        raise ValueError(
            f"export={inference.export}: {model} archives carry the checkpoint (export=eager) or, by default "
            "(export=auto), also the checked OpenVINO fp32 network their CPU workers serve"
        )
    check_detection_options(inference)
    random_init = checkpoint is None
    detector_weights = detection.weights(random_init)
    model_store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"archive-{name}-") as tmp:
        staging = Path(tmp)
        if checkpoint is None:
            checkpoint = save_random_detection_checkpoint(spec, staging / f"{model}-random-init.pyth")
        class_names = read_labels(labels) if labels else label_set(spec.labels)
        extra = staging / "extra"
        extra.mkdir()
        persons_file = None
        if detection.detector in TORCHVISION_DETECTORS:
            persons_file = extra / PERSONS_FILE
            if detector_weights == RANDOM_INIT:
                save_random_person_detector(detection.detector, persons_file)
            else:
                shutil.copyfile(detector_weights, persons_file)
        boxes = DetectionSettings(detection.max_boxes, detection.detector, persons_file, detection.detector_threshold)
        cpu = torch.device("cpu")
        persons = load_person_detector(boxes.detector, persons_file, boxes.threshold, cpu) if boxes.detector else None
        checking = InferenceOptions(export="eager", warmup=False, decode_workers=1)
        weights = ActionDetector.load(spec, checkpoint, class_names, cpu, persons, options=checking).weights
        openvino, report = None, None
        if inference.export == "auto":
            openvino, report = cpu_engine(spec, checkpoint, class_names, inference, extra / AUTO_OPENVINO_FILE)
        settings = HandlerSettings(
            model=model,
            checkpoint=checkpoint,
            labels=extra / "labels.json",
            top_k=top_k,
            limits=limits,
            inference=inference,
            openvino=openvino,
            detection=boxes,
        )
        package(name, settings, class_names, checkpoint, serving, model_store)
        record = BuildRecord(
            **BuildRecord.inputs(name, model, None if random_init else checkpoint, labels, serving, top_k),
            weights=weights,
            limits=asdict(limits),
            inference=asdict(inference),
            version=handler_version(),
            export=_export_record(report, checkpoint, openvino),
            detection=detection.record(random_init),
        )
    BuildRecord.path_for(name, model_store).write_text(json.dumps(asdict(record), indent=2) + "\n")
    return model_store / f"{name}.mar"


def cpu_engine(
    spec: ModelSpec | DetectionSpec,
    checkpoint: Path,
    labels: Sequence[str],
    inference: InferenceOptions,
    output: Path,
) -> tuple[CpuEngine | None, ExportReport | None]:
    """The OpenVINO fp32 network an ``export=auto`` archive carries for CPU workers, built and checked against
    eager (:func:`~slowfast_serve.server.export.export_checkpoint`; for an AVA detection model
    :func:`~slowfast_serve.server.export.export_detection_checkpoint`), or, when the conversion fails or disagrees,
    none and why (the workers then serve eager and log it). Nothing for an archive whose CPU workers serve eager
    anyway (``precision`` other than fp32, ``compile``)."""
    if inference.precision != "fp32" or inference.compile:
        return None, None
    options = replace(inference, export="openvino")
    try:
        if isinstance(spec, DetectionSpec):
            report = export_detection_checkpoint(spec, checkpoint, labels, options, output)
        else:
            report = export_checkpoint(spec, checkpoint, labels, options, torch.device("cpu"), output)
    except ImportError as e:
        return CpuEngine(file=None, unavailable=f"OpenVINO is not installed where the archive was built ({e})"), None
    except (ValueError, RuntimeError) as e:
        output.unlink(missing_ok=True)
        print(f"export=auto: {spec.name} is served eager on CPUs too: {e}", file=sys.stderr)
        return CpuEngine(file=None, unavailable=f"its OpenVINO conversion failed its check at archive time: {e}"), None
    print(f"export=auto: CPU workers serve {report.summary()}", file=sys.stderr)
    return CpuEngine(file=output), report


def package(
    name: str,
    settings: HandlerSettings,
    labels: Sequence[str],
    serialized: Path,
    serving: ServingConfig,
    model_store: Path,
) -> None:
    """Writes ``<model_store>/<name>.mar``: the handler package, ``labels`` and the files already in the directory
    of ``settings.labels`` (the archive's root), ``serialized`` and ``model-config.yaml`` (``serving`` and
    ``settings``)."""
    extra = Path(settings.labels).parent
    shutil.copytree(HANDLER, extra / "handler", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    save_labels(labels, settings.labels)
    config = extra.parent / "model-config.yaml"
    config.write_text(yaml.safe_dump({**serving.as_yaml(), "handler": settings.as_yaml_section()}, sort_keys=False))
    run_archiver(name, HANDLER / "ts_handler.py", serialized, extra, config, model_store, handler_version())


def _export_record(report: ExportReport | None, serialized: Path, openvino: CpuEngine | None) -> dict:
    """The build record's ``export`` entry: the export report, and where the artifact sits in the archive."""
    if openvino is not None and openvino.file is None:
        return {"format": "openvino", "unavailable": openvino.unavailable}
    if report is None:
        return {}
    return {**asdict(report), "path": (openvino.file if openvino else serialized).name}


def run_archiver(
    name: str, handler: Path, checkpoint: Path, extra: Path, config: Path, model_store: Path, version: str
) -> None:
    """torch-model-archiver: ``<model_store>/<name>.mar`` from a handler file, a serialized file, a directory
    whose contents go to the archive root, and a model-config.yaml."""
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    command = [
        str(archiver) if archiver.exists() else "torch-model-archiver",
        "--model-name", name,
        "--version", version,
        "--handler", str(handler),
        "--serialized-file", str(checkpoint),
        "--extra-files", str(extra),
        "--config-file", str(config),
        "--export-path", str(model_store),
        "--force",
    ]  # fmt: skip
    model_store.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def handler_version() -> str:
    """The archive version: the handler package's content hash, so two archives with equal code match."""
    digest = hashlib.sha256()
    for path in sorted(HANDLER.rglob("*.py")):
        digest.update(path.read_bytes())
    return f"1.0+{digest.hexdigest()[:8]}"


def parse_limits(texts: list[str]) -> DecodeLimits:
    """``["max_window_mb=256", ...]`` -> :class:`DecodeLimits` (others at their defaults), values typed as theirs.

    Raises:
        ValueError: naming the malformed or unknown entry.
    """
    return decode_limits(_assignments(texts, asdict(DecodeLimits()), "limit"))


def parse_inference(texts: list[str]) -> InferenceOptions:
    """``["precision=bf16", "compile=true", ...]`` -> :class:`InferenceOptions` (others at their defaults).

    Raises:
        ValueError: naming the malformed or unknown entry.
    """
    return inference_options(_assignments(texts, asdict(InferenceOptions()), "inference option"))


def _assignments(texts: list[str], defaults: dict[str, Any], what: str) -> dict[str, Any]:
    """``NAME=VALUE`` texts as a mapping, each value converted to the type of its default."""
    values: dict[str, Any] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or name not in defaults:
            raise ValueError(f"{what} {text!r}: expected NAME=VALUE with NAME one of {sorted(defaults)}")
        kind = type(defaults[name])
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{what} {text!r}: {value!r} is not true or false")
            values[name] = value.lower() in ("true", "1", "yes")
            continue
        try:
            values[name] = kind(value)
        except ValueError:
            raise ValueError(f"{what} {text!r}: {value!r} is not a {kind.__name__}") from None
    return values


def calibration_record(calibration: Sequence[Path], inference: InferenceOptions) -> list[str]:
    """The calibration inputs as a build record keeps them: resolved paths, and only where they are used."""
    return [str(Path(p).resolve()) for p in calibration] if inference.precision == "int8" else []


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """``--limit NAME=VALUE`` and ``--inference NAME=VALUE`` (repeatable), shared with ``slowfast-serve serve``."""
    for flag, defaults, what in (
        ("--limit", DecodeLimits(), "a per-request decoding limit"),
        ("--inference", InferenceOptions(), "how workers run the model (docs/performance.md)"),
    ):
        names = ", ".join(f"{name}={value}" for name, value in asdict(defaults).items())
        help_text = f"{what}, repeatable; names and defaults: {names}"
        parser.add_argument(flag, action="append", default=[], metavar="NAME=VALUE", help=help_text)
    parser.add_argument(
        "--calibration",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="videos, or folders of them, to calibrate an --inference export=openvino --inference precision=int8 "
        "archive with (repeatable; one clip each, at most 300; like the videos it will serve)",
    )


def add_detection_arguments(parser: argparse.ArgumentParser) -> None:
    """The AVA detection models' build options, shared with ``slowfast-serve serve`` (docs/detection.md)."""
    group = parser.add_argument_group("AVA detection models (slowfast_r50_detection, slow_r50_detection)")
    group.add_argument(
        "--detector",
        choices=[*DETECTORS, "none"],
        default="none",
        help="person detector for requests without boxes: torchvision's COCO Faster R-CNN (weights from torch.hub's "
        "cache, a download or --detector-checkpoint), OpenCV's built-in HOG (no weights, weaker), or none "
        "(requests must give boxes; default)",
    )
    group.add_argument("--detector-checkpoint", type=Path, help="the torchvision detector's weights file")
    group.add_argument(
        "--detector-threshold",
        type=float,
        help=f"lowest person score kept (default: {', '.join(f'{k} {v}' for k, v in DETECTORS.items())})",
    )
    group.add_argument(
        "--max-boxes", type=int, default=DEFAULT_MAX_BOXES, help="boxes scored per keyframe at most (default: 32)"
    )


def detection_build(args: argparse.Namespace) -> DetectionBuild | None:
    """The detection options given, for an AVA detection model; ``None`` for a classifier given none of them.

    Raises:
        UsageError: detection options for a classifier, or invalid ones.
    """
    given = args.detector != "none" or args.detector_checkpoint or args.detector_threshold is not None
    given = given or args.max_boxes != DEFAULT_MAX_BOXES
    if args.model not in DETECTION_MODELS:
        if given:
            raise UsageError(
                f"--detector, --detector-checkpoint, --detector-threshold and --max-boxes apply to the AVA detection "
                f"models ({', '.join(DETECTION_MODELS)}), not {args.model}"
            )
        return None
    try:
        return DetectionBuild(
            max_boxes=args.max_boxes,
            detector=None if args.detector == "none" else args.detector,
            detector_checkpoint=args.detector_checkpoint,
            detector_threshold=args.detector_threshold,
        )
    except ValueError as e:
        raise UsageError(str(e)) from e


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=SERVED_MODELS, help="registry model name")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint",
        type=Path,
        help="official-format checkpoint (.pyth with 'model_state'), or a toolbox entry's own file as downloaded "
        "(default: the bundled one (motion_demo), else the official one from torch.hub's cache, downloaded if needed)",
    )
    weights.add_argument(
        "--random-init", action="store_true", help="random weights, for tests and benchmarks only (marked in responses)"
    )
    parser.add_argument("--labels", type=Path, help="label file; default: the model's label set")
    parser.add_argument("--name", help="TorchServe model name / archive name (default: the model name)")
    parser.add_argument(
        "--model-store", type=Path, default=DEFAULT_STORE, help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--top-k", type=int, default=DEFAULT_TOP_K, help="default classes per response (default: %(default)s)"
    )
    defaults = ServingConfig()
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="TorchServe batchSize")
    parser.add_argument("--max-batch-delay", type=int, default=defaults.max_batch_delay_ms, help="maxBatchDelay, ms")
    parser.add_argument("--min-workers", type=int, default=defaults.min_workers, help="minWorkers")
    parser.add_argument("--max-workers", type=int, default=defaults.max_workers, help="maxWorkers")
    parser.add_argument("--response-timeout", type=int, default=defaults.response_timeout_s, help="responseTimeout, s")
    parser.add_argument("--views", default="1x1", help="default views per request, CLIPSxCROPS (default: 1x1)")
    add_setting_arguments(parser)
    parser.add_argument(
        "--export-device",
        type=torch.device,
        help="where --inference export=torchscript|aoti is built and checked (default: cuda when present, else cpu; "
        "export=openvino: cpu)",
    )
    add_detection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        limits = parse_limits(args.limit)
        inference = parse_inference(args.inference)
    except ValueError as e:
        raise UsageError(str(e)) from e
    detection = detection_build(args)
    serving = ServingConfig(
        batch_size=args.batch_size,
        max_batch_delay_ms=args.max_batch_delay,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        response_timeout_s=args.response_timeout,
    )
    try:
        checkpoint = None if args.random_init else model_checkpoint(args.model, args.checkpoint)
        archive = build_archive(
            args.model,
            checkpoint,
            labels=args.labels,
            name=args.name,
            model_store=args.model_store,
            serving=serving,
            top_k=args.top_k,
            limits=limits,
            inference=inference,
            views=args.views,
            export_device=args.export_device,
            calibration=args.calibration,
            detection=detection,
        )
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(archive)
    return 0
