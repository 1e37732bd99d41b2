"""bench/gpu_check.sh on a machine without a GPU: it installs the stack and stops at its first GPU check, saying
that there is no CUDA device (on a GPU machine it runs in full: docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slowfast_serve.server.torchserve import REPO

pytestmark = pytest.mark.integration


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: bench/gpu_check.sh runs in full")
def test_the_gpu_check_reaches_its_gpu_stage_and_stops_clearly(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "VENV": sys.prefix}  # this environment: installing is a no-op
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    log = (tmp_path / "gpu_check.log").read_text()
    assert result.returncode == 3, log + result.stderr[-2000:]
    assert "install: ok" in log
    assert "first GPU check" in log
    assert f"no CUDA device: torch {torch.__version__}" in log
    assert (tmp_path / "machine.txt").is_file()
    assert not (tmp_path / "gpu-tests.log").exists()  # it stopped before the GPU steps
