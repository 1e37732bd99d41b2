"""What a video file's container says, read without decoding (and without torch, so the client can use it):
the first video stream's :class:`VideoInfo` and :class:`StreamTiming`, its duration, and the checks every upload
passes when it is opened (:func:`open_video`: empty, not a video, a still image, no video stream, no decoder).

A source is the upload's bytes (the service) or a file path (the client, which must not read a long recording
whole); both give the same figures.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import av

from handler.errors import bad_request

#: An encoded video: the bytes of an upload, or the path of a file.
Source = bytes | str | os.PathLike[str]


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
class StreamTiming:
    """The first video stream's timing as its container declares it (what the toolboxes' samplers read).

    Attributes:
        time_base: seconds per pts unit.
        start_time: pts of the stream start (0 when the container does not say).
        duration: the stream's duration in pts units, ``None`` when not declared.
        frames: the stream header's frame count (0 when not declared, e.g. in mkv/webm).
        fps: average frame rate, ``None`` when unknown.
    """

    time_base: Fraction
    start_time: int
    duration: int | None
    frames: int
    fps: float | None

    def pts(self, seconds: float) -> int:
        """The pts ``seconds`` after the stream start, rounded up as :func:`handler.decode.decode_clip` rounds a
        window start."""
        return math.ceil(seconds / self.time_base) + self.start_time

    def seconds(self, pts: float) -> float:
        """Seconds from the stream start to ``pts``."""
        return float((pts - self.start_time) * self.time_base)


def stream_timing(data: Source) -> StreamTiming:
    """The video stream's :class:`StreamTiming`, from the container header (no decoding).

    Raises:
        RequestError: 400 as :func:`probe`, or when the stream has no time base.
    """
    with open_video(data) as container:
        stream = container.streams.video[0]
        if stream.time_base is None:
            raise bad_request("InvalidVideo", "the video stream has no time base; remux it (e.g. to mp4) and retry")
        return StreamTiming(
            time_base=stream.time_base,
            start_time=stream.start_time or 0,
            duration=stream.duration,
            frames=stream.frames,
            fps=float(stream.average_rate) if stream.average_rate else None,
        )


def probe(data: Source) -> VideoInfo:
    """The video stream's metadata, read from the container header without decoding frames.

    Raises:
        RequestError: 400 as :func:`handler.decode.decode_clip` for empty, unreadable or video-less files.
    """
    with open_video(data) as container:
        return video_info(container, container.streams.video[0])


def video_duration(data: Source) -> float:
    """Seconds from the video stream's start to the end of its last frame: the container's figure, or, when it
    has none (some streamed mkv/webm), the end of the last packet found by demuxing (no decoding).

    Raises:
        RequestError: 400 as :func:`probe`, or ``NoFrames`` when the stream holds no timed packet.
    """
    info = probe(data)
    if info.duration_sec:
        return info.duration_sec
    with open_video(data) as container:
        stream = container.streams.video[0]
        ends = [p.pts + (p.duration or 0) for p in container.demux(stream) if p.pts is not None]
    if not ends:
        raise bad_request("NoFrames", "the video stream has no timed frame; check that the file plays")
    return stream_seconds(stream, max(ends))


def open_video(data: Source, threads: int = 0) -> av.container.InputContainer:
    if isinstance(data, bytes) and not data:
        raise bad_request("EmptyVideo", "the upload is empty; send the video file's bytes")
    try:
        # Tags are text for no one here: a corrupt, non-UTF-8 tag must not make a video unreadable.
        file = io.BytesIO(data) if isinstance(data, bytes) else os.fspath(data)
        container = av.open(file, mode="r", metadata_errors="replace")
    except av.FFmpegError as e:
        raise bad_request(
            "InvalidVideo",
            f"the upload is not a readable video file ({ffmpeg_reason(e)}); send a complete video file "
            "(mp4, mkv, webm, avi, mov, ...)",
        ) from e
    demuxer = container.format.name
    if demuxer == "image2" or demuxer.endswith("_pipe"):  # FFmpeg's still-image readers (png_pipe, jpeg_pipe, ...)
        container.close()
        raise bad_request(
            "StillImage",
            f"the upload is a still image ({demuxer.removesuffix('_pipe')}), not a video; send a video file "
            "(an animated GIF works)",
        )
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise bad_request(
            "NoVideoStream", f"the file has no video stream (streams found: {', '.join(kinds)}); send a video file"
        )
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg knows no decoder for the stream's codec (tag)
        tag = getattr(stream, "codec_tag", None) or "unknown"
        container.close()
        raise bad_request(
            "UnsupportedCodec",
            f"the video codec ({tag!r}) cannot be decoded here; re-encode the video as H.264, HEVC, VP9 or AV1 "
            "(e.g. ffmpeg -i in.avi -c:v libx264 out.mp4)",
        )
    # Frame threading: several frames in flight, 1.5x faster on 2 cores (720p H.264). It reports a broken
    # packet only as an error from a later call, or not at all, so _decode checks the packets themselves.
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    return container


def video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
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


def stream_seconds(stream: av.video.stream.VideoStream, pts: int) -> float:
    """A pts as seconds from the stream's start."""
    return float((pts - (stream.start_time or 0)) * stream.time_base)


def ffmpeg_reason(error: av.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)
