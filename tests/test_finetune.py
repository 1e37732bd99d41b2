"""The fine-tuning tool and the synthetic motion dataset it trains the demo model on."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from handler.checkpoints import load_model, save_random_checkpoint
from handler.labels import MOTION_CLASSES, read_labels
from handler.models import get_spec
from handler.pipeline import VideoClassifier
from handler.transforms import preprocess_frames
from slowfast_serve import cli
from slowfast_serve.training.finetune import VideoClips, build_for_training, find_samples, read_flip_map
from slowfast_serve.training.motion_data import ENCODINGS, MotionVideo, make_video, render, sample, write_dataset

CLASSES = ["growing", "moving left", "moving right"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    write_dataset(root, per_class=4, seed=7, classes=CLASSES)
    return root


def _frames(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_generated_video_is_reproducible_and_seeds_differ() -> None:
    first, params = make_video("rotating clockwise", seed=3, index=5)
    again, _ = make_video("rotating clockwise", seed=3, index=5)
    other, _ = make_video("rotating clockwise", seed=4, index=5)
    frames = _frames(first)
    # Compared decoded: some muxers (matroska) write a random segment id into the file.
    assert all(np.array_equal(a, b) for a, b in zip(frames, _frames(again), strict=True))
    assert not np.array_equal(frames[0], _frames(other)[0])
    assert len(frames) / float(params.fps) >= 3.0  # the motion lasts at least 3 s
    assert frames[0].shape == (params.height, params.width, 3)


def _object_only(video: MotionVideo, sprite_alpha: np.ndarray) -> np.ndarray:
    """The video's motion rendered as a white object (of ``sprite_alpha``) on black, no noise or effects:
    ``(T, H, W)`` float32 in [0, 1]."""
    sprite = np.zeros_like(video.sprite)
    sprite[..., :3], sprite[..., 3] = 255, sprite_alpha
    plain = dataclasses.replace(
        video,
        sprite=sprite,
        background=np.zeros_like(video.background),
        background_noise=0.0,
        frame_noise=0.0,
        blur=0.0,
        brightness=(1.0, 1.0),
        flicker=0.0,
    )
    return render(plain, np.random.default_rng(0))[..., 0].astype(np.float32) / 255


def _centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    return np.array([(frame * xs).sum(), (frame * ys).sum()]) / frame.sum()


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("motion", MOTION_CLASSES)
def test_every_class_moves_the_object_in_its_own_way(motion: str, index: int) -> None:
    """Measured on the rendered frames: the object's centroid, area and turn follow the class."""
    video = sample(motion, np.random.default_rng([11, MOTION_CLASSES.index(motion), index]))
    if motion.startswith("rotating"):
        # A lone off-centre square: its angle around the centre shows the turn (y points down: clockwise as seen
        # is an increasing angle).
        alpha = np.zeros(video.sprite.shape[:2], np.uint8)
        alpha[88:104, 150:170] = 255
        frames = _object_only(video, alpha)
        center = np.array(video.center)
        offsets = [_centroid(f) - center for f in frames if f.sum() > 0]
        turn = np.unwrap([math.atan2(y, x) for x, y in offsets])
        assert math.degrees(abs(turn[-1] - turn[0])) >= 20
        assert np.sign(turn[-1] - turn[0]) == (1 if motion == "rotating clockwise" else -1)
        assert np.all(np.diff(turn) * np.sign(video.rotation) >= -0.02)  # never turns back (beyond pixel jitter)
        return
    frames = _object_only(video, video.sprite[..., 3])
    if motion.startswith("moving"):
        dx, dy = _centroid(frames[-1]) - _centroid(frames[0])
        along, across = (dx, dy) if motion in ("moving left", "moving right") else (dy, dx)
        sign = -1 if motion in ("moving left", "moving up") else 1
        assert along * sign >= 0.1 * min(video.width, video.height)
        assert abs(across) <= math.tan(math.radians(9)) * abs(along) + 1
    else:
        areas = frames.sum(axis=(1, 2))
        ratio = areas[-1] / areas[0] if motion == "growing" else areas[0] / areas[-1]
        assert ratio >= 1.2**2 * 0.9  # sizes change by at least 1.2x: areas by about 1.44x
        assert np.all(np.diff(areas) * (1 if motion == "growing" else -1) >= -0.02 * areas.max())


def test_dataset_layout_and_samples(tiny_dataset: Path) -> None:
    samples, classes = find_samples(tiny_dataset)
    assert classes == CLASSES  # sorted folder names are the class ids
    assert len(samples) == 12
    assert {s.path.suffix for s in samples} <= {f".{e[3]}" for e in ENCODINGS}


def test_find_samples_errors(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        find_samples(tmp_path / "missing")
    (tmp_path / "empty class").mkdir()
    with pytest.raises(ValueError, match="no videos"):
        find_samples(tmp_path)
    with pytest.raises(ValueError, match="the training set does not"):
        find_samples(tiny_dataset, ["growing"])


def test_flip_maps(tmp_path: Path) -> None:
    assert read_flip_map("none", CLASSES) == [None, None, None]
    assert read_flip_map("all", CLASSES) == [0, 1, 2]
    path = tmp_path / "flip.json"
    path.write_text(json.dumps({"moving left": "moving right", "moving right": "moving left"}))
    assert read_flip_map(str(path), CLASSES) == [None, 2, 1]  # 'growing' is never flipped
    # A map for more classes fits a subset: a class whose mirror image is missing is never flipped.
    path.write_text(json.dumps({"moving left": "moving right", "shrinking": "shrinking", "growing": "growing"}))
    assert read_flip_map(str(path), ["moving left", "shrinking"]) == [None, 1]
    path.write_text(json.dumps({"jumping": "jumping"}))
    with pytest.raises(ValueError, match="names none of the classes"):
        read_flip_map(str(path), CLASSES)


def test_training_clips_use_the_serving_transform_for_validation(tiny_dataset: Path) -> None:
    spec = get_spec("motion_demo")
    samples, _ = find_samples(tiny_dataset)
    clip, label = VideoClips(samples[:1], spec, train=False)[0]
    classifier_tensor = _serving_tensor(samples[0].path.read_bytes(), spec)
    assert label == samples[0].label
    assert torch.equal(clip, classifier_tensor)


def _serving_tensor(data: bytes, spec) -> torch.Tensor:
    from handler.decode import decode_clip

    frames = decode_clip(data, start_sec=0.0, end_sec=spec.clip.duration_sec, num_samples=spec.clip.num_frames)
    return preprocess_frames(frames.frames, spec.clip)


def test_flipped_training_clips_swap_their_label(tiny_dataset: Path, tmp_path: Path) -> None:
    spec = get_spec("motion_demo")
    samples, classes = find_samples(tiny_dataset)
    left = [s for s in samples if classes[s.label] == "moving left"]
    flips = read_flip_map("all", classes)
    flips[classes.index("moving left")] = classes.index("moving right")
    random.seed(0)
    dataset = VideoClips(left, spec, train=True, flip_map=flips)
    labels = {dataset[i % len(left)][1] for i in range(24)}
    assert labels == {classes.index("moving left"), classes.index("moving right")}


def test_kinetics_style_init_replaces_only_the_head(tmp_path: Path) -> None:
    spec = get_spec("motion_demo")
    source = save_random_checkpoint(spec, tmp_path / "eight.pyth", seed=1)
    model = build_for_training(spec, num_classes=3, init=source)
    state = torch.load(source, weights_only=True)["model_state"]
    own = model.state_dict()
    assert torch.equal(
        own["blocks.0.multipathway_blocks.0.conv.weight"], state["blocks.0.multipathway_blocks.0.conv.weight"]
    )
    assert own["blocks.6.proj.weight"].shape[0] == 3
    wrong = save_random_checkpoint(get_spec("slow_r50"), tmp_path / "slow.pyth")
    with pytest.raises(ValueError, match="beyond its classifier"):
        build_for_training(spec, num_classes=3, init=wrong)


def test_finetune_writes_a_servable_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [str(tiny_dataset), "--model", "motion_demo", "--out", str(out), "--epochs", "1", "--batch-size", "4"]
    argv += ["--workers", "0", "--val-fraction", "0.25", "--hflip", "none", "--seed", "3", "--motion-stem"]
    assert cli.main(["finetune", *argv]) == 0
    summary = json.loads((out / "training.json").read_text())
    assert summary["classes"] == CLASSES
    assert len(summary["epochs"]) == 1
    assert (summary["train_videos"], summary["val_videos"]) == (9, 3)
    labels = read_labels(out / "labels.json")
    assert labels == CLASSES
    model, weights = load_model(get_spec("motion_demo"), out / "motion_demo.pyth")  # strict: plain keys
    assert weights.num_classes == 3
    fast_stem = model.blocks[0].multipathway_blocks[1].conv.weight
    assert fast_stem.mean(dim=2).abs().max() < 1e-6  # --motion-stem: the saved kernel sums to zero over time
    classifier = VideoClassifier.load(get_spec("motion_demo"), out / "motion_demo.pyth", labels, torch.device("cpu"))
    assert classifier.labels == CLASSES


def test_head_only_training_leaves_the_rest_as_it_was(tiny_dataset: Path, tmp_path: Path) -> None:
    spec = get_spec("motion_demo")
    source = save_random_checkpoint(spec, tmp_path / "eight.pyth", seed=2)
    out = tmp_path / "probe"
    argv = [str(tiny_dataset), "--model", "motion_demo", "--init", str(source), "--out", str(out), "--epochs", "1"]
    argv += ["--batch-size", "4", "--workers", "0", "--train-layers", "head", "--lr", "0.1", "--hflip", "none"]
    assert cli.main(["finetune", *argv]) == 0
    before = torch.load(source, weights_only=True)["model_state"]
    after = torch.load(out / "motion_demo.pyth", weights_only=True)["model_state"]
    backbone = [k for k in before if not k.startswith("blocks.6.proj.")]
    # Batch-norm statistics included: the backbone ran in eval mode.
    assert [k for k in backbone if not torch.equal(before[k], after[k])] == []
    assert after["blocks.6.proj.weight"].shape[0] == len(CLASSES)
    assert set(after) == set(before)
