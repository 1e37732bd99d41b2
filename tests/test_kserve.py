"""The KServe layout (slowfast-serve kserve) served by a real TorchServe from its own config.properties, and
KServe v1 requests (``POST /v1/models/{name}:predict`` with base64 ``instances``) answered by the handler."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from handler.models import get_spec
from slowfast_serve.server.archive import build_archive
from slowfast_serve.server.kserve import make_layout
from slowfast_serve.server.torchserve import REPO, TorchServe, free_port_overrides, read_properties
from slowfast_serve.training.motion_data import make_video

SPEC = get_spec("motion_demo")
DEPLOY = REPO / "deploy" / "kserve"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_archive("motion_demo", REPO / SPEC.bundled_checkpoint, model_store=store)
    return make_layout(["motion_demo"], store, tmp_path_factory.mktemp("kserve") / "motion_demo")


@pytest.fixture(scope="module")
def kserve_server(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """TorchServe started from the layout's own config; only what a laptop lacks is changed: free loopback ports
    instead of 8080/8082/7070, and the local copy of the model store instead of /mnt/models."""
    instance = TorchServe(tmp_path_factory.mktemp("ts"), layout / "model-store")
    local = {**free_port_overrides(), "model_store": str(instance.model_store), "allowed_urls": instance.allowed_urls()}
    instance.start({}, base_config=layout / "config" / "config.properties", overrides=local)
    try:
        instance.wait_ready("motion_demo", timeout=300)
        yield instance
    finally:
        instance.stop()


def test_the_layout_is_what_the_kserve_torchserve_runtime_reads(layout: Path) -> None:
    assert sorted(str(p.relative_to(layout)) for p in layout.rglob("*")) == [
        "config",
        "config/config.properties",
        "model-store",
        "model-store/motion_demo.mar",
    ]
    properties = read_properties(layout / "config" / "config.properties")
    # The keys the stock runtime's KServe wrapper parses, and the in-cluster listeners.
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    assert properties["metrics_address"] == "http://0.0.0.0:8082"
    assert properties["management_address"] == "http://127.0.0.1:8081"
    assert properties["model_store"] == "/mnt/models/model-store"
    snapshot = json.loads(properties["model_snapshot"])
    ((version, entry),) = snapshot["models"]["motion_demo"].items()
    assert version.startswith("1.0+")
    assert entry["marName"] == "motion_demo.mar"
    assert entry["batchSize"] == 4
    assert properties["disable_token_authorization"] == "true"
    assert properties["enable_envvars_config"] == "false"
    # Everything else is the repository's config (one place for each setting).
    repository = read_properties(REPO / "config.properties")
    assert properties["max_request_size"] == repository["max_request_size"]
    assert properties["metrics_mode"] == "prometheus"


def _instance(video: bytes, **options: object) -> dict:
    return {"data": {"b64": base64.b64encode(video).decode()}, **options}


@pytest.mark.integration
def test_kserve_v1_predict_through_torchserve(kserve_server: TorchServe) -> None:
    url = f"{kserve_server.inference_url}/v1/models/motion_demo:predict"
    assert requests.get(f"{kserve_server.inference_url}/ping", timeout=10).json() == {"status": "Healthy"}
    left, up = make_video("moving left", 5150, 0)[0], make_video("moving up", 5150, 1)[0]
    body = {"instances": [_instance(left), _instance(up, top_k=2, views="2x1")]}
    response = requests.post(url, json=body, timeout=300)  # no token: the layout leaves auth to the cluster
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["predictions"][0]["label"] == "moving left"
    assert second["predictions"][0]["label"] == "moving up"
    assert len(second["predictions"]) == 2
    assert second["views"]["clips"] == 2
    assert first["weights"].startswith("motion_demo.pyth sha256:")

    bad = requests.post(url, json={"instances": [_instance(left), {"data": {"b64": "not base64!"}}]}, timeout=60)
    assert bad.status_code == 400
    assert bad.json()["type"] == "InvalidBase64"
    assert "instances[1]" in bad.json()["message"]
    broken = requests.post(url, json={"instances": [_instance(b"\x00" * 1000)]}, timeout=60)
    assert broken.status_code == 400
    assert broken.json()["type"] == "InvalidVideo"
    # The single-video API answers on the same server.
    single = requests.post(
        f"{kserve_server.inference_url}/predictions/motion_demo", files={"data": ("v", left)}, timeout=300
    )
    assert single.json()["predictions"][0]["label"] == "moving left"


def test_the_manifests_point_at_the_layout() -> None:
    runtime, service = (
        yaml.safe_load((DEPLOY / name).read_text()) for name in ("runtime.yaml", "inference-service.yaml")
    )
    assert runtime["kind"] == "ServingRuntime"
    container = runtime["spec"]["containers"][0]
    assert "--foreground" in container["args"]
    assert "--model-store=/mnt/models/model-store" in container["args"]
    assert "--ts-config=/mnt/models/config/config.properties" in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {8080}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    assert predictor["model"]["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
