"""In-memory video decoding with PyAV: upload bytes -> the RGB frames of one clip.

Clip selection is time-based and reproduces PyTorchVideo's ``EncodedVideo.get_clip(start_sec, end_sec)``
(``decode_audio=False``) frame for frame: with the first video stream's ``time_base`` and ``start_time``
(``None`` counts as 0), a frame is in the clip when

    ceil(start_sec / time_base) + start_time  <=  pts  <  ceil(end_sec / time_base) + start_time

computed with the same float arithmetic, frames de-duplicated by pts and sorted. Unlike ``get_clip``:

- only the video stream is demuxed and decoded, and only up to the first frame past the clip's end;
- a seek lands on the key frame at or before the start; if the container seeks past it (the first decoded
  frame is already later than the start, or nothing decodes after the seek), the clip is decoded again from
  the beginning, so the frames are the same as a full decode would give;
- only the frames that uniform temporal subsampling keeps are converted to RGB;
- every failure is a :class:`~handler.errors.RequestError` with a reason, never an empty result;
- the work is bounded (:class:`DecodeLimits`): frame size, frames decoded, wall-clock time, and the memory of
  the window's frames; a window too big to hold is counted in a first pass and decoded again keeping only the
  frames subsampling picks, so the result is the same.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from handler.container import VideoInfo, ffmpeg_reason, open_video, stream_seconds, stream_timing, video_info
from handler.errors import RequestError, bad_request
from handler.models import ClipSpec
from handler.transforms import uniform_temporal_indices

#: What a clip keeps of each decoded frame: ``(H, W, 3)`` uint8 RGB, upright -> a smaller uint8 tensor (e.g. only
#: the pixels a model's crops read). Applied as each frame is converted, so a clip never holds its full frames.
FrameReducer = Callable[[torch.Tensor], torch.Tensor]
#: Which frames of a window a clip keeps: the window's frame count -> int64 indices into its frames (in time order).
FrameSelector = Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class DecodeLimits:
    """What one request may cost the worker; exceeding a limit is a 413 that names it and says what to send.

    Attributes:
        max_frame_pixels: largest decoded frame, width x height (a small file can declare an 8K frame).
        max_decoded_frames: frames decoded per request, counting those before the window (from the key frame a
            seek lands on, or from the start when the file cannot seek) and a second pass over a large window.
        max_decode_seconds: wall-clock seconds of decoding per request.
        max_window_mb: memory for the window's decoded frames held at once (YUV, about 1.5 bytes per pixel);
            beyond it the window is decoded twice instead of held (same frames, more time).
        max_timeline_windows: windows of one ``mode=timeline`` request.
        max_request_mb: memory one request may hold while it is prepared, as estimated from the stream header
            before decoding (:func:`handler.pipeline.request_memory_mb`); a request over it gets a 413 that says
            what to send instead.
    """

    max_frame_pixels: int = 4096 * 2304
    max_decoded_frames: int = 3000
    max_decode_seconds: float = 20.0
    max_window_mb: int = 512
    max_timeline_windows: int = 120
    max_request_mb: int = 1024

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"decode limit {name} must be a positive number, got {value!r}")


class _Budget:
    """Counts one request's decoding work against its :class:`DecodeLimits` (and carries its thread count to
    every pass over the stream)."""

    def __init__(self, limits: DecodeLimits, threads: int = 0) -> None:
        self.limits = limits
        self.threads = threads
        self.frames = 0
        self.deadline = time.monotonic() + limits.max_decode_seconds

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside is not decoding time (a clip handed out and being used): the deadline moves on."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.deadline += time.monotonic() - started

    def check_size(self, width: int, height: int) -> None:
        """Raises ``FrameTooLarge`` for frames over ``max_frame_pixels``."""
        if width * height > self.limits.max_frame_pixels:
            raise RequestError(
                413,
                "FrameTooLarge",
                f"the video's frames are {width}x{height} ({width * height / 1e6:.1f} MP); this service decodes "
                f"frames of up to {self.limits.max_frame_pixels / 1e6:.1f} MP (e.g. 4096x2304); scale the video "
                "down (e.g. ffmpeg -i in.mp4 -vf scale=-2:720 out.mp4)",
            )

    def spend(self, frame: av.VideoFrame) -> None:
        """Counts one decoded frame; raises a 413 once a limit is exceeded."""
        self.frames += 1
        limits = self.limits
        self.check_size(frame.width, frame.height)
        if self.frames > limits.max_decoded_frames:
            raise RequestError(
                413,
                "DecodeLimitExceeded",
                f"the clip needs more than {limits.max_decoded_frames} decoded frames (frames before start_sec count "
                "when the file has few key frames or no seek index); send a shorter excerpt around the moment, or "
                "re-encode with a key frame every few seconds",
                ("max_decoded_frames", limits.max_decoded_frames),
            )
        if time.monotonic() > self.deadline:
            raise RequestError(
                413,
                "DecodeLimitExceeded",
                f"decoding took longer than {limits.max_decode_seconds:g} s; send a smaller or shorter video "
                "(e.g. scaled to 720p) or an excerpt around the moment",
                ("max_decode_seconds", limits.max_decode_seconds),
            )


@dataclass(frozen=True)
class DecodedClip:
    """The sampled frames of one clip.

    Attributes:
        frames: ``num_samples`` frames (or those a :data:`FrameSelector` picked), each ``(H, W, 3)`` uint8 RGB in
            [0, 255], all the same size, in time order, upright (display rotation applied); or, when the decoder
            was given a :data:`FrameReducer`, what it made of each such frame (uint8, one shape). A frame that
            repeats (the window held fewer frames than ``num_samples``) is the same tensor object each time. The
            tensors share memory with the decoder's output: nothing is copied between the RGB conversion and
            :func:`handler.transforms.gather_frames`.
        start_sec, end_sec: the requested window, ``[start_sec, end_sec)``, seconds from the stream start.
        source_frames: how many decoded frames fell inside the window.
        info: stream metadata.
        decoded_frames: frames decoded to get there (the work done; at least ``source_frames``).
        rotation: degrees counterclockwise the frames were turned to show them upright (display metadata).
    """

    frames: list[torch.Tensor]
    start_sec: float
    end_sec: float
    source_frames: int
    info: VideoInfo
    decoded_frames: int = 0
    rotation: int = 0

    def __post_init__(self) -> None:
        shapes = {tuple(frame.shape) for frame in self.frames}
        if len(shapes) != 1 or len(next(iter(shapes))) < 3 or self.frames[0].dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 frames of one shape, got shapes {sorted(shapes)}")

    def stacked(self) -> torch.Tensor:
        """The frames as one ``(T, H, W, 3)`` uint8 tensor (a copy)."""
        return torch.stack(self.frames)

    def __repr__(self) -> str:
        return (
            f"DecodedClip(frames={len(self.frames)} x {tuple(self.frames[0].shape)}, "
            f"window=[{self.start_sec}, {self.end_sec}), source_frames={self.source_frames}, info={self.info})"
        )


def decode_clip(
    data: bytes,
    *,
    start_sec: float,
    end_sec: float,
    num_samples: int,
    limits: DecodeLimits | None = None,
    threads: int = 0,
    reduce: FrameReducer | None = None,
    select: FrameSelector | None = None,
) -> DecodedClip:
    """Decodes the frames of ``[start_sec, end_sec)`` and keeps ``num_samples`` of them, uniformly spread.

    Args:
        data: the encoded video file, any container and codec FFmpeg can read.
        start_sec: clip start in seconds from the start of the video stream, >= 0.
        end_sec: clip end (exclusive), > ``start_sec``.
        num_samples: frames to return (the model's ``num_frames``).
        limits: bounds on the work (default: :class:`DecodeLimits`'s defaults).
        threads: decoder threads (FFmpeg frame threading where the codec has it, else slice threading); 0 lets
            FFmpeg use every core, 1 decodes on the calling thread only. Several clips decoded at once should
            share the cores (see :class:`handler.pipeline.VideoClassifier`).
        reduce: applied to each kept frame as it is converted (default: the RGB frames themselves).
        select: which of the window's frames to keep, given how many it holds (default: ``num_samples`` of them
            uniformly spread, :func:`~handler.transforms.uniform_temporal_indices`); the frames come back in the
            order of its indices.

    Raises:
        RequestError: 400 when the bytes are not a readable video, hold no video stream, use a codec this build
            cannot decode, fail to decode, or have no frame inside the window; 413 when a limit is exceeded.
    """
    (clip,) = decode_clips(
        data,
        [(start_sec, end_sec)],
        num_samples=num_samples,
        limits=limits,
        threads=threads,
        reduce=reduce,
        select=select,
    )
    return clip


def decode_clips(data: bytes, windows: Sequence[tuple[float, float]], **options: Any) -> list[DecodedClip]:
    """:func:`iter_clips`, every clip at once (same arguments)."""
    return list(iter_clips(data, windows, **options))


def iter_clips(
    data: bytes,
    windows: Sequence[tuple[float, float]],
    *,
    num_samples: int,
    limits: DecodeLimits | None = None,
    threads: int = 0,
    reduce: FrameReducer | None = None,
    select: FrameSelector | None = None,
    origin_pts: int | None = None,
) -> Iterator[DecodedClip]:
    """:func:`decode_clip` of several ``(start_sec, end_sec)`` windows of one video (in order of their starts for
    the best speed), one clip at a time: a window is decoded only when the previous clip has been taken, so a
    request of many windows holds one window's frames at once, and windows that overlap or touch are decoded once
    (:class:`_Cursor`). The limits count the work of all of them together (one request; the time a clip spends
    with the caller does not count).

    ``origin_pts``: the pts that second 0 stands for, instead of the stream's ``start_time``. A part cut from a
    longer video at a key frame (timestamps kept) passes the whole video's ``start_time``, so that its windows,
    in the whole video's seconds, hold exactly the frames they hold there."""
    budget = _Budget(limits or DecodeLimits(), threads)
    cursor = _Cursor(data, budget)
    try:
        for start, end in windows:
            window = _window_pts(cursor.stream, start, end, origin_pts)
            scan, seek = cursor.scan(window)
            if not scan.pts:
                raise _empty_window_error(scan, start, end)
            keep = select(len(scan.pts)) if select else uniform_temporal_indices(len(scan.pts), num_samples)
            clip = _clip_from_scan(
                data, scan, window, keep, budget, cursor.info, seek=seek, start_sec=start, end_sec=end, reduce=reduce
            )
            with budget.paused():
                yield clip
    finally:
        cursor.close()


def _scan_from(
    data: bytes, budget: _Budget, window_of: Callable[[av.video.stream.VideoStream], _Window]
) -> tuple[VideoInfo, _Window, _Scan, bool]:
    """Opens the video, computes the window from its stream and scans it (seeking to it when it does not start
    at the stream start, and decoding from the beginning when the seek lands too late). Returns the stream's
    info, the window, the scan and whether the scan sought."""
    with open_video(data, budget.threads) as container:
        stream = container.streams.video[0]
        info = video_info(container, stream)
        budget.check_size(info.width, info.height)  # before decoding: the header already says
        window = window_of(stream)
        seek = window.start_pts > (stream.start_time or 0)
        scan = _scan_window(container, stream, window, seek=seek, budget=budget)
    if scan.overshot:  # the seek landed after the window start: decode from the beginning instead
        seek = False
        scan = _rescan(data, window, seek=seek, budget=budget)
    return info, window, scan, seek


def _clip_from_scan(
    data: bytes,
    scan: _Scan,
    window: _Window,
    keep: torch.Tensor,
    budget: _Budget,
    info: VideoInfo,
    *,
    seek: bool,
    start_sec: float,
    end_sec: float,
    reduce: FrameReducer | None = None,
) -> DecodedClip:
    """The frames ``keep`` (indices into ``scan.pts``) of a scanned window, converted to RGB (the window is decoded
    again, keeping only those frames, when it was too large to hold)."""
    if scan.frames is None:
        scan = _rescan(data, window, seek=seek, budget=budget, wanted={scan.pts[i] for i in keep.tolist()})
    frames, rotation = _to_rgb([scan.frames.get(pts) for pts in scan.pts], keep, reduce)
    return DecodedClip(
        frames=frames,
        start_sec=start_sec,
        end_sec=end_sec,
        source_frames=len(scan.pts),
        info=info,
        decoded_frames=budget.frames,
        rotation=rotation,
    )


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


def decode_pts_clips(
    data: bytes,
    windows: Sequence[tuple[float, float]],
    picks: Sequence[Callable[[int], torch.Tensor]],
    *,
    limits: DecodeLimits | None = None,
    threads: int = 0,
    reduce: FrameReducer | None = None,
    select: FrameSelector | None = None,
) -> Iterator[DecodedClip]:
    """Clips the way PySlowFast's PyAV decoder selects them (``slowfast/datasets/decoder.py``), one at a time.

    Args:
        data: the encoded video.
        windows: per clip, ``(start_pts, end_pts)`` in the stream's own timestamps (not offset by its start time,
            as PySlowFast computes them); the clip's candidate frames are those with ``start_pts <= pts <=
            end_pts`` plus the first frame decoded after ``end_pts``, de-duplicated by pts (the last decoded
            wins) and sorted. ``(-inf, inf)`` is the whole video. Equal consecutive windows are decoded once.
        picks: per clip, the candidates' count -> int64 indices of the frames to keep, in order.
        reduce: as :func:`decode_clip`.

    Raises:
        RequestError: as :func:`decode_clip`.
    """
    budget = _Budget(limits or DecodeLimits(), threads)
    timing = stream_timing(data)
    scanned: tuple[tuple[float, float], tuple[VideoInfo, _Window, _Scan, bool]] | None = None
    for (start_pts, end_pts), pick in zip(windows, picks, strict=True):
        if scanned is None or scanned[0] != (start_pts, end_pts):  # only the last window's frames are held
            window = _Window(start_pts=start_pts, end_pts=end_pts + 1, take_next=True)  # pts are integers
            scanned = ((start_pts, end_pts), _scan_from(data, budget, lambda _stream, window=window: window))
        info, window, scan, seek = scanned[1]
        if not scan.pts:
            raise _empty_window_error(scan, timing.seconds(max(start_pts, timing.start_time)), timing.seconds(end_pts))
        keep = pick(len(scan.pts))
        first, last = scan.pts[int(keep[0])], scan.pts[int(keep[-1])]
        clip = _clip_from_scan(
            data,
            scan,
            window,
            keep,
            budget,
            info,
            seek=seek,
            start_sec=timing.seconds(first),
            end_sec=timing.seconds(last) + (1 / timing.fps if timing.fps else 0.0),
            reduce=reduce,
        )
        with budget.paused():
            yield clip


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
        reduce: as :func:`decode_clip`.

    Raises:
        RequestError: as :func:`decode_clip`; ``ClipOutOfRange`` when an ``anchor_sec`` is past the last frame.
    """
    budget = _Budget(limits or DecodeLimits(), threads)
    timing = stream_timing(data)
    resolved: list[list[int] | None] = [list(v.indices) if v.anchor_sec is None else None for v in views]
    waiting = sorted((timing.pts(v.anchor_sec), k) for k, v in enumerate(views) if v.anchor_sec is not None)
    needed = {i for indices in resolved if indices is not None for i in indices}
    held: dict[int, torch.Tensor] = {}
    pts_of: dict[int, int] = {}
    missed: set[int] = set()  # indices before a late anchor (wrapped around): decoded again below
    last: tuple[int, av.VideoFrame] | None = None
    count, max_pts = 0, -math.inf
    converter: _RgbConverter | None = None
    with open_video(data, budget.threads) as container:
        stream = container.streams.video[0]
        info = video_info(container, stream)
        budget.check_size(info.width, info.height)
        for frame in _decode(container, stream, budget):
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
                converter = converter or _RgbConverter(frame, reduce)
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
    converter = converter or _RgbConverter(last[1], reduce)
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
    budget: _Budget,
    converter: _RgbConverter,
) -> None:
    """Decodes the video again from its start up to the largest ``wanted`` index, adding those frames to ``held``."""
    with open_video(data, budget.threads) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(_decode(container, stream, budget)):
            if index in wanted:
                held[index], pts_of[index] = converter(frame), frame.pts
            if index >= max(wanted):
                break


def decode_model_clip(
    data: bytes, clip: ClipSpec, start_sec: float = 0.0, limits: DecodeLimits | None = None, threads: int = 0
) -> DecodedClip:
    """:func:`decode_clip` of the window a model with spec ``clip`` sees from ``start_sec``:
    ``[start_sec, start_sec + clip.duration_sec)``, ``clip.num_frames`` frames.
    """
    end_sec = start_sec + clip.duration_sec
    return decode_clip(
        data, start_sec=start_sec, end_sec=end_sec, num_samples=clip.num_frames, limits=limits, threads=threads
    )


@dataclass(frozen=True)
class _Window:
    """Frames with ``start_pts <= pts < end_pts``; with ``take_next``, also the first frame decoded at or past
    ``end_pts`` (PySlowFast's decoder keeps that one)."""

    start_pts: float
    end_pts: float
    take_next: bool = False


def _window_pts(
    stream: av.video.stream.VideoStream, start_sec: float, end_sec: float, origin_pts: int | None = None
) -> _Window:
    """The window in stream time-base units, rounded exactly as ``pytorchvideo.data.utils.secs_to_pts``, from
    ``origin_pts`` (default: the stream's ``start_time``)."""
    if stream.time_base is None:
        raise bad_request("InvalidVideo", "the video stream has no time base; remux it (e.g. to mp4) and retry")
    offset = origin_pts if origin_pts is not None else stream.start_time if stream.start_time is not None else 0.0
    # float / Fraction is float division: the same rounding as PyTorchVideo, kept on purpose for parity.
    return _Window(
        start_pts=math.ceil(start_sec / stream.time_base) + offset,
        end_pts=math.ceil(end_sec / stream.time_base) + offset,
    )


@dataclass(frozen=True)
class _Scan:
    """Result of one pass over the stream.

    Attributes:
        pts: the window's frame timestamps, sorted, one per pts.
        frames: the window's frames by pts (only the ``wanted`` ones when a set was given), or ``None`` when the
            window outgrew ``max_window_mb`` and was only counted.
        last_frame_sec: time of the last frame seen, seconds from the stream start (``None``: nothing decoded).
        overshot: a seek landed after the window start (or nothing decoded after it).
    """

    pts: list[int]
    frames: dict[int, av.VideoFrame] | None
    last_frame_sec: float | None
    overshot: bool = False


_OVERSHOT = _Scan(pts=[], frames={}, last_frame_sec=None, overshot=True)


def _rescan(data: bytes, window: _Window, *, seek: bool, budget: _Budget, wanted: set[int] | None = None) -> _Scan:
    with open_video(data, budget.threads) as container:
        return _scan_window(container, container.streams.video[0], window, seek=seek, budget=budget, wanted=wanted)


def _scan_window(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    window: _Window,
    *,
    seek: bool,
    budget: _Budget,
    wanted: set[int] | None = None,
) -> _Scan:
    """Decodes from the start (or, with ``seek``, from the key frame at or before the window start) until the
    first frame past the window end, keeping the window's frames (or only the ``wanted`` pts). A seek that lands
    after the window start, or after which nothing decodes, reports ``overshot``.
    """
    if seek:
        try:
            container.seek(int(window.start_pts), backward=True, any_frame=False, stream=stream)
        except av.FFmpegError:  # e.g. no index to seek with: decoding from the start still works
            return _OVERSHOT
    return _collect(_decode(container, stream, budget), stream, window, budget, sought=seek, wanted=wanted)[0]


def _collect(
    frames: Iterable[av.VideoFrame],
    stream: av.video.stream.VideoStream,
    window: _Window,
    budget: _Budget,
    *,
    sought: bool,
    wanted: set[int] | None = None,
) -> tuple[_Scan, av.VideoFrame | None]:
    """Takes ``frames`` (presentation order) until the first one past the window end, keeping the window's frames
    (or only the ``wanted`` pts); returns the scan and that first frame past the end when it was not kept (it
    may belong to the next window). After a seek (``sought``), a first frame later than the window start, or no
    frame at all, is an overshoot."""
    max_bytes = budget.limits.max_window_mb * 2**20
    seen: set[int] = set()
    held: dict[int, av.VideoFrame] | None = {}
    held_bytes = 0
    last_pts = None
    after = None
    for frame in frames:
        if frame.pts is None:
            raise bad_request(
                "InvalidVideo", "the video frames carry no timestamps; remux the stream into a container (e.g. mp4)"
            )
        if sought and last_pts is None and frame.pts > window.start_pts:
            return _OVERSHOT, None
        last_pts = frame.pts if last_pts is None else max(last_pts, frame.pts)
        past_end = frame.pts >= window.end_pts
        if past_end and not window.take_next:
            after = frame
            break
        if frame.pts >= window.start_pts:
            seen.add(frame.pts)
            if held is not None and (wanted is None or frame.pts in wanted):
                if frame.pts not in held:
                    held_bytes += sum(plane.buffer_size for plane in frame.planes)
                held[frame.pts] = frame  # a repeated pts keeps the last frame, as get_clip does
                if wanted is None and held_bytes > max_bytes:
                    held = None  # count the rest; the caller decodes the window again for the frames it picks
        if past_end:
            break  # the first frame past the end was kept (take_next)
    if sought and last_pts is None:
        return _OVERSHOT, None  # nothing decodable after the seek point
    last_sec = None if last_pts is None else stream_seconds(stream, last_pts)
    return _Scan(pts=sorted(seen), frames=held, last_frame_sec=last_sec), after


class _Cursor:
    """One open container decoded forward across a request's windows (in order of their starts): a window that
    starts inside what the previous one decoded takes the frames already decoded (those of the previous window
    from its start on, and the first frame past its end) and continues decoding from there, instead of seeking
    back to a key frame and decoding them again. Timelines (adjacent windows) and multi-view clips (overlapping
    windows) are decoded once. Any other window is sought to, as :func:`_scan_from` does.
    """

    def __init__(self, data: bytes, budget: _Budget) -> None:
        self.data, self.budget = data, budget
        self.container = open_video(data, budget.threads)
        self.stream = self.container.streams.video[0]
        self.info = video_info(self.container, self.stream)
        budget.check_size(self.info.width, self.info.height)  # before decoding: the header already says
        self.frames: Iterator[av.VideoFrame] | None = None  # continues the last decoding run
        self.since = math.inf  # every frame with pts >= since that the run decoded is in `recent` (or still to come)
        self.recent: list[av.VideoFrame] = []

    def close(self) -> None:
        self.container.close()

    def scan(self, window: _Window) -> tuple[_Scan, bool]:
        """The window's :class:`_Scan`, and whether it was (or, decoded again, would be) sought to."""
        seek = window.start_pts > (self.stream.start_time or 0)
        reached = max((frame.pts for frame in self.recent), default=-math.inf)
        if self.frames is not None and self.since <= window.start_pts <= reached:
            carried = [frame for frame in self.recent if frame.pts >= window.start_pts]
            scan, after = _collect(
                itertools.chain(carried, self.frames), self.stream, window, self.budget, sought=False
            )
        else:
            if self.frames is not None or seek:  # a fresh run: from the key frame before the window, or the start
                self._restart(window, seek)
            self.frames = _decode(self.container, self.stream, self.budget)
            scan, after = _collect(self.frames, self.stream, window, self.budget, sought=seek)
            if scan.overshot:  # the seek landed after the window start: decode from the beginning instead
                self.frames, seek = None, False
                return _rescan(self.data, window, seek=False, budget=self.budget), seek
        self.since = window.start_pts
        if scan.frames is None:  # too large to hold: counted only, nothing to carry
            self.frames, self.recent = None, []
        else:
            self.recent = [scan.frames[pts] for pts in scan.pts] + ([after] if after is not None else [])
        return scan, seek

    def _restart(self, window: _Window, seek: bool) -> None:
        if self.frames is not None:
            self.frames.close()
        self.recent = []
        if seek:
            with contextlib.suppress(av.FFmpegError):  # no index: the decode from here overshoots or fails alike
                self.container.seek(int(window.start_pts), backward=True, any_frame=False, stream=self.stream)
        else:
            self.container.close()
            self.container = open_video(self.data, self.budget.threads)
            self.stream = self.container.streams.video[0]


def _decode(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, budget: _Budget
) -> Iterator[av.VideoFrame]:
    """Yields the video stream's frames in presentation order, each counted against ``budget``.

    A decoder error, or a packet the demuxer marks corrupt (e.g. cut short by the end of a truncated file),
    is a 400 that says after which second: with frame threading, FFmpeg may otherwise drop such a frame
    silently and the clip would be classified on what happened to decode.
    """
    last_good: float | None = None
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise _undecodable(last_good, "a packet is corrupt or cut short")
            # An empty packet inside the stream is a frame the encoder left unchanged (libtheora writes them for
            # still scenes); handed to the decoder it would mean "end of stream" and fail every packet after it.
            # The demuxer's own empty packet at the end is replaced by the explicit flush below.
            if packet.size == 0:
                continue
            for frame in packet.decode():
                budget.spend(frame)
                if frame.pts is not None:
                    last_good = stream_seconds(stream, frame.pts)
                yield frame
        for frame in stream.codec_context.decode(None):  # the frames the decoder still holds (reordering, threads)
            budget.spend(frame)
            yield frame
    except av.FFmpegError as e:  # av.EOFError too: frame threads report a failed packet as "End of file"
        raise _undecodable(last_good, ffmpeg_reason(e)) from e


def _undecodable(last_good: float | None, reason: str) -> RequestError:
    where = "before its first frame" if last_good is None else f"after {last_good:.3f}s"
    return bad_request(
        "InvalidVideo",
        f"the video stream could not be decoded {where} ({reason}); the file may be truncated or corrupt: "
        "re-export or re-upload it complete",
    )


class _RgbConverter:
    """Converts frames to ``(H, W, 3)`` uint8 RGB tensors, upright, all at the size and rotation of a reference
    frame (then applies ``reduce``, if given).

    A stream whose resolution changes is scaled to the reference frame's size. Display rotation (phone videos:
    the display matrix) is applied as players do, to the nearest quarter turn; a mirroring display matrix is not.
    One reformatter serves every frame: it keeps its swscale context between frames, where
    ``frame.to_ndarray()`` builds a new one per frame (measured: 8 ms vs 0.9 ms per 720p frame, identical pixels).
    """

    def __init__(self, reference: av.VideoFrame, reduce: FrameReducer | None = None) -> None:
        self.width, self.height = reference.width, reference.height
        # frame.rotation is the display matrix's counterclockwise angle; turning the pixels by it shows them upright.
        self.quarter_turns = round(reference.rotation / 90) % 4
        self.reduce = reduce
        self.reformatter = VideoReformatter()

    @property
    def rotation(self) -> int:
        """Degrees counterclockwise the frames are turned (0, 90, 180 or 270)."""
        return 90 * self.quarter_turns

    def __call__(self, frame: av.VideoFrame) -> torch.Tensor:
        # A view of the converted frame's buffer (rgb24 rows are not padded for these widths; if they are,
        # to_ndarray copies): the array keeps the frame alive.
        rgb = self.reformatter.reformat(frame, format="rgb24", width=self.width, height=self.height).to_ndarray()
        if self.quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, self.quarter_turns))
        tensor = torch.from_numpy(rgb)
        return tensor if self.reduce is None else self.reduce(tensor)


def _to_rgb(
    frames: list[av.VideoFrame | None], keep: torch.Tensor, reduce: FrameReducer | None = None
) -> tuple[list[torch.Tensor], int]:
    """The frames ``frames[keep]`` converted by an :class:`_RgbConverter` whose reference is the first kept frame,
    converting each distinct frame once (a repeated index gives the same tensor object; entries that ``keep`` does
    not pick may be ``None``), and the rotation applied (0, 90, 180 or 270 degrees)."""
    converter = _RgbConverter(frames[int(keep[0])], reduce)
    converted: dict[int, torch.Tensor] = {}
    for i in keep.tolist():
        if i not in converted:
            converted[i] = converter(frames[i])
    return [converted[i] for i in keep.tolist()], converter.rotation


def _empty_window_error(scan: _Scan, start_sec: float, end_sec: float) -> RequestError:
    if scan.last_frame_sec is None:
        return bad_request("NoFrames", "the video stream has no decodable frame; check that the file plays")
    return bad_request(
        "ClipOutOfRange",
        f"no frame in the clip window [{start_sec:.3f}s, {end_sec:.3f}s): the video's last frame is at "
        f"{scan.last_frame_sec:.3f}s; use a start_sec below {scan.last_frame_sec:.3f}",
    )
