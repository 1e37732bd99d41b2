"""Decoding: which frames a clip gets (by pts), how little is decoded, and how bad input fails."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import pytest

import handler.decode as decode_module
from handler.decode import decode_clip
from handler.errors import RequestError
from handler.frames import to_rgb
from handler.transforms import uniform_temporal_indices
from tests.videos import (
    LOSSLESS,
    audio_only,
    encode,
    faststart,
    frame_index,
    indexed_frames,
    lossless_indexed,
    moving_frames,
)

CLIP_SEC = 64 / 30  # slowfast_r50 and slow_r50: 32 x 2 / 30 and 8 x 8 / 30


def _all_pts(data: bytes) -> tuple[list[int], Fraction, int]:
    """Every frame's pts (in presentation order), the time base and the stream start, read with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return [f.pts for f in container.decode(stream)], stream.time_base, stream.start_time or 0


def _expected_indices(data: bytes, start_sec: float, end_sec: float, num_samples: int) -> tuple[list[int], int]:
    """Frame indices the clip must hold, from the documented rule: ceil(sec / time_base) + start <= pts < ..."""
    pts, time_base, start = _all_pts(data)
    lo, hi = math.ceil(start_sec / time_base) + start, math.ceil(end_sec / time_base) + start
    in_window = [i for i, p in enumerate(pts) if lo <= p < hi]
    kept = uniform_temporal_indices(len(in_window), num_samples).tolist()
    return [in_window[k] for k in kept], len(in_window)


@pytest.mark.parametrize("fps", [10, 25, 30, 60, Fraction(30000, 1001)])
@pytest.mark.parametrize("start_sec", [0.0, 0.5, 1.0, 2.2])
def test_clip_holds_the_frames_whose_pts_fall_in_the_window(fps: float, start_sec: float) -> None:
    data = lossless_indexed(round(5 * float(fps)), fps=fps)
    clip = decode_clip(data, start_sec=start_sec, end_sec=start_sec + CLIP_SEC, num_samples=32)
    expected, in_window = _expected_indices(data, start_sec, start_sec + CLIP_SEC, 32)
    assert clip.source_frames == in_window
    assert [frame_index(f.numpy()) for f in clip.frames] == expected
    assert clip.stacked().shape == (32, 32, 48, 3)


def test_short_video_repeats_its_frames() -> None:
    data = lossless_indexed(20, fps=30)  # 0.67 s, shorter than the 2.13 s clip
    clip = decode_clip(data, start_sec=0.0, end_sec=CLIP_SEC, num_samples=32)
    indices = [frame_index(f.numpy()) for f in clip.frames]
    assert clip.source_frames == 20
    assert sorted(set(indices)) == list(range(20))
    assert indices == sorted(indices)


def test_video_info() -> None:
    data = encode(moving_frames(45, 120, 160), fps=15, container="matroska")
    info = decode_clip(data, start_sec=0.0, end_sec=CLIP_SEC, num_samples=8).info
    assert (info.width, info.height, info.codec) == (160, 120, "h264")
    assert info.fps == pytest.approx(15)
    assert info.duration_sec == pytest.approx(3.0, abs=0.1)
    assert "matroska" in info.container


def test_decoding_stops_after_the_window() -> None:
    data = encode(moving_frames(300, 64, 96), fps=30)  # 10 s
    clip = decode_clip(data, start_sec=0.0, end_sec=CLIP_SEC, num_samples=32)
    assert 64 <= clip.decoded_frames <= 70  # the 64 frames of the window, plus the one that ends it


def test_a_late_window_is_reached_by_seeking() -> None:
    data = encode(moving_frames(300, 64, 96), fps=30, options={"g": "30"})  # key frame every second
    clip = decode_clip(data, start_sec=7.5, end_sec=7.5 + CLIP_SEC, num_samples=32)
    assert clip.source_frames == 64
    assert clip.decoded_frames <= 64 + 30 + 2  # from the key frame at 7 s, not from the start


class _SeekPastTarget:
    """A real container whose seek lands 1 s after the requested position (as a bad index can make it)."""

    def __init__(self, container, any_frame: bool) -> None:
        self._container = container
        self._any_frame = any_frame

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()

    def seek(self, offset, **kwargs) -> None:
        late = offset + int(1 / kwargs["stream"].time_base)
        self._container.seek(late, **{**kwargs, "any_frame": self._any_frame})


class _SeekFails(_SeekPastTarget):
    """A real container that cannot seek (as some unindexed files)."""

    def seek(self, offset, **kwargs) -> None:
        raise av.error.FFmpegError(38, "Function not implemented")


@pytest.mark.parametrize(
    ("key_frame_interval", "any_frame", "container_type"),
    [("30", False, _SeekPastTarget), ("250", True, _SeekPastTarget), ("30", False, _SeekFails)],
    ids=["lands-on-a-later-key-frame", "lands-mid-gop-nothing-decodes", "seek-raises"],
)
def test_a_seek_that_overshoots_falls_back_to_decoding_from_the_start(
    monkeypatch: pytest.MonkeyPatch, key_frame_interval: str, any_frame: bool, container_type: type
) -> None:
    data = encode(indexed_frames(150), fps=30, **{**LOSSLESS, "options": {"crf": "0", "g": key_frame_interval}})
    expected = decode_clip(data, start_sec=2.0, end_sec=2.0 + CLIP_SEC, num_samples=32)
    original_open = decode_module.open_video
    wrapped = lambda data, threads=0: container_type(original_open(data, threads), any_frame)  # noqa: E731
    monkeypatch.setattr(decode_module, "open_video", wrapped)
    clip = decode_clip(data, start_sec=2.0, end_sec=2.0 + CLIP_SEC, num_samples=32)
    assert clip.source_frames == expected.source_frames == 64
    assert [frame_index(f.numpy()) for f in clip.frames] == [frame_index(f.numpy()) for f in expected.frames]


def test_a_resolution_change_inside_the_clip_is_scaled_to_the_first_frame() -> None:
    small = av.VideoFrame.from_ndarray(indexed_frames(1, 24, 32)[0], format="rgb24")
    large = av.VideoFrame.from_ndarray(indexed_frames(2, 48, 64)[1], format="rgb24")
    rgb, _ = to_rgb([small, large, small], uniform_temporal_indices(3, 4))
    assert [tuple(f.shape) for f in rgb] == [(24, 32, 3)] * 4
    assert rgb[0] is rgb[1]  # a repeated frame is converted once
    assert [frame_index(f.numpy()) for f in rgb] == [0, 0, 1, 0]


def _error(data: bytes, start_sec: float = 0.0) -> RequestError:
    with pytest.raises(RequestError) as info:
        decode_clip(data, start_sec=start_sec, end_sec=start_sec + CLIP_SEC, num_samples=32)
    assert info.value.status == 400
    return info.value


def test_start_past_the_end_says_where_the_video_ends() -> None:
    error = _error(lossless_indexed(60, fps=30), start_sec=5.0)
    assert error.type == "ClipOutOfRange"
    assert "last frame is at 1.967s" in error.message


@pytest.mark.parametrize(
    ("data", "error_type"),
    [
        (b"", "EmptyVideo"),
        (b"this is not a video, just some text\n" * 20, "InvalidVideo"),
        (bytes(range(256)) * 64, "InvalidVideo"),
    ],
    ids=["empty", "text", "random-bytes"],
)
def test_unreadable_uploads_are_400(data: bytes, error_type: str) -> None:
    assert _error(data).type == error_type


def test_audio_only_file_has_no_video_stream() -> None:
    error = _error(audio_only())
    assert error.type == "NoVideoStream"
    assert "audio" in error.message


def test_mp4_cut_before_its_index_is_invalid() -> None:
    data = encode(moving_frames(60, 64, 96), fps=30)  # the moov box is written at the end
    assert _error(data[: len(data) // 2]).type == "InvalidVideo"


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_an_mp4_cut_inside_the_clip_is_invalid_with_any_threading(threads: int) -> None:
    # With frame threads FFmpeg reports the cut packet late ("End of file") or drops it; the demuxer marks it
    # corrupt, and that is what makes this an error rather than a clip of the frames before the cut.
    data = faststart(encode(moving_frames(60, 64, 96), fps=30))
    with pytest.raises(RequestError) as info:
        decode_clip(data[: len(data) // 2], start_sec=0.0, end_sec=CLIP_SEC, num_samples=32, threads=threads)
    assert info.value.type == "InvalidVideo"
    assert "after 0." in info.value.message


def test_truncated_stream_keeps_the_frames_before_the_cut() -> None:
    data = encode(moving_frames(90, 64, 96), fps=30, container="matroska")  # streamable: frames before the cut
    assert _error(data[:300]).type == "InvalidVideo"  # the header alone
    partial = decode_clip(data[: len(data) // 5], start_sec=0.0, end_sec=CLIP_SEC, num_samples=32)
    assert 0 < partial.source_frames < 64
    assert len(partial.frames) == 32


def test_a_tag_that_is_not_utf8_does_not_make_the_video_unreadable() -> None:
    # Found by tests/test_fuzz.py: PyAV decodes container tags as strict UTF-8 by default.
    data = encode(moving_frames(30, 48, 64), fps=30, container="matroska")
    tag = data.index(b"Lavf", data.index(b"ENCODER"))  # the value of the ENCODER tag
    corrupt = data[:tag] + b"\xcc" + data[tag + 1 :]
    clip = decode_clip(corrupt, start_sec=0.0, end_sec=CLIP_SEC, num_samples=8)
    assert clip.source_frames == 30


@pytest.mark.parametrize("options", [{"crf": "0", "g": "300"}, {"crf": "0", "g": "20", "bf": "2"}])
def test_a_request_decodes_its_windows_once_and_gets_the_same_frames(options: dict[str, str]) -> None:
    data = encode(indexed_frames(240), fps=30, **{**LOSSLESS, "options": options})
    # Overlapping (multi-view), adjacent (timeline), after a gap (sought to) and back to the start (decoded again).
    starts = [0.0, 0.5, 1.0, 1.0 + CLIP_SEC, 6.0, 0.2]
    windows = [(start, start + CLIP_SEC) for start in starts]
    together = list(decode_module.iter_clips(data, windows, num_samples=32))
    alone = [decode_clip(data, start_sec=s, end_sec=e, num_samples=32) for s, e in windows]
    for one, other in zip(together, alone, strict=True):
        assert one.source_frames == other.source_frames
        assert [frame_index(f.numpy()) for f in one.frames] == [frame_index(f.numpy()) for f in other.frames]
    # Decoding from the key frame before each window would decode the frames before it again and again.
    assert together[-1].decoded_frames < sum(clip.decoded_frames for clip in alone)
    assert together[3].decoded_frames <= 30 * (1.0 + 2 * CLIP_SEC) + 2  # the first four windows: one pass
