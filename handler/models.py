"""The model registry: every servable architecture with its clip spec, checkpoint and published numbers.

This module is data only, the single place that knows, for each model name, which builder makes the network
(:func:`handler.networks.build_model` calls it), what clip it expects and how it is preprocessed (frames,
sampling rate, sizes, SlowFast alpha, normalisation, and the toolbox recipe, :mod:`handler.recipes`), where its
published checkpoint lives and whose layout it has (:class:`handler.recipes.Toolbox`), which label set it
predicts and how accurate it is. Entries are keyword-only records. Scripts, the handler and the tests read it.

Networks hold PyTorchVideo's parameter names. Checkpoints are read by :mod:`handler.checkpoint_files`, renamed
by :mod:`handler.checkpoint_names` and loaded by :mod:`handler.checkpoints`: PyTorchVideo's format (a
``torch.save``-d dict whose ``"model_state"`` entry is the state dict) as it is, the files of MMAction2,
PaddleVideo and PySlowFast converted by the rules of the entry's ``checkpoint_layout``. A checkpoint written by
:func:`handler.checkpoints.save_random_checkpoint` has the official format plus ``"random_init": True``; it exists
for tests and benchmarks only and every response served from it says ``"weights": "random-init"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from handler.recipes import MMACTION2, PADDLEVIDEO, PYSLOWFAST, PYTORCHVIDEO, Recipe, Toolbox

MODEL_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo"
RANDOM_INIT = "random-init"


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class Accuracy:
    """Published Kinetics-400 validation accuracy (percent) under the stated test protocol."""

    top1: float
    top5: float
    protocol: str = "10 temporal clips x 3 spatial crops"


@dataclass(frozen=True, kw_only=True)
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
        bundled_checkpoint: a checkpoint that comes with the package, if any: a path in its data
            (``slowfast_serve/data/``, which links to the repository's ``models/``).
        output: ``"logits"`` (softmax is applied by the pipeline) or ``"probabilities"``.
        accuracy, gflops, params_m: published figures (the toolbox's model zoo); ``None`` when unpublished.
        checkpoint_layout: whose key names and tensor layout the published checkpoint uses, i.e. which
            conversion :mod:`handler.checkpoints` applies to reach this network's state dict (none for
            ``Toolbox.PYTORCHVIDEO``).
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
    checkpoint_layout: Toolbox = Toolbox.PYTORCHVIDEO

    @property
    def checkpoint_filename(self) -> str | None:
        """File name of the official checkpoint (the last part of its URL)."""
        return None if self.checkpoint_url is None else self.checkpoint_url.rsplit("/", 1)[-1]


def _kinetics_hub_model(
    *,
    name: str,
    checkpoint: str,
    clip: ClipSpec,
    accuracy: Accuracy,
    gflops: float,
    params_m: float,
    output: Literal["logits", "probabilities"] = "logits",
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
        accuracy=accuracy,
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
    *,
    name: str,
    checkpoint_url: str,
    clip: ClipSpec,
    accuracy: Accuracy,
    builder: str,
    builder_kwargs: dict[str, Any],
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
        checkpoint_layout=clip.recipe.name,
    )


# MMAction2: checkpoints of its 0.x model zoo (the ones fine-tuning recipes start from), figures from its 0.x
# README (10 clips x 3 crops, MMAction2's 0.x test pipeline, its Kinetics-400 validation copy of 19796 videos).
# They are served with MMAction2 1.2.0's test pipeline, which loads the same files (see handler.recipes).
_MMACTION2_ZOO = "https://download.openmmlab.com/mmaction/recognition/slowfast"
_MMACTION2_MEAN = (123.675, 116.28, 103.53)
_MMACTION2_STD = (58.395, 57.12, 57.375)
_MMACTION2_PROTOCOL = "10 clips x 3 crops, MMAction2 0.x test pipeline"


def _mmaction2(
    *, name: str, path: str, alpha: int, slow_depth: int, fast_depth: int, top1: float, top5: float
) -> ModelSpec:
    """An MMAction2 SlowFast (``handler.networks.mmaction2_slowfast``): 32 frames 2 apart, 256-pixel crops,
    ImageNet mean/std on [0, 255]; its fusion kernel follows alpha as in MMAction2's configs."""
    clip = ClipSpec(
        num_frames=32,
        sampling_rate=2,
        side_size=256,
        crop_size=256,
        alpha=alpha,
        mean=_MMACTION2_MEAN,
        std=_MMACTION2_STD,
        recipe=MMACTION2,
    )
    kwargs = {
        "slow_depth": slow_depth,
        "fast_depth": fast_depth,
        "fusion_kernel": 7 if alpha == 4 else 5,
        "alpha": alpha,
    }
    return _toolbox_slowfast(
        name=name,
        checkpoint_url=f"{_MMACTION2_ZOO}/{path}",
        clip=clip,
        accuracy=Accuracy(top1=top1, top5=top5, protocol=_MMACTION2_PROTOCOL),
        builder="handler.networks:mmaction2_slowfast",
        builder_kwargs=kwargs,
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


def _toolbox_clip(*, recipe: Recipe, alpha: int, size: int = 256, num_frames: int = 32) -> ClipSpec:
    """A toolbox SlowFast's clip: ``num_frames`` frames 2 apart, short side and crop ``size``."""
    return ClipSpec(num_frames=num_frames, sampling_rate=2, side_size=size, crop_size=size, alpha=alpha, recipe=recipe)


TOOLBOX_MODELS: tuple[ModelSpec, ...] = (
    _mmaction2(
        name="mmaction2_slowfast_r50_8x8",
        path="slowfast_r50_8x8x1_256e_kinetics400_rgb/slowfast_r50_8x8x1_256e_kinetics400_rgb_20200716-73547d2b.pth",
        alpha=4,
        slow_depth=50,
        fast_depth=50,
        top1=76.94,
        top5=92.80,
    ),
    _mmaction2(
        name="mmaction2_slowfast_r50_4x16",
        path="slowfast_r50_4x16x1_256e_kinetics400_rgb/slowfast_r50_4x16x1_256e_kinetics400_rgb_20210722-04e43ed4.pth",
        alpha=8,
        slow_depth=50,
        fast_depth=50,
        top1=76.00,
        top5=92.54,
    ),
    _mmaction2(
        name="mmaction2_slowfast_r101_8x8",
        path="slowfast_r101_8x8x1_256e_kinetics400_rgb/slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth",
        alpha=4,
        slow_depth=101,
        fast_depth=101,
        top1=77.90,
        top5=93.51,
    ),
    _mmaction2(
        name="mmaction2_slowfast_r101_r50_4x16",
        path="slowfast_r101_4x16x1_256e_kinetics400_rgb/slowfast_r101_4x16x1_256e_kinetics400_rgb_20210218-d8b58813.pth",
        alpha=8,
        slow_depth=101,
        fast_depth=50,
        top1=76.69,
        top5=93.07,
    ),
    _mmaction2(
        name="mmaction2_slowfast_r152_r50_4x16",
        path="slowfast_r152_4x16x1_256e_kinetics400_rgb/slowfast_r152_4x16x1_256e_kinetics400_rgb_20210122-bdeb6b87.pth",
        alpha=8,
        slow_depth=152,
        fast_depth=50,
        top1=77.13,
        top5=93.20,
    ),
    # PaddleVideo's model zoo (docs/en/model_zoo/recognition/slowfast.md): configs slowfast.yaml (4x16, tested at
    # short side 256 with 256 crops) and slowfast_multigrid.yaml (8x8, short side 224, 224 crops).
    _toolbox_slowfast(
        name="paddlevideo_slowfast_4x16",
        checkpoint_url=f"{_PADDLEVIDEO_ZOO}/SlowFast.pdparams",
        clip=_toolbox_clip(recipe=PADDLEVIDEO, alpha=8),
        accuracy=Accuracy(top1=74.35, top5=91.33, protocol=_PADDLEVIDEO_PROTOCOL),
        builder="pytorchvideo.models.slowfast:create_slowfast",
        builder_kwargs={**_FUSION_4X16, **_SOFTMAX_HEAD},
        output=_PROBABILITIES,
    ),
    _toolbox_slowfast(
        name="paddlevideo_slowfast_8x8",
        checkpoint_url=f"{_PADDLEVIDEO_ZOO}/SlowFast_8*8.pdparams",
        clip=_toolbox_clip(recipe=PADDLEVIDEO, alpha=4, size=224),
        accuracy=Accuracy(top1=75.84, top5=92.33, protocol=_PADDLEVIDEO_PROTOCOL),
        builder="pytorchvideo.models.slowfast:create_slowfast",
        builder_kwargs={"head_pool": nn.AdaptiveAvgPool3d, "head_output_size": ((1, 1, 1), (1, 1, 1)), **_SOFTMAX_HEAD},
        output=_PROBABILITIES,
    ),
    # PySlowFast's model zoo (MODEL_ZOO.md, Kinetics/c2 configs): the Caffe2 .pkl files; their .pyth forms load
    # too. SLOWFAST_16x8_R101_50_50 is "coming soon" there: its checkpoint and figures are PyTorchVideo's zoo's.
    _toolbox_slowfast(
        name="pyslowfast_slowfast_8x8_r50",
        checkpoint_url=f"{_PYSLOWFAST_ZOO}/SLOWFAST_8x8_R50.pkl",
        clip=_toolbox_clip(recipe=PYSLOWFAST, alpha=4),
        accuracy=Accuracy(top1=77.0, top5=92.6, protocol=_PYSLOWFAST_PROTOCOL),
        builder="pytorchvideo.models.hub:slowfast_r50",
        builder_kwargs=_SOFTMAX_HEAD,
        output=_PROBABILITIES,
    ),
    _toolbox_slowfast(
        name="pyslowfast_slowfast_4x16_r50",
        checkpoint_url=f"{_PYSLOWFAST_ZOO}/SLOWFAST_4x16_R50.pkl",
        clip=_toolbox_clip(recipe=PYSLOWFAST, alpha=8),
        accuracy=Accuracy(top1=75.6, top5=92.0, protocol=_PYSLOWFAST_PROTOCOL),
        builder="pytorchvideo.models.slowfast:create_slowfast",
        builder_kwargs={**_FUSION_4X16, **_SOFTMAX_HEAD},
        output=_PROBABILITIES,
    ),
    _toolbox_slowfast(
        name="pyslowfast_slowfast_16x8_r101_50_50",
        checkpoint_url=f"{MODEL_ZOO}/kinetics/SLOWFAST_16x8_R101_50_50.pyth",
        clip=_toolbox_clip(recipe=PYSLOWFAST, alpha=4, num_frames=64),
        accuracy=Accuracy(top1=78.70, top5=93.61, protocol="10 clips x 3 crops (PyTorchVideo model zoo)"),
        builder="pytorchvideo.models.hub:slowfast_16x8_r101_50_50",
        builder_kwargs=_SOFTMAX_HEAD,
        output=_PROBABILITIES,
    ),
)


def _clip(num_frames: int, sampling_rate: int, size: int) -> ClipSpec:
    """A single-pathway hub model's clip: short side and center crop ``size``."""
    return ClipSpec(num_frames=num_frames, sampling_rate=sampling_rate, side_size=size, crop_size=size)


# Figures: PyTorchVideo model zoo (docs/source/model_zoo.md), Kinetics-400 top-1/top-5 with 10 x 3 views (MViT: 5 x 1).
_HUB_MODELS: tuple[ModelSpec, ...] = (
    _kinetics_hub_model(
        name="slowfast_r50",
        checkpoint="SLOWFAST_8x8_R50.pyth",
        clip=_SLOWFAST_CLIP,
        accuracy=Accuracy(top1=76.94, top5=92.69),
        gflops=65.71,
        params_m=34.57,
    ),
    _kinetics_hub_model(
        name="slowfast_r101",
        checkpoint="SLOWFAST_8x8_R101.pyth",
        clip=_SLOWFAST_CLIP,
        accuracy=Accuracy(top1=77.90, top5=93.27),
        gflops=127.20,
        params_m=62.83,
    ),
    _kinetics_hub_model(
        name="slow_r50",
        checkpoint="SLOW_8x8_R50.pyth",
        clip=_SLOW_CLIP,
        accuracy=Accuracy(top1=74.58, top5=91.63),
        gflops=54.52,
        params_m=32.45,
    ),
    _kinetics_hub_model(
        name="slowfast_16x8_r101_50_50",
        checkpoint="SLOWFAST_16x8_R101_50_50.pyth",
        clip=ClipSpec(num_frames=64, sampling_rate=2, side_size=256, crop_size=256, alpha=4),
        accuracy=Accuracy(top1=78.70, top5=93.61),
        gflops=215.61,
        params_m=53.77,
    ),
    _kinetics_hub_model(
        name="c2d_r50",
        checkpoint="C2D_8x8_R50.pyth",
        clip=_SLOW_CLIP,
        accuracy=Accuracy(top1=71.46, top5=89.68),
        gflops=25.89,
        params_m=24.33,
    ),
    _kinetics_hub_model(
        name="i3d_r50",
        checkpoint="I3D_8x8_R50.pyth",
        clip=_SLOW_CLIP,
        accuracy=Accuracy(top1=73.27, top5=90.70),
        gflops=37.53,
        params_m=28.04,
    ),
    _kinetics_hub_model(
        name="csn_r101",
        checkpoint="CSN_32x2_R101.pyth",
        clip=_clip(32, 2, 256),
        accuracy=Accuracy(top1=77.00, top5=92.90),
        gflops=75.62,
        params_m=22.21,
    ),
    _kinetics_hub_model(
        name="r2plus1d_r50",
        checkpoint="R2PLUS1D_16x4_R50.pyth",
        clip=_clip(16, 4, 256),
        accuracy=Accuracy(top1=76.01, top5=92.23),
        gflops=76.45,
        params_m=28.11,
        output=_PROBABILITIES,
    ),
    _kinetics_hub_model(
        name="x3d_xs",
        checkpoint="X3D_XS.pyth",
        clip=_clip(4, 12, 182),
        accuracy=Accuracy(top1=69.12, top5=88.63),
        gflops=0.91,
        params_m=3.79,
        output=_PROBABILITIES,
    ),
    _kinetics_hub_model(
        name="x3d_s",
        checkpoint="X3D_S.pyth",
        clip=_clip(13, 6, 182),
        accuracy=Accuracy(top1=73.33, top5=91.27),
        gflops=2.96,
        params_m=3.79,
        output=_PROBABILITIES,
    ),
    _kinetics_hub_model(
        name="x3d_m",
        checkpoint="X3D_M.pyth",
        clip=_clip(16, 5, 256),
        accuracy=Accuracy(top1=75.94, top5=92.72),
        gflops=6.72,
        params_m=3.79,
        output=_PROBABILITIES,
    ),
    _kinetics_hub_model(
        name="x3d_l",
        checkpoint="X3D_L.pyth",
        clip=_clip(16, 5, 356),
        accuracy=Accuracy(top1=77.44, top5=93.31),
        gflops=26.64,
        params_m=6.15,
        output=_PROBABILITIES,
    ),
    _kinetics_hub_model(
        name="mvit_base_16x4",
        checkpoint="MVIT_B_16x4.pyth",
        clip=_clip(16, 4, 224),
        accuracy=Accuracy(top1=78.85, top5=93.85, protocol=_MVIT_PROTOCOL),
        gflops=70.80,
        params_m=36.61,
        num_classes_arg="head_num_classes",
    ),
    _kinetics_hub_model(
        name="mvit_base_32x3",
        checkpoint="MVIT_B_32x3_f294077834.pyth",
        clip=_clip(32, 3, 224),
        accuracy=Accuracy(top1=80.30, top5=94.69, protocol=_MVIT_PROTOCOL),
        gflops=170.37,
        params_m=36.61,
        num_classes_arg="head_num_classes",
    ),
)

# A small SlowFast trained by this project on synthetic motion videos (slowfast-serve motion-data, slowfast-serve
# finetune); works offline. Reduced width and depth, 112-pixel crops, alpha 4 as the others. 16 frames 6 apart
# span 3.2 s: most of a 3-4 s demo video, whose motion lasts the whole video (a 2.1 s clip saw about half of a
# slow, eased turn and mistook it for a size change). The fastest training turn (450 degrees in 3 s, eased) then
# moves about 40 degrees between frames.
MOTION_DEMO = ModelSpec(
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
)

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (*_HUB_MODELS, MOTION_DEMO, *TOOLBOX_MODELS)}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; a ``KeyError`` that lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}") from None
