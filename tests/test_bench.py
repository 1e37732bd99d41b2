"""The benchmarks run end to end on a small budget and write their reports (the numbers are not checked: they
belong to `make bench`, not to tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

pytestmark = pytest.mark.integration


def _run(module: str, report: Path, *args: str) -> dict:
    """Runs ``python -m bench.<module> ... --report <report>`` in the checkout; returns the JSON report."""
    command = [sys.executable, "-m", f"bench.{module}", *args, "--report", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(report.with_suffix(".json").read_text())


def test_stage_benchmark_writes_its_report(tmp_path: Path) -> None:
    report = tmp_path / "stages.md"
    small = ("--workloads", "256p", "--batch-sizes", "1", "--repeats", "1", "--agreement-clips", "2")
    data = _run("stages", report, *small)
    (row,) = data["prepare"]
    assert row["max_abs_difference"] < 1e-5  # the model inputs still equal the tutorial's
    assert row["tutorial_ms"] > 0
    assert row["ours_latency_ms"] > 0
    assert {r["variant"] for r in data["forward"]} == {
        "fp32, as the tutorial runs it",
        "fp32, batch norms folded, channels_last (default)",
        "bf16 autocast, batch norms folded, channels_last",
    }
    assert data["agreement"]["clips"] == 2
    assert "| 256p H.264 30 fps, 10 s |" in report.read_text()


def test_serving_benchmark_drives_both_handlers_through_torchserve(tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    small = ("--workloads", "256p", "--requests", "2", "--concurrency", "2", "--batch-size", "2")
    # Eager archives (an OpenVINO export and its check take a minute per full-size archive here: test_openvino
    # serves those), one variant, and MMAction2's own pipeline beside its model served by us.
    eager = ("--inference", "export=eager", "--also", "fold_batchnorm=false")
    toolbox = ("--toolbox-model", "mmaction2_slowfast_r50_8x8", "--toolbox-workloads", "256p")
    data = _run("serving", report, *small, *eager, *toolbox)
    (row,) = data["results"]
    assert set(row["models"]) == {"baseline", "ours", "ours fold_batchnorm=false"}
    assert data["inference"]["ours"]["export"] == "eager"
    assert data["inference"]["ours fold_batchnorm=false"] == {**data["inference"]["ours"], "fold_batchnorm": False}
    for measured in [*row["models"].values(), row["toolbox"]["ours"]]:
        assert measured["requests"] == 2
        assert measured["clips_per_s"] > 0
        assert set(measured["stage_ms"]) == {"decode", "preprocess", "inference", "queue"}
        assert all(value >= 0 for value in measured["stage_ms"].values())
    assert row["throughput_ratio"]["ours"] > 0
    assert set(row["toolbox"]["mmaction2"]) == {"pyav", "decord"}
    assert all(theirs["clips_per_s"] > 0 for theirs in row["toolbox"]["mmaction2"].values())
    text = report.read_text()
    assert "**ours / baseline**" in text
    assert "**ours `mmaction2_slowfast_r50_8x8` / MMAction2 pyav**" in text


def test_models_benchmark_names_the_default_cpu_engine(tmp_path: Path) -> None:
    data = _run("models", tmp_path / "models.md", "--models", "motion_demo", "--repeats", "1")
    assert data["engine"] == {"motion_demo": "openvino"}  # its conversion passes the archive-time check
    assert data["forward_ms"]["motion_demo"] > 0
    assert data["eager_ms"]["motion_demo"] > 0


def test_export_benchmark_measures_every_variant(tmp_path: Path) -> None:
    report = tmp_path / "export.md"
    small = ("--models", "motion_demo", "--batch-sizes", "1", "--repeats", "1")
    data = _run("export", report, *small, "--calibration-per-class", "1", "--evaluation-per-class", "1")
    (row,) = data["models"]
    names = ["eager", "eager bf16", "torchscript", "aoti", "openvino", "openvino bf16", "openvino int8"]
    assert all(name in row["forward_ms"] or "failed" in row["exports"].get(name, {}) for name in names)
    assert row["forward_ms"]["openvino"]["1"] > 0
    assert row["agreement"]["openvino"]["top1_agreement"] == 1.0  # fp32: the same answers on the new clips
    assert row["agreement"]["openvino"]["clips"] == 8
    assert "| `motion_demo` | openvino int8 |" in report.read_text()
