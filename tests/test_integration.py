"""End to end through a real TorchServe (Java frontend + Python worker) on free loopback ports."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from handler.models import get_spec
from slowfast_serve.server.torchserve import TorchServe
from tests.serving import CLI, post_video, running_torchserve
from tests.videos import encode, moving_frames

pytestmark = pytest.mark.integration

MODEL = "slowfast_r50"


@pytest.fixture(scope="module")
def server(archive: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """TorchServe with the repository's config.properties, on free ports, serving a random-init slowfast_r50."""
    with running_torchserve(archive(MODEL), tmp_path_factory.mktemp("ts")) as instance:
        yield instance


@pytest.fixture(scope="module")
def video() -> bytes:
    return encode(moving_frames(90, 240, 320), fps=30)


def _predict(server: TorchServe, token: str | None = "auto", **kwargs) -> requests.Response:
    return post_video(server, MODEL, token, **kwargs)


def _concurrently(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Starts all calls at the same moment, so TorchServe can put them in one batch."""
    barrier = threading.Barrier(len(calls))
    results: list[requests.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def test_multipart_upload(server: TorchServe, video: bytes) -> None:
    response = _predict(server, files={"data": ("clip.mp4", video)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["model"] == MODEL
    assert body["weights"] == "random-init"
    assert body["clip"] == {"start_sec": 0.0, "end_sec": 2.133, "frames": 32, "source_frames": 64}
    predictions = body["predictions"]
    assert len(predictions) == 5
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1 for s in scores)
    assert all(isinstance(p["label"], str) and 0 <= p["class_id"] < 400 for p in predictions)
    assert body["video"]["width"] == 320


def test_raw_body_with_option_headers(server: TorchServe, video: bytes) -> None:
    response = _predict(server, data=video, headers={"Content-Type": "video/mp4", "X-Top-K": "3", "X-Start-Sec": "0.5"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 3
    assert body["clip"]["start_sec"] == 0.5


def test_multipart_options(server: TorchServe, video: bytes) -> None:
    response = _predict(server, files={"data": ("clip.mp4", video)}, data={"top_k": "2", "start_sec": "0.25"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2
    assert response.json()["clip"]["start_sec"] == 0.25


def test_concurrent_uploads_are_batched(server: TorchServe, video: bytes) -> None:
    responses = _concurrently([lambda: _predict(server, files={"data": ("clip.mp4", video)})] * 4)
    assert [r.status_code for r in responses] == [200] * 4
    assert max(r.json()["batch_size"] for r in responses) > 1


def test_a_corrupt_upload_fails_alone_inside_a_batch(server: TorchServe, video: bytes) -> None:
    corrupt = video[:200] + bytes(len(video) - 200)  # header kept, the rest zeroed
    for _attempt in range(3):  # TorchServe may split a burst across batches; retry until one batch holds all 4
        calls = [lambda: _predict(server, files={"data": ("clip.mp4", video)})] * 3
        calls.append(lambda: _predict(server, files={"data": ("bad.mp4", corrupt)}))
        responses = _concurrently(calls)
        assert [r.status_code for r in responses] == [200, 200, 200, 400], [r.text[:200] for r in responses]
        error = responses[3].json()
        assert error["code"] == 400
        assert error["type"] in {"InvalidVideo", "NoFrames"}
        assert error["message"]
        if all(r.json()["batch_size"] == 4 for r in responses[:3]):
            return
    pytest.fail("the four concurrent requests never shared one batch")


def test_requests_without_a_valid_token_are_refused(server: TorchServe, video: bytes) -> None:
    for token in (None, "not-the-token"):
        response = _predict(server, token=token, data=video, headers={"Content-Type": "video/mp4"})
        assert response.status_code == 400
        assert response.json()["type"] == "InvalidKeyException"


def test_model_api_is_off_and_metrics_are_prometheus(server: TorchServe) -> None:
    management = {"Authorization": f"Bearer {server.token('management')}"}
    refused = requests.post(f"{server.management_url}/models", params={"url": "x.mar"}, headers=management, timeout=30)
    assert refused.status_code == 405
    allowed = server.properties()["allowed_urls"].replace("\\\\", "\\")  # as Java reads the properties file
    assert re.fullmatch(allowed, f"file://{server.model_store}/{MODEL}.mar")
    assert not re.fullmatch(allowed, "https://example.com/evil.mar")
    assert not re.fullmatch(allowed, "file:///etc/evil.mar")
    metrics = requests.get(f"{server.metrics_url}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "ts_inference_requests_total" in metrics.text


def _client(server: TorchServe, *args: str) -> subprocess.CompletedProcess[str]:
    command = [CLI, "classify", *args]
    command += ["--url", server.inference_url, "--key-file", str(server.key_file), "--model", MODEL]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_client_json_and_table(server: TorchServe, video: bytes, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(video)
    result = _client(server, str(clip), "--json", "--top-k", "4", "--start-sec", "0.5")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert len(body["predictions"]) == 4
    assert body["clip"]["start_sec"] == 0.5

    table = _client(server, str(clip))
    assert table.returncode == 0, table.stderr
    assert body["predictions"][0]["label"] in table.stdout
    assert "random-init" in table.stdout


def test_client_reports_a_bad_file_and_exits_nonzero(server: TorchServe, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a video")
    result = _client(server, str(bad))
    assert result.returncode == 1
    assert "HTTP 400 InvalidVideo" in result.stderr


def test_client_json_equals_the_tutorial_pipeline(
    server: TorchServe, random_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    """Top-5 ids and scores from slowfast-serve classify --json equal the hub tutorial's, with the same weights."""
    from tests import reference
    from tests.test_parity import _hub_model

    hub_model = _hub_model(MODEL, random_checkpoint(MODEL))
    spec = get_spec(MODEL)
    cases = [
        ("h264-25fps.mkv", encode(moving_frames(100, 180, 320, seed=3), fps=25, container="matroska"), None),
        (
            "vp9-60fps.webm",
            encode(moving_frames(150, 144, 256, seed=4), fps=60, container="webm", codec="libvpx-vp9"),
            0.4,
        ),
        ("mpeg4-short.avi", encode(moving_frames(30, 120, 160, seed=5), fps=24, container="avi", codec="mpeg4"), None),
    ]
    for name, data, start_sec in cases:
        path = tmp_path / name
        path.write_bytes(data)
        args = [str(path), "--json"] + ([] if start_sec is None else ["--start-sec", str(start_sec)])
        result = _client(server, *args)
        assert result.returncode == 0, result.stderr
        served = json.loads(result.stdout)["predictions"]
        inputs = reference.tutorial_inputs(path, spec, start_sec or 0)
        expected = reference.tutorial_probabilities(hub_model, inputs)[0].topk(5)
        assert [p["class_id"] for p in served] == expected.indices.tolist(), name
        for p, score in zip(served, expected.values.tolist(), strict=True):
            assert p["score"] == pytest.approx(score, abs=1e-5), name
