"""Real-world formats: containers, codecs, pixel formats, odd geometry, timing quirks and phone rotation, made
with Debian's ffmpeg and checked against ffmpeg's own decode of the same file.

ffmpeg (``apt-get install ffmpeg``; ``scripts/install.sh --dev`` installs it) writes each file from its
``testsrc2`` pattern; the pipeline must decode it and its first clip frame must match the first frame that the
ffmpeg command line decodes, rotation applied (ffmpeg auto-rotates), pixel for pixel up to colour-conversion
rounding.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from handler.container import probe
from handler.decode import decode_clip
from handler.decode_indexed import count_packets

FFMPEG = shutil.which("ffmpeg")
CLIP_SEC = 64 / 30
WIDTH, HEIGHT = 176, 100


@dataclass(frozen=True)
class Format:
    """One ffmpeg output: encoder and muxer arguments, file suffix, expected decoder name and display size."""

    args: str
    suffix: str
    codec: str
    size: tuple[int, int] = (WIDTH, HEIGHT)  # coded size, width x height
    rotation: int = 0  # expected: degrees the frames are turned to be upright
    source: str = ""  # extra input arguments before the video input (e.g. an audio source)
    remux: str = ""  # arguments of a second pass that copies the stream (e.g. to set display metadata)
    tolerance: float = 1.5  # mean |difference| to ffmpeg's RGB allowed (colour conversion rounding)

    @property
    def display(self) -> tuple[int, int]:
        """(height, width) of upright frames."""
        width, height = self.size
        return (width, height) if self.rotation in (90, 270) else (height, width)


H264 = "-c:v libx264 -preset ultrafast -pix_fmt yuv420p"
H264_444 = "-c:v libx264 -preset ultrafast -pix_fmt yuv444p"
FORMATS: dict[str, Format] = {
    "mp4 h264 index last": Format(H264, "mp4", "h264"),
    "mp4 h264 faststart": Format(f"{H264} -movflags +faststart", "mp4", "h264"),
    "mp4 h264 b-frames": Format("-c:v libx264 -pix_fmt yuv420p -bf 3 -g 12", "mp4", "h264"),
    "mkv h264 4:4:4": Format(H264_444, "mkv", "h264"),
    "mp4 h264 10-bit": Format("-c:v libx264 -preset ultrafast -pix_fmt yuv420p10le", "mp4", "h264", tolerance=4),
    # Field-coded chroma: ffmpeg's command line converts it to RGB slightly differently (same picture).
    "mkv h264 interlaced": Format(
        "-c:v libx264 -pix_fmt yuv420p -flags +ilme+ildct -x264-params tff=1", "mkv", "h264", tolerance=5
    ),
    "mp4 hevc": Format("-c:v libx265 -preset ultrafast -x265-params log-level=error -tag:v hvc1", "mp4", "hevc"),
    "webm vp8": Format("-c:v libvpx -deadline realtime -cpu-used 8", "webm", "vp8"),
    "webm vp9": Format("-c:v libvpx-vp9 -deadline realtime -cpu-used 8", "webm", "vp9"),
    "mp4 av1": Format("-c:v libsvtav1 -preset 12 -pix_fmt yuv420p", "mp4", "libdav1d"),
    "avi mpeg4": Format("-c:v mpeg4 -q:v 3", "avi", "mpeg4"),
    "avi mjpeg": Format("-c:v mjpeg -q:v 3 -pix_fmt yuvj420p", "avi", "mjpeg"),
    "mov prores": Format("-c:v prores_ks -profile:v 0", "mov", "prores"),
    "mkv ffv1": Format("-c:v ffv1", "mkv", "ffv1"),
    "mkv grayscale": Format("-c:v ffv1 -pix_fmt gray", "mkv", "ffv1"),
    "ts h264": Format(H264, "ts", "h264"),
    "flv h264": Format(H264, "flv", "h264"),
    "ogv theora": Format("-c:v libtheora -q:v 7", "ogv", "theora"),
    "gif": Format("", "gif", "gif"),
    "odd size": Format(f"-vf scale=175:99 {H264_444}", "mp4", "h264", size=(175, 99)),
    "portrait": Format(H264, "mp4", "h264", size=(100, 176)),
    "non-square pixels": Format(f"{H264} -vf setsar=4/3", "mkv", "h264"),
    "variable frame rate": Format(f"{H264} -vf select='lt(mod(n\\,4)\\,3)' -fps_mode vfr", "mkv", "h264"),
    "stream starts at 10 s": Format(f"{H264} -output_ts_offset 10", "mkv", "h264"),
    "audio stream first": Format(
        f"-map 0:a -map 1:v {H264} -c:a aac", "mp4", "h264", source="-f lavfi -i sine=frequency=440:duration=3"
    ),
    "phone rotated 90": Format(H264, "mp4", "h264", rotation=90, remux="-metadata:s:v:0 rotate=90"),
    "phone rotated 270": Format(H264, "mov", "h264", rotation=270, remux="-metadata:s:v:0 rotate=270"),
    "portrait phone": Format(H264, "mp4", "h264", size=(100, 176), rotation=90, remux="-metadata:s:v:0 rotate=90"),
}


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    if FFMPEG is None:
        pytest.fail("ffmpeg is needed for the format matrix: apt-get install ffmpeg (scripts/install.sh --dev does)")
    return FFMPEG


@pytest.fixture(scope="session")
def format_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("formats")


def _run(command: list[str]) -> bytes:
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout


def _make(ffmpeg: str, directory: Path, name: str, spec: Format) -> Path:
    path = directory / f"{name.replace(' ', '_').replace(':', '')}.{spec.suffix}"
    if not path.exists():
        width, height = spec.size
        pattern = f"testsrc2=size={width + width % 2}x{height + height % 2}:rate=30:duration=3"  # even sizes only
        command = [ffmpeg, "-v", "error", "-y", *spec.source.split(), "-f", "lavfi", "-i", pattern]
        encoded = path.with_suffix(f".encoded.{spec.suffix}") if spec.remux else path
        _run([*command, *spec.args.split(), str(encoded)])
        if spec.remux:
            _run([ffmpeg, "-v", "error", "-y", "-i", str(encoded), "-c", "copy", *spec.remux.split(), str(path)])
    return path


def _ffmpeg_first_frame(ffmpeg: str, path: Path, shape: tuple[int, int]) -> np.ndarray:
    raw = _run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0", "-frames:v", "1", "-fps_mode", "passthrough",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])  # fmt: skip
    assert len(raw) == shape[0] * shape[1] * 3, f"ffmpeg decoded {len(raw)} bytes, expected {shape}"
    return np.frombuffer(raw, np.uint8).reshape(*shape, 3)


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_decodes_like_ffmpeg(ffmpeg: str, format_dir: Path, name: str) -> None:
    spec = FORMATS[name]
    path = _make(ffmpeg, format_dir, name, spec)
    data = path.read_bytes()
    info = probe(data)
    assert info.codec == spec.codec
    clip = decode_clip(data, start_sec=0.0, end_sec=CLIP_SEC, num_samples=32)
    assert clip.rotation == spec.rotation
    assert tuple(clip.frames[0].shape[:2]) == spec.display
    # 64 frames at 30 fps; 65 where millisecond timestamps round 2.1333 s down into the window (as get_clip);
    # fewer for the VFR file (every 4th frame dropped); the GIF runs at 33.3 fps (centisecond delays).
    assert 48 <= clip.source_frames <= 72, clip
    expected = _ffmpeg_first_frame(ffmpeg, path, spec.display).astype(np.int16)
    difference = np.abs(clip.frames[0].numpy().astype(np.int16) - expected)
    assert difference.mean() < spec.tolerance, f"mean |difference| {difference.mean():.2f} against ffmpeg's decode"


def test_a_late_clip_in_a_stream_that_starts_at_10_s(ffmpeg: str, format_dir: Path) -> None:
    # start_sec counts from the stream's first timestamp, as get_clip does: 0.5 s means 10.5 s in the file.
    path = _make(ffmpeg, format_dir, "stream starts at 10 s", FORMATS["stream starts at 10 s"])
    clip = decode_clip(path.read_bytes(), start_sec=0.5, end_sec=0.5 + CLIP_SEC, num_samples=32)
    assert clip.source_frames in (64, 65)
    assert clip.info.duration_sec == pytest.approx(13.0, abs=0.1)


def test_theora_with_unchanged_frames_decodes(ffmpeg: str, tmp_path: Path) -> None:
    """libtheora writes a still frame as an empty packet; decoding must go on past it (ffmpeg skips it too)."""
    path = tmp_path / "still-then-moving.ogv"
    _run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:size=64x48:rate=30:duration=1",
          "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=2", "-filter_complex",
          "[0:v]format=yuv420p[a];[1:v]format=yuv420p[b];[a][b]concat=n=2:v=1[v]", "-map", "[v]",
          "-c:v", "libtheora", "-q:v", "5", str(path)])  # fmt: skip
    data = path.read_bytes()
    frames = count_packets(data)  # the non-empty packets: what ffmpeg decodes too
    assert 10 < frames < 60  # fewer than the 90 shown: the red second is mostly empty packets
    whole = decode_clip(data, start_sec=0.0, end_sec=3.0, num_samples=8)
    assert whole.source_frames == frames  # every frame after the first empty packet decodes too
    expected = _ffmpeg_first_frame(ffmpeg, path, (48, 64)).astype(np.int16)
    first = decode_clip(data, start_sec=0.0, end_sec=CLIP_SEC, num_samples=8).frames[0].numpy().astype(np.int16)
    assert np.abs(first - expected).mean() < 1.5
