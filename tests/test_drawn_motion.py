"""The drawn evaluation clips (slowfast_serve.evaluation.drawn_motion): determinism, coverage of a suite,
decodability of every codec family, and each class's motion measured on the rendered object."""

from __future__ import annotations

import io
import math

import av
import numpy as np
import pytest

from handler.decode import decode_clip
from handler.labels import MOTION_CLASSES
from slowfast_serve.evaluation import drawn_motion as dm

SEED = 11


def moments(mask: np.ndarray) -> tuple[float, float, float]:
    """(area, centroid x, centroid y) of a coverage mask (H, W) in [0, 1]."""
    ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    area = float(mask.sum())
    return area, float((mask * xs).sum() / area), float((mask * ys).sum() / area)


def orientation(mask: np.ndarray, k: int) -> complex:
    """The k-th angular moment about the centroid, sum(mask * r^k * exp(i k phi)), phi measured on screen (y down):
    its phase grows by k * d when the object turns clockwise by d."""
    _, cx, cy = moments(mask)
    ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    z = (xs - cx) + 1j * (ys - cy)
    return complex((mask * z**k).sum())


def turned(masks: np.ndarray) -> float:
    """The object's total rotation in degrees (> 0 clockwise on screen), tracked frame by frame."""
    first = masks[0]
    _, cx, cy = moments(first)
    ys, xs = np.mgrid[0 : first.shape[0], 0 : first.shape[1]]
    r = np.hypot(xs - cx, ys - cy)
    strengths = {k: abs(orientation(first, k)) / float((first * r**k).sum()) for k in (1, 2, 3, 4)}
    strengths[1] = 0.0  # about the centroid the first moment vanishes
    k = max(strengths, key=strengths.get)
    phases = np.unwrap([math.atan2(z.imag, z.real) for z in (orientation(m, k) for m in masks)])
    return math.degrees((phases[-1] - phases[0]) / k)


def test_deterministic() -> None:
    for motion, index in ((MOTION_CLASSES[0], 3), (MOTION_CLASSES[5], 1)):
        frames_a, clip_a = dm.render_clip(motion, SEED, index)
        frames_b, clip_b = dm.render_clip(motion, SEED, index)
        assert clip_a == clip_b
        assert frames_a.dtype == np.uint8
        assert frames_a.shape == (clip_a.num_frames, clip_a.height, clip_a.width, 3)
        np.testing.assert_array_equal(frames_a, frames_b)
    data_a, clip_a = dm.make_clip(MOTION_CLASSES[2], SEED, 4)
    data_b, clip_b = dm.make_clip(MOTION_CLASSES[2], SEED, 4)
    assert clip_a == clip_b == dm.describe(MOTION_CLASSES[2], SEED, 4)
    assert data_a == data_b
    assert dm.render_clip(MOTION_CLASSES[2], SEED + 1, 4)[1] != clip_a


def test_suite_coverage() -> None:
    pairs = dm.suite(SEED, 10)
    assert len(pairs) == 80
    assert len(set(pairs)) == 80
    clips = [dm.describe(motion, SEED, index) for motion, index in pairs]
    for motion in MOTION_CLASSES:
        mine = [c for c in clips if c.motion == motion]
        assert len(mine) == 10
        assert {c.codec for c in mine} == set(dm.CODEC_FAMILIES)
        assert {c.size for c in mine} == set(dm.SIZES)
        assert sum(c.background in dm.BUSY_BACKGROUNDS for c in mine) >= 5
    assert len({c.shape for c in clips}) >= 8
    assert len({c.background for c in clips}) >= 8
    for c in clips:
        assert 3.0 <= c.num_frames / c.fps <= 4.0
        assert 96 <= min(c.width, c.height) <= 240
        assert max(c.width, c.height) <= 400
        assert c.width % 2 == 0
        assert c.height % 2 == 0
        assert c.background in dm.BACKGROUNDS
        assert c.shape in dm.SHAPE_FAMILIES
        if c.motion.startswith("moving"):
            assert 0.2 <= c.amount <= 0.7
        elif c.motion.startswith("rotating"):
            assert 30 <= c.amount <= 400
        else:
            assert 1.2 <= c.amount <= 5


@pytest.mark.slow
def test_every_codec_family_decodes() -> None:
    """Decoded by the service's own decoder (Theora's empty packets of unchanged frames are skipped there)."""
    motion = MOTION_CLASSES[3]
    seen = set()
    for index in range(len(dm.CODEC_FAMILIES)):
        data, clip = dm.make_clip(motion, SEED, index)
        seen.add(clip.codec)
        duration = clip.num_frames / clip.fps
        decoded = decode_clip(data, start_sec=0.0, end_sec=duration, num_samples=8)
        assert decoded.info.codec == {"h264": "h264", "mpeg2": "mpeg2video"}.get(clip.codec, clip.codec), clip
        assert clip.num_frames - 2 <= decoded.source_frames + (count_empty(data) if clip.codec == "theora" else 0)
        assert decoded.source_frames <= clip.num_frames + 2, clip
        assert tuple(decoded.frames[0].shape) == (clip.height, clip.width, 3), clip
    assert seen == set(dm.CODEC_FAMILIES)


def count_empty(data: bytes) -> int:
    """Empty packets of the first video stream (a Theora encoder's unchanged frames)."""
    with av.open(io.BytesIO(data)) as container:
        return sum(p.size == 0 and p.pts is not None for p in container.demux(video=0))


@pytest.mark.slow
@pytest.mark.parametrize("motion", MOTION_CLASSES)
def test_motion_measured_on_the_object(motion: str) -> None:
    for index in (0, 1, 5):
        clip = dm.describe(motion, SEED, index)
        side = min(clip.width, clip.height)
        pad = side
        masks = dm.object_masks(motion, SEED, index, pad=pad)
        assert masks.shape == (clip.num_frames, clip.height + 2 * pad, clip.width + 2 * pad)
        # stays in the central square (large objects may poke out a little)
        x0, y0 = pad + (clip.width - side) // 2, pad + (clip.height - side) // 2
        inside = masks[:, y0 : y0 + side, x0 : x0 + side].sum(axis=(1, 2)) / masks.sum(axis=(1, 2))
        assert inside.min() >= (0.75 if clip.size == "large" else 0.995), (clip, inside.min())

        picked = np.unique(np.linspace(0, len(masks) - 1, 13).round().astype(int))
        stats = np.array([moments(masks[i]) for i in picked])
        area, cx, cy = stats.T
        if motion.startswith("moving"):
            axis = {"moving right": (1, 0), "moving left": (-1, 0), "moving down": (0, 1), "moving up": (0, -1)}[motion]
            along = cx * axis[0] + cy * axis[1]
            assert np.all(np.diff(along) > 0), clip
            dx, dy = cx[-1] - cx[0], cy[-1] - cy[0]
            heading = math.degrees(math.atan2(dy, dx) - math.atan2(axis[1], axis[0]))
            assert abs((heading + 180) % 360 - 180) <= 8.5, clip
            assert math.hypot(dx, dy) / side == pytest.approx(clip.amount, rel=0.05)
            assert np.ptp(area) / area.mean() < 0.02
        elif motion.startswith("rotating"):
            total = turned(masks)
            sign = 1 if motion == "rotating clockwise" else -1
            assert total * sign == pytest.approx(clip.amount, rel=0.1), clip
            assert np.ptp(cx) < 1.0
            assert np.ptp(cy) < 1.0
        else:
            growth = np.diff(area) if motion == "growing" else -np.diff(area)
            assert np.all(growth > 0), clip
            ratio = max(area[-1] / area[0], area[0] / area[-1])
            assert math.sqrt(ratio) == pytest.approx(clip.amount, rel=0.1), clip
