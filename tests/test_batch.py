"""Folder mode of `slowfast-serve classify` (slowfast_serve.client.folders) against the demo server, then resumed."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from slowfast_serve.client.folders import done_paths, expand
from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.training.motion_data import make_video
from tests.serving import CLI


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    (root / "day2").mkdir(parents=True)
    for path, motion in [("a.mp4", "moving left"), ("b.webm", "growing"), ("day2/c.mkv", "moving up")]:
        (root / path).write_bytes(make_video(motion, 99, len(path))[0])
    (root / "day2" / "broken.mp4").write_bytes(b"\x00" * 1000)
    (root / "notes.txt").write_text("not a video, not even tried")
    return root


def test_expand_finds_videos_recursively_and_keeps_files_given(folder: Path) -> None:
    names = [p.relative_to(folder).as_posix() for p in expand([folder])]
    assert names == ["a.mp4", "b.webm", "day2/broken.mp4", "day2/c.mkv"]
    assert expand([folder / "notes.txt"]) == [folder / "notes.txt"]  # named explicitly: tried (and recorded)


def _classify(server: TorchServe, *args: str) -> subprocess.CompletedProcess[str]:
    command = [CLI, "classify", *args, "--model", "motion_demo"]
    command += ["--url", server.inference_url, "--key-file", str(server.key_file), "--concurrency", "3"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_a_folder_is_classified_recorded_and_resumed(demo_server: TorchServe, folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    first = _classify(demo_server, str(folder), "--output", str(output))
    assert first.returncode == 1, first.stderr  # one video is broken: recorded, not fatal
    records = [json.loads(line) for line in output.read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert sorted(by_name) == ["a.mp4", "b.webm", "broken.mp4", "c.mkv"]
    assert [by_name[n]["label"] for n in ("a.mp4", "b.webm", "c.mkv")] == ["moving left", "growing", "moving up"]
    assert by_name["broken.mp4"]["ok"] is False
    assert by_name["broken.mp4"]["error_type"] == "InvalidVideo"
    assert by_name["a.mp4"]["response"]["model"] == "motion_demo"
    assert "classified" in first.stdout
    assert done_paths(output) == {r["path"] for r in records if r["ok"]}

    second = _classify(demo_server, str(folder), "--output", str(output))
    assert second.returncode == 1
    again = [json.loads(line) for line in output.read_text().splitlines()][len(records) :]
    assert [Path(r["path"]).name for r in again] == ["broken.mp4"]  # only the failure is tried again
    assert "skipped" in second.stdout


@pytest.mark.integration
def test_csv_output(demo_server: TorchServe, folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    (folder / "day2" / "broken.mp4").unlink()
    result = _classify(
        demo_server,
        str(folder),
        "--output",
        str(output),
        "--grpc",
        "--grpc-address",
        f"127.0.0.1:{demo_server.properties()['grpc_inference_port']}",
    )
    assert result.returncode == 0, result.stderr
    with output.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {Path(r["path"]).name: r["label"] for r in rows} == {
        "a.mp4": "moving left",
        "b.webm": "growing",
        "c.mkv": "moving up",
    }
    assert all(r["ok"] == "True" for r in rows)
    assert done_paths(output) == {r["path"] for r in rows}
