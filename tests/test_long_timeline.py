"""A timeline of a 20-minute video through a real TorchServe with its default limits: `slowfast-serve timeline`
cuts it into parts, and the merged timeline equals, window for window, one request to the same model served with
limits high enough to take the whole video; the --output file is written as windows come and a rerun resumes it
(through the Python client, with a part that fails once and is retried); a file over TorchServe's upload limit
is cut by what the bare 413 says, into parts that give the same timeline as parts the client sized itself."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.long_timeline import demo_and_whole
from slowfast_serve.client import Client, ServiceUnreachableError
from slowfast_serve.load.videos import long_recording
from slowfast_serve.server.torchserve import TorchServe
from tests.serving import CLI, running_torchserve

pytestmark = pytest.mark.integration

MINUTES = 20
UPLOAD_LIMIT = 8 * 2**20  # max_request_size of this module's TorchServe: the 20-minute mp4 (128x96) fits


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-minute H.264 mp4 (128x96, 25 fps): a minute of edited motions played 20 times."""
    return long_recording(tmp_path_factory.mktemp("long") / "long.mp4", MINUTES)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """``motion_demo`` with the default limits, and ``motion_whole``: the same model and weights with limits that
    take the whole video in one request (the reference)."""
    demo, whole = demo_and_whole(tmp_path_factory.mktemp("long-store"))
    overrides = {"max_request_size": str(UPLOAD_LIMIT)}
    with running_torchserve([demo, whole], tmp_path_factory.mktemp("long-ts"), overrides) as instance:
        yield instance


@pytest.fixture(scope="module")
def reference(server: TorchServe, long_video: Path) -> dict[str, Any]:
    """One request for the whole video's timeline (3 classes per window, as the command asks)."""
    with Client.from_key_file(server.inference_url, server.key_file, model="motion_whole", timeout=900) as client:
        status, body = client.send(long_video, mode="timeline", top_k=3)
    assert status == 200, body
    assert len(body["timeline"]["segments"]) > 120  # over the default max_timeline_windows
    return body["timeline"]


def _assert_same_timeline(merged: dict[str, Any], reference: dict[str, Any]) -> None:
    assert merged["stride_sec"] == reference["stride_sec"]
    assert len(merged["segments"]) == len(reference["segments"])
    for ours, theirs in zip(merged["segments"], reference["segments"], strict=True):
        assert (ours["start_sec"], ours["end_sec"]) == (theirs["start_sec"], theirs["end_sec"])
        assert [p["class_id"] for p in ours["predictions"]] == [p["class_id"] for p in theirs["predictions"]]
        for mine, yours in zip(ours["predictions"], theirs["predictions"], strict=True):
            assert mine["score"] == pytest.approx(yours["score"], abs=1e-6)
    runs = [(i["label"], i["start_sec"], i["end_sec"]) for i in merged["intervals"]]
    assert runs == [(i["label"], i["start_sec"], i["end_sec"]) for i in reference["intervals"]]


def _cli(server: TorchServe, video: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [CLI, "timeline", str(video), "--model", "motion_demo", "--url", server.inference_url]
    return subprocess.run(
        [*command, "--key-file", str(server.key_file), "--json", *extra], capture_output=True, text=True
    )


def test_a_20_minute_video_in_parts_gives_the_timeline_of_one_unlimited_request(
    server: TorchServe, long_video: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    output = tmp_path / "timeline.csv"
    result = _cli(server, long_video, "--output", str(output), "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    _assert_same_timeline(answer["timeline"], reference)
    windows = len(reference["segments"])
    assert answer["parts"]["count"] >= windows / 120 + 1  # window 0 alone, then parts of at most 120 windows
    assert answer["parts"]["resized"] >= 1  # the whole file was refused first, naming the limit
    assert answer["video"]["duration_sec"] >= MINUTES * 60 - 30
    assert answer["timeline"]["events"]  # smoothed, as for one request
    assert f"{windows}/{windows} windows" in result.stderr  # the progress bar

    with output.open() as file:
        rows = list(csv.DictReader(file))
    assert [float(row["start_sec"]) for row in rows] == [s["start_sec"] for s in reference["segments"]]
    assert [row["label_1"] for row in rows] == [s["predictions"][0]["label"] for s in reference["segments"]]

    # An interrupted run: the first 150 windows and half a line. A rerun from Python resumes it, and a part that
    # gets no answer is sent again.
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:151]) + lines[151][:9])
    client = Client.from_key_file(server.inference_url, server.key_file, model="motion_demo", timeout=300)
    send, failed = client.send, []

    def flaky(video: object, **options: object) -> tuple[int, dict]:
        if options.get("first_window") == 150 and not failed:
            failed.append(options)
            raise ServiceUnreachableError(client.url, "ConnectionResetError")
        return send(video, **options)

    client.send = flaky  # type: ignore[method-assign]
    resumed = client.timeline(long_video, top_k=3, output=output)
    assert failed
    assert resumed.body["parts"]["resumed_windows"] == 150
    assert resumed.body["parts"]["retries"] == 1
    _assert_same_timeline(resumed.body["timeline"], reference)
    assert resumed.predictions == ()  # parts return no whole-video average
    assert len(output.read_text().splitlines()) == windows + 1  # the header and every window once

    changed = _cli(server, long_video, "--output", str(output), "--stride-sec", "2")
    assert changed.returncode == 1
    assert "OutputMismatch" in changed.stderr
    assert "stride_sec: None then, 2.0 now" in changed.stderr


def test_a_file_over_the_upload_limit_is_cut_by_what_the_bare_413_says(server: TorchServe, tmp_path: Path) -> None:
    video = long_recording(tmp_path / "large.mp4", 3, size=(480, 360))
    assert video.stat().st_size > UPLOAD_LIMIT
    told = _cli(server, video, "--concurrency", "3")  # sent whole first: TorchServe's bare 413 sizes the parts
    assert told.returncode == 0, told.stderr
    answer = json.loads(told.stdout)
    assert answer["parts"]["resized"] >= 1
    sized = _cli(server, video, "--part-mb", "2")  # parts the client sizes itself from the start: no refusal
    assert sized.returncode == 0, sized.stderr
    small = json.loads(sized.stdout)
    assert small["parts"]["resized"] == 0
    assert small["parts"]["count"] > answer["parts"]["count"]
    _assert_same_timeline(answer["timeline"], small["timeline"])
