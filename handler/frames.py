"""Decoded frames: the decoding loop every strategy shares (counted, failures as 400s), the RGB conversion (upright,
one size, reduced as converted) and the clip they make (:class:`DecodedClip`).

The strategies that pick a clip's frames: :mod:`handler.decode` (by time: PyTorchVideo's windows, PySlowFast's pts
windows) and :mod:`handler.decode_indexed` (by decoded-frame index: MMAction2's and PaddleVideo's samplers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from handler.container import VideoInfo, ffmpeg_reason, stream_seconds
from handler.decode_limits import Budget
from handler.errors import RequestError, bad_request

#: What a clip keeps of each decoded frame: ``(H, W, 3)`` uint8 RGB, upright -> a smaller uint8 tensor (e.g. only
#: the pixels a model's crops read). Applied as each frame is converted, so a clip never holds its full frames.
FrameReducer = Callable[[torch.Tensor], torch.Tensor]
#: Which frames of a window a clip keeps: the window's frame count -> int64 indices into its frames (in time order).
FrameSelector = Callable[[int], torch.Tensor]


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


def decode_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, budget: Budget
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
                raise undecodable(last_good, "a packet is corrupt or cut short")
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
        raise undecodable(last_good, ffmpeg_reason(e)) from e


def undecodable(last_good: float | None, reason: str) -> RequestError:
    where = "before its first frame" if last_good is None else f"after {last_good:.3f}s"
    return bad_request(
        "InvalidVideo",
        f"the video stream could not be decoded {where} ({reason}); the file may be truncated or corrupt: "
        "re-export or re-upload it complete",
    )


class RgbConverter:
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


def to_rgb(
    frames: list[av.VideoFrame | None], keep: torch.Tensor, reduce: FrameReducer | None = None
) -> tuple[list[torch.Tensor], int]:
    """The frames ``frames[keep]`` converted by an :class:`RgbConverter` whose reference is the first kept frame,
    converting each distinct frame once (a repeated index gives the same tensor object; entries that ``keep`` does
    not pick may be ``None``), and the rotation applied (0, 90, 180 or 270 degrees)."""
    converter = RgbConverter(frames[int(keep[0])], reduce)
    converted: dict[int, torch.Tensor] = {}
    for i in keep.tolist():
        if i not in converted:
            converted[i] = converter(frames[i])
    return [converted[i] for i in keep.tolist()], converter.rotation
