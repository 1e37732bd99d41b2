"""The bundled motion_demo model: committed files, and its accuracy through a real TorchServe on new videos."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from handler.checkpoints import load_model
from handler.labels import MOTION_CLASSES, label_set, read_labels
from handler.models import get_spec
from slowfast_serve.client.inference import Client
from slowfast_serve.evaluation import drawn_motion
from slowfast_serve.evaluation.accuracy import Accuracy, drawn_clips, evaluate
from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.server.weights import find_checkpoint
from slowfast_serve.training.motion_data import ENCODINGS, make_video
from tests import REPO
from tests.serving import CLI, post_video

SPEC = get_spec("motion_demo")
DEMO_DIR = REPO / "models" / "motion_demo"
# The demo model was trained on dataset seeds 0 (train) and 1 (validation); these clips use another seed.
EVAL_SEED = 424242
EVAL_PER_CLASS = 10
# The independent generator's clips (never used for training or model selection); bench.demo_accuracy uses another.
DRAWN_SEED = 2027


def test_committed_checkpoint_labels_and_record() -> None:
    checkpoint = REPO / SPEC.bundled_checkpoint
    assert checkpoint.stat().st_size <= 20 * 1024 * 1024
    assert read_labels(DEMO_DIR / "labels.json") == label_set("motion8") == sorted(MOTION_CLASSES)
    model, weights = load_model(SPEC, checkpoint)
    assert weights.num_classes == 8
    assert weights.description.startswith("motion_demo.pyth sha256:")
    record = json.loads((DEMO_DIR / "training.json").read_text())
    assert record["minutes"] <= 45
    assert record["classes"] == label_set("motion8")
    assert record["arguments"]["seed"] == "0"


def test_offline_serving_finds_the_bundled_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: nothing to fall back on
    # the package's data (slowfast_serve/data/), which in a checkout links to the repository's models/
    assert find_checkpoint(SPEC, timeout=1).resolve() == (REPO / SPEC.bundled_checkpoint).resolve()


def _classify(server: TorchServe, data: bytes) -> dict:
    response = post_video(server, "motion_demo", files={"data": ("clip", data)}, data={"top_k": "3"})
    assert response.status_code == 200, response.text
    return response.json()


def _client(server: TorchServe) -> Client:
    return Client(server.inference_url, server.token(), model="motion_demo")


def _assert_accurate(accuracy: Accuracy, bar: float = 0.95) -> None:
    mistakes = [(m.truth, m.predicted, round(m.score, 2), m.attributes) for m in accuracy.mistakes()]
    assert accuracy.top1 >= bar, f"top-1 {accuracy.top1:.3f} on {len(accuracy.clips)} clips; mistakes: {mistakes}"


@pytest.mark.integration
def test_accuracy_on_new_videos_through_torchserve(demo_server: TorchServe) -> None:
    def make(number: int, motion: str, index: int) -> tuple[bytes, dict[str, str]]:
        data, video = make_video(motion, EVAL_SEED, index, encoding=number % len(ENCODINGS))
        return data, {"codec": video.codec, "container": video.container, "size": f"{video.width}x{video.height}",
                      "fps": str(float(video.fps))}  # fmt: skip

    pairs = [(motion, i) for motion in MOTION_CLASSES for i in range(EVAL_PER_CLASS)]
    clips = [(motion, lambda n=n, m=motion, i=i: make(n, m, i)) for n, (motion, i) in enumerate(pairs)]
    with _client(demo_server) as client:  # 4 in flight, so TorchServe batches them
        accuracy = evaluate(client, clips, label_set("motion8"))
    looks = [clip.attributes for clip in accuracy.clips]
    assert {(look["codec"], look["container"]) for look in looks} == {(e[0], e[1]) for e in ENCODINGS}
    assert any(int(w) % 2 or int(h) % 2 for w, h in (look["size"].split("x") for look in looks)), "odd frame sizes"
    assert len({look["fps"] for look in looks}) >= 4, "several frame rates"
    _assert_accurate(accuracy)


@pytest.mark.integration
def test_accuracy_on_independently_drawn_videos_through_torchserve(demo_server: TorchServe) -> None:
    """The independent generator draws with other code: other shapes, textures, motion pacing and codecs."""

    clips = drawn_clips(DRAWN_SEED, EVAL_PER_CLASS)
    assert len(clips) >= 80
    with _client(demo_server) as client:
        accuracy = evaluate(client, clips, label_set("motion8"))
    for motion in MOTION_CLASSES:
        looks = [clip.attributes for clip in accuracy.clips if clip.truth == motion]
        assert {"tiny", "large"} <= {look["size"] for look in looks}, motion
        assert {look["background"] for look in looks} & set(drawn_motion.BUSY_BACKGROUNDS), motion
    assert {clip.attributes["codec"] for clip in accuracy.clips} == set(drawn_motion.CODEC_FAMILIES)
    _assert_accurate(accuracy)


@pytest.mark.integration
@pytest.mark.parametrize(("motion", "reversed_motion"), [("moving left", "moving right"), ("growing", "shrinking")])
def test_a_clip_played_backwards_is_the_opposite_motion(
    demo_server: TorchServe, motion: str, reversed_motion: str
) -> None:
    forward, _ = make_video(motion, EVAL_SEED + 1, 0)
    backward, _ = make_video(motion, EVAL_SEED + 1, 0, reverse=True)
    assert _classify(demo_server, forward)["predictions"][0]["label"] == motion
    assert _classify(demo_server, backward)["predictions"][0]["label"] == reversed_motion


@pytest.mark.integration
def test_multi_view_request_through_torchserve(demo_server: TorchServe) -> None:
    video = make_video("rotating counterclockwise", 8080, 3)[0]
    response = post_video(demo_server, "motion_demo", files={"data": ("v", video)}, data={"views": "10x3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["views"]["clips"], body["views"]["crops"]) == (10, 3)
    starts = [start for start, _ in body["views"]["windows"]]
    assert starts == sorted(starts)
    assert starts[-1] > starts[0]
    assert body["predictions"][0]["label"] == "rotating counterclockwise"
    bad = post_video(demo_server, "motion_demo", data=video, headers={"Content-Type": "video/mp4", "X-Views": "4x2"})
    assert bad.status_code == 400
    assert bad.json()["type"] == "InvalidOption"


@pytest.mark.integration
def test_timeline_through_torchserve_and_the_client(demo_server: TorchServe, tmp_path: Path) -> None:
    from tests.test_pipeline import _there_and_back

    data, _ = _there_and_back()
    response = post_video(
        demo_server, "motion_demo", data=data, headers={"Content-Type": "video/mp4", "X-Mode": "timeline"}
    )
    assert response.status_code == 200, response.text
    intervals = response.json()["timeline"]["intervals"]
    assert [intervals[0]["label"], intervals[-1]["label"]] == ["moving left", "moving right"]
    video = tmp_path / "there-and-back.mp4"
    video.write_bytes(data)
    command = [CLI, "classify", str(video), "--model", "motion_demo"]
    command += ["--url", demo_server.inference_url, "--key-file", str(demo_server.key_file), "--mode", "timeline"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "timeline (windows every" in result.stdout
    assert "moving right" in result.stdout


@pytest.mark.integration
def test_handler_metrics_reach_prometheus(demo_server: TorchServe) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    video = make_video("growing", 4040, 0)[0]
    assert post_video(demo_server, "motion_demo", data=video, headers={"Content-Type": "video/mp4"}).ok
    bad = post_video(demo_server, "motion_demo", data=b"junk", headers={"Content-Type": "video/mp4"})
    assert bad.status_code == 400
    text = requests.get(f"{demo_server.metrics_url}/metrics", timeout=10).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in ("video_decode_seconds", "video_preprocess_seconds", "video_inference_seconds"):
        assert families[name].type == "histogram", name
        counts = [s.value for s in families[name].samples if s.name.endswith("_count")]
        assert sum(counts) >= 1, name
    errors = [s for s in families["video_request_errors"].samples if s.labels.get("error_type") == "InvalidVideo"]
    assert errors
    assert errors[0].labels["ModelName"] == "motion_demo"
    assert any(s.labels.get("resolution") for s in families["video_requests"].samples)
