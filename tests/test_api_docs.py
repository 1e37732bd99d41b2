"""The examples of docs/api.md run as written against a real TorchServe (the demo server)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.training.motion_data import make_video
from tests import REPO

pytestmark = pytest.mark.integration

BLOCKS = re.findall(r"^```(bash|python)\n(.*?)^```", (REPO / "docs" / "api.md").read_text(), flags=re.M | re.S)
EXAMPLES = BLOCKS[BLOCKS.index(next(b for b in BLOCKS if "$KEYS" in b[1])) :]  # the section the tests run


def test_the_examples_are_found() -> None:
    assert [language for language, _ in EXAMPLES] == ["bash", "python", "python"]


def test_every_expected_error_fails_the_example_when_it_does_not_come() -> None:
    """An example that catches the service's error must also fail when the call succeeds (a server accepting junk
    would pass otherwise): each ``try`` of the Python examples has an ``else`` that raises."""
    tries = [
        node for _, code in EXAMPLES if _ == "python" for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Try)
    ]
    assert len(tries) == 2
    for node in tries:
        assert node.orelse, ast.unparse(node)
        assert isinstance(node.orelse[-1], ast.Raise), ast.unparse(node)


@pytest.mark.parametrize(("language", "code"), EXAMPLES, ids=[language for language, _ in EXAMPLES])
def test_example_runs(demo_server: TorchServe, tmp_path: Path, language: str, code: str) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(make_video("moving up", 1234, 0)[0])
    env = {
        **os.environ,
        "URL": demo_server.inference_url,
        "GRPC": f"127.0.0.1:{demo_server.properties()['grpc_inference_port']}",
        "KEYS": str(demo_server.key_file),
        "MODEL": "motion_demo",
        "VIDEO": str(video),
    }
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
