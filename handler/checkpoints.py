"""Checkpoints fitted to registry networks and loaded: which entries a file fits, its weights for one, conversions.

A file is read by :mod:`handler.checkpoint_files` and its tensors renamed by :mod:`handler.checkpoint_names`;
here the result is checked key for key, shape for shape, against the entry's network built with the file's head
size (:func:`fit`), loaded (:func:`load_weights`, :func:`load_model`), described (:func:`describe_checkpoint`) and
written in this project's format (:func:`convert_checkpoint`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from handler.checkpoint_files import FORMATS, SHOWN, Checkpoint, CheckpointError, read_checkpoint
from handler.checkpoint_names import CAFFE2, HEAD_WEIGHT, Architecture, caffe2_reshaped, to_pytorchvideo
from handler.models import REGISTRY, ModelSpec
from handler.networks import build_model
from handler.recipes import Toolbox


@dataclass(frozen=True)
class Weights:
    """A loaded checkpoint.

    Attributes:
        state_dict: parameter and buffer tensors, on the CPU.
        description: what the responses report as ``"weights"``: ``"random-init"`` or
            ``"<file name> sha256:<first 12 hex digits>"``.
        num_classes: rows of the classifier head found in the state dict.
    """

    state_dict: dict[str, torch.Tensor]
    description: str
    num_classes: int


def save_random_checkpoint(spec: ModelSpec, path: str | Path, *, seed: int = 0, num_classes: int | None = None) -> Path:
    """Writes a randomly initialised ``spec`` network in the official checkpoint format, marked random-init.

    For tests and benchmarks only: the predictions of such weights are meaningless, and every response served
    from them says so (``"weights": "random-init"``).
    """
    torch.manual_seed(seed)
    model = build_model(spec, num_classes=num_classes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": model.state_dict(), "random_init": True, "model": spec.name, "seed": seed}, path)
    return path


_SHAPES: dict[tuple[str, ...], dict[str, tuple[int, ...]]] = {}


def network_shapes(spec: ModelSpec, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """``spec``'s state-dict shapes with a ``num_classes`` head, in the network's key order (cached).

    The network is built on the meta device (no memory, no initialisation cost) where its builder allows.
    """
    classes = num_classes or spec.num_classes
    key = (spec.name, spec.builder, repr(spec.builder_kwargs), spec.num_classes_arg, str(classes))
    if key not in _SHAPES:
        try:
            with torch.device("meta"):
                model = build_model(spec, num_classes=classes)
        except RuntimeError:  # MViT's builder reads tensor values (.item()), which meta tensors do not have
            model = build_model(spec, num_classes=classes)
        _SHAPES[key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SHAPES[key]


def head_rows(state: Mapping[str, torch.Tensor], path: str | Path) -> int:
    """Classes of the classifier: rows of SlowFast's head, else of the last 2-D ``*.weight`` in the state dict."""
    head = state.get(HEAD_WEIGHT)
    matrices = [head] if head is not None and head.dim() >= 2 else []  # a Caffe2 blob may have trailing 1s
    matrices = matrices or [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
    if not matrices:
        raise CheckpointError(f"{path} has no linear classifier weight; is it a video classification checkpoint?")
    return int(matrices[-1].shape[0])


def fit_problems(state: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` against a network's ``shapes`` (the first few each)."""
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    misshaped = [
        f"{k} {tuple(v.shape)} (network: {shapes[k]})" for k, v in state.items() if k in shapes and v.shape != shapes[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            more = f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:SHOWN])}{more}")
    return problems


class Fit(NamedTuple):
    """A checkpoint converted for a registry entry's network (:func:`fit`)."""

    state_dict: dict[str, torch.Tensor]
    """PyTorchVideo-named tensors, in the network's key order when the file fits."""
    problems: list[str]
    """What does not fit (:func:`fit_problems`); empty when the file fits."""
    num_classes: int
    """The head size the file has (the network is built with it)."""


def fit(checkpoint: Checkpoint, spec: ModelSpec) -> Fit:
    """``checkpoint`` converted for ``spec``'s network built with the file's head size."""
    state = to_pytorchvideo(checkpoint.tensors, checkpoint.naming)
    num_classes = head_rows(state, checkpoint.path)
    shapes = network_shapes(spec, num_classes)
    if checkpoint.naming == CAFFE2:
        state = {k: caffe2_reshaped(v, shapes[k]) if k in shapes else v for k, v in state.items()}
    problems = fit_problems(state, shapes)
    return Fit(state if problems else {k: state[k] for k in shapes}, problems, num_classes)


def fitting_models(checkpoint: Checkpoint) -> list[str]:
    """The registry entries that serve this toolbox's files and whose network the file fits exactly."""
    pathways = len(Architecture.of(to_pytorchvideo(checkpoint.tensors, checkpoint.naming)).blocks) or 1
    found = []
    for spec in REGISTRY.values():
        if checkpoint.accepted_by(spec) and spec.clip.pathways == pathways:
            with contextlib.suppress(CheckpointError):  # no classifier: fits nothing
                if not fit(checkpoint, spec).problems:
                    found.append(spec.name)
    return found


def what_it_is(checkpoint: Checkpoint) -> str:
    """What a file is, for messages: ``"an MMAction2 SlowFast R101 checkpoint (torch zip, meta + state_dict, 1254
    tensors; fusion kernel 7, laterals without batch norm, 400 classes)"``."""
    architecture = Architecture.of(to_pytorchvideo(checkpoint.tensors, checkpoint.naming))
    toolbox = checkpoint.layout.title + (" Caffe2" if checkpoint.naming == CAFFE2 else "")
    name = " ".join(part for part in (toolbox, architecture.name, "checkpoint") if part)
    article = "a random-init" if checkpoint.random_init else "an" if name[0] in "AEIOUM" else "a"
    contents = f"{checkpoint.file_format}, {checkpoint.container}, {len(checkpoint.tensors)} tensors"
    details = f"; {architecture.details}" if architecture.details else ""
    origin = ""
    if checkpoint.source is not None:
        origin = f", converted by this project from {checkpoint.source['file']}"
    elif checkpoint.model is not None:
        origin = f", written by this project for {checkpoint.model}"
    return f"{article} {name}{origin} ({contents}{details})"


def _serve_hint(fits: list[str]) -> str:
    if not fits:
        return "no registry entry fits it"
    return "serve it with " + " or ".join(f"MODEL={name}" for name in fits)


# --------------------------------------------------------------------------------------------------------------
# Public entry points


def load_checkpoint(path: str | Path) -> Weights:
    """Any checkpoint this module reads, converted to PyTorchVideo's names and layouts; no architecture check.

    Raises:
        CheckpointError: the file is not a (safe, readable) checkpoint.
    """
    checkpoint = read_checkpoint(path)
    state = to_pytorchvideo(checkpoint.tensors, checkpoint.naming)
    return Weights(state_dict=state, description=checkpoint.description, num_classes=head_rows(state, path))


def load_weights(path: str | Path, spec: ModelSpec) -> Weights:
    """``path`` read, recognised, converted from ``spec.checkpoint_layout`` and checked against ``spec``'s network.

    Returns:
        The state dict in the network's key order (built with the file's head size, which may differ from the
        entry's after fine-tuning), its description (``random-init``, or the original file's name and hash) and
        the head size.

    Raises:
        CheckpointError: the file is unreadable or unsafe; another toolbox's file (the message names what it is
            and the ``MODEL=`` it fits); or it does not fit the network key for key, shape for shape.
    """
    return _weights_for(read_checkpoint(path), spec)


def _weights_for(checkpoint: Checkpoint, spec: ModelSpec) -> Weights:
    path = checkpoint.path
    if not checkpoint.accepted_by(spec):
        raise CheckpointError(
            f"{path} is {what_it_is(checkpoint)}; {spec.name} serves {spec.checkpoint_layout.title} "
            f"checkpoints: {_serve_hint(fitting_models(checkpoint))}"
        )
    fitted = fit(checkpoint, spec)
    if fitted.problems:
        raise CheckpointError(
            f"{path} does not fit the {spec.name} architecture: it is {what_it_is(checkpoint)}; "
            f"{'; '.join(fitted.problems)}; {_serve_hint(fitting_models(checkpoint))}"
        )
    return Weights(state_dict=fitted.state_dict, description=checkpoint.description, num_classes=fitted.num_classes)


def describe_checkpoint(path: str | Path) -> str:
    """One paragraph: what ``path`` is and which registry entries serve it.

    Raises:
        CheckpointError: the file is not a (safe, readable) checkpoint.
    """
    checkpoint = read_checkpoint(path)
    fits = fitting_models(checkpoint)
    lines = [f"{checkpoint.path.name}: {what_it_is(checkpoint)}", f"weights: {checkpoint.description}"]
    if checkpoint.skipped:
        more = f", ... ({len(checkpoint.skipped) - SHOWN} more)" if len(checkpoint.skipped) > SHOWN else ""
        lines.append(f"not converted: {', '.join(checkpoint.skipped[:SHOWN])}{more}")
    lines.append(f"fits: {', '.join(fits)}" if fits else "fits: no registry entry")
    return "\n".join(lines)


@dataclass(frozen=True)
class Conversion:
    """A checkpoint written in this project's format by :func:`convert_checkpoint`.

    Attributes:
        path: the written file, ``{"model_state": state_dict, "source": source}``.
        source: the original file's name, sha256, layout and format.
        weights: what was written (the description names the original file).
        input: what the original file is (:func:`what_it_is`).
    """

    path: Path
    source: dict[str, str]
    weights: Weights
    input: str


def convert_checkpoint(path: str | Path, spec: ModelSpec, out: str | Path) -> Conversion:
    """Converts ``path`` for ``spec`` (as :func:`load_weights` does) and writes it to ``out`` in this project's
    format, ``{"model_state": state_dict, "source": {"file", "sha256", "layout", "format"}}``, which loads with a
    plain ``torch.load(weights_only=True)``. A file converted before keeps its original ``source``.
    """
    checkpoint = read_checkpoint(path)
    weights = _weights_for(checkpoint, spec)
    source = checkpoint.source or {
        "file": checkpoint.path.name,
        "sha256": checkpoint.sha256,
        "layout": str(checkpoint.layout),  # a plain string: the file loads with weights_only
        "format": FORMATS[checkpoint.naming],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {"model_state": weights.state_dict, "source": source}
    if checkpoint.random_init:
        content["random_init"] = True  # random weights stay marked as such
    torch.save(content, out)
    return Conversion(path=out, source=source, weights=weights, input=what_it_is(checkpoint))


def archive_checkpoint(path: str | Path, spec: ModelSpec, directory: str | Path) -> tuple[Path, Conversion | None]:
    """The file an archive of ``spec`` should ship for ``path``: ``path`` itself when it is already in this
    project's format (a PyTorchVideo-named ``model_state`` torch file, or an entry that takes no conversion),
    else its conversion written into ``directory`` as ``<spec.name>.pyth``."""
    if spec.checkpoint_layout == Toolbox.PYTORCHVIDEO or read_checkpoint(path).official:
        return Path(path), None
    conversion = convert_checkpoint(path, spec, Path(directory) / f"{spec.name}.pyth")
    return conversion.path, conversion


def load_model(spec: ModelSpec, checkpoint: str | Path) -> tuple[nn.Module, Weights]:
    """Builds ``spec``'s network and loads ``checkpoint`` into it strictly (every key, every shape), converting a
    toolbox's file of ``spec.checkpoint_layout`` first (:func:`load_weights`)."""
    weights = load_weights(checkpoint, spec)
    model = build_model(spec, num_classes=weights.num_classes)
    try:
        model.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint} does not fit the {spec.name} architecture: {e}") from e
    return model.eval(), weights
