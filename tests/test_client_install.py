"""The client installed alone (``pip install ".[client]"`` into a fresh venv): no torch there, and it classifies
against a real TorchServe, from the command line and from Python."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.training.motion_data import make_video
from tests import REPO
from tests.installs import fresh_venv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only ``.[client]`` of this checkout installed (a regular, non-editable install)."""
    return fresh_venv(tmp_path_factory.mktemp("client-venv"), f"{REPO}[client]")


def _run(env: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(env / "bin" / command[0]), *command[1:]], capture_output=True, text=True, timeout=300)


def test_the_client_environment_has_no_torch_pyav_or_torchserve(client_env: Path) -> None:
    for module in ("torch", "av", "ts", "numpy"):
        result = _run(client_env, "python", "-c", f"import {module}")
        assert result.returncode != 0, module
        assert "ModuleNotFoundError" in result.stderr, module
    assert _run(client_env, "python", "-c", "import slowfast_serve.client").returncode == 0


def test_the_client_classifies_against_a_real_server(client_env: Path, demo_server: TorchServe, tmp_path: Path) -> None:
    video = tmp_path / "up.mp4"
    video.write_bytes(make_video("moving up", 4321, 0)[0])
    where = ["--url", demo_server.inference_url, "--key-file", str(demo_server.key_file), "--model", "motion_demo"]
    cli = _run(client_env, "slowfast-serve", "classify", str(video), *where, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["predictions"][0]["label"] == "moving up"

    code = (
        "import sys\n"
        "from slowfast_serve.client import Client, ServiceError, read_token\n"
        "url, keys, video = sys.argv[1:]\n"
        "client = Client(url, read_token(keys), model='motion_demo')\n"
        "print(client.classify(video, top_k=2).top.label)\n"
        "try:\n"
        "    client.classify(b'not a video')\n"
        "except ServiceError as e:\n"
        "    print(e.status, e.type)\n"
    )
    api = _run(client_env, "python", "-c", code, demo_server.inference_url, str(demo_server.key_file), str(video))
    assert api.returncode == 0, api.stderr
    assert api.stdout.splitlines() == ["moving up", "400 InvalidVideo"]


def test_server_commands_say_what_they_need(client_env: Path) -> None:
    result = _run(client_env, "slowfast-serve", "serve", "--model", "motion_demo")
    assert result.returncode == 1
    assert "needs the server stack" in result.stderr or "checkout" in result.stderr
    assert "Traceback" not in result.stderr
    assert _run(client_env, "slowfast-serve", "classify", "--help").returncode == 0
