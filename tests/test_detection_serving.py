"""AVA action detection served by a real TorchServe: archives of both hub detection models, given boxes scored
equal to PyTorchVideo's detection tutorial in mixed batches, the HOG and torchvision person detectors, every bad
input, and ``slowfast-serve detect`` (table, ``--json``, ``--every``, ``--annotate``, ``--grpc``).

One TorchServe serves three archives:

- ``ava_slowfast``: slowfast_r50_detection, no person detector, served by its OpenVINO network (``export=auto``);
- ``ava_slow_hog``: slow_r50_detection served eager, with OpenCV's HOG people detector;
- ``ava_slow_rcnn``: slow_r50_detection with torchvision's Faster R-CNN, random weights (plumbing only: the
  answers say so), a person threshold of 0.9 and at most 4 boxes.

The action networks are random-init with their head scaled so that the sigmoid scores spread over (0, 1)
(``bench.detection.action_checkpoint``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
import requests
import torch

from bench.detection import action_checkpoint, crowd_rcnn
from handler.detection import DETECTION_MODELS, load_detector_network
from handler.persons import HogPersons, TorchvisionPersons
from handler.pipeline import InferenceOptions
from slowfast_serve.client.detect import COLOURS, LINE
from slowfast_serve.load.videos import pedestrians
from slowfast_serve.server.archive import DetectionBuild, ServingConfig, build_archive
from slowfast_serve.server.torchserve import TorchServe
from tests.reference import tutorial_detection_scores
from tests.serving import CLI, post_video, running_torchserve
from tests.videos import moving_frames, moving_videos, with_rotation

pytestmark = pytest.mark.integration

SERVING = ServingConfig(batch_size=8, max_batch_delay_ms=500)
#: name: (height, width, fps, keyframe_sec, boxes in pixels of the upright frame; some partly outside it)
VIDEOS = {
    "landscape": (240, 320, 30, 1.5, [[20, 30, 120, 230], [150.5, 10, 330, 200], [-15, -8, 60, 90]]),
    "25 fps": (240, 320, 25, 1.0, [[100, 40, 200, 239]]),
    # coded 240x320 with a 90-degree display rotation: upright it is 320 high, 240 wide
    "phone rotated 90": (
        240,
        320,
        30,
        1.2,
        [[10, 20, 200, 300], [0, 0, 239, 319], [120, 150, 260, 400], [5, 5, 50, 50]],
    ),
}
ROTATION = {"phone rotated 90": 90}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ava-videos")
    paths = moving_videos(root, {name: video[:3] for name, video in VIDEOS.items()})
    paths["phone rotated 90 (stored)"] = paths["phone rotated 90"]
    paths["phone rotated 90"] = with_rotation(paths["phone rotated 90"], root / "rotated.mp4", 90)
    paths["pedestrians"] = pedestrians(root)
    return paths


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    files = tmp_path_factory.mktemp("weights")
    return {name: action_checkpoint(name, files / f"{name}.pyth", seed=7) for name in DETECTION_MODELS}


@pytest.fixture(scope="module")
def networks(checkpoints: dict[str, Path]) -> dict[str, torch.nn.Module]:
    return {name: load_detector_network(DETECTION_MODELS[name], path)[0] for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Iterator[TorchServe]:
    store = tmp_path_factory.mktemp("store")
    slowfast, slow = checkpoints["slowfast_r50_detection"], checkpoints["slow_r50_detection"]
    rcnn = crowd_rcnn(tmp_path_factory.mktemp("rcnn") / "rcnn.pth")
    archives = [
        build_archive("slowfast_r50_detection", slowfast, name="ava_slowfast", model_store=store, serving=SERVING),
        build_archive(
            "slow_r50_detection",
            slow,
            name="ava_slow_hog",
            model_store=store,
            serving=SERVING,
            inference=InferenceOptions(export="eager"),
            detection=DetectionBuild(detector="hog"),
        ),
        build_archive(
            "slow_r50_detection",
            None,
            name="ava_slow_rcnn",
            model_store=store,
            serving=SERVING,
            inference=InferenceOptions(export="eager"),
            detection=DetectionBuild(
                max_boxes=4, detector="fasterrcnn_resnet50_fpn", detector_checkpoint=rcnn, detector_threshold=0.9
            ),
        ),
    ]
    with running_torchserve(archives, tmp_path_factory.mktemp("ts")) as instance:
        yield instance


def _post(server: TorchServe, model: str, video: Path, **fields: object) -> requests.Response:
    data = {k: json.dumps(v) if k == "boxes" else str(v) for k, v in fields.items()}
    return post_video(server, model, files={"data": video.read_bytes()}, data=data)


@pytest.mark.parametrize(
    ("model", "spec_name", "engine"),
    [("ava_slowfast", "slowfast_r50_detection", "openvino"), ("ava_slow_hog", "slow_r50_detection", "eager")],
)
def test_given_boxes_score_as_the_tutorial_in_mixed_batches(
    server: TorchServe,
    videos: dict[str, Path],
    networks: dict[str, torch.nn.Module],
    model: str,
    spec_name: str,
    engine: str,
) -> None:
    spec = DETECTION_MODELS[spec_name]
    requests_ = [
        (name, {"keyframe_sec": t, "boxes": boxes, "top_k": 80}) for name, (_, _, _, t, boxes) in VIDEOS.items()
    ]
    requests_ += [("landscape", {"keyframe_sec": 2.0, "boxes": []}), ("25 fps", {"boxes": [[400, 10, 500, 100]]})]
    with ThreadPoolExecutor(len(requests_)) as pool:
        answers = list(pool.map(lambda r: _post(server, model, videos[r[0]], **r[1]), requests_))
    assert max(a.json().get("batch_size", 0) for a in answers if a.ok) >= 3  # they were batched together
    for (name, fields), answer in zip(requests_[:3], answers[:3], strict=True):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        stored = videos[f"{name} (stored)"] if name in ROTATION else videos[name]
        expected = tutorial_detection_scores(
            networks[spec_name],
            stored,
            fields["keyframe_sec"],
            np.array(fields["boxes"], dtype=np.float32),
            spec.num_frames,
            spec.alpha,
            rotation=ROTATION.get(name, 0),
        )
        assert (body["model"], body["weights"], body["detector"]) == (spec_name, "random-init", None)
        assert body["engine"] == {"name": engine, "precision": "fp32", "device": "cpu"}
        assert body["video"]["rotation"] == ROTATION.get(name, 0)
        assert len(body["detections"]) == len(fields["boxes"])  # one per box, in the order given
        height, width = (320, 240) if name in ROTATION else VIDEOS[name][:2]
        for detection, box, row in zip(body["detections"], fields["boxes"], expected, strict=True):
            x1, y1, x2, y2 = box
            clipped = [min(max(x1, 0), width - 1), min(max(y1, 0), height - 1), min(x2, width - 1), min(y2, height - 1)]
            assert detection["box"] == pytest.approx(clipped)
            assert detection["person_score"] is None
            served = torch.zeros(80)
            for action in detection["actions"]:
                served[action["class_id"] - 1] = action["score"]
            assert (served - row).abs().max().item() < 1e-5
        scores = [a["score"] for d in body["detections"] for a in d["actions"]]
        assert min(scores) < 0.1
        assert max(scores) > 0.9
    empty, outside = answers[3].json(), answers[4]
    assert (answers[3].status_code, empty["detections"]) == (200, [])
    assert (outside.status_code, outside.json()["type"]) == (400, "InvalidBoxes")
    assert "lies outside the 320x240 frame" in outside.json()["message"]


def test_hog_finds_the_pedestrians(server: TorchServe, videos: dict[str, Path]) -> None:
    answer = _post(server, "ava_slow_hog", videos["pedestrians"], keyframe_sec=3.0, top_k=3, threshold=0.2)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["detector"] == {"name": "hog", "weights": "built-in", "threshold": 0.5}
    found = body["detections"]
    assert len(found) >= 2
    # the boxes are OpenCV's on the middle frame of the keyframe's window, [2.5 s, 3.5 s)
    with av.open(str(videos["pedestrians"])) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream) if 2.5 <= float(f.pts * stream.time_base) < 3.5]
    middle = torch.from_numpy(frames[len(frames) // 2].to_ndarray(format="rgb24"))
    expected = HogPersons().find(middle)
    assert [d["box"] for d in found] == expected.boxes.tolist()  # whole pixels: HOG's windows
    assert [d["person_score"] for d in found] == pytest.approx(expected.scores.tolist(), abs=1e-4)
    for detection in found:
        assert detection["person_score"] >= 0.5
        assert 1 <= len(detection["actions"]) <= 3
        assert all(a["score"] >= 0.2 for a in detection["actions"])
    # a moving texture has no one in it: an empty answer, and no forward ran for it
    nobody = _post(server, "ava_slow_hog", videos["landscape"], keyframe_sec=1.5).json()
    assert (nobody["detections"], nobody["detector"]["name"]) == ([], "hog")
    assert nobody["timing_ms"]["inference"] < 10  # ms: a forward takes seconds here


def test_torchvision_detector_through_torchserve(server: TorchServe, videos: dict[str, Path]) -> None:
    answer = _post(server, "ava_slow_rcnn", videos["landscape"], keyframe_sec=1.0)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["detector"] == {"name": "fasterrcnn_resnet50_fpn", "weights": "random-init", "threshold": 0.9}
    assert len(body["detections"]) == 4  # the archive's max_boxes, the best of many
    for detection in body["detections"]:
        assert detection["person_score"] >= 0.9
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 < x2 <= 319
        assert 0 <= y1 < y2 <= 239


def test_torchvision_detector_keeps_persons_above_its_threshold(tmp_path: Path) -> None:
    frame = torch.from_numpy(moving_frames(1, 240, 320)[0])
    person = crowd_rcnn(tmp_path / "person.pth")
    found = TorchvisionPersons("fasterrcnn_resnet50_fpn", person, 0.9, torch.device("cpu")).find(frame)
    assert len(found.boxes) > 0
    assert found.scores.min() >= 0.9
    assert len(TorchvisionPersons("fasterrcnn_resnet50_fpn", person, 0.99, torch.device("cpu")).find(frame).boxes) == 0
    bicycle = crowd_rcnn(tmp_path / "bicycle.pth", label=2)  # COCO's class 2: not a person
    assert len(TorchvisionPersons("fasterrcnn_resnet50_fpn", bicycle, 0.5, torch.device("cpu")).find(frame).boxes) == 0
    with pytest.raises(ValueError, match="is not a fasterrcnn_resnet50_fpn_v2 checkpoint"):
        TorchvisionPersons("fasterrcnn_resnet50_fpn_v2", person, 0.5, torch.device("cpu"))


@pytest.mark.parametrize(
    ("fields", "status", "kind", "says"),
    [
        ({"boxes": "[[1, 2, 3, 4]"}, 400, "InvalidBoxes", "boxes is not JSON"),
        ({"boxes": "[[1, 2, 3]]"}, 400, "InvalidBoxes", "boxes[0] must be 4 finite numbers"),
        ({"boxes": "[[50, 10, 40, 60]]"}, 400, "InvalidBoxes", "x2 must exceed x1"),
        ({"boxes": "[[10, 300, 60, 400]]"}, 400, "InvalidBoxes", "boxes[0] = [10, 300, 60, 400] lies outside"),
        ({"boxes": json.dumps([[0, 0, 10, 10]] * 33)}, 413, "TooManyBoxes", "at most 32"),
        ({"keyframe_sec": "100", "boxes": "[[0, 0, 10, 10]]"}, 400, "KeyframeOutOfRange", "lasts 3.000 s"),
        ({"views": "10x3"}, 400, "UnknownOption", "the classifiers' option"),
        ({}, 400, "NoBoxes", "DETECTOR=hog"),
    ],
)
def test_bad_input_gets_a_4xx(
    server: TorchServe, videos: dict[str, Path], fields: dict, status: int, kind: str, says: str
) -> None:
    data = {k: str(v) for k, v in fields.items()}
    answer = post_video(server, "ava_slowfast", files={"data": videos["landscape"].read_bytes()}, data=data)
    assert (answer.status_code, answer.json()["type"]) == (status, kind), answer.text
    assert says in answer.json()["message"]


def _cli(server: TorchServe, *args: str) -> subprocess.CompletedProcess:
    service = ["--url", server.inference_url, "--key-file", str(server.key_file), "--model", "ava_slow_hog"]
    return subprocess.run([CLI, "detect", *args, *service], capture_output=True, text=True, timeout=600)


def test_detect_command_table_json_every_and_annotate(
    server: TorchServe, videos: dict[str, Path], tmp_path: Path
) -> None:
    video = videos["pedestrians"]
    table = _cli(server, str(video), "--keyframe-sec", "3", "--top-k", "2")
    assert table.returncode == 0, table.stderr
    assert "keyframe 3 s (clip 2.5-3.5 s)" in table.stdout
    assert "boxes found by hog" in table.stdout
    assert "random-init" in table.stdout
    out = tmp_path / "annotated.mp4"
    result = _cli(server, str(video), "--every", "2", "--json", "--annotate", str(out))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout.splitlines()[0])
    keyframes = body["timeline"]["keyframes"]
    assert [k["keyframe_sec"] for k in keyframes] == [0.5, 2.5, 4.5]
    with av.open(str(video)) as source, av.open(str(out)) as written:
        assert written.streams.video[0].frames == source.streams.video[0].frames
        frames = list(written.decode(video=0))
    first = next(k for k in keyframes if k["detections"])
    shown = frames[round(first["keyframe_sec"] * 10)].to_ndarray(format="rgb24").astype(int)  # 10 fps
    x1, y1, x2, y2 = (round(v) for v in first["detections"][0]["box"])
    edge = shown[(y1 + y2) // 2, x1 + LINE // 2]  # the middle of the first box's left side
    assert np.abs(edge - np.array(COLOURS[0])).max() < 60, edge
    grpc = _cli(
        server,
        str(video),
        "--boxes",
        "[[100, 100, 200, 300]]",
        "--json",
        "--grpc",
        "--grpc-address",
        f"127.0.0.1:{server.properties()['grpc_inference_port']}",
    )
    assert grpc.returncode == 0, grpc.stderr
    assert json.loads(grpc.stdout)["detections"][0]["box"] == [100, 100, 200, 300]
    bad = _cli(server, str(video), "--boxes", "[[1, 2]]")
    assert bad.returncode == 1
    assert "InvalidBoxes: boxes[0] must be 4 finite numbers [x1, y1, x2, y2]" in " ".join(bad.stderr.split())


def test_detect_every_sent_in_parts_gives_the_keyframes_of_one_request(
    server: TorchServe, videos: dict[str, Path], tmp_path: Path
) -> None:
    # The pedestrians with a key frame every second, so that the 6 s cut into parts of whole GOPs.
    video = tmp_path / "pedestrians-gop.mp4"
    encode = ["ffmpeg", "-v", "error", "-i", str(videos["pedestrians"]), "-c:v", "libx264", "-g", "10"]
    subprocess.run([*encode, "-pix_fmt", "yuv420p", str(video)], check=True)
    assert video.stat().st_size > 100_000
    whole = _cli(server, str(video), "--every", "0.5", "--json")
    assert whole.returncode == 0, whole.stderr
    output = tmp_path / "keyframes.jsonl"
    parted = _cli(server, str(video), "--every", "0.5", "--json", "--part-mb", "0.03", "--output", str(output))
    assert parted.returncode == 0, parted.stderr
    one, parts = json.loads(whole.stdout.splitlines()[0]), json.loads(parted.stdout.splitlines()[0])
    assert "parts" not in one
    assert parts["parts"]["count"] >= 4
    assert parts["detector"] == one["detector"]
    expected, merged = one["timeline"]["keyframes"], parts["timeline"]["keyframes"]
    assert (
        [k["keyframe_sec"] for k in merged]
        == [k["keyframe_sec"] for k in expected]
        == [0.5 * (k + 1) for k in range(11)]
    )
    assert sum(len(k["detections"]) for k in expected) >= 11  # people at most keyframes
    for ours, theirs in zip(merged, expected, strict=True):
        assert ours["clip"] == theirs["clip"]
        assert [d["box"] for d in ours["detections"]] == [d["box"] for d in theirs["detections"]]
        for mine, yours in zip(ours["detections"], theirs["detections"], strict=True):
            assert [a["class_id"] for a in mine["actions"]] == [a["class_id"] for a in yours["actions"]]
            assert [a["score"] for a in mine["actions"]] == pytest.approx(
                [a["score"] for a in yours["actions"]], abs=1e-5
            )
    assert [json.loads(line)["keyframe_sec"] for line in output.read_text().splitlines()] == [
        k["keyframe_sec"] for k in expected
    ]
    csv = _cli(server, str(video), "--every", "0.5", "--output", str(tmp_path / "keyframes.csv"))
    assert csv.returncode == 1
    assert "--output must end in .jsonl" in csv.stderr
