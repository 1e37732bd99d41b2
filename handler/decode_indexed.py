"""Clips by decoded-frame index, as decord numbers frames (MMAction2's and PaddleVideo's samplers): the frame count
a demuxer sees (:func:`count_packets`) and the frames of each view (:func:`decode_indexed_clips`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import torch

from handler.container import open_video, stream_timing, video_info
from handler.decode_limits import Budget, DecodeLimits
from handler.errors import RequestError, bad_request
from handler.frames import DecodedClip, FrameReducer, RgbConverter, decode_frames


def count_packets(data: bytes, limits: DecodeLimits | None = None) -> int:
    """The number of frames the container holds for the first video stream as a demuxer counts them: its
    non-empty packets, read without decoding. This is decord's ``len(VideoReader)``, the frame count by which
    MMAction2's and PaddleVideo's samplers place clips; it can exceed what decodes (an edit list that hides
    leading frames, a truncated file).

    Raises:
        RequestError: 400 as :func:`probe`; 413 past ``max_decoded_frames`` packets (as many as frames).
    """
    limit = (limits or DecodeLimits()).max_decoded_frames * 4  # demuxing costs a fraction of decoding
    count = 0
    with open_video(data) as container:
        for packet in container.demux(container.streams.video[0]):
            count += packet.size > 0
            if count > limit:
                raise RequestError(
                    413,
                    "DecodeLimitExceeded",
                    f"the video has more than {limit} frames; send a shorter excerpt around the moment",
                )
    return count


@dataclass(frozen=True)
class IndexedView:
    """One clip's frames by their position in decoder output order (MMAction2's and PaddleVideo's frame indices).

    Either ``indices`` directly, or, with ``anchor_sec``, ``indices_from(i)`` where ``i`` is the position of the
    first decoded frame whose timestamp is at or after ``anchor_sec`` (the clip's start).
    """

    indices: tuple[int, ...] = ()
    anchor_sec: float | None = None
    indices_from: Callable[[int], Sequence[int]] | None = None


def decode_indexed_clips(
    data: bytes,
    views: Sequence[IndexedView],
    *,
    past_end: Callable[[int, int], int],
    limits: DecodeLimits | None = None,
    threads: int = 0,
    reduce: FrameReducer | None = None,
) -> list[DecodedClip]:
    """The frames of each view by index in decoder output order, as decord (MMAction2's and PaddleVideo's
    decoder) numbers them: the video is decoded from its start, once for all views, up to the last index any view
    needs. A file whose frames come out of the decoder in another order than their timestamps (e.g. H.264 with
    B-frames in AVI) is indexed as it comes out, as decord does. Each needed frame is converted (and reduced) as
    it is decoded, so the views' frames are held only in their reduced form; all of them take the size and
    rotation of the first frame converted.

    Args:
        data: the encoded video.
        views: the clips.
        past_end: ``(index, decoded_count) -> index`` for an index at or past the last decoded frame: a
            replacement (the last frame is always available) or a raised :class:`RequestError`.
        reduce: as :func:`handler.decode.decode_clip`.

    Raises:
        RequestError: as :func:`handler.decode.decode_clip`; ``ClipOutOfRange`` when an ``anchor_sec`` is past the
            last frame.
    """
    budget = Budget(limits or DecodeLimits(), threads)
    timing = stream_timing(data)
    resolved: list[list[int] | None] = [list(v.indices) if v.anchor_sec is None else None for v in views]
    waiting = sorted((timing.pts(v.anchor_sec), k) for k, v in enumerate(views) if v.anchor_sec is not None)
    needed = {i for indices in resolved if indices is not None for i in indices}
    held: dict[int, torch.Tensor] = {}
    pts_of: dict[int, int] = {}
    missed: set[int] = set()  # indices before a late anchor (wrapped around): decoded again below
    last: tuple[int, av.VideoFrame] | None = None
    count, max_pts = 0, -math.inf
    converter: RgbConverter | None = None
    with open_video(data, budget.threads) as container:
        stream = container.streams.video[0]
        info = video_info(container, stream)
        budget.check_size(info.width, info.height)
        for frame in decode_frames(container, stream, budget):
            if frame.pts is None:
                raise bad_request("InvalidVideo", "the video frames carry no timestamps; remux it (e.g. to mp4)")
            index, count = count, count + 1
            max_pts = max(max_pts, frame.pts)
            while waiting and waiting[0][0] <= frame.pts:  # decode order: a later anchor may come first
                k = waiting.pop(0)[1]
                resolved[k] = list(views[k].indices_from(index))
                missed |= {i for i in resolved[k] if i < index and i not in held}
                needed |= set(resolved[k])
            if index in needed:
                converter = converter or RgbConverter(frame, reduce)
                held[index], pts_of[index] = converter(frame), frame.pts
            last = (index, frame)
            if not waiting and index >= max(needed, default=-1):
                break
    if last is None:
        raise bad_request("NoFrames", "the video stream has no decodable frame; check that the file plays")
    if waiting:
        start, end = views[waiting[0][1]].anchor_sec, timing.seconds(max_pts)
        raise bad_request(
            "ClipOutOfRange",
            f"no frame at or after start_sec {start:.3f}s: the video's last frame is at {end:.3f}s; use a start_sec "
            f"below {end:.3f}",
        )
    converter = converter or RgbConverter(last[1], reduce)
    if last[0] not in held:
        held[last[0]] = converter(last[1])
    pts_of.setdefault(last[0], last[1].pts)
    if missed:
        _decode_prefix(data, missed, held, pts_of, budget, converter)
    clips = []
    for indices in resolved:
        # An index at or past `count` means the decoder ran out (the loop only stops early once all are held).
        indices = [i if i < count else past_end(i, count) for i in indices]
        clips.append(
            DecodedClip(
                frames=[held[i] for i in indices],
                start_sec=timing.seconds(pts_of[indices[0]]),
                end_sec=timing.seconds(pts_of[indices[-1]]) + (1 / timing.fps if timing.fps else 0.0),
                source_frames=indices[-1] - indices[0] + 1,
                info=info,
                decoded_frames=budget.frames,
                rotation=converter.rotation,
            )
        )
    return clips


def _decode_prefix(
    data: bytes,
    wanted: set[int],
    held: dict[int, torch.Tensor],
    pts_of: dict[int, int],
    budget: Budget,
    converter: RgbConverter,
) -> None:
    """Decodes the video again from its start up to the largest ``wanted`` index, adding those frames to ``held``."""
    with open_video(data, budget.threads) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(decode_frames(container, stream, budget)):
            if index in wanted:
                held[index], pts_of[index] = converter(frame), frame.pts
            if index >= max(wanted):
                break
