"""AVA spatio-temporal action detection (who does what, box by box): the two PyTorchVideo hub models and the
detection tutorial's preprocessing, exactly (``tutorials/video_detection_example/
video_detection_inference_tutorial.ipynb``; ``../shared/notes/detection.md``).

For a keyframe at ``t`` seconds the clip is the frames of ``[t - 0.5, t + 0.5)`` chosen by timestamp (as
``EncodedVideo.get_clip`` does: :func:`handler.decode.decode_clip`), uniformly subsampled to ``num_frames``;
then, with the person boxes in pixels of the upright frame: ``/ 255``; boxes clipped to the frame; short side
scaled to 256 with torch's bilinear interpolation and the boxes multiplied by the same factor; normalised with
mean 0.45 and std 0.225; boxes clipped to the scaled frame; for SlowFast the slow pathway by ``linspace`` with
alpha 4. No crop. The network takes the clips and the boxes as RoIs ``[batch index, x1, y1, x2, y2]`` and gives
one row of 80 sigmoid scores per box; column ``i`` is AVA action id ``i + 1``.

This module is the model and its recipe; :mod:`handler.detection_pipeline` serves it (requests in, answers out)
and :mod:`handler.persons` finds the boxes when a request gives none.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from handler.checkpoints import Weights, load_checkpoint
from handler.models import MODEL_ZOO, REGISTRY, ModelSpec
from handler.transforms import pack_pathways, short_side_size, uniform_temporal_indices


@dataclass(frozen=True)
class DetectionSpec:
    """One AVA detection model: its network, checkpoint, recipe and published figures.

    Attributes:
        name: registry name.
        builder: ``module:function`` building the network (``pretrained=False``).
        num_frames: frames of the clip the network sees (the fast pathway's for SlowFast).
        alpha: SlowFast's slow-pathway stride, ``None`` for a one-pathway network.
        checkpoint_url: the official file (``{"model_state": state_dict}``).
        map_percent: published frame-level mAP on AVA v2.2 validation (PyTorchVideo's model zoo).
        params_m: published parameter count, millions.
        clip_sec: the clip around the keyframe, ``[t - clip_sec / 2, t + clip_sec / 2)``.
        side_size: the short side the frames are scaled to.
        mean, std: per-channel normalisation of frames in [0, 1].
        labels: label set (:func:`handler.labels.label_set`), one name per output column.
    """

    name: str
    builder: str
    num_frames: int
    alpha: int | None
    checkpoint_url: str
    map_percent: float
    params_m: float
    clip_sec: float = 1.0
    side_size: int = 256
    mean: float = 0.45
    std: float = 0.225
    labels: str = "ava_v2.2"
    bundled_checkpoint: str | None = None  # none is committed (the classifiers' field, for the weight lookup)

    @property
    def checkpoint_filename(self) -> str:
        return self.checkpoint_url.rsplit("/", 1)[-1]

    def frames_and_middle(self, available: int) -> torch.Tensor:
        """Which of a keyframe window's ``available`` frames to decode: the ``num_frames`` the network sees
        (uniformly spread) and, last, the window's middle frame, on which the tutorial finds the people."""
        return torch.cat([uniform_temporal_indices(available, self.num_frames), torch.tensor([available // 2])])


DETECTION_MODELS = {
    spec.name: spec
    for spec in (
        DetectionSpec(
            name="slowfast_r50_detection",
            builder="pytorchvideo.models.hub:slowfast_r50_detection",
            num_frames=32,
            alpha=4,
            checkpoint_url=f"{MODEL_ZOO}/ava/SLOWFAST_8x8_R50_DETECTION.pyth",
            map_percent=24.67,
            params_m=33.82,
        ),
        DetectionSpec(
            name="slow_r50_detection",
            builder="pytorchvideo.models.hub:slow_r50_detection",
            num_frames=4,
            alpha=None,
            checkpoint_url=f"{MODEL_ZOO}/ava/SLOW_4x16_R50_DETECTION.pyth",
            map_percent=19.5,
            params_m=31.78,
        ),
    )
}


#: Every model this service serves: the classifiers' registry and the AVA detection models.
SERVED_MODELS = sorted([*REGISTRY, *DETECTION_MODELS])


def any_spec(name: str) -> ModelSpec | DetectionSpec:
    """The registry entry of a classifier or an AVA detection model; a ``KeyError`` listing the names otherwise."""
    if name in DETECTION_MODELS:
        return DETECTION_MODELS[name]
    if name in REGISTRY:
        return REGISTRY[name]
    raise KeyError(f"unknown model {name!r}; known models: {', '.join(SERVED_MODELS)}")


@dataclass(frozen=True)
class KeyframeClip:
    """One keyframe's network input and its boxes.

    Attributes:
        clip: ``(3, T, H', W')`` float32, normalised, short side ``side_size``.
        boxes: ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` in pixels of ``clip`` (scaled, clipped).
        frame_boxes: the same boxes clipped to the source frame, in its pixels (what a response reports).
    """

    clip: torch.Tensor
    boxes: torch.Tensor
    frame_boxes: torch.Tensor


def keyframe_window(keyframe_sec: float, spec: DetectionSpec) -> tuple[float, float]:
    """``[t - clip_sec / 2, t + clip_sec / 2)`` in seconds, its start at 0 at the earliest (no frame comes before
    the stream start, so the frames are those of the tutorial's window)."""
    return max(keyframe_sec - spec.clip_sec / 2, 0.0), keyframe_sec + spec.clip_sec / 2


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, 4)`` boxes with x in ``[0, width - 1]`` and y in ``[0, height - 1]`` (the tutorial's
    ``clip_boxes_to_image``); float32 in, float32 out."""
    limits = torch.tensor([width - 1.0, height - 1.0, width - 1.0, height - 1.0], dtype=boxes.dtype)
    return torch.minimum(boxes.clamp(min=0.0), limits)


def prepare_keyframe(frames: Sequence[torch.Tensor], boxes: torch.Tensor, spec: DetectionSpec) -> KeyframeClip:
    """The tutorial's ``ava_inference_transform`` on a keyframe's frames.

    Args:
        frames: the ``num_frames`` sampled frames of the keyframe's window, each ``(H, W, 3)`` uint8 RGB, upright.
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` in pixels of those frames (any float dtype; computed in float32).
    """
    video = torch.stack(list(frames)).permute(3, 0, 1, 2).float() / 255.0  # (3, T, H, W) in [0, 1]
    height, width = video.shape[-2:]
    frame_boxes = clip_boxes(boxes.to(torch.float32), height, width)
    new_height, new_width = short_side_size(height, width, spec.side_size)
    video = F.interpolate(video, size=(new_height, new_width), mode="bilinear", align_corners=False)
    scale = new_height / height if width < height else new_width / width
    scaled = clip_boxes(frame_boxes * scale, new_height, new_width)
    return KeyframeClip(clip=(video - spec.mean) / spec.std, boxes=scaled, frame_boxes=frame_boxes)


def rois(boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(sum N_i, 5)`` float32 RoIs ``[i, x1, y1, x2, y2]`` for the clips of a batch, clip ``i`` having
    ``boxes[i]`` ``(N_i, 4)``."""
    rows = [torch.cat([torch.full((len(b), 1), float(i)), b.to(torch.float32)], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(rows) if rows else torch.empty(0, 5)


def build_detector_network(spec: DetectionSpec) -> nn.Module:
    """``spec``'s network with freshly initialised weights, on the CPU, in eval mode."""
    module_name, function_name = spec.builder.split(":")
    return getattr(importlib.import_module(module_name), function_name)(pretrained=False).eval()


def load_detector_network(spec: DetectionSpec, checkpoint: str | Path) -> tuple[nn.Module, Weights]:
    """Builds ``spec``'s network and loads ``checkpoint`` (the official format; nothing in it runs) strictly."""
    weights = load_checkpoint(checkpoint)
    network = build_detector_network(spec)
    try:
        network.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{checkpoint} does not fit the {spec.name} architecture: {e}") from e
    return network, weights


@torch.inference_mode()
def score_boxes(
    network: Callable[[Any, torch.Tensor], torch.Tensor],
    keyframes: Sequence[KeyframeClip],
    spec: DetectionSpec,
    *,
    channels_last: bool = False,
    num_classes: int | None = None,
) -> list[torch.Tensor]:
    """Per keyframe, ``(N_i, 80)`` float32 sigmoid scores of its boxes, in their order, on the CPU. Keyframes whose
    clips have the same size run as one forward on the clips' device (their RoIs carry their position in it); a
    keyframe without boxes gets an empty ``(0, 80)`` and runs nothing. ``network``: the hub network, or anything
    called like it (an OpenVINO runner; then give ``num_classes``, else read from the network's head).
    ``channels_last``: the batch goes in as ``channels_last_3d`` (for a network converted to it)."""
    scores: list[torch.Tensor | None] = [None] * len(keyframes)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, keyframe in enumerate(keyframes):
        if len(keyframe.boxes):
            groups.setdefault(tuple(keyframe.clip.shape), []).append(i)
    for members in groups.values():
        batch = torch.stack([keyframes[i].clip for i in members])
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        inputs = batch if spec.alpha is None else pack_pathways(batch, spec.alpha)
        output = network(inputs, rois([keyframes[i].boxes for i in members]).to(batch.device))
        for i, part in zip(members, output.split([len(keyframes[i].boxes) for i in members]), strict=True):
            scores[i] = part.float().cpu()
    classes = num_classes or network.detection_head.proj.out_features
    return [s if s is not None else torch.empty(0, classes) for s in scores]


def top_actions(scores: torch.Tensor, labels: Sequence[str], top_k: int, threshold: float = 0.0) -> list[dict]:
    """One box's actions, best first: ``{"label", "class_id" (the AVA id, column + 1), "score"}``, at most
    ``top_k`` of them, none scored below ``threshold``."""
    values, columns = scores.topk(min(top_k, len(scores)))
    return [
        {"label": labels[c], "class_id": c + 1, "score": v}
        for v, c in zip(values.tolist(), columns.tolist(), strict=True)
        if v >= threshold
    ]


def save_random_detection_checkpoint(spec: DetectionSpec, path: str | Path, *, seed: int = 0) -> Path:
    """A randomly initialised ``spec`` network in the official format, marked random-init (tests and benchmarks
    only: its actions are meaningless, and answers say ``"weights": "random-init"``)."""
    torch.manual_seed(seed)
    state = build_detector_network(spec).state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": state, "random_init": True, "model": spec.name, "seed": seed}, path)
    return path
