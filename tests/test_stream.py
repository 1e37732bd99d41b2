"""slowfast-serve stream with a recorded stream standing in for a camera, against the demo server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import pytest

from slowfast_serve.server.torchserve import TorchServe
from tests.serving import CLI
from tests.test_pipeline import _there_and_back

pytestmark = pytest.mark.integration


def test_a_recorded_stream_is_answered_every_second(demo_server: TorchServe, tmp_path: Path) -> None:
    source, labelled = tmp_path / "camera.mp4", tmp_path / "labelled.mp4"
    data, duration = _there_and_back()
    source.write_bytes(data)
    command = [CLI, "stream", str(source), "--model", "motion_demo"]
    command += ["--url", demo_server.inference_url, "--key-file", str(demo_server.key_file)]
    command += ["--every", "1", "--json", "--output", str(labelled)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    times = [a["stream_sec"] for a in answers]
    assert times[0] >= 64 / 30  # the first answer waits for a full window
    assert all(0.9 < b - a < 1.2 for a, b in zip(times, times[1:], strict=False))
    assert len(answers) == int(duration - 64 / 30) + 1
    assert answers[0]["predictions"][0]["label"] == "moving left"  # the window covers only the first half
    assert answers[-1]["predictions"][0]["label"] == "moving right"
    assert all(a["clip"]["source_frames"] >= 60 for a in answers)  # a full window at the source's rate
    with av.open(str(source)) as original, av.open(str(labelled)) as copy:
        assert copy.streams.video[0].frames == original.streams.video[0].frames


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "camera.mp4"
    source.write_bytes(_there_and_back()[0])
    command = [CLI, "stream", str(source), "--url", "http://127.0.0.1:9"]
    result = subprocess.run([*command, "--key-file", "/nonexistent"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "error:" in result.stderr
