"""The package installed from the repository like any package (``pip install``, not editable) works outside a
clone: it finds the handler, TorchServe's base config and the bundled demo model among its installed files,
writes ``model_store/`` and ``run/`` where it runs, builds an archive and serves it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from slowfast_serve.server.torchserve import (
    DEFAULT_CONFIG,
    free_port,
    free_port_overrides,
    read_properties,
    write_properties,
)
from slowfast_serve.training.motion_data import make_video
from tests import REPO
from tests.installs import fresh_venv, pinned

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding this repository's wheel and TorchServe's own (for their commands and for TorchServe to
    start its workers with this venv's interpreter); the rest of the pinned stack is shared (see fresh_venv)."""
    return fresh_venv(
        tmp_path_factory.mktemp("server-venv"),
        *pinned("torchserve", "torch-model-archiver"),
        str(REPO),
        share_stack=True,
    )


def _run(env: Path, cwd: Path, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": f"{env / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    environ.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(env / "bin" / command[0]), *command[1:]], cwd=cwd, env=environ, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_the_installed_package_is_not_the_checkout(server_env: Path, tmp_path: Path) -> None:
    code = (
        "import json, handler, slowfast_serve.checkout as c, slowfast_serve.server as s\n"
        "print(json.dumps([handler.__file__, str(c.CHECKOUT), str(c.WORKSPACE), str(s.PACKAGE_DATA)]))"
    )
    result = _run(server_env, tmp_path, "python", "-c", code)
    assert result.returncode == 0, result.stderr
    handler_file, checkout, workspace, data = json.loads(result.stdout)
    assert Path(handler_file).is_relative_to(server_env)
    assert not Path(handler_file).is_relative_to(REPO)
    assert checkout == "None"
    assert workspace == str(tmp_path)
    # the wheel holds copies of the checkout's linked files, byte for byte
    assert not (Path(data) / "config.properties").is_symlink()
    assert (Path(data) / "config.properties").read_bytes() == (REPO / "config.properties").read_bytes()
    bundled = Path(data) / "models" / "motion_demo" / "motion_demo.pyth"
    assert bundled.read_bytes() == (REPO / "models" / "motion_demo" / "motion_demo.pyth").read_bytes()


def test_archive_and_serve_from_another_directory(server_env: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    archived = _run(server_env, work, "slowfast-serve", "archive", "--model", "motion_demo")
    assert archived.returncode == 0, archived.stderr[-3000:]
    mar = work / "model_store" / "motion_demo.mar"
    assert archived.stdout.strip().splitlines()[-1] == str(mar)
    assert mar.is_file()
    record = json.loads((work / "model_store" / "motion_demo.build.json").read_text())
    assert Path(record["checkpoint"]).is_relative_to(server_env), record["checkpoint"]

    config = work / "ports.properties"  # the package's config on free ports (the defaults may be taken)
    write_properties({**read_properties(DEFAULT_CONFIG), **free_port_overrides()}, config)
    web_port = free_port()
    serve = ["slowfast-serve", "serve", "--model", "motion_demo", "--config", str(config), "--web-port", str(web_port)]
    try:
        served = _run(server_env, work, *serve)
        assert served.returncode == 0, served.stdout[-2000:] + served.stderr[-3000:]
        assert f"using {mar}" in served.stdout  # the archive just built, found in ./model_store
        assert "Stop: slowfast-serve stop" in served.stdout
        assert ".venv/bin" not in served.stdout
        url = re.search(r"at (http://\S+)/predictions/motion_demo", served.stdout).group(1)

        video = work / "up.mp4"
        video.write_bytes(make_video("moving up", 4321, 0)[0])
        classify = ["slowfast-serve", "classify", str(video), "--url", url, "--model", "motion_demo", "--json"]
        answer = _run(server_env, work, *classify)  # the key file found in ./run, where serve started TorchServe
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["predictions"][0]["label"] == "moving up"
        page = requests.get(f"http://127.0.0.1:{web_port}/", timeout=30)  # the page's files come from the wheel
        assert page.status_code == 200
        assert "<html" in page.text.lower()
    finally:
        stopped = _run(server_env, work, "slowfast-serve", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "TorchServe stopped" in stopped.stdout
    assert "the web page stopped" in stopped.stdout
