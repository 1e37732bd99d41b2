"""bench/gpu_check.sh on a machine without a GPU, in this environment (VENV): it finds everything it needs,
imports what its GPU steps use, collects the GPU tests and stops at its first GPU check, saying that there is no
CUDA device (on a GPU machine it runs in full: docs/performance.md#gpu; its offline install from the wheel
chunks is proven by bench/gpu_dry_run.py, whose output is docs/gpu-dry-run.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import REPO

pytestmark = pytest.mark.integration


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: bench/gpu_check.sh runs in full")
def test_the_gpu_check_reaches_its_gpu_stage_and_stops_clearly(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "VENV": sys.prefix}
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    log = (tmp_path / "gpu_check.log").read_text()
    assert result.returncode == 3, log + result.stderr[-2000:]
    assert "lacks" not in log  # this environment has every chunk's packages and a Java
    assert "imports: ok" in log
    assert "collect: ok" in log
    assert f"no CUDA device: torch {torch.__version__}" in log
    assert (tmp_path / "machine.txt").is_file()
    assert not (tmp_path / "gpu-tests.xml").exists()  # it stopped before the GPU steps


def test_the_gpu_check_says_what_to_install_without_an_environment(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "GPU_VENV": str(tmp_path / "none")}
    env.pop("VENV", None)
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "bash bench/gpu_check.sh install build/gpu-wheels/1" in result.stdout
