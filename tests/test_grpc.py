"""gRPC (slowfast_serve.client.grpc_client, `slowfast-serve classify --grpc`) against the demo server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest

from slowfast_serve.client.grpc_client import GrpcClient, PredictionError
from slowfast_serve.client.grpc_stubs import DEFAULT_OUT, up_to_date
from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.training.motion_data import make_video
from tests.serving import CLI, post_video, worker_pids

pytestmark = pytest.mark.integration

MODEL = "motion_demo"


def _client(server: TorchServe, token: str | None = "auto") -> GrpcClient:
    properties = server.properties()
    return GrpcClient(
        inference=f"127.0.0.1:{properties['grpc_inference_port']}",
        management=f"127.0.0.1:{properties['grpc_management_port']}",
        token=server.token() if token == "auto" else token,
        management_token=server.token("management"),
        timeout=120,
    )


@pytest.fixture(scope="module")
def video() -> bytes:
    return make_video("moving right", 5150, 0)[0]


def test_stubs_come_from_the_installed_torchserve() -> None:
    assert up_to_date(DEFAULT_OUT)
    assert (DEFAULT_OUT / "inference_pb2_grpc.py").is_file()


def test_predictions_equal_the_http_answer(demo_server: TorchServe, video: bytes) -> None:
    with _client(demo_server) as client:
        assert client.ping() == "Healthy"
        over_grpc = client.predict(MODEL, video, top_k=3, start_sec=0.5)
    over_http = post_video(demo_server, MODEL, files={"data": ("v", video)}, data={"top_k": "3", "start_sec": "0.5"})
    assert over_http.status_code == 200
    assert over_grpc["predictions"] == over_http.json()["predictions"]
    assert over_grpc["clip"]["start_sec"] == 0.5
    assert over_grpc["predictions"][0]["label"] == "moving right"


def test_stream_predictions_answers_without_killing_the_worker(demo_server: TorchServe, video: bytes) -> None:
    # TorchServe 0.12 kills the worker when a StreamPredictions answer lacks its stream header (see ts_handler).
    before = worker_pids(demo_server, MODEL)
    with _client(demo_server) as client:
        messages = list(client.stream_predict(MODEL, video, top_k=2))
        assert [len(m["predictions"]) for m in messages] == [2]
        assert client.predict(MODEL, video)["predictions"][0]["label"] == "moving right"
    assert worker_pids(demo_server, MODEL) == before
    assert post_video(demo_server, MODEL, data=video, headers={"Content-Type": "video/mp4"}, timeout=60).ok


@pytest.mark.parametrize(
    ("upload", "options", "status", "kind"),
    [(b"not a video", {}, 400, "InvalidVideo"), (None, {"top_k": "abc"}, 400, "InvalidOption")],
)
def test_a_failed_request_is_an_error_not_a_result(
    demo_server: TorchServe, video: bytes, upload: bytes | None, options: dict, status: int, kind: str
) -> None:
    # gRPC carries no per-request status inside a batch: the client finds the handler's error in the payload.
    with _client(demo_server) as client, pytest.raises(PredictionError) as info:
        client.predict(MODEL, upload or video, **options)
    assert (info.value.status, info.value.type) == (status, kind)
    assert info.value.message


def test_a_wrong_token_is_refused(demo_server: TorchServe, video: bytes) -> None:
    with _client(demo_server, token="not-the-key") as client, pytest.raises(grpc.RpcError) as info:
        client.predict(MODEL, video)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_management_describes_and_refuses_registration_when_the_model_api_is_off(demo_server: TorchServe) -> None:
    with _client(demo_server) as client:
        (description,) = client.describe(MODEL)
        assert description["modelName"] == MODEL
        assert any(worker["status"] == "READY" for worker in description["workers"])
        with pytest.raises(grpc.RpcError) as info:
            client.unregister(MODEL)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "Model API disabled" in info.value.details()


def test_classify_cli_over_grpc(demo_server: TorchServe, video: bytes, tmp_path: Path) -> None:
    good, bad = tmp_path / "clip.mp4", tmp_path / "bad.mp4"
    good.write_bytes(video)
    bad.write_bytes(b"nothing to see")
    address = f"127.0.0.1:{demo_server.properties()['grpc_inference_port']}"
    command = [CLI, "classify", str(good), str(bad), "--model", MODEL]
    command += ["--grpc", "--grpc-address", address, "--json", "--key-file", str(demo_server.key_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1  # one of the two failed
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["predictions"][0]["label"] == "moving right"
    assert second["type"] == "InvalidVideo"
    assert "InvalidVideo" in " ".join(result.stderr.split())  # rich wraps the line


def test_views_over_grpc(demo_server: TorchServe, video: bytes) -> None:
    with _client(demo_server) as client:
        result = client.predict(MODEL, video, views="4x1")
    assert len(result["views"]["windows"]) == 4
    assert result["predictions"][0]["label"] == "moving right"
