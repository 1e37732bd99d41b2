"""Exported forms of a registry network: TorchScript and AOTInductor, built once, loaded by every worker.

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

Each artifact carries :class:`ExportMetadata` (model, weights, head size, the options it was built with), so a
worker checks that it is loading what its settings describe instead of serving a mismatched network.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from handler.models import ModelSpec

logger = logging.getLogger(__name__)

ExportFormat = Literal["eager", "torchscript", "aoti"]
EXPORT_FORMATS: tuple[str, ...] = ("eager", "torchscript", "aoti")
SUFFIXES = {"torchscript": ".ts.pt", "aoti": ".pt2"}
_METADATA = "video_export.json"  # TorchScript extra file / AOTInductor metadata key


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


def export_network(network: nn.Module, example: list[torch.Tensor], metadata: ExportMetadata, path: Path) -> Path:
    """Exports ``network`` (eval mode, on the export device, already folded / in its memory format) to ``path``.

    Args:
        network: the registry network.
        example: pathway tensors (:func:`as_pathways`) of a batch of 2 clips (tracing and export record shapes
            from it; 2, not 1, so the batch dimension is not specialised to 1).
        metadata: stored in the artifact.
        path: output file (``.ts.pt`` / ``.pt2``).

    Raises:
        ValueError: for an unknown format; torch's own errors when the network cannot be traced or exported.
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
    raise ValueError(f"cannot export to {metadata.format!r}; formats: torchscript, aoti")


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
    else:
        raise ValueError(f"cannot load export format {fmt!r}; formats: torchscript, aoti")
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
