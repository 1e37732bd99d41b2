"""`slowfast-serve soak`: a short real run against TorchServe, and its loopback-only guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slowfast_serve import cli
from slowfast_serve.server.torchserve import TorchServe

pytestmark = pytest.mark.integration


def test_a_short_soak_run_reports_no_errors_and_flat_memory(demo_server: TorchServe, tmp_path: Path) -> None:
    report = tmp_path / "soak.md"
    argv = ["--model", "motion_demo", "--url", demo_server.inference_url, "--management-url"]
    argv += [demo_server.management_url, "--key-file", str(demo_server.key_file), "--minutes", "0.15"]
    argv += ["--concurrency", "2", "--videos", "4", "--sample-sec", "1", "--warmup-minutes", "0.05"]
    argv += ["--report", str(report)]
    assert cli.main(["soak", *argv]) == 0
    summary = json.loads(report.with_suffix(".json").read_text())
    assert summary["errors"] == 0
    assert summary["requests_ok"] > 0
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    assert len(summary["rss_samples"]) >= 5
    assert summary["worker_rss_mb"]["judged_from_s"] >= 3  # the warm-up's samples are shown, not judged
    assert "trend_mb_per_min" in summary["worker_rss_mb"]
    assert "| errors (of which 5xx) | 0 (0) |" in report.read_text()


def test_only_loopback_is_driven(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["soak", "--url", "http://example.com:8080", "--minutes", "0.01"])
    assert exit_info.value.code == 2
    assert "soak only drives a service on this machine" in capsys.readouterr().err
