"""Transforms: index rules, sizes, crop offsets, the bilinear taps against ATen's, and equality (to float
rounding) with the tutorial's transform."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from handler.models import ClipSpec, get_spec
from handler.transforms import (
    ResizeCrop,
    bilinear_taps,
    center_crop_offsets,
    finish,
    gather_frames,
    pack_pathways,
    plan_for,
    preprocess_frames,
    short_side_size,
    uniform_temporal_indices,
)
from tests import reference

# Our normalisation runs after the interpolation, the tutorial's before: the same values up to float32
# rounding (measured: at most 7e-7 over the sizes below; values lie in about [-2, 2.5]).
ROUNDING = 2e-6


@pytest.mark.parametrize(
    ("available", "samples"), [(64, 32), (64, 8), (63, 32), (100, 32), (33, 32), (20, 32), (3, 8), (1, 32), (257, 7)]
)
def test_temporal_indices_match_pytorchvideo(available: int, samples: int) -> None:
    frames = torch.arange(available)
    expected = reference.uniform_temporal_subsample(frames, samples, temporal_dim=0)
    assert torch.equal(uniform_temporal_indices(available, samples), expected)


def test_temporal_indices_repeat_frames_when_video_is_short() -> None:
    assert uniform_temporal_indices(3, 8).tolist() == [0, 0, 0, 0, 1, 1, 1, 2]


@pytest.mark.parametrize(("available", "samples"), [(0, 8), (8, 0), (-1, 4)])
def test_temporal_indices_reject_empty(available: int, samples: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        uniform_temporal_indices(available, samples)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (480, 640, (256, 341)),
        (640, 480, (341, 256)),
        (211, 317, (256, 384)),
        (300, 300, (256, 256)),
        (720, 1280, (256, 455)),
        (100, 50, (512, 256)),
    ],
)
def test_short_side_size(height: int, width: int, expected: tuple[int, int]) -> None:
    assert short_side_size(height, width, 256) == expected


def test_center_crop_rounds_half_to_even_like_torchvision() -> None:
    # (341 - 256) / 2 = 42.5: torchvision's CenterCropVideo uses round() -> 42 (ceil would give 43).
    assert center_crop_offsets(256, 341, 256) == (0, 42)
    assert center_crop_offsets(256, 343, 256) == (0, 44)  # 43.5 -> 44
    assert center_crop_offsets(384, 256, 256) == (64, 0)


def test_center_crop_rejects_small_frames() -> None:
    with pytest.raises(ValueError, match="smaller than the crop"):
        center_crop_offsets(200, 300, 256)


@pytest.mark.parametrize(
    ("model", "height", "width"),
    [("slowfast_r50", 240, 320), ("slowfast_r50", 321, 179), ("slow_r50", 97, 401), ("slow_r50", 256, 256)],
)
def test_preprocess_equals_tutorial_transform(model: str, height: int, width: int) -> None:
    spec = get_spec(model)
    frames = torch.randint(0, 256, (spec.clip.num_frames, height, width, 3), dtype=torch.uint8)
    ours = preprocess_frames(frames, spec.clip)
    video = frames.permute(3, 0, 1, 2).to(torch.float32)  # (T, H, W, C) => (C, T, H, W), as get_clip returns
    theirs = reference.tutorial_transform(spec)({"video": video})["video"]
    if isinstance(theirs, list):
        theirs = theirs[1]  # the fast pathway is the whole clip
    assert ours.shape == (3, spec.clip.num_frames, spec.clip.crop_size, spec.clip.crop_size)
    assert ours.dtype == torch.float32
    assert (ours - theirs).abs().max() <= ROUNDING


@pytest.mark.parametrize(
    ("size_in", "size_out"),
    [(179, 256), (321, 459), (1280, 455), (720, 256), (401, 1058), (3840, 682), (4000, 9000), (256, 256), (2, 7)],
)
def test_bilinear_taps_are_atens(size_in: int, size_out: int) -> None:
    # Every other source pixel is 1, the rest 0: each output of ATen's kernel is then exactly the weight of its
    # even neighbour, which pins down both its source indices and its weights.
    row = torch.zeros(1, 1, 1, size_in)
    row[..., 0::2] = 1.0
    expected = F.interpolate(row, size=(1, size_out), mode="bilinear", align_corners=False)[0, 0, 0]
    index, weight = bilinear_taps(size_in, size_out, 0, size_out)
    lower, upper = index[:size_out], index[size_out:]
    ours = torch.where(lower % 2 == 0, 1 - weight, 0.0) + torch.where(upper % 2 == 0, weight, 0.0)
    assert torch.equal(ours, expected)
    assert int(upper.max()) < size_in
    assert int(lower.min()) >= 0


@pytest.mark.parametrize(
    ("height", "width", "side_size", "crop_position"),
    [(720, 1280, 300, (0.2, 0.9)), (211, 317, 256, (1.0, 0.0)), (321, 179, 400, (0.5, 0.5)), (256, 256, 256, None)],
)
def test_augmented_crops_equal_a_full_resize_then_crop(
    height: int, width: int, side_size: int, crop_position: tuple[float, float] | None
) -> None:
    clip = get_spec("slowfast_r50").clip
    frames = torch.randint(0, 256, (3, height, width, 3), dtype=torch.uint8)
    ours = preprocess_frames(frames, clip, side_size=side_size, crop_position=crop_position, flip=True)
    new_h, new_w = short_side_size(height, width, side_size)
    full = F.interpolate(frames.permute(3, 0, 1, 2).float() / 255, size=(new_h, new_w), mode="bilinear")
    if crop_position is None:
        top, left = center_crop_offsets(new_h, new_w, clip.crop_size)
    else:
        top, left = round(crop_position[0] * (new_h - 256)), round(crop_position[1] * (new_w - 256))
    crop = full[:, :, top : top + 256, left : left + 256].flip(-1)
    assert (ours - (crop - 0.45) / 0.225).abs().max() <= ROUNDING


def test_repeated_frames_are_gathered_once_and_kept_in_place() -> None:
    clip = ClipSpec(num_frames=4, sampling_rate=1, side_size=16, crop_size=16)
    a, b = (torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8) for _ in range(2))
    plan = ResizeCrop.for_frame(20, 30, clip)
    gathered = gather_frames([a, a, b, a], plan)
    assert gathered.shape == (4, 32, 32, 3)
    assert torch.equal(gathered[1], plan.gather(a))
    assert torch.equal(gathered[2], plan.gather(b))
    assert torch.equal(finish(gathered, plan, clip)[:, 3], preprocess_frames([a], clip)[:, 0])


def test_preprocess_handles_frame_counts_that_are_not_a_multiple_of_the_chunk() -> None:
    clip = ClipSpec(num_frames=11, sampling_rate=1, side_size=64, crop_size=48)
    frames = torch.randint(0, 256, (11, 70, 90, 3), dtype=torch.uint8)
    whole = preprocess_frames(frames, clip)
    one_by_one = torch.cat([preprocess_frames(frames[i : i + 1], clip) for i in range(11)], dim=1)
    assert torch.equal(whole, one_by_one)


def test_preprocess_normalises_with_the_clip_statistics() -> None:
    clip = ClipSpec(num_frames=2, sampling_rate=1, side_size=8, crop_size=8)
    frames = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    out = preprocess_frames(frames, clip)
    assert torch.allclose(out, torch.full_like(out, (1.0 - 0.45) / 0.225))


@pytest.mark.parametrize(
    "frames",
    [
        torch.zeros((4, 8, 8), dtype=torch.uint8),
        torch.zeros((4, 8, 8, 3)),
        torch.zeros((4, 8, 8, 4)),
        [torch.zeros((8, 8, 3), dtype=torch.uint8), torch.zeros((8, 9, 3), dtype=torch.uint8)],
    ],
)
def test_preprocess_rejects_wrong_layout_dtype_or_mixed_sizes(frames: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="uint8 frames of one size"):
        preprocess_frames(frames, get_spec("slow_r50").clip)


def test_preprocess_rejects_no_frames() -> None:
    with pytest.raises(ValueError, match="no frames"):
        preprocess_frames([], get_spec("slow_r50").clip)


def test_pack_pathways_takes_the_tutorial_slow_frames() -> None:
    batch = torch.arange(32, dtype=torch.float32).view(1, 1, 32, 1, 1).expand(2, 3, 32, 4, 4).contiguous()
    slow, fast = pack_pathways(batch, alpha=4)
    assert slow.shape == (2, 3, 8, 4, 4)
    assert slow[0, 0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    assert fast is batch
    expected_slow = reference.PackPathway(4)(batch[0])[0]
    assert torch.equal(slow[0], expected_slow)


def test_an_unscaled_frame_is_cropped_without_interpolation() -> None:
    clip = get_spec("slowfast_r50").clip
    assert ResizeCrop.for_frame(720, 1280, clip).gathered_shape == (512, 512, 3)
    plan = ResizeCrop.for_frame(256, 456, clip)  # short side already 256: the resize is a copy
    assert plan.gathered_shape == (256, 256, 3)
    assert plan.row_weights is None
    assert plan.col_weights is None
    frames = torch.randint(0, 256, (4, 256, 456, 3), dtype=torch.uint8)
    expected = (frames[:, :, 100:356].permute(3, 0, 1, 2).float() / 255 - 0.45) / 0.225
    assert (preprocess_frames(frames, clip) - expected).abs().max() <= ROUNDING


@pytest.mark.parametrize(("height", "width"), [(720, 1280), (1280, 720), (240, 320), (256, 256), (97, 401)])
@pytest.mark.parametrize("view", [0, 1, 2])
def test_spatial_views_are_pytorchvideos_uniform_crop(height: int, width: int, view: int) -> None:
    # The multi-view protocol: ShortSideScale(256), then uniform_crop(256, view) (its center rounds up).
    clip = get_spec("slowfast_r50").clip
    frames = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)
    video = frames.permute(3, 0, 1, 2).float() / 255
    scaled = reference.ShortSideScale(256)(video)
    expected = reference.uniform_crop(scaled, 256, view)
    ours = preprocess_frames_view(frames, clip, view)
    assert (ours - (expected - 0.45) / 0.225).abs().max() <= ROUNDING


def preprocess_frames_view(frames: torch.Tensor, clip: ClipSpec, view: int) -> torch.Tensor:
    plan = plan_for(frames, clip, spatial_view=view)
    return finish(gather_frames(frames, plan), plan, clip)
