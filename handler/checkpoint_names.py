"""Tensor names and layouts: how each toolbox names a SlowFast's tensors, and the conversion to this project's.

Every registry network (:func:`handler.networks.build_model`) has PyTorchVideo's parameter names. The SlowFast
checkpoints that MMAction2, PaddleVideo and PySlowFast publish hold the same tensors under their own names and,
for two of them, in their own layouts. This module recognises whose names a state dict has (:data:`Naming`),
converts them to PyTorchVideo's names and layouts by the rules below (:func:`to_pytorchvideo`), and says what a
converted state dict's tensors are (:class:`Architecture`). It reads no file (:mod:`handler.checkpoint_files`)
and builds no network (:mod:`handler.checkpoints` fits and loads).

Tensor layouts, PyTorch's everywhere after conversion: convolution weights ``(out, in, t, h, w)``, linear weights
``(out, in)``, batch-norm ``weight``/``bias``/``running_mean``/``running_var`` ``(channels,)`` float32 and
``num_batches_tracked`` ``()`` int64. What differs in the toolboxes' files (``../shared/notes/ecosystems.md``):

- MMAction2 (``{"meta", "state_dict"}`` or a bare state dict, ``backbone.slow_path...``, ``cls_head.fc_cls...``):
  its head concatenates the pooled fast features first, so ``fc_cls.weight`` is ``(classes, fast + slow)``;
  PyTorchVideo's is ``(classes, slow + fast)``: the columns are swapped.
- PaddleVideo (a pickle of ``{structured name: numpy array}`` plus a name table): batch-norm statistics are named
  ``_mean``/``_variance``, there is no ``num_batches_tracked``, and the linear weight is ``(in, out)``.
- PySlowFast ``.pyth`` (``{"model_state", "cfg", "epoch", ...}``): PySlowFast's names, PyTorch's layouts.
- PySlowFast Caffe2 ``.pkl`` (``{"blobs": {blob name: numpy array}}``): Caffe2 blob names (mapped as PySlowFast's
  ``c2_model_loading.get_name_convert_func`` does), optimizer blobs beside the weights, no ``num_batches_tracked``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from handler.recipes import Toolbox

# How a file names its tensors: a toolbox's own names (its layout), or PySlowFast's Caffe2 blob names.
CAFFE2 = "caffe2"
Naming = Toolbox | Literal["caffe2"]

HEAD_WEIGHT = "blocks.6.proj.weight"  # create_slowfast's blocks: stem, res2..res5, pathway pool, head
# PaddleVideo's entries beside the arrays: the structured-name table, and the record of arrays split in parts.
PADDLE_NAME_TABLE = "StructuredToParameterName@@"
PADDLE_SPLIT_ARRAYS = "UnpackBigParamInfor@@"


def naming_of(state: Mapping[str, Any], container: str) -> Naming:
    """How the keys name the tensors; PyTorchVideo's for any state dict no toolbox rule recognises."""
    keys = [k for k in state if isinstance(k, str)]
    if container == "blobs":
        return CAFFE2
    if any(k.startswith(("backbone.slow_path.", "backbone.fast_path.", "cls_head.")) for k in keys):
        return Toolbox.MMACTION2
    if PADDLE_NAME_TABLE in state or any(re.match(r"backbone\.s\d|.*\._(mean|variance)$", k) for k in keys):
        return Toolbox.PADDLEVIDEO
    if any(re.match(r"s\d(_fuse)?\.|head\.projection\.", k) for k in keys):
        return Toolbox.PYSLOWFAST
    return Toolbox.PYTORCHVIDEO


# Caffe2 training state beside the weights, skipped as PySlowFast's loader skips it (checkpoint.py).
_CAFFE2_TRAINING = re.compile(r"momentum|lr|model_iter")


def skipped(key: str, naming: Naming) -> bool:
    """Whether the entry ``key`` is not a weight: name tables, normalisation constants, Caffe2 training state."""
    if key in (PADDLE_NAME_TABLE, PADDLE_SPLIT_ARRAYS):
        return True
    if naming == Toolbox.MMACTION2 and key.startswith("data_preprocessor."):
        return True  # MMAction2 1.x's normalisation constants (its publish_model.py deletes them too)
    return naming == CAFFE2 and _caffe2_to_pyslowfast(key) is None and bool(_CAFFE2_TRAINING.search(key))


# --------------------------------------------------------------------------------------------------------------
# Conversion rules: a toolbox's key -> this project's (PyTorchVideo's) key, first matching rule wins.

Rule = tuple[re.Pattern[str], Callable[..., str]]
_PATHWAY = {"slow": 0, "fast": 1}
_MM_CONV = {"1": "a", "2": "b", "3": "c"}  # Bottleneck3d conv1..conv3 = PyTorchVideo's conv_a..conv_c


def _rules(*pairs: tuple[str, Callable[..., str]]) -> list[Rule]:
    return [(re.compile(pattern), build) for pattern, build in pairs]


def _rename(key: str, rules: list[Rule]) -> str | None:
    for pattern, build in rules:
        match = pattern.fullmatch(key)
        if match:
            return build(*match.groups())
    return None


# MMAction2's ResNet3dSlowFast (after ``backbone.``) and SlowFastHead. Stage i of ``layer{i}`` is block i; the
# lateral after the stem (``conv1_lateral``) and after layer i fuse into blocks 0 and i.
_MMACTION2 = _rules(
    (r"(slow|fast)_path\.conv1\.conv\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{_PATHWAY[p]}.conv.{n}"),
    (r"(slow|fast)_path\.conv1\.bn\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{_PATHWAY[p]}.norm.{n}"),
    (r"slow_path\.conv1_lateral\.conv\.(\w+)", lambda n: f"blocks.0.multipathway_fusion.conv_fast_to_slow.{n}"),
    (r"slow_path\.conv1_lateral\.bn\.(\w+)", lambda n: f"blocks.0.multipathway_fusion.norm.{n}"),
    (
        r"slow_path\.layer(\d)_lateral\.conv\.(\w+)",
        lambda i, n: f"blocks.{i}.multipathway_fusion.conv_fast_to_slow.{n}",
    ),
    (r"slow_path\.layer(\d)_lateral\.bn\.(\w+)", lambda i, n: f"blocks.{i}.multipathway_fusion.norm.{n}"),
    (
        r"(slow|fast)_path\.layer(\d)\.(\d+)\.conv([123])\.(conv|bn)\.(\w+)",
        lambda p, i, j, c, kind, n: (
            f"blocks.{i}.multipathway_blocks.{_PATHWAY[p]}.res_blocks.{j}.branch2."
            f"{'conv' if kind == 'conv' else 'norm'}_{_MM_CONV[c]}.{n}"
        ),
    ),
    (
        r"(slow|fast)_path\.layer(\d)\.(\d+)\.downsample\.(conv|bn)\.(\w+)",
        lambda p, i, j, kind, n: (
            f"blocks.{i}.multipathway_blocks.{_PATHWAY[p]}.res_blocks.{j}."
            f"branch1_{'conv' if kind == 'conv' else 'norm'}.{n}"
        ),
    ),
    (r"cls_head\.fc_cls\.(\w+)", lambda n: f"blocks.6.proj.{n}"),
)

# PySlowFast's SlowFast (PaddleVideo's is a line-by-line port: the same names once normalised). Stage k of
# ``s{k}`` (k = 2..5) is block k - 1; ``s{k}_fuse`` (k = 1..4) fuses after it, into block k - 1.
_PYSLOWFAST = _rules(
    (r"s1\.pathway(\d)_stem\.conv\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{p}.conv.{n}"),
    (r"s1\.pathway(\d)_stem\.bn\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{p}.norm.{n}"),
    (r"s(\d)_fuse\.conv_f2s\.(\w+)", lambda k, n: f"blocks.{int(k) - 1}.multipathway_fusion.conv_fast_to_slow.{n}"),
    (r"s(\d)_fuse\.bn\.(\w+)", lambda k, n: f"blocks.{int(k) - 1}.multipathway_fusion.norm.{n}"),
    (
        r"s(\d)\.pathway(\d)_res(\d+)\.branch1(_bn)?\.(\w+)",
        lambda k, p, j, bn, n: (
            f"blocks.{int(k) - 1}.multipathway_blocks.{p}.res_blocks.{j}.branch1_{'norm' if bn else 'conv'}.{n}"
        ),
    ),
    (
        r"s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])(_bn)?\.(\w+)",
        lambda k, p, j, x, bn, n: (
            f"blocks.{int(k) - 1}.multipathway_blocks.{p}.res_blocks.{j}.branch2.{'norm' if bn else 'conv'}_{x}.{n}"
        ),
    ),
    (r"head\.projection\.(\w+)", lambda n: f"blocks.6.proj.{n}"),
)

# Caffe2 blob names -> PySlowFast names, following c2_model_loading.get_name_convert_func for SlowFast's blobs:
# ``t_`` marks the fast pathway; the lateral after res{k} is named after the fast pathway's last block of that
# stage (``t_res2_2_branch2c_bn_subsample``), the one after the stem ``t_pool1_subsample``.
_C2_PARAMS = {"w": "weight", "b": "bias", "s": "weight", "rm": "running_mean", "riv": "running_var"}
_C2_BN = r"bn_(s|b|rm|riv)"
_CAFFE2 = _rules(
    (r"(t_)?conv1_(w)", lambda t, q: f"s1.pathway{int(bool(t))}_stem.conv.{_C2_PARAMS[q]}"),
    (rf"(t_)?res_conv1_{_C2_BN}", lambda t, q: f"s1.pathway{int(bool(t))}_stem.bn.{_C2_PARAMS[q]}"),
    (r"t_pool1_subsample_(w)", lambda q: f"s1_fuse.conv_f2s.{_C2_PARAMS[q]}"),
    (rf"t_pool1_subsample_{_C2_BN}", lambda q: f"s1_fuse.bn.{_C2_PARAMS[q]}"),
    (r"t_res(\d)_\d+_branch2c_bn_subsample_(w)", lambda k, q: f"s{k}_fuse.conv_f2s.{_C2_PARAMS[q]}"),
    (rf"t_res(\d)_\d+_branch2c_bn_subsample_{_C2_BN}", lambda k, q: f"s{k}_fuse.bn.{_C2_PARAMS[q]}"),
    (
        rf"(t_)?res(\d)_(\d+)_branch(1|2[abc])_(?:(w)|{_C2_BN})",
        lambda t, k, j, branch, w, bn: (
            f"s{k}.pathway{int(bool(t))}_res{j}."
            + ("branch1" if branch == "1" else f"branch2.{branch[1]}")
            + ("." if w else "_bn.")
            + _C2_PARAMS[w or bn]
        ),
    ),
    (r"pred_(w|b)", lambda q: f"head.projection.{_C2_PARAMS[q]}"),
)


def _caffe2_to_pyslowfast(blob: str) -> str | None:
    return _rename(blob, _CAFFE2)


def _paddle_to_pyslowfast(key: str) -> str:
    """PaddleVideo's names are PySlowFast's with ``backbone.``, ``_conv``/``_bn``/``_conv_f2s`` module names and
    ``_mean``/``_variance`` batch-norm statistics."""
    key = key.removeprefix("backbone.")
    key = re.sub(r"(?<=\.)_(conv_f2s|conv|bn)(?=\.)", r"\1", key)
    return re.sub(r"\._mean$", ".running_mean", re.sub(r"\._variance$", ".running_var", key))


def _pytorchvideo_name(key: str, naming: Naming) -> str | None:
    """This project's name for a toolbox's key; ``None`` when no rule covers it."""
    if naming == Toolbox.PYTORCHVIDEO:
        return key
    if naming == Toolbox.MMACTION2:
        return _rename(key.removeprefix("backbone."), _MMACTION2)
    if naming == Toolbox.PADDLEVIDEO:
        return _rename(_paddle_to_pyslowfast(key), _PYSLOWFAST)
    pyslowfast = _caffe2_to_pyslowfast(key) if naming == CAFFE2 else key
    return None if pyslowfast is None else _rename(pyslowfast, _PYSLOWFAST)


def to_pytorchvideo(tensors: Mapping[str, torch.Tensor], naming: Naming) -> dict[str, torch.Tensor]:
    """``tensors``, named by ``naming``, under this project's names and in PyTorch's layouts.

    Renames by the toolbox's rules, then: MMAction2's classifier columns reordered fast-first -> slow-first;
    PaddleVideo's ``(in, out)`` linear weight transposed; a zero ``num_batches_tracked`` beside every batch norm
    without one (Paddle and Caffe2 keep no such counter). Keys no rule covers keep their name, so that the
    architecture check reports them. (Caffe2 blobs are reshaped once the target network is known:
    :func:`caffe2_reshaped`.)

    Returns:
        name -> tensor; convolution weights ``(out, in, t, h, w)``, the linear weight ``(classes, features)`` with
        the slow pathway's features first.
    """
    state = {_pytorchvideo_name(k, naming) or k: v for k, v in tensors.items()}
    if naming == Toolbox.MMACTION2:
        _swap_head_columns(state)
    if naming == Toolbox.PADDLEVIDEO and state.get(HEAD_WEIGHT) is not None:
        state[HEAD_WEIGHT] = state[HEAD_WEIGHT].t().contiguous()  # paddle.nn.Linear stores (in, out)
    if naming != Toolbox.PYTORCHVIDEO:
        _fill_batch_counters(state)
    return state


def caffe2_reshaped(blob: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``blob`` with the parameter's shape when the two differ only by trailing singleton dimensions (PySlowFast's
    Caffe2 loader appends them to a blob with fewer dimensions than the parameter), else unchanged."""

    def trimmed(dims: tuple[int, ...]) -> tuple[int, ...]:
        while dims and dims[-1] == 1:
            dims = dims[:-1]
        return dims

    differs = tuple(blob.shape) != shape and trimmed(tuple(blob.shape)) == trimmed(shape)
    return blob.reshape(shape) if differs else blob


def _swap_head_columns(state: dict[str, torch.Tensor]) -> None:
    """MMAction2's head: ``cat([fast, slow])`` features; PyTorchVideo's: ``cat([slow, fast])``.

    The fast width is the fast pathway's output channels in this very file (its last res stage's ``conv_c``
    rows: 256 for every MMAction2 SlowFast), so ``(classes, fast + slow)`` becomes ``(classes, slow + fast)``.
    """
    weight = state.get(HEAD_WEIGHT)
    fast = fast_width(state)
    if weight is None or weight.dim() != 2 or fast is None or not 0 < fast < weight.shape[1]:
        return  # no head or no fast pathway: the architecture check names what is missing
    state[HEAD_WEIGHT] = torch.cat([weight[:, fast:], weight[:, :fast]], dim=1)


def fast_width(state: Mapping[str, torch.Tensor]) -> int | None:
    """Output channels of the fast pathway (its last res stage's last ``conv_c``), ``None`` without one."""
    found = [
        ((int(m[1]), int(m[2])), tensor)
        for key, tensor in state.items()
        if (m := re.fullmatch(r"blocks\.(\d)\.multipathway_blocks\.1\.res_blocks\.(\d+)\.branch2\.conv_c\.weight", key))
    ]
    return int(max(found, key=lambda item: item[0])[1].shape[0]) if found else None


def _fill_batch_counters(state: dict[str, torch.Tensor]) -> None:
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0, dtype=torch.long))


# --------------------------------------------------------------------------------------------------------------
# Architecture: what a converted state dict is, and which registry entries it fits

_DEPTHS = {(3, 4, 6, 3): "R50", (3, 4, 23, 3): "R101", (3, 8, 36, 3): "R152", (2, 2, 2, 2): "R18"}


@dataclass(frozen=True)
class Architecture:
    """What a PyTorchVideo-named state dict's tensors say about its network.

    Attributes:
        blocks: res blocks per stage (res2..res5) of each pathway, ``(slow, fast)``; empty for one-pathway networks.
        fusion_kernel: temporal kernel of the fast-to-slow lateral convolutions (their weight's dim 2).
        lateral_norm: batch norm after the laterals (PyTorchVideo, PaddleVideo, PySlowFast; not MMAction2's).
        num_classes: rows of the classifier.
    """

    blocks: tuple[tuple[int, ...], ...]
    fusion_kernel: int | None
    lateral_norm: bool
    num_classes: int | None

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> Architecture:
        counts: dict[tuple[int, int], int] = {}
        for key in state:
            m = re.match(r"blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.", key)
            if m:
                stage = (int(m[2]), int(m[1]))
                counts[stage] = max(counts.get(stage, 0), int(m[3]) + 1)
        pathways = sorted({p for p, _ in counts})
        blocks = tuple(tuple(counts[(p, s)] for s in sorted(s for q, s in counts if q == p)) for p in pathways)
        lateral = state.get("blocks.0.multipathway_fusion.conv_fast_to_slow.weight")
        head = state.get(HEAD_WEIGHT)
        return cls(
            blocks=blocks,
            fusion_kernel=int(lateral.shape[2]) if lateral is not None and lateral.dim() == 5 else None,
            lateral_norm="blocks.0.multipathway_fusion.norm.weight" in state,
            num_classes=int(head.shape[0]) if head is not None and head.dim() == 2 else None,
        )

    @property
    def slowfast(self) -> bool:
        return len(self.blocks) == 2

    @property
    def name(self) -> str:
        """``"SlowFast R50"``, ``"SlowFast R152-R50"`` (slow-fast depths), or ``""`` for other networks."""
        if not self.slowfast:
            return ""
        slow, fast = (_DEPTHS.get(b, f"ResNet{list(b)}") for b in self.blocks)
        return f"SlowFast {slow}" if slow == fast else f"SlowFast {slow}-{fast}"

    @property
    def details(self) -> str:
        parts = []
        if self.slowfast and self.fusion_kernel is not None:
            norm = "with" if self.lateral_norm else "without"
            parts.append(f"fusion kernel {self.fusion_kernel}, laterals {norm} batch norm")
        if self.num_classes is not None:
            parts.append(f"{self.num_classes} classes")
        return ", ".join(parts)
