"""AVA action detection's pipeline (handler.detection) against PyTorchVideo's detection tutorial: the same keyframe,
the same boxes, per-box scores within 1e-5, for both hub detection models, on videos of several sizes and frame
rates, with boxes partly outside the frame, all keyframes scored in mixed batches (different box counts, a
keyframe without boxes, clips of two sizes). Random-init networks whose head is scaled so that the sigmoid
scores spread over (0, 1) instead of sitting at 0.5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from handler.checkpoints import save_random_checkpoint
from handler.decode import decode_clip
from handler.detection import (
    DETECTION_MODELS,
    DetectionSpec,
    KeyframeClip,
    build_detector_network,
    clip_boxes,
    keyframe_window,
    load_detector_network,
    prepare_keyframe,
    rois,
    score_boxes,
    top_actions,
)
from handler.labels import AVA_ACTIONS, AVA_EVALUATED_IDS, label_set
from handler.models import get_spec
from handler.pipeline import InferenceOptions
from handler.settings import DetectionSettings, HandlerSettings
from slowfast_serve.server.archive import DetectionBuild, build_archive
from tests.reference import tutorial_detection_scores
from tests.videos import moving_videos

#: (height, width, fps, keyframe_sec, boxes in pixels; some partly outside the frame)
VIDEOS = {
    "landscape": (240, 320, 30, 1.5, [[20, 30, 120, 230], [150.5, 10, 330, 200], [-15, -8, 60, 90]]),
    "landscape 25 fps": (240, 320, 25, 1.0, [[100, 40, 200, 239]]),
    "portrait": (320, 240, 30, 1.2, [[10, 20, 200, 300], [0, 0, 239, 319], [120, 150, 260, 400], [5, 5, 50, 50]]),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ava")
    return moving_videos(root, {name: video[:3] for name, video in VIDEOS.items()})


def _network(spec: DetectionSpec) -> torch.nn.Module:
    torch.manual_seed(7)
    network = build_detector_network(spec)
    with torch.no_grad():
        network.detection_head.proj.weight.mul_(40.0)  # random features give scores near 0.5 otherwise
    return network


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DETECTION_MODELS))
def test_scores_equal_the_detection_tutorial(name: str, videos: dict[str, Path]) -> None:
    spec = DETECTION_MODELS[name]
    network = _network(spec)
    keyframes, expected = [], []
    for video, (_, _, _, keyframe_sec, boxes) in VIDEOS.items():
        given = np.array(boxes, dtype=np.float32)
        start, end = keyframe_window(keyframe_sec, spec)
        decoded = decode_clip(videos[video].read_bytes(), start_sec=start, end_sec=end, num_samples=spec.num_frames)
        keyframes.append(prepare_keyframe(decoded.frames, torch.from_numpy(given), spec))
        expected.append(
            tutorial_detection_scores(network, videos[video], keyframe_sec, given, spec.num_frames, spec.alpha)
        )
    none = KeyframeClip(keyframes[0].clip, torch.empty(0, 4), torch.empty(0, 4))  # a keyframe where no one is
    got = score_boxes(network, [keyframes[0], none, keyframes[2], keyframes[1]], spec)
    assert got[1].shape == (0, 80)
    for ours, theirs in zip([got[0], got[3], got[2]], expected, strict=True):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() < 1e-5
    spread = torch.cat(expected)
    assert spread.min() < 0.1  # the comparison covers the whole score range
    assert spread.max() > 0.9


def test_boxes_are_clipped_to_the_frame_then_scaled_with_it() -> None:
    spec = DETECTION_MODELS["slow_r50_detection"]
    frames = [torch.zeros(240, 320, 3, dtype=torch.uint8)] * spec.num_frames
    keyframe = prepare_keyframe(frames, torch.tensor([[-10.0, 20.0, 400.0, 100.0]]), spec)
    assert keyframe.clip.shape == (3, 4, 256, 341)
    assert keyframe.frame_boxes.tolist() == [[0.0, 20.0, 319.0, 100.0]]
    # The tutorial scales boxes by the long side's ratio, whose new length was floored: 341 / 320, not 256 / 240.
    scale = 341 / 320
    assert torch.allclose(keyframe.boxes, torch.tensor([[0.0, 20 * scale, 319 * scale, 100 * scale]]))
    assert clip_boxes(torch.tensor([[5.0, -1.0, 9.0, 50.0]]), height=10, width=8).tolist() == [[5.0, 0.0, 7.0, 9.0]]


def test_rois_carry_their_clip_index_in_order() -> None:
    boxes = [torch.tensor([[1.0, 2, 3, 4]]), torch.empty(0, 4), torch.tensor([[5.0, 6, 7, 8], [9.0, 10, 11, 12]])]
    assert rois(boxes).tolist() == [[0, 1, 2, 3, 4], [2, 5, 6, 7, 8], [2, 9, 10, 11, 12]]


def test_the_keyframe_window_is_one_second_around_it() -> None:
    spec = DETECTION_MODELS["slowfast_r50_detection"]
    assert keyframe_window(2.0, spec) == (1.5, 2.5)
    assert keyframe_window(0.2, spec) == (0.0, 0.7)  # nothing precedes the stream start


def test_actions_are_named_by_ava_id() -> None:
    scores = torch.zeros(80)
    scores[11], scores[78], scores[0] = 0.9, 0.6, 0.05  # columns of "stand" (id 12), "talk to" (79), "bend/bow"
    actions = top_actions(scores, label_set("ava_v2.2"), top_k=3, threshold=0.1)
    assert [(a["label"], a["class_id"]) for a in actions] == [
        ("stand", 12),
        ("talk to (e.g., self, a person, a group)", 79),
    ]
    assert len(set(AVA_ACTIONS)) == len(AVA_ACTIONS) == 80
    assert len(AVA_EVALUATED_IDS) == 60
    assert set(range(1, 81)) >= AVA_EVALUATED_IDS


def test_official_format_checkpoints_load_and_others_are_refused(tmp_path: Path) -> None:
    spec = DETECTION_MODELS["slow_r50_detection"]
    path = tmp_path / spec.checkpoint_filename
    torch.save({"model_state": build_detector_network(spec).state_dict()}, path)
    network, weights = load_detector_network(spec, path)
    assert weights.num_classes == 80
    assert not network.training
    classifier = save_random_checkpoint(get_spec("slow_r50"), tmp_path / "slow_r50.pyth")
    with pytest.raises(ValueError, match="does not fit the slow_r50_detection architecture"):
        load_detector_network(spec, classifier)


def test_archive_settings_round_trip_and_refusals(tmp_path: Path) -> None:
    settings = DetectionSettings(max_boxes=8, detector="fasterrcnn_resnet50_fpn", detector_file=tmp_path / "p.pth")
    section = {"model": "slow_r50_detection", "detection": settings.as_yaml_section()}
    read = HandlerSettings.from_archive(section, tmp_path, "weights.pyth").detection
    assert read == settings
    assert read.threshold == 0.75  # the detector's default
    assert HandlerSettings.from_archive({**section, "detection": {"detector": "none"}}, tmp_path, "w").detection == (
        DetectionSettings()
    )
    with pytest.raises(ValueError, match="detector must be one of"):
        DetectionSettings(detector="yolo")
    with pytest.raises(ValueError, match="detector_file goes with"):
        DetectionSettings(detector="hog", detector_file=tmp_path / "p.pth")
    with pytest.raises(ValueError, match="archives carry the checkpoint"):
        build_archive("slow_r50_detection", None, model_store=tmp_path, inference=InferenceOptions(export="aoti"))
    with pytest.raises(ValueError, match="apply to slowfast_r50_detection, slow_r50_detection"):
        build_archive("motion_demo", None, model_store=tmp_path, detection=DetectionBuild(detector="hog"))
    with pytest.raises(ValueError, match="--detector-checkpoint is the weights of a torchvision detector"):
        DetectionBuild(detector="hog", detector_checkpoint=tmp_path / "p.pth")
