"""Kinetics preprocessing with plain torch ops, equal to the PyTorchVideo hub tutorial's transform.

The tutorial composes ``UniformTemporalSubsample -> /255 -> NormalizeVideo -> ShortSideScale (bilinear)
-> CenterCropVideo -> PackPathway``. The same result is computed here with far less work:

- the temporal subsample is an index computation (:func:`uniform_temporal_indices`) applied by the decoder,
  so only the kept frames are ever converted to RGB;
- the resize is computed only where the crop keeps it: :class:`ResizeCrop` holds, for each kept output row
  and column, the two source pixels and the weight that ATen's bilinear kernel (``align_corners=False``, no
  antialias) uses. Each frame is reduced to those pixels (at most ``(2S, 2S, 3)`` uint8, :meth:`ResizeCrop.gather`),
  and only then converted to float and interpolated; a 720p frame is read once instead of being normalised,
  resized and cropped in float (about 20x less float work);
- normalisation runs after the interpolation: bilinear weights sum to one, so ``resize(normalise(x)) ==
  normalise(resize(x))`` in exact arithmetic. In float32 the results differ from the tutorial's by rounding
  only (at most a few 1e-7 on values in about [-2, 2.5]; tested against the tutorial's transform).

The float stage (:func:`finish`) runs on any device: the GPU path moves the gathered uint8 pixels (about a
third of a 720p frame's bytes) and interpolates there.

``pytorchvideo.transforms`` is never imported: it is broken with current torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from handler.models import ClipSpec
from handler.recipes import CenterCrop, SlowFrames, ThreeCrop

# Frames interpolated at once on the CPU: keeps the float intermediates of a chunk (8 x 512 x 512 x 3 x 4 B
# = 25 MB for a 256 crop) within the last-level cache while leaving enough work for intra-op threads.
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


def center_crop_offsets(height: int, width: int, crop_size: int, rule: CenterCrop = "round") -> tuple[int, int]:
    """``(top, left)`` of a centered ``crop_size`` square, rounded by ``rule``: ``round`` as torchvision's
    ``CenterCropVideo`` (the tutorial), ``floor`` as MMAction2's ``CenterCrop``, ``ceil`` as PySlowFast's and
    PaddleVideo's middle crop.

    Python's ``round`` (half to even) is kept on purpose: 341 -> 256 gives left = round(42.5) = 42.
    """
    if height < crop_size or width < crop_size:
        raise ValueError(f"frame {height}x{width} is smaller than the crop {crop_size}")
    rounding = {"round": lambda x: int(round(x)), "floor": math.floor, "ceil": math.ceil}[rule]
    return rounding((height - crop_size) / 2.0), rounding((width - crop_size) / 2.0)


def three_crop_offsets(height: int, width: int, crop_size: int, index: int, rule: ThreeCrop) -> tuple[int, int]:
    """``(top, left)`` of spatial view ``index`` (0: start, 1: middle, 2: end of the long side) of the multi-view
    protocol: :func:`uniform_crop_offsets`, or MMAction2's ``ThreeCrop`` (``rule="mmaction2"``), whose step along
    the long side is ``floor((L - S) / 2)`` and whose last crop starts at twice the step."""
    if rule == "uniform_crop":
        return uniform_crop_offsets(height, width, crop_size, index)
    if index not in (0, 1, 2):
        raise ValueError(f"spatial view index must be 0, 1 or 2, got {index}")
    top, left = center_crop_offsets(height, width, crop_size, "floor")
    if height > width:
        return index * ((height - crop_size) // 2), left
    return top, index * ((width - crop_size) // 2)


def uniform_crop_offsets(height: int, width: int, crop_size: int, index: int) -> tuple[int, int]:
    """``(top, left)`` of spatial view ``index`` (0, 1, 2) of PyTorchVideo's ``uniform_crop``, the multi-view
    test protocol: the start, the middle (rounded up) and the end of the long side, centered on the short one.
    """
    if height < crop_size or width < crop_size:
        raise ValueError(f"frame {height}x{width} is smaller than the crop {crop_size}")
    top, left = math.ceil((height - crop_size) / 2), math.ceil((width - crop_size) / 2)
    if index not in (0, 1, 2):
        raise ValueError(f"spatial view index must be 0, 1 or 2, got {index}")
    end = {0: 0, 1: None, 2: (height if height > width else width) - crop_size}[index]
    if end is not None:
        top, left = (end, left) if height > width else (top, end)
    return top, left


def bilinear_taps(in_size: int, out_size: int, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source taps of outputs ``start .. start + count - 1`` of a 1-D bilinear resize from ``in_size`` to
    ``out_size`` (``align_corners=False``, no antialias), computed in float32 as ATen's kernel computes them.

    Returns:
        ``index``: ``(2 * count,)`` int64, the lower source index of every output, then the upper one;
        ``weight``: ``(count,)`` float32 in [0, 1], the upper source's weight (the lower one gets ``1 - weight``).
    """
    out = np.arange(start, start + count, dtype=np.int64)
    if in_size == out_size:  # ATen copies: each output reads its own source pixel
        lower, upper, weight = out, out, np.zeros(count, dtype=np.float32)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        # ATen evaluates scale * (i + 0.5) - 0.5 as one fused multiply-add (a single rounding to float32);
        # float64 arithmetic rounded once reproduces it (checked against F.interpolate, up to 9000 pixels).
        fused = np.float64(scale) * (out + 0.5) - 0.5
        source = np.maximum(fused.astype(np.float32), np.float32(0))
        lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
        weight = np.clip(source - lower.astype(np.float32), 0, 1).astype(np.float32)
        upper = np.where(lower < in_size - 1, lower + 1, lower)
    return torch.from_numpy(np.concatenate([lower, upper])), torch.from_numpy(weight)


@dataclass(frozen=True)
class ResizeCrop:
    """A short-side bilinear resize followed by a square crop, as the source pixels the crop reads.

    Attributes:
        rows, cols: ``(2 * size,)`` int64 source rows / columns: the lower neighbour of each output row
            (column), then the upper one; or ``(size,)`` when every weight on that axis is 0 (the axis is not
            scaled, e.g. a 256-pixel short side): each output then copies one source pixel.
        row_weights, col_weights: ``(size,)`` float32, the upper neighbour's weight per output row (column), or
            ``None`` with a ``(size,)`` index.
        size: side of the square output.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    row_weights: torch.Tensor | None
    col_weights: torch.Tensor | None
    size: int

    @classmethod
    def for_frame(
        cls,
        height: int,
        width: int,
        clip: ClipSpec,
        *,
        side_size: int | None = None,
        crop_position: tuple[float, float] | None = None,
        spatial_view: int | None = None,
    ) -> ResizeCrop:
        """The plan for ``height x width`` frames: short side to ``side_size`` (default ``clip.side_size``), then
        a ``clip.crop_size`` crop: the tutorial's center crop, or at ``crop_position`` (``(y, x)`` in [0, 1],
        0 = top/left edge), or spatial view ``spatial_view`` of the multi-view protocol
        (:func:`uniform_crop_offsets`).
        """
        new_h, new_w = short_side_size(height, width, side_size or clip.side_size)
        size = clip.crop_size
        if spatial_view is not None:
            top, left = three_crop_offsets(new_h, new_w, size, spatial_view, clip.recipe.three_crop)
        elif crop_position is None:
            top, left = center_crop_offsets(new_h, new_w, size, clip.recipe.center_crop)
        else:
            top, left = round(crop_position[0] * (new_h - size)), round(crop_position[1] * (new_w - size))
        rows, row_weights = _taps(height, new_h, top, size)
        cols, col_weights = _taps(width, new_w, left, size)
        return cls(rows, cols, row_weights, col_weights, size)

    @property
    def gathered_shape(self) -> tuple[int, int, int]:
        """``(R, C, 3)``: what :meth:`gather` returns per frame (R, C = ``size`` or ``2 * size``)."""
        return len(self.rows), len(self.cols), 3

    def gather(self, frame: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The pixels the crop reads: ``(H, W, 3)`` uint8 -> ``(R, C, 3)`` uint8 (into ``out``)."""
        return torch.index_select(frame.index_select(0, self.rows), 1, self.cols, out=out)

    def interpolate(self, gathered: torch.Tensor) -> torch.Tensor:
        """``(T, R, C, 3)`` uint8 from :meth:`gather` (any device) -> ``(T, S, S, 3)`` float32 in [0, 255]."""
        s = self.size
        x = gathered.to(torch.float32)
        if self.row_weights is not None:
            x = torch.lerp(x[:, :s], x[:, s:], self.row_weights.to(x.device).view(1, s, 1, 1))
        if self.col_weights is not None:
            x = torch.lerp(x[:, :, :s], x[:, :, s:], self.col_weights.to(x.device).view(1, 1, s, 1))
        return x


def _taps(in_size: int, out_size: int, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`bilinear_taps`, reduced to one tap per output where every weight is 0 (``lerp(a, b, 0) == a``)."""
    index, weight = bilinear_taps(in_size, out_size, start, count)
    return (index[:count], None) if not bool(weight.any()) else (index, weight)


def resize_for_recipe(
    frames: Sequence[torch.Tensor], clip: ClipSpec, side_size: int | None = None
) -> Sequence[torch.Tensor]:
    """Scales the frames' short side to ``side_size`` (default ``clip.side_size``) with the library the recipe's
    toolbox uses, where that is not torch's bilinear (which :class:`ResizeCrop` computes, only where the crop
    reads, and is returned unchanged here):

    - ``cv2_bilinear`` (MMAction2: ``mmcv.imresize`` -> ``cv2.resize(..., INTER_LINEAR)`` on uint8, the new size
      ``int(side * scale + 0.5)`` from ``mmcv.rescale_size``);
    - ``pil_bilinear`` (PaddleVideo ``JitterScale``: ``PIL.Image.resize(..., BILINEAR)``, the long side floored;
      frames already at the size are kept).

    The results are rounded to uint8 by those libraries, as in the toolboxes; a frame repeated in ``frames`` is
    resized once and stays one object.

    Args:
        frames: ``(H, W, 3)`` uint8 RGB frames of one size.

    Returns:
        ``(H', W', 3)`` uint8 RGB frames whose short side is ``side_size``.
    """
    resize = clip.recipe.resize
    if resize == "torch_bilinear":
        return frames
    side = side_size or clip.side_size
    resized: dict[int, torch.Tensor] = {}
    out = []
    for frame in frames:
        if id(frame) not in resized:
            resized[id(frame)] = _resize_uint8(frame, side, resize)
        out.append(resized[id(frame)])
    return out


def _resize_uint8(frame: torch.Tensor, side: int, resize: str) -> torch.Tensor:
    height, width = int(frame.shape[0]), int(frame.shape[1])
    image = frame.numpy()
    if resize == "cv2_bilinear":
        scale = side / min(height, width)  # mmcv.rescale_size with scale (inf, side)
        size = (int(width * float(scale) + 0.5), int(height * float(scale) + 0.5))
        return torch.from_numpy(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
    if min(height, width) == side:  # JitterScale returns the frames as they are
        return frame
    new_h, new_w = short_side_size(height, width, side)
    resized = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)  # an (H, W, 3) uint8 array is RGB
    return torch.from_numpy(np.asarray(resized).copy())


def gather_frames(frames: Sequence[torch.Tensor], plan: ResizeCrop, *, pin_memory: bool = False) -> torch.Tensor:
    """:meth:`ResizeCrop.gather` of every frame, stacked: ``(T, R, C, 3)`` uint8 on the CPU (page-locked with
    ``pin_memory``, for a non-blocking copy to a GPU). A frame object repeated in ``frames`` is gathered once.
    """
    frames = list(frames)  # holds every frame object, so that id() cannot be reused within the loop
    out = torch.empty((len(frames), *plan.gathered_shape), dtype=torch.uint8, pin_memory=pin_memory)
    first_row: dict[int, int] = {}
    for i, frame in enumerate(frames):
        j = first_row.setdefault(id(frame), i)
        if j == i:
            plan.gather(frame, out=out[i])
        else:
            out[i] = out[j]
    return out


class CropGatherer:
    """What a clip keeps of each decoded frame (a :data:`handler.decode.FrameReducer`): the recipe's resize where it
    is not torch's bilinear (:func:`resize_for_recipe`), then the source pixels each of the clip's crops reads
    (:meth:`ResizeCrop.gather`), so a clip never holds full frames.

    Args:
        clip: the model's clip spec and recipe.
        spatial_views: one entry per crop: ``None`` for the recipe's center crop, or a spatial view index (0, 1, 2)
            of the multi-view protocol.
    """

    def __init__(self, clip: ClipSpec, spatial_views: Sequence[int | None]) -> None:
        self.clip = clip
        self.spatial_views = list(spatial_views)
        self._plans: dict[tuple[int, ...], list[ResizeCrop]] = {}
        self._current: list[ResizeCrop] = []  # the plans of the frames gathered last (one request: one size)

    def plans(self, shape: Sequence[int]) -> list[ResizeCrop]:
        """The crops' plans for (recipe-resized) frames of ``(H, W, 3)`` ``shape``, one per spatial view."""
        key = tuple(shape)
        if key not in self._plans:
            plans = [ResizeCrop.for_frame(key[0], key[1], self.clip, spatial_view=v) for v in self.spatial_views]
            if len({plan.gathered_shape for plan in plans}) != 1:  # the taps depend on the scale only: never seen
                raise ValueError(f"crops of {key} frames gather different shapes: {[p.gathered_shape for p in plans]}")
            self._plans[key] = plans
        return self._plans[key]

    def __call__(self, frame: torch.Tensor) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(K, R, C, 3)`` uint8: the pixels of each of the ``K`` crops."""
        if self.clip.recipe.resize != "torch_bilinear":
            frame = _resize_uint8(frame, self.clip.side_size, self.clip.recipe.resize)
        plans = self._current = self.plans(frame.shape)
        out = torch.empty((len(plans), *plans[0].gathered_shape), dtype=torch.uint8)
        for k, plan in enumerate(plans):
            plan.gather(frame, out=out[k])
        return out

    def finish_crops(self, frames: Sequence[torch.Tensor], *, device: torch.device) -> torch.Tensor:
        """Interpolates and normalises one clip's gathered frames on ``device``.

        Args:
            frames: ``T`` tensors from :meth:`__call__` (a repeated frame may be the same object).
            device: where the float stage runs (the gathered pixels are copied there, from page-locked memory
                for a GPU).

        Returns:
            ``(K, 3, T, S, S)`` float32 on ``device``, normalised as :func:`finish`.
        """
        first, plans = frames[0], self._current
        pinned = device.type == "cuda"
        stacked = torch.empty((first.shape[0], len(frames), *first.shape[1:]), dtype=torch.uint8, pin_memory=pinned)
        for t, frame in enumerate(frames):
            stacked[:, t] = frame
        crops = [finish(stacked[k].to(device, non_blocking=True), plan, self.clip) for k, plan in enumerate(plans)]
        return crops[0][None] if len(crops) == 1 else torch.stack(crops)


def finish(gathered: torch.Tensor, plan: ResizeCrop, clip: ClipSpec, *, flip: bool = False) -> torch.Tensor:
    """Interpolates and normalises gathered pixels, on their device.

    Args:
        gathered: ``(T, R, C, 3)`` uint8 from :func:`gather_frames` (CPU or GPU).
        plan: the plan that gathered them.
        clip: mean and std.
        flip: mirror the result horizontally (a training augmentation).

    Returns:
        ``(3, T, S, S)`` float32 on ``gathered``'s device: ``(x / pixel_scale - mean) / std`` (``pixel_scale``: 255
        for mean/std on [0, 1], 1 for mean/std on [0, 255]; ``clip.recipe``).
    """
    num_frames, size, scale = gathered.shape[0], plan.size, clip.recipe.pixel_scale
    mean = torch.tensor(clip.mean, dtype=torch.float32, device=gathered.device).view(3, 1, 1, 1)
    std = torch.tensor(clip.std, dtype=torch.float32, device=gathered.device).view(3, 1, 1, 1)
    out = torch.empty((3, num_frames, size, size), dtype=torch.float32, device=gathered.device)
    chunk = _CHUNK_FRAMES if gathered.device.type == "cpu" else num_frames
    for start in range(0, num_frames, chunk):
        # (t, S, S, 3) => (3, t, S, S), then the toolboxes' order: / 255 (where on [0, 1]), - mean, / std.
        part = out[:, start : start + chunk]
        part.copy_(plan.interpolate(gathered[start : start + chunk]).permute(3, 0, 1, 2))
        if scale != 1:
            part.div_(scale)
        part.sub_(mean).div_(std)
    return out.flip(-1) if flip else out


def preprocess_frames(
    frames: Sequence[torch.Tensor] | torch.Tensor,
    clip: ClipSpec,
    *,
    side_size: int | None = None,
    crop_position: tuple[float, float] | None = None,
    flip: bool = False,
) -> torch.Tensor:
    """Rescales, crops and normalises already-subsampled frames on the CPU.

    The defaults are the serving (and tutorial) transform: short side to ``clip.side_size``, center crop. The
    keyword arguments are the training-time augmentations of ``slowfast-serve finetune``.

    Args:
        frames: ``T`` frames, each ``(H, W, 3)`` uint8 RGB in [0, 255], all the same size (a ``(T, H, W, 3)``
            tensor works too): the frames the model will see.
        clip: the model's clip spec (side size, crop size, mean, std).
        side_size: scale the short side to this instead of ``clip.side_size`` (>= ``clip.crop_size``).
        crop_position: ``(y, x)`` in [0, 1]: where the crop sits in the scaled frame; ``None`` centers it.
        flip: mirror the crop horizontally.

    Returns:
        ``(3, T, crop_size, crop_size)`` float32, normalised: ``(x / 255 - mean) / std``.
    """
    frames = resize_for_recipe(list(frames), clip, side_size)
    plan = plan_for(frames, clip, side_size=side_size, crop_position=crop_position)
    return finish(gather_frames(frames, plan), plan, clip, flip=flip)


def plan_for(
    frames: Sequence[torch.Tensor] | torch.Tensor,
    clip: ClipSpec,
    *,
    side_size: int | None = None,
    crop_position: tuple[float, float] | None = None,
    spatial_view: int | None = None,
) -> ResizeCrop:
    """Checks that ``frames`` are ``(H, W, 3)`` uint8 frames of one size and returns their :class:`ResizeCrop`.

    Raises:
        ValueError: no frames, a wrong layout or dtype, or frames of different sizes.
    """
    if len(frames) == 0:
        raise ValueError("no frames to preprocess")
    shapes = {tuple(frame.shape) for frame in frames}
    first = frames[0]
    if len(shapes) != 1 or first.dim() != 3 or first.shape[-1] != 3 or first.dtype != torch.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 frames of one size, got shapes {sorted(shapes)} {first.dtype}")
    height, width = first.shape[0], first.shape[1]
    placement = {"side_size": side_size, "crop_position": crop_position, "spatial_view": spatial_view}
    return ResizeCrop.for_frame(height, width, clip, **placement)


def model_inputs(batch: torch.Tensor, clip: ClipSpec) -> torch.Tensor | list[torch.Tensor]:
    """What the model's forward takes for a ``(N, 3, T, S, S)`` clip batch: the batch itself for a one-pathway
    model (``clip.alpha`` is ``None``), ``[slow, fast]`` (:func:`pack_pathways`) for SlowFast.
    """
    return batch if clip.alpha is None else pack_pathways(batch, clip.alpha, clip.recipe.slow_frames)


def slow_indices(num_frames: int, alpha: int, rule: SlowFrames = "linspace") -> torch.Tensor:
    """The fast-clip frames the slow pathway sees: ``linspace(0, T - 1, T // alpha)`` truncated (the tutorial's
    ``PackPathway``, PySlowFast, PaddleVideo) or every ``alpha``-th frame from the first (``stride``: MMAction2,
    whose backbone subsamples with nearest interpolation). int64, shape ``(T // alpha,)``."""
    if rule == "stride":
        return torch.arange(0, num_frames, alpha)[: num_frames // alpha]
    return torch.linspace(0, num_frames - 1, num_frames // alpha).long()


def pack_pathways(batch: torch.Tensor, alpha: int, rule: SlowFrames = "linspace") -> list[torch.Tensor]:
    """Splits a clip batch into SlowFast's ``[slow, fast]`` input list.

    Args:
        batch: ``(N, C, T, H, W)`` float clips.
        alpha: SlowFast's frame ratio between the fast and the slow pathway.
        rule: how the slow frames are chosen (:func:`slow_indices`).

    Returns:
        ``[slow, fast]``: ``slow`` is ``(N, C, T // alpha, H, W)``, the frames at :func:`slow_indices`; ``fast`` is
        ``batch`` itself. Build a new list for every forward: hub models mutate the list they are given.
    """
    slow_index = slow_indices(batch.shape[2], alpha, rule).to(batch.device)
    return [torch.index_select(batch, 2, slow_index), batch]
