"""The toolbox samplers (handler.sampling): their index arithmetic on the examples the toolboxes' own code gives,
and which decoded frames they pick on videos whose frames carry their index in their colour.

Whole requests against each toolbox's own pipeline: tests/test_toolbox_parity.py.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from handler.container import stream_timing
from handler.decode_indexed import count_packets
from handler.errors import RequestError
from handler.models import get_spec
from handler.sampling import (
    mmaction2_offsets,
    paddlevideo_indices,
    paddlevideo_start,
    pyslowfast_pick,
    pyslowfast_window,
    sample_clips,
)
from handler.transforms import center_crop_offsets, three_crop_offsets
from tests.videos import encode

MMACTION2 = get_spec("mmaction2_slowfast_r50_8x8").clip
PADDLEVIDEO = get_spec("paddlevideo_slowfast_8x8").clip
PYSLOWFAST = get_spec("pyslowfast_slowfast_8x8_r50").clip
STEP = 8  # colour step per frame index: survives lossy encoding of flat frames


def coloured_frames(count: int, size: tuple[int, int] = (64, 96)) -> np.ndarray:
    """``(T, H, W, 3)`` flat frames; frame ``i`` has red ``STEP * (i % 32)`` and green ``STEP * (i // 32)``."""
    frames = np.zeros((count, *size, 3), dtype=np.uint8)
    for i in range(count):
        frames[i] = (STEP * (i % 32), STEP * (i // 32), 128)
    return frames


def index_of(frame) -> int:
    r, g, _ = (int(v) for v in frame[frame.shape[0] // 2, frame.shape[1] // 2])
    return round(r / STEP) + 32 * round(g / STEP)


def picked(clips) -> list[list[int]]:
    return [[index_of(frame.numpy()) for frame in clip.frames] for clip in clips]


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("these tests write videos with ffmpeg: apt-get install ffmpeg (scripts/install.sh --dev does)")
    return path


def ffmpeg_encode(ffmpeg: str, frames: np.ndarray, fps: int, *args: str) -> bytes:
    """Raw RGB frames through ffmpeg's encoder with ``args`` (codec, muxer ...), the file's bytes."""
    height, width = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "video"  # a file, not a pipe: the mp4 muxer seeks back to write its index
        command = [ffmpeg, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
        subprocess.run([*command, "-r", str(fps), "-i", "-", *args, str(out)], input=frames.tobytes(), check=True)
        return out.read_bytes()


def test_mmaction2_offsets_match_its_sampler_example() -> None:
    # MMAction2 1.2.0 SampleFrames(clip_len=32, frame_interval=2, num_clips=10, test_mode=True) on 300 frames.
    assert mmaction2_offsets(300, MMACTION2, 10) == [0, 26, 53, 79, 105, 132, 158, 184, 211, 237]
    assert mmaction2_offsets(300, MMACTION2, 1) == [(300 - 63) // 2]
    assert mmaction2_offsets(40, MMACTION2, 10) == [0] * 10  # shorter than a clip: every clip at the start


def test_pyslowfast_and_paddlevideo_clip_starts_match_their_example() -> None:
    # 300 frames at 30 fps: clip starts 0, 23, 47, ... (start index (300 - 64) * k / 10) in both toolboxes.
    timing = stream_timing(encode(coloured_frames(2), fps=30))
    timing = type(timing)(time_base=Fraction(1, 30), start_time=0, duration=300, frames=300, fps=30.0)
    starts = [pyslowfast_window(timing, PYSLOWFAST, k, 10)[0] for k in range(10)]
    assert starts == [0, 23, 47, 70, 94, 118, 141, 165, 188, 212]
    assert [int(paddlevideo_start(300, PADDLEVIDEO, 30.0, k, 10)) for k in range(10)] == starts
    # PaddleVideo's float64 linspace truncates; PySlowFast's float32 torch.linspace is clamped to the frames.
    assert paddlevideo_indices(0, PADDLEVIDEO, 30.0, 300)[-3:] == [58, 60, 63]
    assert pyslowfast_pick(PYSLOWFAST, 30.0)(40).tolist()[-3:] == [39, 39, 39]


def test_crop_rules() -> None:
    assert center_crop_offsets(256, 341, 256, "round") == (0, 42)  # round(42.5): half to even
    assert center_crop_offsets(256, 341, 256, "floor") == (0, 42)
    assert center_crop_offsets(256, 341, 256, "ceil") == (0, 43)
    assert [three_crop_offsets(256, 341, 256, i, "uniform_crop")[1] for i in range(3)] == [0, 43, 85]
    assert [three_crop_offsets(256, 341, 256, i, "mmaction2")[1] for i in range(3)] == [0, 42, 84]  # 1 px short
    assert [three_crop_offsets(341, 256, 256, i, "mmaction2")[0] for i in range(3)] == [0, 42, 84]


def test_mmaction2_single_view_counts_decoded_frames_from_start_sec() -> None:
    data = encode(coloured_frames(100), fps=25)
    (clip,) = sample_clips(data, MMACTION2, starts=[0.0])
    assert picked([clip]) == [list(range(0, 64, 2))]
    (clip,) = sample_clips(data, MMACTION2, starts=[10 / 25])  # frame 10's time
    assert picked([clip]) == [list(range(10, 74, 2))]
    (clip,) = sample_clips(data, MMACTION2, starts=[60 / 25])  # past the last frame: wraps to the start ('loop')
    assert picked([clip]) == [[(60 + 2 * k) % 100 for k in range(32)]]


def test_mmaction2_views_place_clips_by_frame_count() -> None:
    data = encode(coloured_frames(150), fps=30)
    clips = sample_clips(data, MMACTION2, spread=10)
    assert [c[0] for c in picked(clips)] == mmaction2_offsets(150, MMACTION2, 10)
    assert all(c == list(range(c[0], c[0] + 64, 2)) for c in picked(clips))


def test_paddlevideo_indexes_by_frame_rate() -> None:
    data = encode(coloured_frames(120), fps=24)
    (clip,) = sample_clips(data, PADDLEVIDEO, starts=[0.0])
    assert picked([clip]) == [paddlevideo_indices(0, PADDLEVIDEO, 24.0, 120)]  # 32 of 51.2 frames
    clips = sample_clips(data, PADDLEVIDEO, spread=10)
    assert picked(clips) == [
        paddlevideo_indices(paddlevideo_start(120, PADDLEVIDEO, 24.0, k, 10), PADDLEVIDEO, 24.0, 120) for k in range(10)
    ]
    short = encode(coloured_frames(30), fps=30)  # shorter than a clip: the last frame is repeated
    (clip,) = sample_clips(short, PADDLEVIDEO, starts=[0.0])
    assert picked([clip])[0][-1] == 29


def test_decode_order_versus_timestamp_order(ffmpeg: str) -> None:
    # H.264 with B-frames in AVI: the decoder puts out the pictures in display order, but their timestamps come out
    # shuffled (1, 3, 2, 5, 4, ...). MMAction2 and PaddleVideo (decord) count frames as the decoder puts them out;
    # PySlowFast (and PyTorchVideo) sort them by timestamp.
    data = ffmpeg_encode(
        ffmpeg, coloured_frames(90), 30, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "3", "-f", "avi"
    )
    (mm,) = sample_clips(data, MMACTION2, starts=[0.0])
    assert picked([mm]) == [list(range(0, 64, 2))]
    (sf,) = sample_clips(data, PYSLOWFAST, starts=[0.0])
    assert picked([sf]) != [pyslowfast_pick(PYSLOWFAST, 30.0)(90).tolist()]  # the timestamp order differs here


def test_mmaction2_refuses_indices_that_do_not_decode(ffmpeg: str, tmp_path) -> None:
    # An mp4 cut without re-encoding starts with an edit list: its packets (the count MMAction2 places clips by)
    # include frames before the cut that never come out of the decoder.
    source = tmp_path / "long-gop.mp4"
    source.write_bytes(ffmpeg_encode(ffmpeg, coloured_frames(150), 30, "-c:v", "libx264", "-g", "300", "-f", "mp4"))
    cut = tmp_path / "cut.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-ss", "1", "-i", str(source), "-c", "copy", str(cut)], check=True)
    data = cut.read_bytes()
    total = count_packets(data)
    with av.open(str(cut)) as container:
        decodable = sum(1 for _ in container.decode(video=0))
    assert total > decodable
    with pytest.raises(RequestError) as error:
        sample_clips(data, MMACTION2, spread=10)
    assert (error.value.status, error.value.type) == (422, "FrameCountMismatch")
    assert f"lists {total} frames but {decodable} decode" in error.value.message
    sample_clips(data, MMACTION2, starts=[0.0])  # a single clip inside the decodable frames is fine


def test_pyslowfast_views_without_a_declared_duration_or_frame_count(ffmpeg: str) -> None:
    frames = coloured_frames(120)
    webm = encode(frames, fps=30, container="webm", codec="libvpx-vp9")  # no stream duration: decode it all
    assert stream_timing(webm).duration is None
    clips = sample_clips(webm, PYSLOWFAST, spread=10)
    assert [c[0] for c in picked(clips)] == [pyslowfast_pick(PYSLOWFAST, 30.0, k, 10)(120)[0] for k in range(10)]
    ts = ffmpeg_encode(ffmpeg, frames, 30, "-c:v", "mpeg2video", "-q:v", "2", "-f", "mpegts")
    with pytest.raises(RequestError) as error:  # a duration but no frame count: PySlowFast divides by zero
        sample_clips(ts, PYSLOWFAST, spread=10)
    assert (error.value.status, error.value.type) == (422, "UnsupportedByRecipe")
    assert len(sample_clips(ts, PYSLOWFAST, starts=[0.5])[0].frames) == 32  # a single clip needs no count


def test_toolbox_views_cover_the_whole_video() -> None:
    with pytest.raises(RequestError) as error:
        sample_clips(encode(coloured_frames(100), fps=25), MMACTION2, spread=10, start_sec=1.0)
    assert error.value.status == 400
    assert "whole video" in error.value.message
