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
- every failure is a :class:`~handler.errors.RequestError` with a reason, never an empty result.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch

from handler.errors import RequestError, bad_request
from handler.transforms import uniform_temporal_indices


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream.

    Attributes:
        container: demuxer name as FFmpeg reports it (e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``).
        codec: decoder name (e.g. ``"h264"``).
        width, height: coded frame size in pixels.
        fps: average frame rate, or ``None`` if the container does not say.
        duration_sec: stream (or else container) duration, or ``None`` if unknown.
    """

    container: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration_sec: float | None


@dataclass(frozen=True)
class DecodedClip:
    """The sampled frames of one clip.

    Attributes:
        frames: ``(num_samples, H, W, 3)`` uint8 RGB in [0, 255], in time order; a frame repeats when the
            window held fewer frames than ``num_samples``.
        start_sec, end_sec: the requested window, ``[start_sec, end_sec)``, seconds from the stream start.
        source_frames: how many decoded frames fell inside the window.
        info: stream metadata.
    """

    frames: torch.Tensor
    start_sec: float
    end_sec: float
    source_frames: int
    info: VideoInfo

    def __post_init__(self) -> None:
        if self.frames.dim() != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != torch.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {tuple(self.frames.shape)} {self.frames.dtype}")

    def __repr__(self) -> str:
        return (
            f"DecodedClip(frames={tuple(self.frames.shape)}, window=[{self.start_sec}, {self.end_sec}), "
            f"source_frames={self.source_frames}, info={self.info})"
        )


def decode_clip(data: bytes, *, start_sec: float, end_sec: float, num_samples: int) -> DecodedClip:
    """Decodes the frames of ``[start_sec, end_sec)`` and keeps ``num_samples`` of them, uniformly spread.

    Args:
        data: the encoded video file, any container and codec FFmpeg can read.
        start_sec: clip start in seconds from the start of the video stream, >= 0.
        end_sec: clip end (exclusive), > ``start_sec``.
        num_samples: frames to return (the model's ``num_frames``).

    Raises:
        RequestError: 400 when the bytes are not a readable video, hold no video stream, fail to decode, or
            have no frame inside the window.
    """
    with _open(data) as container:
        stream = container.streams.video[0]
        info = _video_info(container, stream)
        window = _window_pts(stream, start_sec, end_sec)
        scan = _scan_window(container, stream, window, seek=start_sec > 0)
    if scan.overshot:  # the seek landed after the window start: decode from the beginning instead
        with _open(data) as container:
            scan = _scan_window(container, container.streams.video[0], window, seek=False)
    frames = scan.frames
    if not frames:
        raise _empty_window_error(scan, start_sec, end_sec)
    keep = uniform_temporal_indices(len(frames), num_samples)
    return DecodedClip(
        frames=_to_rgb(frames, keep),
        start_sec=start_sec,
        end_sec=end_sec,
        source_frames=len(frames),
        info=info,
    )


def probe(data: bytes) -> VideoInfo:
    """The video stream's metadata, read from the container header without decoding frames.

    Raises:
        RequestError: 400 as :func:`decode_clip` for empty, unreadable or video-less files.
    """
    with _open(data) as container:
        return _video_info(container, container.streams.video[0])


def _open(data: bytes) -> av.container.InputContainer:
    if not data:
        raise bad_request("EmptyVideo", "the upload is empty; send the video file's bytes")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.FFmpegError as e:
        raise bad_request(
            "InvalidVideo",
            f"the upload is not a readable video file ({_reason(e)}); send a complete video file "
            "(mp4, mkv, webm, avi, mov, ...)",
        ) from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise bad_request(
            "NoVideoStream", f"the file has no video stream (streams found: {', '.join(kinds)}); send a video file"
        )
    return container


def _video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    fps = float(stream.average_rate) if stream.average_rate else None
    if stream.duration is not None and stream.time_base is not None:
        duration: float | None = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = None
    return VideoInfo(
        container=container.format.name,
        codec=stream.codec_context.name,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=fps,
        duration_sec=duration,
    )


@dataclass(frozen=True)
class _Window:
    start_pts: float
    end_pts: float


def _window_pts(stream: av.video.stream.VideoStream, start_sec: float, end_sec: float) -> _Window:
    """The window in stream time-base units, rounded exactly as ``pytorchvideo.data.utils.secs_to_pts``."""
    if stream.time_base is None:
        raise bad_request("InvalidVideo", "the video stream has no time base; remux it (e.g. to mp4) and retry")
    offset = stream.start_time if stream.start_time is not None else 0.0
    # float / Fraction is float division: the same rounding as PyTorchVideo, kept on purpose for parity.
    return _Window(
        start_pts=math.ceil(start_sec / stream.time_base) + offset,
        end_pts=math.ceil(end_sec / stream.time_base) + offset,
    )


@dataclass
class _Scan:
    """Result of one pass over the stream: the window's frames (sorted by pts, one per pts), the time of the
    last frame seen (seconds from the stream start, ``None`` if no frame decoded), and whether a seek overshot.
    """

    frames: list[av.VideoFrame]
    last_frame_sec: float | None
    overshot: bool = False


def _scan_window(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, window: _Window, *, seek: bool
) -> _Scan:
    """Decodes from the start (or, with ``seek``, from the key frame at or before the window start) until the
    first frame past the window end. A seek that lands after the window start, or after which nothing decodes,
    reports ``overshot``.
    """
    if seek:
        try:
            container.seek(int(window.start_pts), backward=True, any_frame=False, stream=stream)
        except av.FFmpegError:  # e.g. no index to seek with: decoding from the start still works
            return _Scan(frames=[], last_frame_sec=None, overshot=True)
    by_pts: dict[int, av.VideoFrame] = {}
    last_pts = None
    for frame in _decode(container, stream):
        if frame.pts is None:
            raise bad_request(
                "InvalidVideo", "the video frames carry no timestamps; remux the stream into a container (e.g. mp4)"
            )
        if seek and last_pts is None and frame.pts > window.start_pts:
            return _Scan(frames=[], last_frame_sec=None, overshot=True)
        last_pts = frame.pts if last_pts is None else max(last_pts, frame.pts)
        if frame.pts >= window.end_pts:
            break
        if frame.pts >= window.start_pts:
            by_pts[frame.pts] = frame
    if seek and last_pts is None:
        return _Scan(frames=[], last_frame_sec=None, overshot=True)  # nothing decodable after the seek point
    offset = stream.start_time or 0
    last_sec = None if last_pts is None else float((last_pts - offset) * stream.time_base)
    return _Scan(frames=[by_pts[pts] for pts in sorted(by_pts)], last_frame_sec=last_sec)


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """Yields the video stream's frames in presentation order; decode failures become a 400."""
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except av.FFmpegError as e:
            raise bad_request(
                "InvalidVideo",
                f"the video stream could not be decoded ({_reason(e)}); the file may be truncated or corrupt",
            ) from e
        yield frame


def _to_rgb(frames: list[av.VideoFrame], keep: torch.Tensor) -> torch.Tensor:
    """``(len(keep), H, W, 3)`` uint8 RGB of ``frames[keep]``, converting each distinct frame once.

    A stream whose resolution changes inside the clip is scaled to the size of the first kept frame.
    """
    unique, inverse = torch.unique(keep, return_inverse=True)
    chosen = [frames[i] for i in unique.tolist()]
    width, height = chosen[0].width, chosen[0].height
    rgb = np.stack(
        [
            f.to_ndarray(format="rgb24")
            if (f.width, f.height) == (width, height)
            else f.to_ndarray(format="rgb24", width=width, height=height)
            for f in chosen
        ]
    )
    return torch.from_numpy(rgb)[inverse]


def _empty_window_error(scan: _Scan, start_sec: float, end_sec: float) -> RequestError:
    if scan.last_frame_sec is None:
        return bad_request("NoFrames", "the video stream has no decodable frame; check that the file plays")
    return bad_request(
        "ClipOutOfRange",
        f"no frame in the clip window [{start_sec:.3f}s, {end_sec:.3f}s): the video's last frame is at "
        f"{scan.last_frame_sec:.3f}s; use a start_sec below {scan.last_frame_sec:.3f}",
    )


def _reason(error: av.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)
