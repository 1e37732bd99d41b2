"""In-memory video decoding with PyAV, clips by time: upload bytes -> the RGB frames of each clip.

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

PySlowFast's clips (:func:`decode_pts_clips`) are time windows too, in stream timestamps. The limits live in
:mod:`handler.decode_limits`, the decoding loop and RGB conversion in :mod:`handler.frames`, clips by frame index
(MMAction2, PaddleVideo) in :mod:`handler.decode_indexed`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import av
import torch

from handler.container import VideoInfo, open_video, stream_seconds, stream_timing, video_info
from handler.decode_limits import Budget, DecodeLimits
from handler.errors import RequestError, bad_request
from handler.frames import DecodedClip, FrameReducer, FrameSelector, decode_frames, to_rgb
from handler.models import ClipSpec
from handler.transforms import uniform_temporal_indices


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
    budget = Budget(limits or DecodeLimits(), threads)
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
    data: bytes, budget: Budget, window_of: Callable[[av.video.stream.VideoStream], _Window]
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
    budget: Budget,
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
    frames, rotation = to_rgb([scan.frames.get(pts) for pts in scan.pts], keep, reduce)
    return DecodedClip(
        frames=frames,
        start_sec=start_sec,
        end_sec=end_sec,
        source_frames=len(scan.pts),
        info=info,
        decoded_frames=budget.frames,
        rotation=rotation,
    )


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
    budget = Budget(limits or DecodeLimits(), threads)
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


def _rescan(data: bytes, window: _Window, *, seek: bool, budget: Budget, wanted: set[int] | None = None) -> _Scan:
    with open_video(data, budget.threads) as container:
        return _scan_window(container, container.streams.video[0], window, seek=seek, budget=budget, wanted=wanted)


def _scan_window(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    window: _Window,
    *,
    seek: bool,
    budget: Budget,
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
    return _collect(decode_frames(container, stream, budget), stream, window, budget, sought=seek, wanted=wanted)[0]


def _collect(
    frames: Iterable[av.VideoFrame],
    stream: av.video.stream.VideoStream,
    window: _Window,
    budget: Budget,
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

    def __init__(self, data: bytes, budget: Budget) -> None:
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
            self.frames = decode_frames(self.container, self.stream, self.budget)
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


def _empty_window_error(scan: _Scan, start_sec: float, end_sec: float) -> RequestError:
    if scan.last_frame_sec is None:
        return bad_request("NoFrames", "the video stream has no decodable frame; check that the file plays")
    return bad_request(
        "ClipOutOfRange",
        f"no frame in the clip window [{start_sec:.3f}s, {end_sec:.3f}s): the video's last frame is at "
        f"{scan.last_frame_sec:.3f}s; use a start_sec below {scan.last_frame_sec:.3f}",
    )
