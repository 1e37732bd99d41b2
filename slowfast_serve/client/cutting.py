"""Cutting a video file into parts at key frames, without re-encoding (PyAV remux), for timelines sent in parts
(:mod:`slowfast_serve.client.parts`).

A part holds the packets of the video stream from one key frame up to (not including) a later one, in the
source's container format, with the source's timestamps and time base kept. Sent with ``origin_pts`` = the
source stream's start, each of its timeline windows holds exactly the frames it holds in the whole file: the
service selects frames by timestamp, and decoding from a key frame gives the frames a decode of the whole file
gives (closed GOPs, what encoders write by default). A container that does not keep timestamps when cut (AVI
counts frames instead) is refused with what to do.

Only the source's index (one pass over its packets, no decoding) and one part at a time are held in memory.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from handler.container import ffmpeg_reason, open_video, stream_seconds, video_info
from handler.errors import RequestError
from slowfast_serve.client.errors import ServiceError

#: How far before a part's key frame to seek, in turn, until the seek lands before it (``None``: read from the start).
SEEK_BACK_SEC = (0.0, 1.0, 10.0, 60.0, None)
#: FFmpeg demuxer name (first of its list) -> the muxer that writes the same container.
_MUXERS = {"mov": "mp4", "matroska": "matroska", "mpegts": "mpegts", "avi": "avi", "flv": "flv", "mpeg": "mpeg"}


@dataclass(frozen=True)
class SourceIndex:
    """Where a video's key frames are, read by demuxing its video stream once (no decoding).

    Attributes:
        path: the video file.
        muxer: the FFmpeg muxer that writes the source's container (parts are written in it).
        time_base: the video stream's seconds per pts unit.
        start_pts: the stream's start (what ``origin_pts`` carries).
        key_pts: each key frame's pts, in file order.
        key_secs: each key frame's time, seconds from the stream start.
        key_bytes: bytes of video packets before each key frame (``key_bytes[-1]``: all of them, one more item).
        key_packets: packets (frames) before each key frame, likewise.
        duration_sec: the video's duration as the service computes it (:func:`handler.container.video_duration`).
        container_duration_sec: the stream's declared duration (the service's ``video.duration_sec``), if any.
    """

    path: Path
    muxer: str
    time_base: Fraction
    start_pts: int
    key_pts: tuple[int, ...]
    key_secs: tuple[float, ...]
    key_bytes: tuple[int, ...]
    key_packets: tuple[int, ...]
    duration_sec: float
    container_duration_sec: float | None

    def key_before(self, seconds: float) -> int:
        """The last key frame at or before ``seconds`` (the first key frame when none is)."""
        return max(bisect.bisect_right(self.key_secs, seconds) - 1, 0)

    def key_after(self, seconds: float) -> int:
        """The first key frame at or after ``seconds``; ``len(key_pts)`` (the end of the file) when none is."""
        return bisect.bisect_left(self.key_secs, seconds)

    def span_bytes(self, first: int, end: int) -> int:
        """Bytes of video packets from key frame ``first`` up to key frame ``end`` (exclusive)."""
        return self.key_bytes[end] - self.key_bytes[first]

    def span_packets(self, first: int, end: int) -> int:
        """Frames from key frame ``first`` up to key frame ``end`` (exclusive)."""
        return self.key_packets[end] - self.key_packets[first]


def local_error(error: RequestError) -> ServiceError:
    """A check the service would make on the whole file, failed here before anything was sent."""
    return ServiceError(None, error.type, f"{error.message} (checked here, before sending)")


def index_source(path: Path) -> SourceIndex:
    """Demuxes ``path``'s first video stream once and records its key frames.

    Raises:
        ServiceError: (status ``None``) the file fails the service's own checks (not a video, no video stream ...),
            has no key frame, or is in a container this module cannot write parts of.
    """
    try:
        container = open_video(path)
    except RequestError as e:
        raise local_error(e) from e
    with container, _readable(path):
        stream = container.streams.video[0]
        declared = video_info(container, stream).duration_sec
        muxer = _MUXERS.get(container.format.name.split(",")[0])
        if muxer is None:
            raise ServiceError(
                None,
                "CannotCut",
                f"{path.name}: parts of a {container.format.name} file cannot be written here; remux it once "
                "(e.g. ffmpeg -i in.ext -c copy out.mkv) and send that",
            )
        keys, key_bytes, key_packets = [], [], []
        total_bytes = total_packets = end_pts = 0
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            if packet.is_keyframe:
                keys.append(packet.pts)
                key_bytes.append(total_bytes)
                key_packets.append(total_packets)
            total_bytes += packet.size
            total_packets += 1
            end_pts = max(end_pts, packet.pts + (packet.duration or 0))
        if not keys:
            raise ServiceError(None, "CannotCut", f"{path.name}: the video stream has no key frame to cut at")
        # As handler.container.video_duration measures it: the declared duration, else the last packet's end.
        duration = declared or stream_seconds(stream, end_pts)
        return SourceIndex(
            path=path,
            muxer=muxer,
            time_base=stream.time_base,
            start_pts=stream.start_time or 0,
            key_pts=tuple(keys),
            key_secs=tuple(float((pts - (stream.start_time or 0)) * stream.time_base) for pts in keys),
            key_bytes=(*key_bytes, total_bytes),
            key_packets=(*key_packets, total_packets),
            duration_sec=duration,
            container_duration_sec=declared,
        )


def cut(index: SourceIndex, first: int, end: int) -> bytes:
    """The part from key frame ``first`` up to key frame ``end`` (exclusive; ``len(key_pts)``: to the end of the
    file), remuxed into the source's container in memory.

    Raises:
        ServiceError: (``CannotCut``) the part does not keep the source's timestamps or time base.
    """
    start_pts = index.key_pts[first]
    stop_pts = index.key_pts[end] if end < len(index.key_pts) else None
    # A seek in a file with an index lands on the key frame at or before the one asked for; in one without (MPEG-TS)
    # it lands anywhere near, possibly after it. Packets are skipped until the part's own key frame; when the seek
    # went past it, an earlier target is tried, and at last the file is read from its start.
    with _readable(index.path):
        data = _first_found(index, start_pts, stop_pts)
    if not data:
        raise ServiceError(None, "CannotCut", f"{index.path.name}: the key frame at pts {start_pts} was not found")
    _check_timestamps(index, data, start_pts)
    return data


def _first_found(index: SourceIndex, start_pts: int, stop_pts: int | None) -> bytes:
    """:func:`_remux` after a seek to the key frame, then to earlier targets, then from the start."""
    for back_sec in SEEK_BACK_SEC:
        seek_to = None if back_sec is None else start_pts - back_sec / index.time_base
        data = _remux(index, start_pts, stop_pts, seek_to=seek_to)
        if data:
            return data
    return b""


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """FFmpeg's errors while reading ``path`` (a corrupt or truncated packet) as the client's own error."""
    try:
        yield
    except av.FFmpegError as e:
        reason = ffmpeg_reason(e)
        raise ServiceError(
            None, "InvalidVideo", f"{path.name} could not be read to the end ({reason}); re-export or re-copy it whole"
        ) from e


def _remux(index: SourceIndex, start_pts: int, stop_pts: int | None, *, seek_to: float | None) -> bytes:
    """The packets from the key frame at ``start_pts`` up to the one at ``stop_pts``, reading from a seek to pts
    ``seek_to`` (``None``: from the start); empty when the first was not found."""
    buffer = io.BytesIO()
    muxed = 0
    with av.open(str(index.path), metadata_errors="replace") as source:
        stream = source.streams.video[0]
        if seek_to is not None:
            source.seek(math.floor(seek_to), stream=stream, backward=True, any_frame=False)
        with av.open(buffer, "w", format=index.muxer) as part:
            out = part.add_stream_from_template(stream)
            for packet in source.demux(stream):
                if packet.pts is None and packet.dts is None:
                    continue  # the demuxer's end-of-stream marker
                if not muxed and not (packet.is_keyframe and packet.pts == start_pts):
                    continue
                if muxed and stop_pts is not None and packet.is_keyframe and packet.pts == stop_pts:
                    break
                packet.stream = out
                part.mux(packet)
                muxed += 1
    return buffer.getvalue() if muxed else b""


def _check_timestamps(index: SourceIndex, data: bytes, start_pts: int) -> None:
    with av.open(io.BytesIO(data)) as part:
        stream = part.streams.video[0]
        first = next((p.pts for p in part.demux(stream) if p.pts is not None), None)
        if stream.time_base == index.time_base and first == start_pts:
            return
    raise ServiceError(
        None,
        "CannotCut",
        f"{index.path.name}: a part cut from this {index.muxer} file does not keep its timestamps (time base "
        f"{stream.time_base} vs {index.time_base}, first frame at pts {first} vs {start_pts}), so its windows would "
        "not be the whole video's; remux it once to a container that keeps them (ffmpeg -i in.avi -c copy out.mkv) "
        "and send that",
    )
