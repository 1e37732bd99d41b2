"""Transforms: index rules, sizes, crop offsets, and bitwise equality with the tutorial's transform."""

from __future__ import annotations

import pytest
import torch

from handler.models import ClipSpec, get_spec
from handler.transforms import (
    center_crop_offsets,
    pack_pathways,
    preprocess_frames,
    short_side_size,
    uniform_temporal_indices,
)
from tests import reference


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
    assert torch.equal(ours, theirs)


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
    "frames", [torch.zeros((4, 8, 8), dtype=torch.uint8), torch.zeros((4, 8, 8, 3)), torch.zeros((4, 8, 8, 4))]
)
def test_preprocess_rejects_wrong_layout_or_dtype(frames: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(frames, get_spec("slow_r50").clip)


def test_pack_pathways_takes_the_tutorial_slow_frames() -> None:
    batch = torch.arange(32, dtype=torch.float32).view(1, 1, 32, 1, 1).expand(2, 3, 32, 4, 4).contiguous()
    slow, fast = pack_pathways(batch, alpha=4)
    assert slow.shape == (2, 3, 8, 4, 4)
    assert slow[0, 0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    assert fast is batch
    expected_slow = reference.PackPathway(4)(batch[0])[0]
    assert torch.equal(slow[0], expected_slow)
