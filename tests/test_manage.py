"""slowfast-serve against real TorchServe instances: describe, scale, register and unregister."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.training.motion_data import make_video
from tests.serving import CLI, copy_archive, post_video, running_torchserve

pytestmark = pytest.mark.integration


def manage(server: TorchServe, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``slowfast-serve COMMAND ARGS`` against ``server``'s management API with its management key."""
    command_line = [CLI, command, "--url", server.management_url, "--key-file", str(server.key_file), *args]
    return subprocess.run(command_line, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def open_server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """motion_demo on a TorchServe with the model API on (registration allowed from its model store)."""
    store = tmp_path_factory.mktemp("store")
    mar = copy_archive(demo_archive, store)
    copy_archive(demo_archive, store, "second")
    with running_torchserve(mar, tmp_path_factory.mktemp("ts"), {"enable_model_api": "true"}) as server:
        yield server


def _workers(server: TorchServe, model: str) -> list[str]:
    result = manage(server, "models", model, "--json")
    assert result.returncode == 0, result.stderr
    (description,) = json.loads(result.stdout)
    return [worker["status"] for worker in description["workers"]]


def test_describe_lists_every_model(open_server: TorchServe) -> None:
    result = manage(open_server, "models")
    assert result.returncode == 0, result.stderr
    assert "motion_demo" in result.stdout
    assert _workers(open_server, "motion_demo") == ["READY"]


def test_scale_up_and_down(open_server: TorchServe) -> None:
    assert manage(open_server, "scale", "motion_demo", "--workers", "2").returncode == 0
    assert _workers(open_server, "motion_demo") == ["READY", "READY"]
    assert manage(open_server, "scale", "motion_demo", "--workers", "1").returncode == 0
    assert _workers(open_server, "motion_demo") == ["READY"]


def test_register_serve_and_unregister(open_server: TorchServe) -> None:
    registered = manage(open_server, "register", "second.mar", "--name", "second", "--workers", "1")
    assert registered.returncode == 0, registered.stderr
    video = make_video("moving left", 606, 1)[0]
    response = post_video(open_server, "second", data=video, headers={"Content-Type": "video/mp4"})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "moving left"
    assert manage(open_server, "unregister", "second").returncode == 0
    gone = manage(open_server, "models", "second")
    assert gone.returncode == 1
    assert "404" in gone.stderr


def test_registration_is_refused_with_a_hint_when_the_model_api_is_off(demo_server: TorchServe) -> None:
    result = manage(demo_server, "register", "motion_demo.mar", "--name", "again")
    assert result.returncode == 1
    assert "--enable-model-api" in " ".join(result.stderr.split())


def test_scaling_an_unknown_model_says_so(open_server: TorchServe) -> None:
    result = manage(open_server, "scale", "nosuch", "--workers", "1")
    assert result.returncode == 1
    assert "Model not found" in " ".join(result.stderr.split())
