"""Decoding limits: frame size, frames decoded, time, window memory; long videos decode only near the window."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from handler.container import probe
from handler.decode import decode_clip
from handler.decode_limits import DecodeLimits
from handler.errors import RequestError
from handler.settings import decode_limits
from tests.videos import LOSSLESS, encode, frame_index, indexed_frames, moving_frames

CLIP_SEC = 64 / 30


def _clip(data: bytes, start_sec: float = 0.0, **limits) -> object:
    return decode_clip(
        data, start_sec=start_sec, end_sec=start_sec + CLIP_SEC, num_samples=32, limits=DecodeLimits(**limits)
    )


def test_a_declared_giant_frame_is_refused_before_decoding() -> None:
    data = encode(np.zeros((2, 4320, 7680, 3), np.uint8), fps=30, options={"preset": "ultrafast"})  # 8K, a few kB
    assert len(data) < 200_000
    with pytest.raises(RequestError) as error:
        _clip(data)
    assert (error.value.status, error.value.type) == (413, "FrameTooLarge")
    assert "7680x4320" in error.value.message
    assert "scale" in error.value.message


def test_frame_size_limit_applies_to_every_frame() -> None:
    data = encode(moving_frames(10, 48, 64), fps=30)
    with pytest.raises(RequestError, match="64x48"):
        _clip(data, max_frame_pixels=64 * 48 - 1)
    assert _clip(data, max_frame_pixels=64 * 48).source_frames == 10


def test_decoded_frame_budget_counts_frames_before_the_window() -> None:
    # One key frame only: reaching 9 s means decoding everything before it.
    data = encode(moving_frames(330, 48, 64), fps=30, options={"g": "1000", "sc_threshold": "0"})
    assert _clip(data, start_sec=1.0, max_decoded_frames=200).source_frames == 64
    with pytest.raises(RequestError) as error:
        _clip(data, start_sec=9.0, max_decoded_frames=200)
    assert (error.value.status, error.value.type) == (413, "DecodeLimitExceeded")
    assert "200 decoded frames" in error.value.message


def test_decode_time_limit() -> None:
    data = encode(moving_frames(60, 48, 64), fps=30)
    with pytest.raises(RequestError) as error:
        _clip(data, max_decode_seconds=1e-9)
    assert (error.value.status, error.value.type) == (413, "DecodeLimitExceeded")
    assert "longer than" in error.value.message


@pytest.mark.parametrize("start_sec", [0.0, 1.5])
def test_a_window_too_large_to_hold_is_decoded_twice_with_the_same_frames(start_sec: float) -> None:
    frames = indexed_frames(300, 120, 160)  # 60 fps: 128 frames of 28.8 kB in a window, 3.7 MB
    data = encode(frames, fps=60, **{**LOSSLESS, "options": {"crf": "0", "g": "60"}})
    held = _clip(data, start_sec)
    counted = _clip(data, start_sec, max_window_mb=1)
    assert torch.equal(held.stacked(), counted.stacked())
    assert [frame_index(f.numpy()) for f in counted.frames][:3] == [int(start_sec * 60) + i for i in (0, 4, 8)]
    assert held.source_frames == counted.source_frames == 128
    assert counted.decoded_frames > 2 * 128 > held.decoded_frames


def test_limits_are_validated() -> None:
    assert decode_limits({"max_window_mb": 256}) == DecodeLimits(max_window_mb=256)
    with pytest.raises(ValueError, match="unknown decode limit"):
        decode_limits({"max_pixels": 1})
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(max_decoded_frames=0)


def test_a_late_window_in_a_long_video_costs_about_what_a_short_video_costs() -> None:
    # 10 minutes at 10 fps with a key frame every 2 s, against a 10 s video of the same kind.
    long_video = encode(moving_frames(6000, 32, 48), fps=10, options={"g": "20", "preset": "ultrafast"})
    short_video = encode(moving_frames(100, 32, 48), fps=10, options={"g": "20", "preset": "ultrafast"})

    def best_of_three(data: bytes, start_sec: float) -> tuple[float, int]:
        times, clip = [], None
        for _ in range(3):
            started = time.perf_counter()
            clip = _clip(data, start_sec)
            times.append(time.perf_counter() - started)
        return min(times), clip.decoded_frames

    long_time, long_frames = best_of_three(long_video, 590.0)
    short_time, short_frames = best_of_three(short_video, 0.0)
    assert long_frames <= short_frames + 20  # at most one key-frame interval more
    assert long_time < 5 * short_time, f"late window in 10 min: {long_time:.3f} s, short video: {short_time:.3f} s"


def test_a_request_over_the_memory_budget_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    import handler.pipeline as pipeline
    from handler.labels import label_set
    from handler.models import get_spec
    from handler.pipeline import InferenceOptions, VideoClassifier, request_memory_mb
    from handler.request import VideoRequest
    from tests import REPO

    spec = get_spec("motion_demo")  # 16 frames over 3.2 s: a 1080p window at 30 fps is 97 frames, ~300 MB of YUV
    options = InferenceOptions(warmup=False, decode_workers=1)
    classifier = VideoClassifier.load(
        spec, REPO / spec.bundled_checkpoint, label_set(spec.labels), torch.device("cpu"),
        DecodeLimits(max_request_mb=200), options,
    )  # fmt: skip
    full_hd = encode(np.zeros((3, 1080, 1920, 3), np.uint8), fps=30, options={"preset": "ultrafast"})
    hd = encode(np.zeros((3, 720, 1280, 3), np.uint8), fps=30, options={"preset": "ultrafast"})
    info = probe(full_hd)
    assert request_memory_mb(info, spec.clip, (1, 1), DecodeLimits()) > 200
    monkeypatch.setattr(pipeline, "iter_sampled_clips", lambda *a, **k: pytest.fail("decoded an over-budget request"))
    with pytest.raises(RequestError) as error:
        classifier.prepare(VideoRequest(video=full_hd, top_k=1, start_sec=0.0, views=(2, 3)))
    assert (error.value.status, error.value.type) == (413, "RequestTooLarge")
    assert "1920x1080 frames at 30 fps, views 2x3" in error.value.message
    assert "scale=-2:720" in error.value.message
    assert "views=2x1" in error.value.message
    monkeypatch.undo()
    assert classifier.prepare(VideoRequest(video=hd, top_k=1, start_sec=0.0, views=(2, 3))).clips.shape[0] == 6
