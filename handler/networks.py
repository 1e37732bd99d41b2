"""Networks that the PyTorchVideo hub has no builder for, made of ``pytorchvideo.models`` blocks only.

MMAction2's SlowFast (``ResNet3dSlowFast`` + ``SlowFastHead``) differs from PyTorchVideo's ``create_slowfast``
in three ways, none of which needs code of its own (``../shared/notes/ecosystems.md`` A.1, checked against
MMAction2 1.2.0 by ``tests/test_toolbox_parity.py``):

- its fast-to-slow lateral connections are a bare convolution (no batch norm, no ReLU);
- the slow and the fast pathway may have different depths (R101-R50, R152-R50): the fast pathway's stages
  are taken from a network of the fast depth, their widths being the same for every depth;
- its head pools each pathway over the whole feature map (``AdaptiveAvgPool3d``) and concatenates the fast
  features first; the weights are reordered to PyTorchVideo's slow-first order when the checkpoint is
  converted (:mod:`handler.checkpoints`), so the head here is PyTorchVideo's.

The slow pathway's frames (every ``alpha``-th fast frame, not PyTorchVideo's linspace) are chosen when the
input is packed (:func:`handler.transforms.pack_pathways`), not inside the network.
"""

from __future__ import annotations

import importlib

from pytorchvideo.models.slowfast import FastToSlowFusionBuilder, create_slowfast
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from handler.models import ModelSpec


def mmaction2_slowfast(
    *,
    model_num_class: int = 400,
    slow_depth: int = 50,
    fast_depth: int = 50,
    fusion_kernel: int = 7,
    alpha: int = 4,
    lateral_norm: bool = False,
) -> nn.Module:
    """MMAction2's ``ResNet3dSlowFast`` + ``SlowFastHead`` as a PyTorchVideo ``Net``.

    Args:
        model_num_class: classes of the head.
        slow_depth, fast_depth: ResNet depth of each pathway (50, 101 or 152).
        fusion_kernel: temporal kernel of the lateral convolutions (MMAction2's ``fusion_kernel``).
        alpha: the fast/slow frame ratio, also the laterals' temporal stride (``speed_ratio``).
        lateral_norm: batch norm + ReLU after each lateral convolution (MMAction2's ``lateral_norm``; off in
            the Kinetics-400 configs served here).

    Returns:
        A network in eval mode taking ``[slow, fast]``: ``(N, 3, T / alpha, S, S)`` and ``(N, 3, T, S, S)``
        float32 clips normalised with MMAction2's mean/std on [0, 255]; it returns ``(N, model_num_class)``
        logits (the head averages features over any crop size).
    """

    def build(depth: int) -> nn.Module:
        fusion = FastToSlowFusionBuilder(
            slowfast_channel_reduction_ratio=8,
            conv_fusion_channel_ratio=2,
            conv_kernel_size=(fusion_kernel, 1, 1),
            conv_stride=(alpha, 1, 1),
            norm=nn.BatchNorm3d if lateral_norm else None,
            activation=nn.ReLU if lateral_norm else None,
            max_stage_idx=3,
        ).create_module
        return create_slowfast(
            model_depth=depth,
            model_num_class=model_num_class,
            fusion_builder=fusion,
            head_pool=nn.AdaptiveAvgPool3d,
            head_output_size=((1, 1, 1), (1, 1, 1)),
        )

    network = build(slow_depth)
    if fast_depth != slow_depth:
        donor = build(fast_depth)
        for stage in range(1, 5):  # blocks 1..4 are res2..res5; index 1 of each is the fast pathway
            network.blocks[stage].multipathway_blocks[1] = donor.blocks[stage].multipathway_blocks[1]
    return network.eval()


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
