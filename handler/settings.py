"""Handler settings: the ``handler:`` section of the archive's ``model-config.yaml``.

Example (written by ``slowfast-serve archive``)::

    handler:
      model: slowfast_r50        # registry name: architecture, clip spec, label set
      labels: labels.json        # class names shipped in the archive
      top_k: 5                   # default number of classes per response
      views: 1x1                 # default views per request (clips x crops, averaged), e.g. 10x3
      limits:                    # per-request decoding bounds (handler.decode_limits.DecodeLimits; defaults if absent)
        max_frame_pixels: 9437184
        max_decoded_frames: 3000
        max_decode_seconds: 20.0
        max_window_mb: 512
        max_timeline_windows: 120
        max_request_mb: 1024
      inference:                 # how the model runs (handler.pipeline.InferenceOptions; defaults if absent)
        precision: fp32
        channels_last: true
        fold_batchnorm: true
        compile: false
        warmup: true
        decode_workers: 0
        max_clips_per_forward: 8
        export: auto             # or eager / torchscript / aoti / openvino (handler.export)
      openvino:                  # export: auto only: the OpenVINO fp32 network CPU workers serve
        file: openvino.ov.zip    # (or `unavailable: <why>` when it failed its check; they then serve eager)
      detection:                 # AVA detection models only (handler.detection_pipeline)
        max_boxes: 32            # boxes scored per keyframe at most
        detector: hog            # person detector for requests without boxes (handler.persons), or none
        detector_file: persons.pth   # its weights (torchvision detectors)
        detector_threshold: 0.5  # lowest person score kept

The checkpoint (or, for ``export: torchscript|aoti|openvino``, the exported network) is the archive's serialized
file (``--serialized-file``), found through the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from handler.decode_limits import DecodeLimits
from handler.errors import RequestError
from handler.persons import DETECTORS, TORCHVISION_DETECTORS
from handler.pipeline import CpuEngine, InferenceOptions
from handler.request import DEFAULT_MAX_BOXES, DEFAULT_TOP_K, parse_views


@dataclass(frozen=True)
class DetectionSettings:
    """The ``detection:`` section of an AVA detection archive.

    Attributes:
        max_boxes: the most boxes one keyframe is scored with.
        detector: the person detector for requests that give no boxes (:data:`handler.persons.DETECTORS`), or
            ``None``: such requests get a 400 saying how to give boxes.
        detector_file: its weights, for the torchvision detectors (a file in the archive).
        detector_threshold: the lowest person score kept (default: the detector's, :data:`~handler.persons.DETECTORS`).
    """

    max_boxes: int = DEFAULT_MAX_BOXES
    detector: str | None = None
    detector_file: Path | None = None
    detector_threshold: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_boxes, int) or isinstance(self.max_boxes, bool) or self.max_boxes < 1:
            raise ValueError(f"max_boxes must be a positive integer, got {self.max_boxes!r}")
        if self.detector is not None and self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)} or none, got {self.detector!r}")
        if (self.detector in TORCHVISION_DETECTORS) != (self.detector_file is not None):
            raise ValueError("detector_file goes with (and only with) a torchvision detector's weights")
        threshold = self.detector_threshold
        if threshold is not None and not (isinstance(threshold, int | float) and threshold >= 0):
            raise ValueError(f"detector_threshold must be a number >= 0, got {threshold!r}")

    @property
    def threshold(self) -> float:
        """The person score threshold in force."""
        if self.detector_threshold is not None:
            return float(self.detector_threshold)
        return DETECTORS[self.detector] if self.detector else 0.0

    @classmethod
    def from_section(cls, section: Any, model_dir: Path) -> DetectionSettings:
        """Reads the ``detection:`` section (``detector_file`` relative to the model directory).

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        values = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"model-config.yaml handler.detection: unknown key(s) {unknown}; known: {sorted(known)}")
        if values.get("detector") == "none":
            values["detector"] = None
        if values.get("detector_file") is not None:
            values["detector_file"] = model_dir / str(values["detector_file"])
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"model-config.yaml handler.detection: {e}") from None

    def as_yaml_section(self) -> dict[str, Any]:
        """The section :meth:`from_section` reads back."""
        return {
            "max_boxes": self.max_boxes,
            "detector": self.detector or "none",
            "detector_file": None if self.detector_file is None else Path(self.detector_file).name,
            "detector_threshold": self.detector_threshold,
        }


@dataclass(frozen=True)
class HandlerSettings:
    """Validated handler settings.

    Attributes:
        model: registry name of the architecture.
        checkpoint: path of the checkpoint file.
        labels: path of the label file.
        top_k: default number of classes returned per request.
        views: default views per request, ``CLIPSxCROPS`` (``handler.request.parse_views``).
        limits: per-request decoding bounds.
        inference: precision, memory format, compilation, warm-up, preparation threads.
        openvino: for ``export: auto``, the OpenVINO network CPU workers serve, or why there is none.
        detection: an AVA detection archive's boxes and person detector (``None`` for a classifier).
    """

    model: str
    checkpoint: Path
    labels: Path
    top_k: int = DEFAULT_TOP_K
    views: str = "1x1"
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    openvino: CpuEngine | None = None
    detection: DetectionSettings | None = None

    @classmethod
    def from_archive(
        cls, section: Mapping[str, Any] | None, model_dir: str | Path, serialized_file: str | None
    ) -> HandlerSettings:
        """Reads the ``handler:`` section; relative file names are resolved against the model directory.

        Raises:
            ValueError: naming the missing, unknown or invalid key and what is expected.
        """
        section = dict(section or {})
        allowed = {"model", "labels", "top_k", "views", "limits", "inference", "openvino", "detection"}
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ValueError(f"model-config.yaml handler: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        if not isinstance(section.get("model"), str):
            raise ValueError("model-config.yaml handler: 'model' (a registry name such as slowfast_r50) is required")
        if not serialized_file:
            raise ValueError("the archive has no serialized file; build it with slowfast-serve archive")
        top_k = section.get("top_k", cls.top_k)
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"model-config.yaml handler: top_k must be a positive integer, got {top_k!r}")
        views = str(section.get("views", cls.views))
        try:
            parse_views(views)
        except RequestError as e:
            raise ValueError(f"model-config.yaml handler: {e.message}") from None
        model_dir = Path(model_dir)
        detection = "detection" in section  # an AVA detection archive
        return cls(
            model=section["model"],
            checkpoint=model_dir / serialized_file,
            labels=model_dir / section.get("labels", "labels.json"),
            top_k=top_k,
            views=views,
            limits=decode_limits(section.get("limits")),
            inference=inference_options(section.get("inference")),
            openvino=_cpu_engine(section.get("openvino"), model_dir),
            detection=DetectionSettings.from_section(section["detection"], model_dir) if detection else None,
        )

    def as_yaml_section(self) -> dict[str, Any]:
        """The ``handler:`` section that :meth:`from_archive` reads back (file names relative to the archive)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "checkpoint"}
        values["labels"] = Path(values["labels"]).name
        values["limits"] = asdict(self.limits)
        values["inference"] = asdict(self.inference)
        if self.detection is None:
            values.pop("detection")
        else:
            values["detection"] = self.detection.as_yaml_section()
        if self.openvino is None:
            values.pop("openvino")
        elif self.openvino.file is None:
            values["openvino"] = {"unavailable": self.openvino.unavailable}
        else:
            values["openvino"] = {"file": Path(self.openvino.file).name}
        return values


def _cpu_engine(section: Any, model_dir: Path) -> CpuEngine | None:
    """The ``openvino:`` entry: ``{file: NAME}`` or ``{unavailable: WHY}``.

    Raises:
        ValueError: any other shape.
    """
    if section is None:
        return CpuEngine(file=None, unavailable="the archive carries no OpenVINO network (rebuild it to get one)")
    if isinstance(section, Mapping) and set(section) == {"file"} and isinstance(section["file"], str):
        return CpuEngine(file=model_dir / section["file"])
    if isinstance(section, Mapping) and set(section) == {"unavailable"}:
        return CpuEngine(file=None, unavailable=str(section["unavailable"]))
    raise ValueError(
        f"model-config.yaml handler: openvino must be {{file: NAME}} or {{unavailable: WHY}}, got {section!r}"
    )


def decode_limits(values: Mapping[str, Any] | None) -> DecodeLimits:
    """:class:`DecodeLimits` from a mapping of its field names; missing keys keep their defaults.

    Raises:
        ValueError: an unknown name or a value that is not a positive number.
    """
    return _from_mapping(DecodeLimits, values, "decode limit")


def inference_options(values: Mapping[str, Any] | None) -> InferenceOptions:
    """:class:`InferenceOptions` from a mapping of its field names; missing keys keep their defaults.

    Raises:
        ValueError: an unknown name or an invalid value.
    """
    return _from_mapping(InferenceOptions, values, "inference option")


def _from_mapping(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")
    return cls(**values)
