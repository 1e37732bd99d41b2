"""Which frames make each clip: the four samplers of :mod:`handler.recipes`.

A request asks for clips in one of two ways: clips that start at given times (one view at ``start_sec``, or a
timeline's windows), or ``C`` clips spread over the video by the toolbox's own multi-view protocol. Every
sampler answers both with the frames of each clip (:class:`~handler.decode.DecodedClip`, RGB, in clip order):

- ``time_window`` (PyTorchVideo): the frames whose timestamps fall in ``[start, start + clip)``, uniformly
  subsampled; spread clips start at ``start_sec + k * (duration - start_sec - clip) / C``.
- ``frame_interval`` (MMAction2 ``SampleFrames``): frames ``start + k * sampling_rate`` by position in decoder
  output order, modulo the container's frame count; spread clips start at ``round(k * (N - span) / (C - 1))``.
- ``index_linspace`` (PaddleVideo ``DecodeSampler``): ``linspace(start, start + clip - 1, num_frames)`` truncated,
  with ``clip = num_frames * sampling_rate * fps / 30`` frames; spread clips start at ``(N - clip) * k / C``.
- ``pts_linspace`` (PySlowFast ``decoder.decode``): the timestamp-sorted frames from the clip's start pts, then
  ``linspace(0, clip - 1, num_frames)``; spread clip ``k`` starts at pts ``int((N - clip) * k / C * duration / N)``.

The index arithmetic below is each toolbox's own (float64 numpy or float32 torch, truncation or rounding as
there): a different rounding picks another frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from handler.container import StreamTiming, stream_timing, video_duration
from handler.decode import decode_pts_clips, iter_clips
from handler.decode_indexed import IndexedView, count_packets, decode_indexed_clips
from handler.decode_limits import DecodeLimits
from handler.errors import RequestError, bad_request
from handler.frames import DecodedClip, FrameReducer
from handler.models import ClipSpec


def view_starts(duration_sec: float, clip_sec: float, start_sec: float, clips: int) -> list[float]:
    """Starts of ``clips`` temporal views: PyTorchVideo's test protocol (``ConstantClipsPerVideoSampler``),
    ``start + k * max(duration - start - clip, 0) / clips`` for k = 0 .. clips - 1 (the last view stops short of
    the end, as there). One view is the clip at ``start_sec`` itself."""
    span = max(duration_sec - start_sec - clip_sec, 0.0)
    return [start_sec + k * span / clips for k in range(clips)]


def mmaction2_offsets(total_frames: int, clip: ClipSpec, clips: int) -> list[int]:
    """First frame of each of ``clips`` test clips: MMAction2 1.2.0 ``SampleFrames._get_test_clips`` (3-D models,
    no ``target_fps``), whose span is ``(num_frames - 1) * sampling_rate + 1`` frames."""
    span = (clip.num_frames - 1) * clip.sampling_rate + 1
    max_offset = max(total_frames - span, 0)
    if clips == 1:
        return [max_offset // 2]
    return [int(x) for x in np.round(np.arange(clips) * (max_offset / float(clips - 1)))]


def mmaction2_indices(offset: int, clip: ClipSpec, total_frames: int) -> list[int]:
    """The frames of the clip starting at ``offset``: every ``sampling_rate``-th, wrapped modulo the frame count
    (``out_of_bound_opt='loop'``)."""
    return [int(i) for i in np.mod(offset + np.arange(clip.num_frames) * clip.sampling_rate, total_frames)]


def toolbox_clip_frames(clip: ClipSpec, fps: float) -> float:
    """Frames one clip spans in PaddleVideo's and PySlowFast's samplers: ``num_frames * sampling_rate`` at the
    target rate (30 fps), scaled to the video's rate (a float, as there)."""
    return clip.num_frames * clip.sampling_rate * fps / clip.frames_per_second


def paddlevideo_indices(start: float, clip: ClipSpec, fps: float, total_frames: int) -> list[int]:
    """PaddleVideo ``DecodeSampler``: ``linspace(start, start + clip - 1, num_frames)`` in float64, truncated to
    int64 and clipped to ``[0, total_frames]`` (an index equal to the count is handled by the caller)."""
    size = toolbox_clip_frames(clip, fps)
    index = np.linspace(start, start + size - 1, clip.num_frames).astype("int64")
    return [int(i) for i in np.clip(index, 0, total_frames)]


def paddlevideo_start(total_frames: int, clip: ClipSpec, fps: float, k: int, clips: int) -> float:
    """Start index of test clip ``k`` of ``clips`` (``DecodeSampler.get_start_end_idx`` in test mode)."""
    delta = max(total_frames - toolbox_clip_frames(clip, fps), 0)
    return delta * k / clips


def pyslowfast_window(timing: StreamTiming, clip: ClipSpec, k: int, clips: int) -> tuple[int, int]:
    """``(start_pts, end_pts)`` of test clip ``k`` of ``clips``: PySlowFast 1.0 ``pyav_decode`` with a declared
    duration and frame count (its timestamps are the stream's own, not offset by the stream's start)."""
    if timing.fps is None or timing.duration is None or timing.frames <= 0:
        raise ValueError(f"PySlowFast's selective decoding needs a frame rate, duration and frame count: {timing}")
    size = clip.sampling_rate * clip.num_frames / clip.frames_per_second * timing.fps  # this order, as there
    delta = max(timing.frames - size, 0)
    start = delta * k / clips
    per_frame = timing.duration / timing.frames
    return int(start * per_frame), int((start + size - 1) * per_frame)


def pyslowfast_pick(clip: ClipSpec, fps: float, k: int = 0, clips: int = 1) -> Callable[[int], torch.Tensor]:
    """PySlowFast's ``temporal_sampling`` over ``count`` candidate frames: ``torch.linspace(start, end,
    num_frames)`` (float32) clamped to the frames and truncated, with ``start, end`` from ``get_start_end_idx``
    for clip ``k`` of ``clips`` (0 of 1 within a selectively decoded window)."""
    size = clip.num_frames * clip.sampling_rate * fps / clip.frames_per_second  # decoder.decode's order

    def pick(count: int) -> torch.Tensor:
        delta = max(count - size, 0)
        start = delta * k / clips
        index = torch.linspace(start, start + size - 1, clip.num_frames)
        return torch.clamp(index, 0, count - 1).long()

    return pick


def sample_clips(data: bytes, clip: ClipSpec, **options: Any) -> list[DecodedClip]:
    """:func:`iter_sampled_clips`, every clip at once (same arguments)."""
    return list(iter_sampled_clips(data, clip, **options))


def iter_sampled_clips(
    data: bytes,
    clip: ClipSpec,
    *,
    starts: Sequence[float] | None = None,
    spread: int | None = None,
    start_sec: float = 0.0,
    limits: DecodeLimits | None = None,
    threads: int = 0,
    reduce: FrameReducer | None = None,
    origin_pts: int | None = None,
) -> Iterator[DecodedClip]:
    """The frames of every clip a request needs, by ``clip.recipe``'s sampler, one clip at a time: PyTorchVideo's
    and PySlowFast's samplers decode each clip when it is taken (one window's frames held at once); MMAction2's
    and PaddleVideo's decode the video once for all clips (by frame index, as decord), holding every clip's frames
    in their reduced form.

    Args:
        data: the encoded video.
        clip: the model's clip spec and recipe.
        starts: clips starting at these seconds (a single view, or a timeline's windows).
        spread: instead, this many clips spread over the video by the toolbox's test protocol (from ``start_sec``
            for PyTorchVideo's; the toolboxes' protocols cover the whole video).
        reduce: what each clip keeps of every frame (:data:`~handler.decode.FrameReducer`; default: the frame).
        origin_pts: with ``starts``, the pts that second 0 stands for (:func:`~handler.decode.iter_clips`; a part
            cut from a longer video). Only PyTorchVideo's sampler places clips by time alone; the toolboxes'
            place them by the whole video's frame count or duration, which a part does not have (400).

    Yields:
        One :class:`DecodedClip` per clip, ``clip.num_frames`` frames each, in order.

    Raises:
        RequestError: for bad input, a start past the end, or (422) a video the recipe's sampler cannot place
            clips in as its toolbox would.
    """
    if (starts is None) == (spread is None):
        raise ValueError("give either starts or spread")
    sampler = clip.recipe.sampler
    if sampler == "time_window":
        if spread is not None:
            starts = view_starts(video_duration(data), clip.duration_sec, start_sec, spread)
        windows = [(start, start + clip.duration_sec) for start in starts]
        return iter_clips(
            data,
            windows,
            num_samples=clip.num_frames,
            limits=limits,
            threads=threads,
            reduce=reduce,
            origin_pts=origin_pts,
        )
    if origin_pts is not None:
        raise bad_request(
            "InvalidOption",
            f"origin_pts (a part cut from a longer video) needs a recipe that places clips by time alone; the "
            f"{clip.recipe.name} recipe places them by the whole video's frames, as {clip.recipe.title} does: send the "
            "whole video",
        )
    if spread is not None and start_sec > 0:
        raise bad_request(
            "InvalidOption",
            f"the {clip.recipe.name} recipe spreads its {spread} clips over the whole video, as {clip.recipe.title} "
            "tests; start_sec applies to single-clip requests and timelines: send start_sec=0, or views=1xK",
        )
    if sampler == "pts_linspace":
        return _pyslowfast_clips(data, clip, starts, spread, limits, threads, reduce)
    total = count_packets(data, limits)
    if sampler == "frame_interval":
        views, past_end = _mmaction2_views(clip, total, starts, spread), _undecodable_index(total)
    else:
        fps = _fps(stream_timing(data), clip)
        views, past_end = _paddlevideo_views(clip, total, fps, starts, spread), _repeat_last
    clips = decode_indexed_clips(data, views, past_end=past_end, limits=limits, threads=threads, reduce=reduce)
    return iter(clips)


def _mmaction2_views(
    clip: ClipSpec, total: int, starts: Sequence[float] | None, spread: int | None
) -> list[IndexedView]:
    if spread is not None:
        return [
            IndexedView(indices=tuple(mmaction2_indices(o, clip, total)))
            for o in mmaction2_offsets(total, clip, spread)
        ]
    return [IndexedView(anchor_sec=s, indices_from=lambda i: mmaction2_indices(i, clip, total)) for s in starts]


def _paddlevideo_views(
    clip: ClipSpec, total: int, fps: float, starts: Sequence[float] | None, spread: int | None
) -> list[IndexedView]:
    if spread is not None:
        starts_at = [paddlevideo_start(total, clip, fps, k, spread) for k in range(spread)]
        return [IndexedView(indices=tuple(paddlevideo_indices(start, clip, fps, total))) for start in starts_at]
    return [IndexedView(anchor_sec=s, indices_from=lambda i: paddlevideo_indices(i, clip, fps, total)) for s in starts]


def _repeat_last(_index: int, count: int) -> int:
    """PaddleVideo reads past the last frame of a video shorter than its clip (decord raises; its test loader then
    substitutes another video): the service repeats the last frame instead."""
    return count - 1


def _pyslowfast_clips(
    data: bytes,
    clip: ClipSpec,
    starts: Sequence[float] | None,
    spread: int | None,
    limits: DecodeLimits | None,
    threads: int,
    reduce: FrameReducer | None,
) -> Iterator[DecodedClip]:
    timing = stream_timing(data)
    fps = _fps(timing, clip)
    if spread is None:
        size = toolbox_clip_frames(clip, fps)
        per_frame = (
            timing.duration / timing.frames if timing.duration and timing.frames else 1 / (fps * timing.time_base)
        )
        windows = [(timing.pts(s), timing.pts(s) + int((size - 1) * per_frame)) for s in starts]
        picks = [pyslowfast_pick(clip, fps)] * len(windows)
    elif timing.duration is None:  # PySlowFast decodes the whole video and places clips among its frames
        windows = [(-math.inf, math.inf)] * spread
        picks = [pyslowfast_pick(clip, fps, k, spread) for k in range(spread)]
    elif timing.frames <= 0:
        raise RequestError(
            422,
            "UnsupportedByRecipe",
            "the container declares the stream's duration but not its frame count; PySlowFast's decoder places "
            "its test clips by that count and fails on this file (division by zero). Remux it to mp4 (e.g. ffmpeg "
            "-i in.ts -c copy out.mp4), or send views=1xK with start_sec",
        )
    else:
        windows = [pyslowfast_window(timing, clip, k, spread) for k in range(spread)]
        picks = [pyslowfast_pick(clip, fps)] * spread
    return decode_pts_clips(data, windows, picks, limits=limits, threads=threads, reduce=reduce)


def _fps(timing: StreamTiming, clip: ClipSpec) -> float:
    if not timing.fps:
        raise RequestError(
            422,
            "UnsupportedByRecipe",
            f"the video declares no frame rate; the {clip.recipe.name} recipe sizes its clips by it (a clip is "
            f"{clip.num_frames * clip.sampling_rate} frames at 30 fps). Re-encode the video with a constant frame rate",
        )
    return timing.fps


def _undecodable_index(total: int) -> Callable[[int, int], int]:
    """MMAction2 past the decodable frames: refused (decord's frame there is undefined)."""

    def past_end(index: int, count: int) -> int:
        raise RequestError(
            422,
            "FrameCountMismatch",
            f"the container lists {total} frames but {count} decode; MMAction2 places clips by the listed count and "
            f"would read frame {index}, which does not decode (its decoder returns no defined frame there). Re-encode "
            "the video (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4) or send a start_sec earlier in the video",
        )

    return past_end
