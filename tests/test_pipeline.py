"""The pipeline's performance options: parallel preparation, memory format, autocast, warm-up; each must keep
the results (or, for reduced precision, the top class) of the plain fp32 path."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from handler.decode_limits import DecodeLimits
from handler.errors import RequestError
from handler.labels import label_set
from handler.models import get_spec
from handler.pipeline import InferenceOptions, VideoClassifier
from handler.request import VideoRequest
from handler.sampling import view_starts
from handler.settings import inference_options
from slowfast_serve.training.motion_data import ENCODINGS, MOTION_CLASSES, make_video, render, sample
from tests import REPO
from tests.videos import encode, moving_frames

MOTION = get_spec("motion_demo")


def _motion_classifier(**options) -> VideoClassifier:
    labels = label_set(MOTION.labels)
    return VideoClassifier.load(
        MOTION, REPO / MOTION.bundled_checkpoint, labels, torch.device("cpu"), options=InferenceOptions(**options)
    )


def _requests() -> list[VideoRequest | RequestError]:
    video = encode(moving_frames(75, 120, 160), fps=25)
    other = encode(moving_frames(90, 144, 96, seed=3), fps=30, codec="mpeg4", container="avi")
    return [
        VideoRequest(video=video, start_sec=0.0, top_k=5),
        VideoRequest(video=b"not a video at all", start_sec=0.0, top_k=5),
        RequestError(400, "InvalidOption", "parsed earlier"),
        VideoRequest(video=other, start_sec=0.5, top_k=5),
        VideoRequest(video=video, start_sec=1.0, top_k=3),
    ]


def _scores(results: list) -> list:
    return [r.type if isinstance(r, RequestError) else [p["score"] for p in r["predictions"]] for r in results]


@pytest.mark.slow
def test_parallel_preparation_answers_like_sequential_in_order(
    random_checkpoint: Callable[[str], Path],
) -> None:
    spec = get_spec("slow_r50")
    load = lambda workers: VideoClassifier.load(  # noqa: E731
        spec,
        random_checkpoint("slow_r50"),
        label_set(spec.labels),
        torch.device("cpu"),
        options=InferenceOptions(decode_workers=workers, warmup=False),
    )
    sequential, parallel = load(1), load(3)
    expected, got = sequential.classify(_requests()), parallel.classify(_requests())
    assert _scores(got)[1:3] == ["InvalidVideo", "InvalidOption"]
    assert _scores(got) == _scores(expected)
    assert [r["clip"] for i, r in enumerate(got) if i not in (1, 2)] == [
        r["clip"] for i, r in enumerate(expected) if i not in (1, 2)
    ]


def test_channels_last_gives_the_same_probabilities() -> None:
    clips = torch.randn(2, 3, MOTION.clip.num_frames, MOTION.clip.crop_size, MOTION.clip.crop_size)
    plain = _motion_classifier(channels_last=False, warmup=False).probabilities(clips)
    fast = _motion_classifier(channels_last=True, warmup=False).probabilities(clips)
    assert (plain - fast).abs().max() < 1e-5


@pytest.mark.slow
def test_bf16_autocast_keeps_the_trained_models_answers() -> None:
    fp32, bf16 = _motion_classifier(warmup=False), _motion_classifier(precision="bf16", warmup=False)
    requests = [
        VideoRequest(video=make_video(motion, 77, i, encoding=i % len(ENCODINGS))[0], start_sec=0.0, top_k=1)
        for i, motion in enumerate(MOTION_CLASSES)
    ]
    exact, reduced = fp32.classify(requests), bf16.classify(requests)
    assert [r["predictions"][0]["label"] for r in reduced] == [r["predictions"][0]["label"] for r in exact]
    top = [(a["predictions"][0]["score"], b["predictions"][0]["score"]) for a, b in zip(exact, reduced, strict=True)]
    gaps = [abs(a - b) for a, b in top]
    assert max(gaps) < 0.05


def test_warm_up_runs_one_forward_at_load() -> None:
    calls = []
    original = VideoClassifier.probabilities
    try:
        VideoClassifier.probabilities = lambda self, clips: calls.append(clips.shape) or original(self, clips)
        _motion_classifier(warmup=True)
        assert calls == [(1, 3, MOTION.clip.num_frames, MOTION.clip.crop_size, MOTION.clip.crop_size)]
        _motion_classifier(warmup=False)
        assert len(calls) == 1
    finally:
        VideoClassifier.probabilities = original


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"precision": "fp8"}, "precision must be"),
        ({"compile": "yes"}, "compile must be true or false"),
        ({"decode_workers": -1}, "decode_workers must be"),
        ({"threads": 2}, r"unknown inference option\(s\) \['threads'\]"),
    ],
)
def test_inference_options_are_validated(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inference_options(values)


def test_preparation_interpolates_on_the_models_device() -> None:
    # No GPU here: the "meta" device stands in for one. Every tensor the float stage touches must follow the
    # gathered pixels to the model's device (a CPU tensor mixed in would raise), as on a GPU.
    spec = MOTION
    model = torch.nn.Linear(1, 1)  # never called: only preparation runs
    classifier = VideoClassifier(
        spec,
        model,
        label_set(spec.labels),
        "test",
        torch.device("meta"),
        options=InferenceOptions(warmup=False, fold_batchnorm=False, channels_last=False),
    )
    prepared = classifier.prepare(VideoRequest(video=encode(moving_frames(40, 90, 120), fps=20), top_k=1, start_sec=0))
    assert prepared.clips.device.type == "meta"
    assert prepared.clips.shape == (1, 3, spec.clip.num_frames, spec.clip.crop_size, spec.clip.crop_size)


def test_view_starts_follow_the_test_protocol() -> None:
    # PyTorchVideo's ConstantClipsPerVideoSampler: k * (duration - clip) / clips, never reaching the end.
    assert view_starts(10.0, 2.0, 0.0, 4) == [0.0, 2.0, 4.0, 6.0]
    assert view_starts(10.0, 2.0, 2.0, 2) == [2.0, 5.0]
    assert view_starts(1.0, 2.0, 0.0, 3) == [0.0, 0.0, 0.0]  # shorter than a clip: every view is the clip
    assert view_starts(10.0, 2.0, 4.0, 1) == [4.0]


def test_views_average_the_probabilities_of_their_clips() -> None:
    classifier = _motion_classifier(warmup=False)
    video = make_video("moving down", 2718, 0)[0]  # 2.5 to 4 s long
    everything = len(classifier.labels)
    (multi,) = classifier.classify([VideoRequest(video=video, top_k=everything, start_sec=0.0, views=(3, 1))])
    windows = multi["views"]["windows"]
    assert len(windows) == 3
    assert windows[0][0] == 0.0
    assert windows[1][0] > 0.0
    singles = classifier.classify(
        [VideoRequest(video=video, top_k=everything, start_sec=s, views=(1, 1)) for s, _ in windows]
    )
    mean = {label: sum(_score(r, label) for r in singles) / 3 for label in classifier.labels}
    assert max(abs(_score(multi, label) - mean[label]) for label in classifier.labels) < 1e-5


def _score(response: dict, label: str) -> float:
    return next(p["score"] for p in response["predictions"] if p["label"] == label)


def test_clips_of_a_batch_share_forwards_of_at_most_max_clips_per_forward() -> None:
    video = make_video("growing", 2718, 1)[0]
    batch = [
        VideoRequest(video=video, top_k=8, start_sec=0.0, views=(3, 3)),
        VideoRequest(video=video, top_k=8, start_sec=0.5, views=(1, 1)),
    ]
    sizes: list[int] = []
    small = _motion_classifier(warmup=False, max_clips_per_forward=4)
    original = small.probabilities
    small.probabilities = lambda clips: sizes.append(len(clips)) or original(clips)
    chunked = small.classify(batch)
    assert sizes == [4, 4, 2]  # 9 views + 1 clip
    whole = _motion_classifier(warmup=False, max_clips_per_forward=32).classify(batch)
    for ours, reference in zip(chunked, whole, strict=True):
        assert max(abs(_score(ours, p["label"]) - p["score"]) for p in reference["predictions"]) < 1e-5
    assert chunked[0]["views"] == {
        "clips": 3,
        "crops": 3,
        "windows": whole[0]["views"]["windows"],
    }


def _there_and_back(seconds_each: float = 3.0) -> tuple[bytes, float]:
    """A motion_demo-style video moving left for ``seconds_each`` and then (the same frames backwards) right."""
    rng = np.random.default_rng([7, 2, 0])
    video = sample("moving left", rng, encoding=0)
    frames = render(video, rng)[: int(seconds_each * float(video.fps))]
    data = encode(np.concatenate([frames, frames[::-1]]), fps=video.fps)
    return data, 2 * len(frames) / float(video.fps)


def test_timeline_segments_and_merged_intervals() -> None:
    classifier = _motion_classifier(warmup=False)
    data, duration = _there_and_back()
    clip_sec = MOTION.clip.duration_sec
    (answer,) = classifier.classify([VideoRequest(video=data, top_k=2, start_sec=0.0, mode="timeline")])
    timeline = answer["timeline"]
    segments = timeline["segments"]
    assert timeline["stride_sec"] == clip_sec
    assert len(segments) == math.ceil((duration - 0.05) / clip_sec)
    assert [s["start_sec"] for s in segments] == [round(k * clip_sec, 3) for k in range(len(segments))]
    assert all(len(s["predictions"]) == 2 for s in segments)
    assert segments[0]["predictions"][0]["label"] == "moving left"
    assert segments[-1]["predictions"][0]["label"] == "moving right"
    intervals = timeline["intervals"]
    assert intervals[0]["label"] == "moving left"
    assert intervals[-1]["label"] == "moving right"
    assert intervals[0]["start_sec"] == 0.0
    assert all(a["end_sec"] == b["start_sec"] for a, b in itertools.pairwise(intervals))  # contiguous
    assert all(a["label"] != b["label"] for a, b in itertools.pairwise(intervals))  # runs are merged
    assert len(answer["views"]["windows"]) == len(segments)


def test_a_timeline_over_the_window_limit_is_refused() -> None:
    classifier = _motion_classifier(warmup=False)
    classifier.limits = DecodeLimits(max_timeline_windows=3)
    data, _ = _there_and_back()
    (answer,) = classifier.classify([VideoRequest(video=data, top_k=1, start_sec=0.0, mode="timeline", stride_sec=0.5)])
    assert isinstance(answer, RequestError)
    assert (answer.status, answer.type) == (413, "TimelineTooLong")
    assert "stride_sec" in answer.message
