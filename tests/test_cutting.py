"""Cutting a video into parts at key frames (slowfast_serve.client.cutting, .parts): every timeline window of a
part, decoded with ``origin_pts``, holds exactly the frames it holds in the whole file, in each container the
client cuts; AVI, which does not keep timestamps, is refused; how parts are sized from the service's refusals;
the ``--output`` file and its resumption."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from handler.decode import iter_clips
from slowfast_serve.client.cutting import cut, index_source
from slowfast_serve.client.errors import ServiceError
from slowfast_serve.client.part_limits import Caps
from slowfast_serve.client.parts import Grid, plan_part
from slowfast_serve.client.timeline_output import TimelineOutput, meta_path

FFMPEG = shutil.which("ffmpeg")
# x264 with B-frames and a key frame every 12 frames; VP9; the same H.264 in Matroska and MPEG-TS (which start
# their timestamps past 0). 25 fps, 6 s of moving noise (every frame differs).
CONTAINERS = {
    "mp4": ["-c:v", "libx264", "-g", "12", "-bf", "2"],
    "webm": ["-c:v", "libvpx-vp9", "-g", "15", "-deadline", "realtime", "-cpu-used", "8"],
    "mkv": ["-c:v", "libx264", "-g", "10"],
    "ts": ["-c:v", "libx264", "-g", "20", "-bf", "3"],
}


def _video(directory: Path, suffix: str, arguments: list[str]) -> Path:
    if FFMPEG is None:
        pytest.fail("Debian's ffmpeg is missing (scripts/install.sh --dev installs it)")
    path = directory / f"source.{suffix}"
    source = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25,noise=alls=40:allf=t", "-t", "6"]
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", *source, *arguments, str(path)], check=True)
    return path


def _all_frames(n: int) -> torch.Tensor:
    return torch.arange(n)


# A classifier's windows start on the grid; a detector's keyframe clips are centred on it.
GRIDS = {
    "windows": Grid(start_sec=0.3, stride_sec=0.7, before_sec=0.0, after_sec=1.0, count=7),
    "keyframes": Grid(start_sec=0.8, stride_sec=0.7, before_sec=0.5, after_sec=0.5, count=7),
}


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS)
@pytest.mark.parametrize("suffix", CONTAINERS)
def test_each_window_of_a_part_holds_the_frames_it_holds_in_the_whole_video(
    suffix: str, grid: Grid, tmp_path: Path
) -> None:
    path = _video(tmp_path, suffix, CONTAINERS[suffix])
    index = index_source(path)
    assert len(index.key_pts) > 3

    def windows(first: int, count: int) -> list[tuple[float, float]]:
        return [(t - grid.before_sec, t + grid.after_sec) for t in grid.starts(first, count)]

    whole = list(iter_clips(path.read_bytes(), windows(0, grid.count), num_samples=1, select=_all_frames))
    first, parts = 0, 0
    while first < grid.count:
        part = plan_part(index, grid, Caps(bytes=10**9, windows=2), first, grid.count)
        data = cut(index, part.key_first, part.key_end)
        assert len(data) < path.stat().st_size
        clips = iter_clips(
            data,
            windows(part.first, part.end - part.first),
            num_samples=1,
            select=_all_frames,
            origin_pts=index.start_pts,
        )
        for k, clip in zip(range(part.first, part.end), clips, strict=True):
            assert clip.source_frames == whole[k].source_frames > 20
            assert all(torch.equal(a, b) for a, b in zip(clip.frames, whole[k].frames, strict=True)), k
        first, parts = part.end, parts + 1
    assert parts == 4


def test_a_container_that_does_not_keep_timestamps_is_refused(tmp_path: Path) -> None:
    path = _video(tmp_path, "avi", ["-c:v", "mpeg4", "-g", "25"])
    index = index_source(path)
    with pytest.raises(ServiceError) as refused:
        cut(index, 2, 3)
    assert refused.value.type == "CannotCut"
    assert "ffmpeg -i in.avi -c copy out.mkv" in refused.value.message


def test_a_file_that_is_no_video_fails_the_services_own_checks_before_sending(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(ServiceError) as refused:
        index_source(text)
    assert (refused.value.status, refused.value.type) == (None, "InvalidVideo")
    assert "checked here, before sending" in refused.value.message


@pytest.mark.parametrize(
    ("body", "windows", "learned", "caps"),
    [
        ({"code": 413, "limit": {"name": "max_timeline_windows", "value": 120}}, 300, True, (100, 120, None)),
        ({"code": 413, "limit": {"name": "max_decoded_frames", "value": 3000}}, 50, True, (100, None, 2700)),
        ({"code": 413, "limit": {"name": "max_decode_seconds", "value": 20}}, 50, True, (100, 25, None)),
        ({"type": "NonJsonResponse", "message": ""}, 50, True, (40, None, None)),  # TorchServe's bare 413
        ({"code": 413, "type": "RequestTooLarge", "message": "..."}, 50, False, (100, None, None)),
        ({"code": 413, "limit": {"name": "max_timeline_windows", "value": 120}}, 1, False, (100, None, None)),
    ],
)
def test_parts_shrink_to_the_limit_a_413_names(body: dict, windows: int, learned: bool, caps: tuple) -> None:
    found = Caps(bytes=100)
    assert found.learn(413, body, windows, part_bytes=80) is learned
    assert (found.bytes, found.windows, found.frames) == caps


def test_over_the_frames_again_halves_the_parts() -> None:
    caps = Caps(bytes=100, frames=2700)
    assert caps.learn(413, {"code": 413, "limit": {"name": "max_decoded_frames", "value": 3000}}, 40, 50)
    assert (caps.windows, caps.frames) == (20, 2700)


SEGMENTS = [
    {
        "start_sec": round(0.7 * k, 3),
        "end_sec": round(0.7 * k + 3.2, 3),
        "predictions": [
            {"label": "moving left", "class_id": 2, "score": 1 / (k + 3)},
            {"label": "moving, right", "class_id": 3, "score": 0.1 + 1e-17 * k},
        ],
    }
    for k in range(5)
]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_the_output_reads_back_exactly_and_a_rerun_resumes_it(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"timeline{suffix}"
    settings = {"video": "a.mp4", "stride_sec": 0.7}
    output = TimelineOutput(path, settings)
    output.set_service({"model": "motion_demo"})
    output.append(SEGMENTS[:2])
    output.append(SEGMENTS[2:])
    assert TimelineOutput(path, settings).segments == SEGMENTS
    assert TimelineOutput(path, settings).service == {"model": "motion_demo"}

    with path.open("a") as file:
        file.write('{"window": 5, "start_s' if suffix == ".jsonl" else "5,3.5,6.7,mov")  # a crash mid-line
    resumed = TimelineOutput(path, settings)
    assert resumed.segments == SEGMENTS
    resumed.append(SEGMENTS[:1])
    assert len(TimelineOutput(path, settings).segments) == 6


def test_an_output_made_otherwise_is_not_mixed_in(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    TimelineOutput(path, {"stride_sec": 0.7}).append(SEGMENTS)
    with pytest.raises(ServiceError) as refused:
        TimelineOutput(path, {"stride_sec": 1.0})
    assert refused.value.type == "OutputMismatch"
    assert "stride_sec: 0.7 then, 1.0 now" in refused.value.message
    meta_path(path).unlink()
    with pytest.raises(ServiceError, match="has no timeline.jsonl.meta.json"):
        TimelineOutput(path, {"stride_sec": 0.7})
    with pytest.raises(ServiceError, match="must end in .jsonl or .csv"):
        TimelineOutput(tmp_path / "timeline.json", {})
