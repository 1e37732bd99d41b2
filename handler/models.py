"""The model registry: every servable architecture with its clip spec, checkpoint and published numbers.

This module is the single place that knows, for each model name, how to build the network, what clip it
expects and how it is preprocessed (frames, sampling rate, sizes, SlowFast alpha, normalisation, and the
toolbox recipe, :mod:`handler.recipes`), where its published checkpoint lives and whose layout it has, which
label set it predicts and how accurate it is. Scripts, the handler and the tests all read it.

Networks hold PyTorchVideo's parameter names. Checkpoints are read by :mod:`handler.checkpoints`: PyTorchVideo's
format (a ``torch.save``-d dict whose ``"model_state"`` entry is the state dict) as it is, the files of MMAction2,
PaddleVideo and PySlowFast converted by the rules of the entry's ``checkpoint_layout``. A checkpoint written by
:func:`save_random_checkpoint` has the official format plus ``"random_init": True``; it exists for tests and
benchmarks only and every response served from it says ``"weights": "random-init"``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from handler.recipes import MMACTION2, PADDLEVIDEO, PYSLOWFAST, PYTORCHVIDEO, Recipe

MODEL_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo"
RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class ClipSpec:
    """What one model input clip is and how it is preprocessed.

    Attributes:
        num_frames: frames fed to the model (the fast pathway for SlowFast).
        sampling_rate: source frames per sampled frame, assuming ``frames_per_second`` input; with
            ``num_frames`` it fixes the clip duration ``num_frames * sampling_rate / frames_per_second``.
        side_size: the short side is scaled to this many pixels (bilinear, no antialias).
        crop_size: side of the square center crop taken after scaling.
        alpha: SlowFast's fast/slow frame ratio; the slow pathway gets ``num_frames // alpha`` frames.
            ``None`` for single-pathway models.
        mean, std: per-channel RGB normalisation, ``(x / recipe.pixel_scale - mean) / std`` for uint8 ``x``
            (values in [0, 1] for the tutorial's 0.45 / 0.225, in [0, 255] for MMAction2's ImageNet figures).
        frames_per_second: the frame rate the clip duration is computed for (PyTorchVideo's hub tutorial
            assumes 30 whatever the video's real rate; the clip is selected by time, not by frame count).
        recipe: how the toolbox the checkpoint comes from samples, resizes, crops and normalises
            (:mod:`handler.recipes`); the PyTorchVideo hub tutorial's by default.
    """

    num_frames: int
    sampling_rate: int
    side_size: int
    crop_size: int
    alpha: int | None = None
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    frames_per_second: int = 30
    recipe: Recipe = PYTORCHVIDEO

    def __post_init__(self) -> None:
        if self.crop_size > self.side_size:
            raise ValueError(f"crop_size ({self.crop_size}) must not exceed side_size ({self.side_size})")
        if self.alpha is not None and not 1 <= self.alpha <= self.num_frames:
            raise ValueError(f"alpha must be in [1, num_frames={self.num_frames}], got {self.alpha}")

    @property
    def duration_sec(self) -> float:
        """Clip length in seconds, computed exactly as the hub tutorial does (float division). For recipes that
        sample by frame count (MMAction2) it is the nominal length at ``frames_per_second``."""
        return (self.num_frames * self.sampling_rate) / self.frames_per_second

    @property
    def pathways(self) -> int:
        """Number of input tensors the model takes: 2 for SlowFast, 1 otherwise."""
        return 1 if self.alpha is None else 2


@dataclass(frozen=True)
class Accuracy:
    """Published Kinetics-400 validation accuracy (percent) under the stated test protocol."""

    top1: float
    top5: float
    protocol: str = "10 temporal clips x 3 spatial crops"


@dataclass(frozen=True)
class ModelSpec:
    """One servable model.

    Attributes:
        name: registry key, also the default TorchServe model name.
        builder: ``"module:function"`` returning an ``nn.Module``; called with ``pretrained=False`` (where the
            builder accepts it), ``model_num_class`` and ``builder_kwargs``.
        clip: the input clip and its preprocessing.
        labels: name of the label set (see :mod:`handler.labels`).
        num_classes: size of the classifier head.
        checkpoint_url: the official checkpoint, or ``None`` for models without one.
        bundled_checkpoint: a checkpoint committed to this repository (path from its root), if any.
        output: ``"logits"`` (softmax is applied by the pipeline) or ``"probabilities"``.
        accuracy, gflops, params_m: published figures (the toolbox's model zoo); ``None`` when unpublished.
        checkpoint_layout: whose key names and tensor layout the published checkpoint uses, i.e. which
            conversion :mod:`handler.checkpoints` applies to reach this network's state dict: ``pytorchvideo``
            (none), ``mmaction2``, ``paddlevideo`` or ``pyslowfast``.
    """

    name: str
    builder: str
    clip: ClipSpec
    labels: str
    num_classes: int
    checkpoint_url: str | None
    bundled_checkpoint: str | None = None
    output: Literal["logits", "probabilities"] = "logits"
    accuracy: Accuracy | None = None
    gflops: float | None = None
    params_m: float | None = None
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes_arg: str = "model_num_class"  # the builder's name for the head size (MViT's differs)
    checkpoint_layout: Literal["pytorchvideo", "mmaction2", "paddlevideo", "pyslowfast"] = "pytorchvideo"

    @property
    def checkpoint_filename(self) -> str | None:
        """File name of the official checkpoint (the last part of its URL)."""
        return None if self.checkpoint_url is None else self.checkpoint_url.rsplit("/", 1)[-1]


def _kinetics_hub_model(
    name: str,
    checkpoint: str,
    clip: ClipSpec,
    top1: float,
    top5: float,
    gflops: float,
    params_m: float,
    *,
    output: Literal["logits", "probabilities"] = "logits",
    protocol: str = Accuracy.protocol,
    num_classes_arg: str = "model_num_class",
) -> ModelSpec:
    """A PyTorchVideo hub model trained on Kinetics-400, with its model-zoo checkpoint and published figures."""
    return ModelSpec(
        name=name,
        builder=f"pytorchvideo.models.hub:{name}",
        clip=clip,
        labels="kinetics400",
        num_classes=400,
        checkpoint_url=f"{MODEL_ZOO}/kinetics/{checkpoint}",
        output=output,
        accuracy=Accuracy(top1=top1, top5=top5, protocol=protocol),
        gflops=gflops,
        params_m=params_m,
        num_classes_arg=num_classes_arg,
    )


_SLOWFAST_CLIP = ClipSpec(num_frames=32, sampling_rate=2, side_size=256, crop_size=256, alpha=4)
_SLOW_CLIP = ClipSpec(num_frames=8, sampling_rate=8, side_size=256, crop_size=256)
# The torch-hub pages' test inputs (PySlowFast's configs for x3d_l). X3D and R(2+1)D heads end in a softmax.
_PROBABILITIES: Literal["probabilities"] = "probabilities"
_MVIT_PROTOCOL = "5 temporal clips x 1 spatial crop"


def _toolbox_slowfast(
    name: str,
    checkpoint_url: str,
    clip: ClipSpec,
    accuracy: Accuracy,
    builder: str,
    builder_kwargs: dict[str, Any],
    *,
    output: Literal["logits", "probabilities"],
) -> ModelSpec:
    """A Kinetics-400 SlowFast published by another toolbox, served with that toolbox's own preprocessing."""
    return ModelSpec(
        name=name,
        builder=builder,
        clip=clip,
        labels="kinetics400",
        num_classes=400,
        checkpoint_url=checkpoint_url,
        output=output,
        accuracy=accuracy,
        builder_kwargs=builder_kwargs,
        checkpoint_layout=clip.recipe.name,  # type: ignore[arg-type]
    )


# MMAction2: checkpoints of its 0.x model zoo (the ones fine-tuning recipes start from), figures from its 0.x
# README (10 clips x 3 crops, MMAction2's 0.x test pipeline, its Kinetics-400 validation copy of 19796 videos).
# They are served with MMAction2 1.2.0's test pipeline, which loads the same files (see handler.recipes).
_MMACTION2_ZOO = "https://download.openmmlab.com/mmaction/recognition/slowfast"
_MMACTION2_MEAN = (123.675, 116.28, 103.53)
_MMACTION2_STD = (58.395, 57.12, 57.375)
_MMACTION2_PROTOCOL = "10 clips x 3 crops, MMAction2 0.x test pipeline"


def _mmaction2_clip(alpha: int) -> ClipSpec:
    return ClipSpec(32, 2, 256, 256, alpha=alpha, mean=_MMACTION2_MEAN, std=_MMACTION2_STD, recipe=MMACTION2)


def _mmaction2(name: str, path: str, alpha: int, slow: int, fast: int, top1: float, top5: float) -> ModelSpec:
    kwargs = {"slow_depth": slow, "fast_depth": fast, "fusion_kernel": 7 if alpha == 4 else 5, "alpha": alpha}
    return _toolbox_slowfast(
        name,
        f"{_MMACTION2_ZOO}/{path}",
        _mmaction2_clip(alpha),
        Accuracy(top1, top5, _MMACTION2_PROTOCOL),
        "handler.networks:mmaction2_slowfast",
        kwargs,
        output="logits",
    )


# PaddleVideo and PySlowFast heads apply a softmax at every spatio-temporal position and average the
# probabilities (PyTorchVideo's head with a Softmax activation); their output is probabilities.
_PADDLEVIDEO_ZOO = "https://videotag.bj.bcebos.com/PaddleVideo/SlowFast"
_PADDLEVIDEO_PROTOCOL = "10 clips x 3 crops, PaddleVideo test pipeline"
_PYSLOWFAST_ZOO = "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400"
_PYSLOWFAST_PROTOCOL = "10 clips x 3 crops, PySlowFast test pipeline"
_SOFTMAX_HEAD: dict[str, Any] = {"head_activation": nn.Softmax}
_FUSION_4X16: dict[str, Any] = {
    "slowfast_fusion_conv_kernel_size": (5, 1, 1),
    "slowfast_fusion_conv_stride": (8, 1, 1),
    "head_pool_kernel_sizes": ((4, 7, 7), (32, 7, 7)),
}

TOOLBOX_MODELS: tuple[ModelSpec, ...] = (
    _mmaction2(
        "mmaction2_slowfast_r50_8x8",
        "slowfast_r50_8x8x1_256e_kinetics400_rgb/slowfast_r50_8x8x1_256e_kinetics400_rgb_20200716-73547d2b.pth",
        4,
        50,
        50,
        76.94,
        92.80,
    ),
    _mmaction2(
        "mmaction2_slowfast_r50_4x16",
        "slowfast_r50_4x16x1_256e_kinetics400_rgb/slowfast_r50_4x16x1_256e_kinetics400_rgb_20210722-04e43ed4.pth",
        8,
        50,
        50,
        76.00,
        92.54,
    ),
    _mmaction2(
        "mmaction2_slowfast_r101_8x8",
        "slowfast_r101_8x8x1_256e_kinetics400_rgb/slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth",
        4,
        101,
        101,
        77.90,
        93.51,
    ),
    _mmaction2(
        "mmaction2_slowfast_r101_r50_4x16",
        "slowfast_r101_4x16x1_256e_kinetics400_rgb/slowfast_r101_4x16x1_256e_kinetics400_rgb_20210218-d8b58813.pth",
        8,
        101,
        50,
        76.69,
        93.07,
    ),
    _mmaction2(
        "mmaction2_slowfast_r152_r50_4x16",
        "slowfast_r152_4x16x1_256e_kinetics400_rgb/slowfast_r152_4x16x1_256e_kinetics400_rgb_20210122-bdeb6b87.pth",
        8,
        152,
        50,
        77.13,
        93.20,
    ),
    # PaddleVideo's model zoo (docs/en/model_zoo/recognition/slowfast.md): configs slowfast.yaml (4x16, tested at
    # short side 256 with 256 crops) and slowfast_multigrid.yaml (8x8, short side 224, 224 crops).
    _toolbox_slowfast(
        "paddlevideo_slowfast_4x16",
        f"{_PADDLEVIDEO_ZOO}/SlowFast.pdparams",
        ClipSpec(32, 2, 256, 256, alpha=8, recipe=PADDLEVIDEO),
        Accuracy(74.35, 91.33, _PADDLEVIDEO_PROTOCOL),
        "pytorchvideo.models.slowfast:create_slowfast",
        {**_FUSION_4X16, **_SOFTMAX_HEAD},
        output=_PROBABILITIES,
    ),
    _toolbox_slowfast(
        "paddlevideo_slowfast_8x8",
        f"{_PADDLEVIDEO_ZOO}/SlowFast_8*8.pdparams",
        ClipSpec(32, 2, 224, 224, alpha=4, recipe=PADDLEVIDEO),
        Accuracy(75.84, 92.33, _PADDLEVIDEO_PROTOCOL),
        "pytorchvideo.models.slowfast:create_slowfast",
        {"head_pool": nn.AdaptiveAvgPool3d, "head_output_size": ((1, 1, 1), (1, 1, 1)), **_SOFTMAX_HEAD},
        output=_PROBABILITIES,
    ),
    # PySlowFast's model zoo (MODEL_ZOO.md, Kinetics/c2 configs): the Caffe2 .pkl files; their .pyth forms load
    # too. SLOWFAST_16x8_R101_50_50 is "coming soon" there: its checkpoint and figures are PyTorchVideo's zoo's.
    _toolbox_slowfast(
        "pyslowfast_slowfast_8x8_r50",
        f"{_PYSLOWFAST_ZOO}/SLOWFAST_8x8_R50.pkl",
        ClipSpec(32, 2, 256, 256, alpha=4, recipe=PYSLOWFAST),
        Accuracy(77.0, 92.6, _PYSLOWFAST_PROTOCOL),
        "pytorchvideo.models.hub:slowfast_r50",
        _SOFTMAX_HEAD,
        output=_PROBABILITIES,
    ),
    _toolbox_slowfast(
        "pyslowfast_slowfast_4x16_r50",
        f"{_PYSLOWFAST_ZOO}/SLOWFAST_4x16_R50.pkl",
        ClipSpec(32, 2, 256, 256, alpha=8, recipe=PYSLOWFAST),
        Accuracy(75.6, 92.0, _PYSLOWFAST_PROTOCOL),
        "pytorchvideo.models.slowfast:create_slowfast",
        {**_FUSION_4X16, **_SOFTMAX_HEAD},
        output=_PROBABILITIES,
    ),
    _toolbox_slowfast(
        "pyslowfast_slowfast_16x8_r101_50_50",
        f"{MODEL_ZOO}/kinetics/SLOWFAST_16x8_R101_50_50.pyth",
        ClipSpec(64, 2, 256, 256, alpha=4, recipe=PYSLOWFAST),
        Accuracy(78.70, 93.61, "10 clips x 3 crops (PyTorchVideo model zoo)"),
        "pytorchvideo.models.hub:slowfast_16x8_r101_50_50",
        _SOFTMAX_HEAD,
        output=_PROBABILITIES,
    ),
)


# Figures: PyTorchVideo model zoo (docs/source/model_zoo.md), Kinetics-400 top-1/top-5 with 10 x 3 views.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _kinetics_hub_model("slowfast_r50", "SLOWFAST_8x8_R50.pyth", _SLOWFAST_CLIP, 76.94, 92.69, 65.71, 34.57),
        _kinetics_hub_model("slowfast_r101", "SLOWFAST_8x8_R101.pyth", _SLOWFAST_CLIP, 77.90, 93.27, 127.20, 62.83),
        _kinetics_hub_model("slow_r50", "SLOW_8x8_R50.pyth", _SLOW_CLIP, 74.58, 91.63, 54.52, 32.45),
        _kinetics_hub_model(
            "slowfast_16x8_r101_50_50",
            "SLOWFAST_16x8_R101_50_50.pyth",
            ClipSpec(num_frames=64, sampling_rate=2, side_size=256, crop_size=256, alpha=4),
            78.70,
            93.61,
            215.61,
            53.77,
        ),
        _kinetics_hub_model("c2d_r50", "C2D_8x8_R50.pyth", _SLOW_CLIP, 71.46, 89.68, 25.89, 24.33),
        _kinetics_hub_model("i3d_r50", "I3D_8x8_R50.pyth", _SLOW_CLIP, 73.27, 90.70, 37.53, 28.04),
        _kinetics_hub_model("csn_r101", "CSN_32x2_R101.pyth", ClipSpec(32, 2, 256, 256), 77.00, 92.90, 75.62, 22.21),
        _kinetics_hub_model(
            "r2plus1d_r50",
            "R2PLUS1D_16x4_R50.pyth",
            ClipSpec(16, 4, 256, 256),
            76.01,
            92.23,
            76.45,
            28.11,
            output=_PROBABILITIES,
        ),
        _kinetics_hub_model(
            "x3d_xs", "X3D_XS.pyth", ClipSpec(4, 12, 182, 182), 69.12, 88.63, 0.91, 3.79, output=_PROBABILITIES
        ),
        _kinetics_hub_model(
            "x3d_s", "X3D_S.pyth", ClipSpec(13, 6, 182, 182), 73.33, 91.27, 2.96, 3.79, output=_PROBABILITIES
        ),
        _kinetics_hub_model(
            "x3d_m", "X3D_M.pyth", ClipSpec(16, 5, 256, 256), 75.94, 92.72, 6.72, 3.79, output=_PROBABILITIES
        ),
        _kinetics_hub_model(
            "x3d_l", "X3D_L.pyth", ClipSpec(16, 5, 356, 356), 77.44, 93.31, 26.64, 6.15, output=_PROBABILITIES
        ),
        _kinetics_hub_model(
            "mvit_base_16x4",
            "MVIT_B_16x4.pyth",
            ClipSpec(16, 4, 224, 224),
            78.85,
            93.85,
            70.80,
            36.61,
            protocol=_MVIT_PROTOCOL,
            num_classes_arg="head_num_classes",
        ),
        _kinetics_hub_model(
            "mvit_base_32x3",
            "MVIT_B_32x3_f294077834.pyth",
            ClipSpec(32, 3, 224, 224),
            80.30,
            94.69,
            170.37,
            36.61,
            protocol=_MVIT_PROTOCOL,
            num_classes_arg="head_num_classes",
        ),
        # A small SlowFast trained by this project on synthetic motion videos (slowfast-serve motion-data,
        # slowfast-serve finetune); works offline. Reduced width and depth, 112-pixel crops, alpha 4 as the others.
        # 16 frames 6 apart span 3.2 s: most of a 3-4 s demo video, whose motion lasts the whole video (a 2.1 s
        # clip saw about half of a slow, eased turn and mistook it for a size change). The fastest training turn
        # (450 degrees in 3 s, eased) then moves about 40 degrees between frames.
        ModelSpec(
            name="motion_demo",
            builder="pytorchvideo.models.slowfast:create_slowfast",
            clip=ClipSpec(num_frames=16, sampling_rate=6, side_size=128, crop_size=112, alpha=4),
            labels="motion8",
            num_classes=8,
            checkpoint_url=None,
            bundled_checkpoint="models/motion_demo/motion_demo.pyth",
            builder_kwargs={
                "model_depth": 18,
                "stem_dim_outs": (32, 8),
                "slowfast_channel_reduction_ratio": (4,),
                "head_pool": nn.AdaptiveAvgPool3d,
                "head_output_size": ((1, 1, 1), (1, 1, 1)),
            },
        ),
        *TOOLBOX_MODELS,
    )
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; a ``KeyError`` that lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}") from None


def build_model(spec: ModelSpec, num_classes: int | None = None) -> nn.Module:
    """Builds ``spec``'s network with freshly initialised weights, on the CPU, in eval mode.

    Args:
        spec: the registry entry.
        num_classes: head size; defaults to ``spec.num_classes`` (a fine-tuned checkpoint may differ).
    """
    module_name, function_name = spec.builder.split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    kwargs = {spec.num_classes_arg: num_classes or spec.num_classes, **spec.builder_kwargs}
    if module_name.endswith(".hub"):
        kwargs["pretrained"] = False
    return builder(**kwargs).eval()


# PyTorchVideo's blocks name a batch norm after the convolution it follows (ResNet bottlenecks, stems, the
# SlowFast lateral connection, the shortcut branch).
_CONV_BEFORE_NORM = {
    "norm": ("conv", "conv_fast_to_slow"),
    "norm_a": ("conv_a",),
    "norm_b": ("conv_b",),
    "norm_c": ("conv_c",),
    "branch1_norm": ("branch1_conv",),
}


def fold_batch_norms(model: nn.Module) -> int:
    """Folds every eval-mode batch norm into the convolution before it, in place; returns how many.

    Inference only (the statistics become constants): a convolution and a per-channel affine map compose into
    one convolution, so the network computes the same function with one memory pass less per block (same
    outputs up to float32 rounding; slowfast_r50 forward 15% faster on CPU, docs/performance.md).
    """
    folded = 0
    for module in model.modules():
        for norm_name, conv_names in _CONV_BEFORE_NORM.items():
            norm = getattr(module, norm_name, None)
            if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.training:
                continue
            for conv_name in conv_names:
                conv = getattr(module, conv_name, None)
                if isinstance(conv, nn.modules.conv._ConvNd) and conv.out_channels == norm.num_features:
                    setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                    setattr(module, norm_name, nn.Identity())
                    folded += 1
                    break
    return folded


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
