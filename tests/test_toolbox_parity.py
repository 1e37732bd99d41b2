"""Whole requests through a real TorchServe against each toolbox's OWN test pipeline.

For one entry per toolbox, the toolbox's own code (in its reference environment, tests/toolboxes/) builds its
model, randomises it and saves it in its native format with its own save function; that file, as written, is
archived by slowfast-serve archive (recognised and converted there) and served. Each upload is then answered
by the server and by the toolbox's own test pipeline: its decoder (decord for MMAction2 and PaddleVideo, its PyAV
decoder for PySlowFast), its sampler, its resize (OpenCV / Pillow / torch), crops, normalisation, its model and
its view fusion. Required: the same top-5 class ids and every score within 1e-4.

What remains different, and why it stays far below 1e-4: float32 rounding order only. PySlowFast normalises
before it resizes (the service after: bilinear weights sum to one, so the two agree up to rounding, a few 1e-7
on the inputs); PaddleVideo and MMAction2 resize in uint8 with the same libraries (the same pixels) and
normalise in float32 as the service does; the networks agree to about 1e-6 relative in float32, PaddleVideo with its
own kernels to a few 1e-5 (tests/test_toolbox_models.py).
PaddleVideo and PySlowFast sum their views' probabilities; the service returns the mean, so their sum is divided
by the number of views before comparing.

Videos: several frame rates (24, 25, 30, 60), sizes (landscape and portrait, up- and down-scaled), containers and
codecs, among them H.264 with B-frames in AVI, whose timestamps come out of the decoder shuffled (MMAction2 and
PaddleVideo index frames in decoder output order, PySlowFast sorts them by timestamp), and a WebM that declares
no frame count or stream duration (PySlowFast then decodes the whole video and places its clips by index).

The 10 x 3 protocol costs 30 forwards per side; by default it runs on one video for one entry per toolbox. The
rest of the matrix (every toolbox entry, every video, single view and 10 x 3) is marked ``toolbox_matrix`` and runs
only when asked for: ``pytest -m toolbox_matrix tests/test_toolbox_parity.py`` (docs/testing.md).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from handler.models import get_spec
from handler.pipeline import InferenceOptions
from tests.conftest import ToolboxCheckpoints
from tests.toolboxes.reference import CONFIGS, run_reference
from tests.videos import moving_frames

pytestmark = [pytest.mark.integration, pytest.mark.reference]

ENTRIES = [entry for entries in CONFIGS.values() for entry in entries]
# What every `make test` runs; the rest of the matrix carries the opt-in marker `toolbox_matrix` (tests/conftest.py
# leaves such cases out unless `-m` names it).
DEFAULT_ENTRIES = ("mmaction2_slowfast_r50_4x16", "paddlevideo_slowfast_8x8", "pyslowfast_slowfast_4x16_r50")
DEFAULT_MULTI_VIEW_VIDEO = "h264-25fps"
TOLERANCE = 1e-4

# name -> (frames, height, width, fps, ffmpeg output arguments, file suffix)
VIDEOS = {
    "h264-25fps": (100, 240, 320, 25, ["-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p"], "mp4"),
    "vp9-portrait-24fps": (80, 352, 240, 24, ["-c:v", "libvpx-vp9", "-b:v", "400k", "-pix_fmt", "yuv420p"], "webm"),
    "h264-bframes-avi-30fps": (90, 300, 400, 30, ["-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p"], "avi"),
    "mpeg4-60fps": (150, 288, 352, 60, ["-c:v", "mpeg4", "-q:v", "3"], "mp4"),
}


def cases(multi_view: bool) -> list:
    """``(entry, video_name)`` for every entry and video; those beyond the default run are marked
    ``toolbox_matrix``."""
    params = []
    for entry in ENTRIES:
        for video in VIDEOS:
            default = entry in DEFAULT_ENTRIES and (not multi_view or video == DEFAULT_MULTI_VIEW_VIDEO)
            params.append(pytest.param(entry, video, marks=() if default else pytest.mark.toolbox_matrix))
    return params


def toolbox_of(entry: str) -> str:
    return entry.split("_", 1)[0]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("these tests write videos with ffmpeg: apt-get install ffmpeg (scripts/install.sh --dev does)")
    directory = tmp_path_factory.mktemp("toolbox-videos")
    paths = {}
    for seed, (name, (count, height, width, fps, args, suffix)) in enumerate(VIDEOS.items()):
        frames = moving_frames(count, height, width, seed=seed)
        path = directory / f"{name}.{suffix}"
        command = [ffmpeg, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
        subprocess.run([*command, "-r", str(fps), "-i", "-", *args, str(path)], input=frames.tobytes(), check=True)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def native_checkpoints(toolbox_checkpoint: ToolboxCheckpoints, request: pytest.FixtureRequest) -> dict[str, Path]:
    """Each entry this run tests: its randomised model, saved by its toolbox's own code in the toolbox's native format
    (the session's files, shared with tests/test_toolbox_models.py)."""
    module = request.node.path
    selected = {item.callspec.params["entry"] for item in request.session.items if item.path == module}
    return {entry: toolbox_checkpoint(entry) for entry in ENTRIES if entry in selected}


@pytest.fixture(scope="module")
def server(native_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real TorchServe serving each entry from the toolbox's own file, as written (converted at build time), with
    the eager engine: the default CPU engine, OpenVINO, is checked against eager when each archive is built (an
    archive that fails the check serves eager) and in tests/test_openvino.py; exporting these three full-size
    networks here took about 150 s."""
    from slowfast_serve.server.archive import ServingConfig, build_archive
    from tests.serving import running_torchserve

    store = tmp_path_factory.mktemp("toolbox-store")
    serving = ServingConfig(batch_size=1, response_timeout_s=900)
    eager = InferenceOptions(export="eager")
    mars = [
        build_archive(name, path, model_store=store, serving=serving, inference=eager)
        for name, path in native_checkpoints.items()
    ]
    with running_torchserve(mars, tmp_path_factory.mktemp("ts")) as instance:
        yield instance


@pytest.fixture(scope="module")
def reference(native_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """``reference(entry, video, clips, crops, view)``: the toolbox's own pipeline's answer (cached; a single view of
    a video whose whole protocol already ran is taken from that run instead of running again)."""
    directory = tmp_path_factory.mktemp("toolbox-answers")
    cache: dict[tuple, dict] = {}

    def run(entry: str, video: Path, clips: int, crops: int, view: tuple[int, int] | None = None) -> dict:
        whole = cache.get((entry, video, clips, crops, None))
        if view is not None and whole is not None:
            views = [v for v in whole["views"] if (v["temporal"], v["spatial"]) == view]
            return {**whole, "views": views}
        key = (entry, video, clips, crops, view)
        if key not in cache:
            args = {"config": entry, "checkpoint": native_checkpoints[entry], "video": video, "clips": clips}
            args |= {"crops": crops, "view": view, "out": directory / f"{len(cache)}.json"}
            cache[key] = run_reference(toolbox_of(entry), "pipeline", args, timeout=1800)
        return cache[key]

    return run


def served(server, entry: str, video: Path, **fields: str) -> dict:
    from tests.serving import post_video

    response = post_video(server, entry, files={"data": video.read_bytes()}, data={"top_k": "5", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_top5(answer: dict, probabilities: np.ndarray) -> None:
    """The service's top 5 against the toolbox's probabilities: same ids in the same order, scores within 1e-4."""
    ids = np.argsort(-probabilities, kind="stable")[:5].tolist()
    got = [p["class_id"] for p in answer["predictions"]]
    scores = [p["score"] for p in answer["predictions"]]
    assert got == ids, f"top-5 {got} != toolbox's {ids} (toolbox scores {probabilities[ids].tolist()}, ours {scores})"
    np.testing.assert_allclose(scores, probabilities[ids], atol=TOLERANCE, rtol=0)
    assert probabilities[ids[0]] - probabilities[ids[4]] > 10 * TOLERANCE, "scores too flat for a meaningful check"


def decode_order_seconds(video: Path) -> list[float]:
    """Each frame's time in decoder output order (the order MMAction2's and PaddleVideo's indices count in)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        return [float((frame.pts - start) * stream.time_base) for frame in container.decode(video=0)]


def single_view_start(entry: str, video: Path, view: dict) -> float | None:
    """The start_sec whose single view is the toolbox's temporal view ``view``, or ``None`` when no start time
    selects exactly those frames (a fractional start index; a frame that decodes after a later-timed one)."""
    indices = view["frame_indices"]
    times = decode_order_seconds(video)
    sampler = get_spec(entry).clip.recipe.sampler
    if sampler == "frame_interval":  # every frame_interval-th frame from the first one
        first = indices[0]
        return times[first] - 1e-6 if all(t < times[first] for t in times[:first]) else None
    # PaddleVideo's and PySlowFast's linspace from a fractional start: only a clip at the start is exact.
    return 0.0 if view["temporal"] == 0 else None


CENTRE = {"mmaction2": 2, "paddlevideo": 1, "pyslowfast": 1}  # the middle crop in each toolbox's crop order


@pytest.mark.parametrize(("entry", "video_name"), cases(multi_view=True))
def test_10x3_equals_the_toolbox_protocol(entry: str, video_name: str, server, reference, videos) -> None:
    video = videos[video_name]
    theirs = reference(entry, video, 10, 3)
    fused = np.asarray(theirs["fused"])
    if theirs["fusion"] == "sum":  # PaddleVideo's MultiCropMetric, PySlowFast's TestMeter: served as the mean
        fused = fused / len(theirs["views"])
    assert len(theirs["views"]) == 30
    ours = served(server, entry, video, views="10x3")
    assert ours["views"]["clips"] == 10
    assert ours["views"]["crops"] == 3
    assert_same_top5(ours, fused)


# After the 10 x 3 runs: a single view of their video comes from the same reference run.
@pytest.mark.parametrize(("entry", "video_name"), cases(multi_view=False))
def test_single_view_equals_the_toolbox(entry: str, video_name: str, server, reference, videos) -> None:
    video = videos[video_name]
    # MMAction2: a clip inside the video (start_sec > 0) and, where that start cannot be expressed as a time, the
    # first one; the linspace samplers: the first clip (their other clips start at fractional frame indices).
    candidates = (4, 0) if toolbox_of(entry) == "mmaction2" else (0,)
    checked = 0
    for t in candidates:
        if checked and video_name != DEFAULT_MULTI_VIEW_VIDEO:
            break  # one reference run per video beyond the 10 x 3 one
        theirs = reference(entry, video, 10, 3, (t, CENTRE[toolbox_of(entry)]))
        (view,) = theirs["views"]
        start = single_view_start(entry, video, view)
        if start is None:
            continue
        ours = served(server, entry, video, start_sec=repr(max(start, 0.0)), views="1x1")
        assert_same_top5(ours, np.asarray(view["probabilities"]))
        checked += 1
    assert checked, "no single view of this video is expressible as a start_sec"
