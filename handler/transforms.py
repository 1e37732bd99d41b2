"""Kinetics preprocessing with plain torch ops, equal to the PyTorchVideo hub tutorial's transform.

The tutorial composes ``UniformTemporalSubsample -> /255 -> NormalizeVideo -> ShortSideScale (bilinear)
-> CenterCropVideo -> PackPathway``. Here the same arithmetic runs in the same order, with two differences
that do not change a single value:

- the temporal subsample is an index computation (:func:`uniform_temporal_indices`) applied by the decoder,
  so only the kept frames are ever converted to RGB or to float;
- frames are converted and resized a few at a time, so a long side of 4K costs one chunk of float frames in
  memory rather than the whole clip.

``pytorchvideo.transforms`` is never imported: it is broken with current torchvision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handler.models import ClipSpec

# Frames converted to float at once: bounds peak memory (8 x 3 x 2160 x 3840 x 4 B ~ 800 MB at 4K) while
# keeping enough work per interpolate call for its intra-op threads.
_CHUNK_FRAMES = 8


def uniform_temporal_indices(num_available: int, num_samples: int) -> torch.Tensor:
    """Indices of ``num_samples`` frames spread evenly over ``num_available`` (PyTorchVideo's rule).

    ``torch.linspace(0, t - 1, n)`` truncated to integers; frames repeat when ``num_samples > num_available``.
    ``torch.linspace`` itself is used because numpy's float64 linspace truncates differently near integers.

    Returns:
        int64 tensor of shape ``(num_samples,)``, non-decreasing, values in ``[0, num_available - 1]``.
    """
    if num_available <= 0 or num_samples <= 0:
        raise ValueError(f"need positive frame counts, got num_available={num_available}, num_samples={num_samples}")
    indices = torch.linspace(0, num_available - 1, num_samples)
    return torch.clamp(indices, 0, num_available - 1).long()


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output ``(height, width)`` when the short side is scaled to ``size`` (the long side is floored)."""
    if width < height:
        return int(math.floor((float(height) / width) * size)), size
    return size, int(math.floor((float(width) / height) * size))


def center_crop_offsets(height: int, width: int, crop_size: int) -> tuple[int, int]:
    """``(top, left)`` of a centered ``crop_size`` square, rounded as torchvision's ``CenterCropVideo``.

    Python's ``round`` (half to even) is kept on purpose: 341 -> 256 gives left = round(42.5) = 42.
    """
    if height < crop_size or width < crop_size:
        raise ValueError(f"frame {height}x{width} is smaller than the crop {crop_size}")
    return int(round((height - crop_size) / 2.0)), int(round((width - crop_size) / 2.0))


def preprocess_frames(
    frames: torch.Tensor,
    clip: ClipSpec,
    *,
    side_size: int | None = None,
    crop_position: tuple[float, float] | None = None,
    flip: bool = False,
) -> torch.Tensor:
    """Normalises, rescales and crops already-subsampled frames.

    The defaults are the serving (and tutorial) transform: short side to ``clip.side_size``, center crop. The
    keyword arguments are the training-time augmentations of ``scripts/finetune.py``.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB, values in [0, 255], the frames the model will see.
        clip: the model's clip spec (side size, crop size, mean, std).
        side_size: scale the short side to this instead of ``clip.side_size`` (>= ``clip.crop_size``).
        crop_position: ``(y, x)`` in [0, 1]: where the crop sits in the scaled frame (0 = top/left edge,
            1 = bottom/right edge); ``None`` centers it.
        flip: mirror the crop horizontally.

    Returns:
        ``(3, T, crop_size, crop_size)`` float32, normalised: ``(x / 255 - mean) / std``.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {tuple(frames.shape)} {frames.dtype}")
    num_frames, height, width, _ = frames.shape
    new_h, new_w = short_side_size(height, width, side_size or clip.side_size)
    if crop_position is None:
        top, left = center_crop_offsets(new_h, new_w, clip.crop_size)
    else:
        top = round(crop_position[0] * (new_h - clip.crop_size))
        left = round(crop_position[1] * (new_w - clip.crop_size))
    mean = torch.tensor(clip.mean, dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor(clip.std, dtype=torch.float32).view(3, 1, 1, 1)
    out = torch.empty((3, num_frames, clip.crop_size, clip.crop_size), dtype=torch.float32)
    for start in range(0, num_frames, _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES].permute(3, 0, 1, 2)  # (t, H, W, 3) => (3, t, H, W)
        # Same ops, same order, same dtype as the tutorial (Div255, NormalizeVideo), so values match bitwise.
        chunk = chunk.to(torch.float32) / 255.0
        chunk = chunk.sub_(mean).div_(std)
        # (3, t, H, W) is interpolated as 3 images of t channels, exactly as ShortSideScale does.
        resized = F.interpolate(chunk, size=(new_h, new_w), mode="bilinear", align_corners=False)
        out[:, start : start + chunk.shape[1]] = resized[:, :, top : top + clip.crop_size, left : left + clip.crop_size]
    return out.flip(-1) if flip else out


def model_inputs(batch: torch.Tensor, alpha: int | None) -> torch.Tensor | list[torch.Tensor]:
    """What the model's forward takes for a ``(N, 3, T, S, S)`` clip batch: the batch itself for a one-pathway
    model (``alpha`` is ``None``), ``[slow, fast]`` (:func:`pack_pathways`) for SlowFast.
    """
    return batch if alpha is None else pack_pathways(batch, alpha)


def pack_pathways(batch: torch.Tensor, alpha: int) -> list[torch.Tensor]:
    """Splits a clip batch into SlowFast's ``[slow, fast]`` input list.

    Args:
        batch: ``(N, C, T, H, W)`` float clips.
        alpha: SlowFast's frame ratio between the fast and the slow pathway.

    Returns:
        ``[slow, fast]``: ``slow`` is ``(N, C, T // alpha, H, W)``, the frames at ``linspace(0, T - 1, T // alpha)``
        (the tutorial's ``PackPathway``); ``fast`` is ``batch`` itself. Build a new list for every forward:
        hub models mutate the list they are given.
    """
    num_frames = batch.shape[2]
    slow_index = torch.linspace(0, num_frames - 1, num_frames // alpha).long().to(batch.device)
    return [torch.index_select(batch, 2, slow_index), batch]
