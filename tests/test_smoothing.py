"""Timeline events (slowfast_serve.client.smoothing): the rules on made-up windows, and on an edited video with
known change points classified by a real TorchServe through ``slowfast-serve timeline``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slowfast_serve.client.inference import Timeline
from slowfast_serve.client.smoothing import RAW, Smoothing, events
from slowfast_serve.evaluation.chapters import compare, edited_video
from slowfast_serve.server.torchserve import TorchServe
from tests.serving import CLI


def _timeline(tops: str, stride: float = 0.5, clip: float = 3.0) -> Timeline:
    """Windows every ``stride`` whose top class is the letter at their position (score 0.6; "Z" second, 0.3),
    ending ``clip`` after their start; the video ends with the last window."""
    segments = [
        {
            "start_sec": i * stride,
            "end_sec": i * stride + clip,
            "predictions": [
                {"label": top, "class_id": 0, "score": 0.6},
                {"label": "Z", "class_id": 1, "score": 0.3},
            ],
        }
        for i, top in enumerate(tops)
    ]
    end = (len(tops) - 1) * stride + clip
    return Timeline.from_json(
        {
            "stride_sec": stride,
            "segments": segments,
            "intervals": [{"label": "?", "start_sec": 0, "end_sec": end, "mean_score": 0}],
        }
    )


def test_raw_events_are_the_windows_top_classes_placed_at_their_middles() -> None:
    found = events(_timeline("AAABBA"), RAW)
    assert [(e.label, e.start_sec, e.end_sec) for e in found] == [
        ("A", 0.0, 2.75),  # windows 0-2: middles 1.5, 2.0, 2.5; the next one's middle is 3.0
        ("B", 2.75, 3.75),
        ("A", 3.75, 5.5),  # the last window runs to the end of the video
    ]
    assert found[0].mean_score == pytest.approx(0.6)


def test_smoothing_removes_flicker_and_short_events() -> None:
    flicker = "AAAABAAAAABBBBBABBBBBCBBBB"
    raw = events(_timeline(flicker), RAW)
    assert len(raw) == 8
    smoothed = events(_timeline(flicker), Smoothing(seconds=2.5, min_event_sec=2.0))
    assert [e.label for e in smoothed] == ["A", "B"]
    # The change from A to B is between the windows starting at 4.5 and 5.0 s (middles 6.0 and 6.5 s).
    assert smoothed[1].start_sec == pytest.approx(6.25)
    # A short event joins a neighbour.
    assert [e.label for e in events(_timeline("AAAAAABBAAAAAA"), Smoothing(0, 2.0))] == ["A"]


def test_smoothing_spans_an_odd_number_of_windows() -> None:
    assert [Smoothing(2.5).windows(s) for s in (0.5, 1.0, 2.0, 3.2)] == [5, 3, 1, 1]
    assert RAW.windows(0.1) == 1
    with pytest.raises(ValueError, match="at least 0"):
        Smoothing(seconds=-1)


@pytest.mark.integration
def test_events_follow_the_chapters_of_an_edited_video(demo_server: TorchServe, tmp_path: Path) -> None:
    """Three chapters (two clips each: a scene cut inside each chapter): the raw windows flicker, the events
    (the CLI's defaults) come out nearer the chapters in number, labelled right for more of the time."""
    data, chapters = edited_video(["moving left", "growing", "moving up"], seed=1003)
    video = tmp_path / "edited.mp4"
    video.write_bytes(data)
    command = [CLI, "timeline", str(video), "--model", "motion_demo", "--stride-sec", "0.5", "--json"]
    command += ["--url", demo_server.inference_url, "--key-file", str(demo_server.key_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    timeline = json.loads(result.stdout)["timeline"]
    assert timeline["smoothing"] == {"seconds": 2.5, "min_event_sec": 2.0}
    raw = compare([(e.label, e.start_sec, e.end_sec) for e in events(Timeline.from_json(timeline), RAW)], chapters)
    smoothed = compare([(e["label"], e["start_sec"], e["end_sec"]) for e in timeline["events"]], chapters)
    assert abs(smoothed.events - len(chapters)) < abs(raw.events - len(chapters))
    assert smoothed.time_accuracy > raw.time_accuracy
    assert smoothed.boundary_error_sec < 1.0
