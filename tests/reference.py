"""The PyTorchVideo hub tutorial pipeline, as written there, for parity tests only.

``pytorchvideo.transforms`` 0.1.5 imports ``torchvision.transforms.functional_tensor``, which current
torchvision no longer has; this test-only alias points it at ``torchvision.transforms.functional`` so the
tutorial's transforms can be built unchanged. Product code never imports ``pytorchvideo.transforms``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional

from handler.models import ModelSpec

sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchvision's _transforms_video deprecation notice
    from pytorchvideo.data.encoded_video import EncodedVideo
    from pytorchvideo.transforms import ApplyTransformToKey, ShortSideScale, UniformTemporalSubsample
    from pytorchvideo.transforms.functional import (  # noqa: F401 (uniform_crop re-exported)
        clip_boxes_to_image,
        short_side_scale_with_boxes,
        uniform_crop,
        uniform_temporal_subsample,
    )
    from torchvision.transforms import Compose, Lambda
    from torchvision.transforms._functional_video import normalize
    from torchvision.transforms._transforms_video import CenterCropVideo, NormalizeVideo


class PackPathway(torch.nn.Module):
    """The tutorial's PackPathway, with alpha as an argument instead of a module global."""

    def __init__(self, alpha: int) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        fast_pathway = frames
        slow_pathway = torch.index_select(
            frames, 1, torch.linspace(0, frames.shape[1] - 1, frames.shape[1] // self.alpha).long()
        )
        return [slow_pathway, fast_pathway]


def tutorial_transform(spec: ModelSpec) -> ApplyTransformToKey:
    clip = spec.clip
    steps = [
        UniformTemporalSubsample(clip.num_frames),
        Lambda(lambda x: x / 255.0),
        NormalizeVideo(list(clip.mean), list(clip.std)),
        ShortSideScale(size=clip.side_size),
        CenterCropVideo(crop_size=(clip.crop_size, clip.crop_size)),
    ]
    if clip.alpha is not None:
        steps.append(PackPathway(clip.alpha))
    return ApplyTransformToKey(key="video", transform=Compose(steps))


def tutorial_clip(path: str | Path, spec: ModelSpec, start_sec: float = 0) -> torch.Tensor | None:
    """``EncodedVideo.get_clip`` exactly as the tutorial calls it: ``(C, T, H, W)`` float32 in [0, 255]."""
    clip_duration = (spec.clip.num_frames * spec.clip.sampling_rate) / spec.clip.frames_per_second
    video = EncodedVideo.from_path(str(path))
    return video.get_clip(start_sec=start_sec, end_sec=start_sec + clip_duration)["video"]


def tutorial_inputs(path: str | Path, spec: ModelSpec, start_sec: float = 0) -> list[torch.Tensor]:
    """The model inputs of one clip, each with a leading batch dimension of 1."""
    video_data = tutorial_transform(spec)({"video": tutorial_clip(path, spec, start_sec)})
    inputs = video_data["video"]
    if isinstance(inputs, torch.Tensor):
        return [inputs[None, ...]]
    return [i[None, ...] for i in inputs]


@torch.inference_mode()
def tutorial_probabilities(
    model: torch.nn.Module, inputs: list[torch.Tensor], output_is_probabilities: bool = False
) -> torch.Tensor:
    """Softmax of the model output, as the tutorial computes it: ``(1, num_classes)``; the output itself for a
    model whose head already ends in a softmax (X3D, R(2+1)D)."""
    preds = model(list(inputs) if len(inputs) > 1 else inputs[0])
    return preds if output_is_probabilities else torch.nn.Softmax(dim=1)(preds)


def ava_inference_transform(
    clip: torch.Tensor,
    boxes: np.ndarray,
    num_frames: int,
    slow_fast_alpha: int | None,
    crop_size: int = 256,
    data_mean: tuple[float, ...] = (0.45, 0.45, 0.45),
    data_std: tuple[float, ...] = (0.225, 0.225, 0.225),
) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """The detection tutorial's ``ava_inference_transform``, step by step as written there (video_detection_
    inference_tutorial.ipynb): ``clip`` as ``EncodedVideo.get_clip`` gives it, ``boxes`` ``(N, 4)`` float32 pixels.
    Returns the model inputs (without a batch dimension) and the boxes in the scaled clip's pixels."""
    boxes = np.array(boxes)
    clip = uniform_temporal_subsample(clip, num_frames)
    clip = clip.float()
    clip = clip / 255.0
    height, width = clip.shape[2], clip.shape[3]
    boxes = clip_boxes_to_image(boxes, height, width)
    clip, boxes = short_side_scale_with_boxes(clip, size=crop_size, boxes=boxes)
    clip = normalize(clip, np.array(data_mean, dtype=np.float32), np.array(data_std, dtype=np.float32))
    boxes = clip_boxes_to_image(boxes, clip.shape[2], clip.shape[3])
    if slow_fast_alpha is not None:
        fast_pathway = clip
        slow_pathway = torch.index_select(
            clip, 1, torch.linspace(0, clip.shape[1] - 1, clip.shape[1] // slow_fast_alpha).long()
        )
        clip = [slow_pathway, fast_pathway]
    return clip, torch.from_numpy(boxes)


@torch.inference_mode()
def tutorial_detection_scores(
    model: torch.nn.Module,
    path: str | Path,
    keyframe_sec: float,
    boxes: np.ndarray,
    num_frames: int,
    slow_fast_alpha: int | None,
    rotation: int = 0,
) -> torch.Tensor:
    """The tutorial's per-box scores at a keyframe: its 1 s clip around it, its transform, the boxes with a zero
    batch-index column, one video at a time. ``(N, 80)``. ``rotation``: degrees counterclockwise the file's frames
    are turned first (the tutorial reads none; for a phone video's display rotation, applied to the same pixels
    the service turns upright)."""
    video = EncodedVideo.from_path(str(path))
    clip = video.get_clip(keyframe_sec - 0.5, keyframe_sec + 0.5)["video"]
    clip = torch.rot90(clip, rotation // 90, dims=(2, 3))  # (C, T, H, W): as np.rot90 on (H, W)
    inputs, inp_boxes = ava_inference_transform(clip, boxes, num_frames, slow_fast_alpha)
    inp_boxes = torch.cat([torch.zeros(inp_boxes.shape[0], 1), inp_boxes], dim=1)
    inputs = [inp[None] for inp in inputs] if isinstance(inputs, list) else inputs[None]
    return model(inputs, inp_boxes)
