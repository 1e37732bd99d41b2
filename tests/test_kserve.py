"""The KServe layout (slowfast-serve kserve) served as the ServingRuntime serves it: ``slowfast-serve gateway`` on
the layout starts a real TorchServe with token authorization on and serves KServe v1 requests (``POST
/v1/models/{name}:predict`` with base64 ``instances``) and single videos in front of it, holding TorchServe's
keys (renewed as they expire) while callers send the pod's own token."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from handler.models import get_spec
from slowfast_serve.client.keys import read_key
from slowfast_serve.server.kserve import make_layout
from slowfast_serve.server.torchserve import (
    free_port,
    free_port_overrides,
    read_properties,
    write_properties,
)
from slowfast_serve.training.motion_data import make_video
from tests import REPO
from tests.serving import CLI

SPEC = get_spec("motion_demo")
DEPLOY = REPO / "deploy" / "kserve"
CALLER_TOKEN = "pod-token-for-callers"
#: TorchServe's keys last 0.1 minute in the test pod (a week in the layout), so that the gateway must renew them.
TEST_KEY_MINUTES = "0.1"


@pytest.fixture(scope="module")
def layout(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_layout(["motion_demo"], demo_archive.parent, tmp_path_factory.mktemp("kserve") / "motion_demo")


@dataclass
class Pod:
    """``slowfast-serve gateway`` running on a copy of the layout, as the ServingRuntime's container runs it."""

    process: subprocess.Popen
    url: str
    runtime_dir: Path
    properties: dict[str, str]
    log: Path

    @property
    def key_file(self) -> Path:
        return self.runtime_dir / "key_file.json"

    def torchserve_pid(self) -> int | None:
        try:
            return int((self.runtime_dir / "tmp" / ".model_server.pid").read_text())
        except (OSError, ValueError):
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_pod(layout: Path, where: Path, *caller_auth: str, **changes: str) -> Pod:
    """The gateway on a copy of ``layout`` whose config differs only in what a laptop needs (free loopback ports
    instead of 8085/8081/8082/7070/7071) and ``changes``."""
    copy = where / "layout"
    shutil.copytree(layout, copy)
    config = copy / "config" / "config.properties"
    properties = {**read_properties(config), **free_port_overrides(), **changes}
    write_properties(properties, config)
    port = free_port()
    log = where / "gateway.log"
    command = [CLI, "gateway", "--layout", str(copy), "--runtime-dir", str(where / "run"), "--host", "127.0.0.1"]
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), *caller_auth], stdout=out, stderr=subprocess.STDOUT, cwd=where
        )
    return Pod(process, f"http://127.0.0.1:{port}", where / "run", properties, log)


def stop_pod(pod: Pod, timeout: float = 90) -> int:
    """SIGTERM, as Kubernetes stops a container; returns the gateway's exit status."""
    pod.process.send_signal(signal.SIGTERM)
    try:
        return pod.process.wait(timeout)
    except subprocess.TimeoutExpired:
        pod.process.kill()
        raise


@pytest.fixture(scope="module")
def pod(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(CALLER_TOKEN + "\n")
    running = start_pod(
        layout,
        tmp_path_factory.mktemp("pod"),
        "--token-file",
        str(token_file),
        token_expiration_min=TEST_KEY_MINUTES,
    )
    try:
        deadline = time.monotonic() + 300
        while True:  # KServe's readiness probe: /ping through the gateway, without a token
            assert running.process.poll() is None, running.output()
            try:
                if requests.get(f"{running.url}/ping", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, running.output()
            time.sleep(1)
        yield running
    finally:
        torchserve = running.torchserve_pid()
        status = stop_pod(running)
    # Stopped as Kubernetes stops a container: the gateway exits cleanly and takes TorchServe with it.
    assert status == 0, running.output()
    assert torchserve is not None
    assert not _alive(torchserve)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _auth(token: str = CALLER_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_the_layout_is_what_the_kserve_torchserve_runtime_reads(layout: Path) -> None:
    assert sorted(str(p.relative_to(layout)) for p in layout.rglob("*")) == [
        "config",
        "config/config.properties",
        "model-store",
        "model-store/motion_demo.mar",
    ]
    properties = read_properties(layout / "config" / "config.properties")
    # TorchServe's listeners: inference and management on the pod's loopback (the gateway has port 8080), the
    # metrics for Prometheus.
    assert properties["inference_address"] == "http://127.0.0.1:8085"
    assert properties["management_address"] == "http://127.0.0.1:8081"
    assert properties["grpc_inference_address"] == "127.0.0.1"
    assert properties["metrics_address"] == "http://0.0.0.0:8082"
    assert properties["model_store"] == "/mnt/models/model-store"
    snapshot = json.loads(properties["model_snapshot"])
    ((version, entry),) = snapshot["models"]["motion_demo"].items()
    assert version.startswith("1.0+")
    assert entry["marName"] == "motion_demo.mar"
    assert entry["batchSize"] == 4
    assert properties["disable_token_authorization"] == "false"
    assert properties["token_expiration_min"] == str(7 * 24 * 60)
    assert properties["enable_envvars_config"] == "false"
    # Everything else is the repository's config (one place for each setting).
    repository = read_properties(REPO / "config.properties")
    assert properties["max_request_size"] == repository["max_request_size"]
    assert properties["metrics_mode"] == "prometheus"


def _instance(video: bytes, **options: object) -> dict:
    return {"data": {"b64": base64.b64encode(video).decode()}, **options}


@pytest.mark.integration
def test_kserve_v1_predict_through_the_gateway(pod: Pod) -> None:
    url = f"{pod.url}/v1/models/motion_demo:predict"
    assert requests.get(f"{pod.url}/ping", timeout=10).json() == {"status": "Healthy"}
    left, up = make_video("moving left", 5150, 0)[0], make_video("moving up", 5150, 1)[0]
    body = {"instances": [_instance(left), _instance(up, top_k=2, views="2x1")]}
    response = requests.post(url, json=body, headers=_auth(), timeout=300)
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["predictions"][0]["label"] == "moving left"
    assert second["predictions"][0]["label"] == "moving up"
    assert len(second["predictions"]) == 2
    assert second["views"]["clips"] == 2
    assert first["weights"].startswith("motion_demo.pyth sha256:")

    bad = requests.post(
        url, json={"instances": [_instance(left), {"data": {"b64": "not base64!"}}]}, headers=_auth(), timeout=60
    )
    assert bad.status_code == 400
    assert bad.json()["type"] == "InvalidBase64"
    assert "instances[1]" in bad.json()["message"]
    broken = requests.post(url, json={"instances": [_instance(b"\x00" * 1000)]}, headers=_auth(), timeout=60)
    assert broken.status_code == 400
    assert broken.json()["type"] == "InvalidVideo"
    # The single-video API on the same port, multipart with its options as fields, and the client's own command
    # with the pod's token from the environment.
    single = requests.post(
        f"{pod.url}/predictions/motion_demo",
        files={"data": ("v", left)},
        data={"top_k": "1"},
        headers=_auth(),
        timeout=300,
    )
    assert single.status_code == 200, single.text
    assert [p["label"] for p in single.json()["predictions"]] == ["moving left"]


@pytest.mark.integration
def test_the_gateway_holds_torchserve_tokens_and_callers_need_the_pods(pod: Pod, tmp_path: Path) -> None:
    video = make_video("moving up", 5150, 2)[0]
    predict = f"{pod.url}/predictions/motion_demo"
    for headers in ({}, _auth("wrong"), {"Authorization": CALLER_TOKEN}):
        refused = requests.post(predict, files={"data": ("v", video)}, headers=headers, timeout=60)
        assert refused.status_code == 401, refused.text
        assert refused.json()["type"] == "Unauthorized"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    # TorchServe itself keeps token authorization on: its own port refuses a call without its key...
    direct = requests.post(
        f"{pod.properties['inference_address']}/predictions/motion_demo", files={"data": ("v", video)}, timeout=60
    )
    assert direct.status_code == 400, direct.text
    assert direct.json()["type"] == "InvalidKeyException"
    # ... the management and token APIs are not served on the pod's port, and the metrics need no key.
    for path in ("/models", "/token?type=inference", "/metrics", "/v1/models/motion_demo"):
        assert requests.get(f"{pod.url}{path}", headers=_auth(), timeout=10).status_code == 404
    metrics = requests.get(f"{pod.properties['metrics_address']}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "ts_inference_requests_total" in metrics.text

    # TorchServe's keys expire (0.1 minute here): the gateway renews them, and callers never notice.
    before = read_key(pod.key_file, "inference")
    assert before.expires is not None
    time.sleep(max(0.0, before.expires.timestamp() - time.time()) + 0.5)
    for _ in range(2):
        answer = subprocess.run(
            [CLI, "classify", "--url", pod.url, "--model", "motion_demo", "--json", str(_write(tmp_path, video))],
            env={**os.environ, "SLOWFAST_SERVE_TOKEN": CALLER_TOKEN},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert answer.returncode == 0, answer.stderr + pod.output()
        assert json.loads(answer.stdout)["predictions"][0]["label"] == "moving up"
    assert read_key(pod.key_file, "inference").key != before.key


def _write(where: Path, video: bytes) -> Path:
    path = where / "up.mp4"
    path.write_bytes(video)
    return path


@pytest.mark.integration
def test_the_gateway_exits_when_torchserve_does(layout: Path, tmp_path: Path) -> None:
    """Kubernetes restarts a container whose main process exits: the gateway must not outlive TorchServe."""
    pod = start_pod(layout, tmp_path, "--no-caller-auth")
    try:
        deadline = time.monotonic() + 120
        while pod.torchserve_pid() is None:
            assert pod.process.poll() is None, pod.output()
            assert time.monotonic() < deadline, pod.output()
            time.sleep(0.5)
        os.kill(pod.torchserve_pid(), signal.SIGKILL)
        assert pod.process.wait(60) == 1
        assert "TorchServe exited" in pod.output()
    finally:
        if pod.process.poll() is None:
            stop_pod(pod)


def test_the_manifests_point_at_the_layout() -> None:
    runtime, service = (
        yaml.safe_load((DEPLOY / name).read_text()) for name in ("runtime.yaml", "inference-service.yaml")
    )
    assert runtime["kind"] == "ServingRuntime"
    container = runtime["spec"]["containers"][0]
    assert container["args"][:2] == ["slowfast-serve", "gateway"]
    assert "--layout=/mnt/models" in container["args"]
    # The callers' token: the Secret's file, mounted where the gateway reads it.
    token = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--token-file="))
    (mount,) = container["volumeMounts"]
    assert Path(token).parent == Path(mount["mountPath"])
    assert mount["readOnly"]
    (volume,) = runtime["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["secret"]["secretName"]
    assert {p["containerPort"] for p in container["ports"]} == {8080}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    assert predictor["model"]["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
