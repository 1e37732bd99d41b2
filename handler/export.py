"""Exported forms of a registry network: TorchScript, AOTInductor and OpenVINO, built once, loaded by every worker.

The exported part is the network alone (clip batch in, class scores out); decoding, preprocessing and the
softmax stay in Python. Both forms wrap the network in :class:`PathwayModule`, whose ``forward(*pathways)``
takes the pathway tensors as positional arguments (``slow, fast`` for SlowFast, ``clip`` otherwise): a fixed
signature that tracing and ``torch.export`` need, where the hub models take (and mutate) a list.

- ``torchscript``: ``torch.jit.trace`` of the network, then ``torch.jit.freeze`` (weights become constants).
  Runs on any device the archive is loaded on and under autocast (``precision=bf16|fp16`` still applies).
- ``aoti``: ``torch.export`` with a dynamic batch dimension (1 .. ``max_clips_per_forward``), compiled ahead of
  time by AOTInductor into a ``.pt2`` package: generated kernels, no Python in the forward. A package is tied
  to the device type, the CPU instruction set and the torch version it was compiled with, and to its inputs'
  memory format; it runs in float32 (autocast does not reach compiled kernels). The network is exported in the
  contiguous layout: with ``channels_last_3d`` weights, torch 2.11's AOTInductor compiled SlowFast to wrong
  outputs at batch size 1 (relative error 0.8, found by the export check; docs/export.md).
- ``openvino``: ``openvino.convert_model`` of the same module to OpenVINO's IR (batch dimension 1 ..
  ``max_clips_per_forward``, the other dimensions fixed), compiled by the worker for its CPU with OpenVINO's
  runtime. ``precision`` decides what the IR holds and how it runs: ``fp32`` (float32 weights, float32 inference:
  the parity precision), ``bf16`` (float32 weights, OpenVINO's ``INFERENCE_PRECISION_HINT=bf16``: on CPUs with
  AVX-512 BF16 or AMX only) or ``int8`` (NNCF post-training quantization, calibrated on clips of real videos when
  the archive is built). The file (``.ov.zip``) holds ``model.xml``, ``model.bin`` and the metadata; it is read
  from memory. CPU only.

Each artifact carries :class:`ExportMetadata` (model, weights, head size, the options it was built with), so a
worker checks that it is loading what its settings describe instead of serving a mismatched network.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from handler.models import ModelSpec

logger = logging.getLogger(__name__)

ExportFormat = Literal["auto", "eager", "torchscript", "aoti", "openvino"]
EXPORT_FORMATS: tuple[str, ...] = ("auto", "eager", "torchscript", "aoti", "openvino")
#: The file name of the OpenVINO network an ``export=auto`` archive carries beside its checkpoint.
AUTO_OPENVINO_FILE = "openvino.ov.zip"
SUFFIXES = {"torchscript": ".ts.pt", "aoti": ".pt2", "openvino": ".ov.zip"}
_METADATA = "video_export.json"  # TorchScript extra file / AOTInductor metadata key / OpenVINO zip member
_OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT per precision


@dataclass(frozen=True)
class ExportMetadata:
    """What an exported artifact holds and how it was built.

    Attributes:
        model: registry name of the architecture.
        format: ``torchscript`` or ``aoti``.
        weights: the weights' description as responses report it (``"random-init"`` or file name and hash).
        num_classes: rows of the classifier head.
        device: device type the artifact was built on (``cpu`` / ``cuda``); binding for ``aoti`` only.
        max_batch: largest clip batch the artifact accepts (``aoti``'s dynamic batch bound).
        channels_last: the network (and, for ``aoti``, its inputs) in ``channels_last_3d``.
        fold_batchnorm: batch norms folded into their convolutions before export.
        torch_version: ``torch.__version__`` at export (``aoti`` packages load only under the same one).
        precision: what the artifact computes in: ``fp32``; for ``openvino`` also ``bf16`` or ``int8``
            (TorchScript's ``bf16``/``fp16`` is autocast at run time, not part of the artifact).
        openvino_version: the OpenVINO that converted an ``openvino`` export.
        calibration: for ``int8``, the calibration clips (how many, and from what).
    """

    model: str
    format: str
    weights: str
    num_classes: int
    device: str
    max_batch: int
    channels_last: bool
    fold_batchnorm: bool
    torch_version: str
    precision: str = "fp32"
    openvino_version: str = ""
    calibration: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: Path) -> ExportMetadata:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: unreadable export metadata ({e}); rebuild the archive") from e


class PathwayModule(nn.Module):
    """The network with a positional signature: ``forward(*pathways)``.

    Args:
        network: a registry network (takes one ``(N, 3, T, S, S)`` tensor, or SlowFast's ``[slow, fast]`` list).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *pathways: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` scores (logits or probabilities, as the network's head makes them)."""
        # A fresh list per call: the hub models overwrite the list they are given.
        return self.network(pathways[0] if len(pathways) == 1 else list(pathways))


def as_pathways(inputs: torch.Tensor | list[torch.Tensor], channels_last: bool) -> list[torch.Tensor]:
    """:func:`handler.transforms.model_inputs`'s result as the list of pathway tensors an export takes, each in
    the memory format the export was built with (``channels_last_3d`` or contiguous).

    A compiled package reads its inputs with the strides it was exported with: another layout would be read as
    garbage, not rejected, so exporting and calling both lay their inputs out here.
    """
    pathways = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    return [p.contiguous(memory_format=layout) for p in pathways]


def export_network(
    network: nn.Module,
    example: list[torch.Tensor],
    metadata: ExportMetadata,
    path: Path,
    calibration: Sequence[list[torch.Tensor]] = (),
) -> Path:
    """Exports ``network`` (eval mode, on the export device, already folded / in its memory format) to ``path``.

    Args:
        network: the registry network.
        example: pathway tensors (:func:`as_pathways`) of a batch of 2 clips (tracing and export record shapes
            from it; 2, not 1, so the batch dimension is not specialised to 1).
        metadata: stored in the artifact.
        path: output file (``.ts.pt`` / ``.pt2`` / ``.ov.zip``).
        calibration: for an ``int8`` OpenVINO export, the pathway tensors of each calibration clip (batch 1,
            float32, normalised as served).

    Raises:
        ValueError: for an unknown format, or ``int8`` without calibration clips; torch's and OpenVINO's own
            errors when the network cannot be traced or converted.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    module = PathwayModule(_exportable(network)).eval()
    if metadata.format == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(module, tuple(example), check_trace=False)
            frozen = torch.jit.freeze(traced)
        torch.jit.save(frozen, str(path), _extra_files={_METADATA: metadata.to_json()})
        return path
    if metadata.format == "aoti":
        if path.suffix != ".pt2":
            raise ValueError(f"an AOTInductor package's file name must end in .pt2, got {path.name}")
        batch = torch.export.Dim("batch", min=1, max=metadata.max_batch)
        program = torch.export.export(module, tuple(example), dynamic_shapes=(tuple({0: batch} for _ in example),))
        configs = {"aot_inductor.metadata": {_METADATA: metadata.to_json()}}
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs))
    if metadata.format == "openvino":
        return _export_openvino(module, example, metadata, path, calibration)
    raise ValueError(f"cannot export to {metadata.format!r}; formats: torchscript, aoti, openvino")


def _export_openvino(
    module: nn.Module,
    example: list[torch.Tensor],
    metadata: ExportMetadata,
    path: Path,
    calibration: Sequence[list[torch.Tensor]],
) -> Path:
    import openvino as ov

    if metadata.precision == "int8" and not calibration:
        raise ValueError(
            "precision=int8 quantizes with calibration clips: give the archive build videos like those it will "
            "serve (slowfast-serve archive --calibration DIR, make serve CALIBRATION=DIR)"
        )
    if metadata.precision not in _OPENVINO_PRECISIONS:
        raise ValueError(f"export=openvino runs in fp32, bf16 or int8, not {metadata.precision}")
    with torch.no_grad():
        model = ov.convert_model(module, example_input=tuple(example))
    # Only the batch dimension varies; fixed clip sizes let OpenVINO pick its kernels once.
    batch = ov.Dimension(1, metadata.max_batch)
    model.reshape({port: ov.PartialShape([batch, *t.shape[1:]]) for port, t in zip(model.inputs, example, strict=True)})
    if metadata.precision == "int8":
        import nncf

        items = [tuple(p.cpu().numpy() for p in pathways) for pathways in calibration]
        model = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    return _save_openvino(model, metadata, path)


def _save_openvino(model: Any, metadata: ExportMetadata, path: Path) -> Path:
    """An ``.ov.zip``: the IR (float32 weights) and the metadata."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, xml, compress_to_fp16=False)  # fp16 weights would change the fp32 results
        with zipfile.ZipFile(path, "w") as archive:  # stored: the weights do not compress
            archive.write(xml, "model.xml")
            archive.write(xml.with_suffix(".bin"), "model.bin")
            archive.writestr(_METADATA, metadata.to_json())
    return path


def _exportable(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with PyTorchVideo's ``Swish`` (X3D) replaced by ``nn.SiLU``: the same function,
    ``x * sigmoid(x)``, but Swish calls a custom autograd Function, which TorchScript cannot save. The caller's
    network is left as it is, so the export check still compares against the original."""
    from pytorchvideo.layers.swish import Swish

    network = copy.deepcopy(network)
    for module in list(network.modules()):
        for name, child in module.named_children():
            if isinstance(child, Swish):
                setattr(module, name, nn.SiLU())
    return network


class ExportedModel:
    """A loaded artifact, called like the network: ``model(inputs) -> (N, num_classes)``.

    Args:
        runner: the TorchScript module or the AOTInductor package's callable.
        metadata: what the artifact says of itself.
    """

    def __init__(self, runner: Any, metadata: ExportMetadata) -> None:
        self.runner = runner
        self.metadata = metadata

    def __call__(self, inputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Scores for ``inputs`` (a clip batch or SlowFast's ``[slow, fast]``, float32, at most ``max_batch``
        clips)."""
        pathways = as_pathways(inputs, self.metadata.channels_last)
        if pathways[0].shape[0] > self.metadata.max_batch:
            raise ValueError(
                f"{pathways[0].shape[0]} clips in one forward; this export takes at most {self.metadata.max_batch}"
            )
        return self.runner(*pathways)


#: Clips per OpenVINO inference: a larger batch is run in slices of this many. Measured on slowfast_r50 (AMD
#: EPYC, 2 cores; docs/bench-memory.md): the time per clip is the same at batch 1, 2, 4 and 8 (0.80-0.92 s),
#: while the infer request keeps the memory of the largest batch it has run for good (+0.26 GB at 2, +1.3 GB at 8).
OPENVINO_CLIPS_PER_INFER = 2


class OpenVinoRunner:
    """An OpenVINO model compiled for the CPU, called with torch pathway tensors.

    Args:
        compiled: the ``openvino.CompiledModel``.
    """

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def __call__(self, *pathways: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` float32 scores for float32 ``(N, 3, T, S, S)`` pathways (CPU, contiguous), in slices
        of :data:`OPENVINO_CLIPS_PER_INFER` clips."""
        scores = []
        for start in range(0, pathways[0].shape[0], OPENVINO_CLIPS_PER_INFER):
            part = [p[start : start + OPENVINO_CLIPS_PER_INFER].detach().cpu().contiguous().numpy() for p in pathways]
            self.request.infer(part)
            scores.append(torch.from_numpy(self.request.get_output_tensor(0).data.copy()))
        return torch.cat(scores)


class DetectionModule(nn.Module):
    """An AVA detection network with a positional signature: ``forward(*pathways, rois)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``(R, num_actions)`` sigmoid scores of the ``(R, 5)`` RoIs (the last input) on the pathways' clips."""
        *pathways, rois = inputs
        return self.network(pathways[0] if len(pathways) == 1 else list(pathways), rois)


def export_detection_openvino(
    network: nn.Module, example: list[torch.Tensor], rois: torch.Tensor, metadata: ExportMetadata, path: Path
) -> Path:
    """An AVA detection network (eval mode, folded, contiguous) as an fp32 OpenVINO ``.ov.zip``. Every dimension
    but the channels stays dynamic: clip batches, their height and width (no crop: they follow each video's
    aspect ratio) and the number of RoIs."""
    import openvino as ov

    if metadata.precision != "fp32":
        raise ValueError(f"the AVA detection models' OpenVINO network runs in fp32, not {metadata.precision}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The tracer warns of the head's shape checks turned into constants; the archive-time check runs other clip
    # sizes and RoI counts through the result (slowfast_serve/server/export.py), so the warnings are noise here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ov.convert_model(DetectionModule(network).eval(), example_input=(*example, rois))
    return _save_openvino(model, metadata, path)


class DetectionRunner:
    """An AVA detection network compiled by OpenVINO for the CPU, called as the network is: ``runner(inputs,
    rois)``, ``inputs`` a clip batch or SlowFast's ``[slow, fast]`` (float32), ``rois`` ``(R, 5)``; returns
    ``(R, num_actions)`` float32 scores. Like :class:`OpenVinoRunner` it infers at most
    :data:`OPENVINO_CLIPS_PER_INFER` clips at a time (the infer request keeps the memory of the largest batch it
    has run), each slice with its own RoIs, renumbered."""

    def __init__(self, compiled: Any, metadata: ExportMetadata) -> None:
        self.request = compiled.create_infer_request()
        self.metadata = metadata

    def __call__(self, inputs: torch.Tensor | list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        pathways = as_pathways(inputs, channels_last=False)
        rois = rois.detach().cpu()
        scores = torch.empty((len(rois), self.metadata.num_classes))
        for start in range(0, pathways[0].shape[0], OPENVINO_CLIPS_PER_INFER):
            mine = (rois[:, 0] >= start) & (rois[:, 0] < start + OPENVINO_CLIPS_PER_INFER)
            if not mine.any():
                continue
            part = [p[start : start + OPENVINO_CLIPS_PER_INFER].detach().cpu().contiguous().numpy() for p in pathways]
            renumbered = rois[mine] - torch.tensor([float(start), 0.0, 0.0, 0.0, 0.0])
            self.request.infer([*part, renumbered.contiguous().numpy()])
            scores[mine] = torch.from_numpy(self.request.get_output_tensor(0).data.copy())
        return scores


def load_detection_openvino(path: str | Path, device: torch.device, name: str) -> DetectionRunner:
    """The OpenVINO network of the AVA detection model ``name`` at ``path``, compiled for this CPU.

    Raises:
        ValueError: not such a file, another model's, or a worker not on the CPU.
    """
    compiled, metadata = _load_openvino(Path(path), device)
    if (metadata.model, metadata.format) != (name, "openvino"):
        raise ValueError(f"{path} holds a {metadata.format} export of {metadata.model}, not an openvino one of {name}")
    return DetectionRunner(compiled.compiled, metadata)


def load_exported(path: str | Path, fmt: str, device: torch.device, spec: ModelSpec) -> ExportedModel:
    """Loads a ``fmt`` artifact for ``spec`` onto ``device``, checking its metadata.

    Raises:
        ValueError: the file is not such an artifact, holds another model, or cannot run here (device type,
            torch version, CPU instruction set); the message says what to rebuild.
    """
    path = Path(path)
    if fmt == "torchscript":
        files = {_METADATA: ""}
        try:
            runner = torch.jit.load(str(path), map_location=device, _extra_files=files)
        except RuntimeError as e:
            raise ValueError(
                f"{path} is not a TorchScript archive ({e}); was the archive built with export=torchscript?"
            ) from e
        metadata = ExportMetadata.from_json(files[_METADATA], path)
    elif fmt == "aoti":
        runner, metadata = _load_package(path, device)
    elif fmt == "openvino":
        runner, metadata = _load_openvino(path, device)
    else:
        raise ValueError(f"cannot load export format {fmt!r}; formats: torchscript, aoti, openvino")
    if (metadata.model, metadata.format) != (spec.name, fmt):
        raise ValueError(
            f"{path} holds a {metadata.format} export of {metadata.model}, but the settings say {fmt} of {spec.name}"
        )
    return ExportedModel(runner, metadata)


def _load_package(path: Path, device: torch.device) -> tuple[Any, ExportMetadata]:
    try:
        runner = torch._inductor.aoti_load_package(str(path), device_index=-1 if device.index is None else device.index)
    except Exception as e:  # torch raises RuntimeError, zipfile and C++ errors here; all mean the same.
        raise ValueError(
            f"{path} is not an AOTInductor package loadable by torch {torch.__version__} on {device} "
            f"({type(e).__name__}: {e}); rebuild the archive with export=aoti on a machine like this one"
        ) from e
    info = runner.get_metadata()
    metadata = ExportMetadata.from_json(info.get(_METADATA, ""), path)
    problems = []
    if metadata.torch_version != torch.__version__:
        problems.append(f"compiled with torch {metadata.torch_version}, this is {torch.__version__}")
    if metadata.device != device.type:
        problems.append(f"compiled for {metadata.device}, the worker runs on {device.type}")
    isa = info.get("AOTI_CPU_ISA", "").split()
    if device.type == "cpu" and isa and torch.backends.cpu.get_cpu_capability() not in isa:
        problems.append(f"compiled for {' '.join(isa)} CPUs, this CPU has {torch.backends.cpu.get_cpu_capability()}")
    if problems:
        raise ValueError(
            f"{path} cannot run here: {'; '.join(problems)}. Rebuild the archive with export=aoti on the serving "
            "machine type (slowfast-serve archive --export-device), or use export=torchscript"
        )
    return runner, metadata


def _load_openvino(path: Path, device: torch.device) -> tuple[OpenVinoRunner, ExportMetadata]:
    """Reads an ``.ov.zip``'s members into memory (nothing extracted to disk) and compiles the model for this CPU
    with the worker's share of its threads."""
    if device.type != "cpu":
        raise ValueError(
            f"{path}: export=openvino runs on the CPU, and this worker runs on {device}; serve the GPU with eager, "
            "torchscript or aoti"
        )
    import numpy as np
    import openvino as ov

    try:
        with zipfile.ZipFile(path) as archive:
            xml, weights = archive.read("model.xml"), archive.read("model.bin")
            metadata = ExportMetadata.from_json(archive.read(_METADATA).decode(), path)
    except (zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{path} is not an OpenVINO export ({e}); was the archive built with export=openvino?") from e
    core = ov.Core()
    if metadata.precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise ValueError(
            f"{path} is an export=openvino precision=bf16 archive and this CPU has no bfloat16 support (AVX-512 BF16 "
            "or AMX); rebuild it with precision=fp32 or int8"
        )
    model = core.read_model(model=xml.decode(), weights=ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))
    config = {
        # Without the hint, OpenVINO runs bf16 on CPUs that have it: fp32 and int8 archives ask for f32 explicitly.
        "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISIONS[metadata.precision],
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),  # the worker's share, as torch runs it (OMP_NUM_THREADS)
        "PERFORMANCE_HINT": "LATENCY",
    }
    return OpenVinoRunner(core.compile_model(model, "CPU", config)), metadata
