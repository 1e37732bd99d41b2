"""The command line (slowfast-serve): every subcommand's help, offline behaviour, archive reuse, token discovery."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from handler import models
from handler.decode_limits import DecodeLimits
from handler.pipeline import InferenceOptions
from slowfast_serve import cli
from slowfast_serve.client.keys import find_key_file
from slowfast_serve.server import archive as build_archive_module
from slowfast_serve.server import instance as serve
from slowfast_serve.server.archive import BuildRecord, parse_inference, parse_limits
from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.server.weights import DownloadError, download_checkpoint
from tests.serving import CLI


def _closed_port_url(filename: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/model_zoo/kinetics/{filename}"  # nothing listens there any more


@pytest.fixture
def offline_slowfast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> models.ModelSpec:
    """slowfast_r50 whose checkpoint URL is unreachable, with an empty torch.hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    spec = models.REGISTRY["slowfast_r50"]
    offline = dataclasses.replace(spec, checkpoint_url=_closed_port_url(spec.checkpoint_filename))
    monkeypatch.setitem(models.REGISTRY, "slowfast_r50", offline)
    return offline


def test_download_fails_fast_offline_and_says_how_to_proceed(offline_slowfast: models.ModelSpec) -> None:
    with pytest.raises(DownloadError) as info:
        download_checkpoint(offline_slowfast, timeout=5)
    message = str(info.value)
    assert "CHECKPOINT=/path/to/SLOWFAST_8x8_R50.pyth" in message
    assert "RANDOM_INIT=1" in message
    assert "hub/checkpoints" in message


def test_cached_checkpoint_needs_no_network(offline_slowfast: models.ModelSpec, tmp_path: Path) -> None:
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / "SLOWFAST_8x8_R50.pyth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"placeholder")
    assert download_checkpoint(offline_slowfast, timeout=5) == cached


def test_serve_without_checkpoint_offline_exits_with_instructions(
    offline_slowfast: models.ModelSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--runtime-dir", str(tmp_path / "run"), "--model-store", str(tmp_path / "store")]
    assert cli.main([*argv, "--model", "slowfast_r50"]) == 1
    err = capsys.readouterr().err
    assert "cannot download the slowfast_r50 checkpoint" in err
    assert "make serve MODEL=slowfast_r50 CHECKPOINT=" in err
    assert not (tmp_path / "store" / "slowfast_r50.mar").exists()


@pytest.mark.slow
def test_archive_is_rebuilt_only_when_its_inputs_change(
    random_checkpoint: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint = tmp_path / "slow.pyth"
    checkpoint.write_bytes(random_checkpoint("slow_r50").read_bytes())
    store = tmp_path / "store"

    eager = InferenceOptions(export="eager")  # the rebuild rules, not the engine: no OpenVINO conversion each time

    def ensure() -> Path:
        return serve.ensure_archive("slow_r50", checkpoint, None, "slow_r50", store, random_init=False, inference=eager)

    archive = ensure()
    built_at = archive.stat().st_mtime_ns
    assert ensure().stat().st_mtime_ns == built_at
    assert "using" in capsys.readouterr().out
    record = BuildRecord.load("slow_r50", store)
    assert record is not None
    assert record.weights == "random-init"
    os.utime(checkpoint, ns=(built_at + 10**9, built_at + 10**9))  # the checkpoint file changed
    ensure()
    assert archive.stat().st_mtime_ns != built_at
    rebuilt_at = archive.stat().st_mtime_ns
    monkeypatch.setattr(build_archive_module, "handler_version", lambda: "1.0+0ther000")  # the handler changed
    ensure()
    assert archive.stat().st_mtime_ns != rebuilt_at
    monkeypatch.undo()
    rebuilt_at = archive.stat().st_mtime_ns
    limits = parse_limits(["max_decode_seconds=7.5", "max_window_mb=64"])
    serve.ensure_archive(
        "slow_r50", checkpoint, None, "slow_r50", store, random_init=False, limits=limits, inference=eager
    )
    assert archive.stat().st_mtime_ns != rebuilt_at  # other limits: rebuilt, and they reach model-config.yaml
    with zipfile.ZipFile(archive) as mar:
        config = yaml.safe_load(mar.read("model-config.yaml"))
    assert config["handler"]["limits"] == {
        **dataclasses.asdict(DecodeLimits()),
        "max_decode_seconds": 7.5,
        "max_window_mb": 64,
    }


def test_limit_arguments_are_checked() -> None:
    assert parse_limits([]) == DecodeLimits()
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_limits(["max_pixels=5"])
    with pytest.raises(ValueError, match="not a int"):
        parse_limits(["max_decoded_frames=2.5"])
    with pytest.raises(ValueError, match="positive"):
        parse_limits(["max_window_mb=0"])


def test_key_file_discovery_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    explicit, from_env, local = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "key_file.json"
    for path in (explicit, from_env, local):
        path.write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TS_KEY_FILE", str(from_env))
    assert find_key_file(explicit) == explicit
    assert find_key_file(None) == from_env
    monkeypatch.delenv("TS_KEY_FILE")
    repo_key = serve.DEFAULT_RUNTIME / "key_file.json"
    assert find_key_file(None) == (repo_key if repo_key.exists() else Path("key_file.json"))


def test_upload_spool_directory_can_be_moved_to_a_tmpfs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    instance = TorchServe(tmp_path / "run", tmp_path / "store")
    monkeypatch.delenv("UPLOAD_TMPDIR", raising=False)
    assert instance._env()["TEMP"] == str(tmp_path / "run" / "tmp")
    monkeypatch.setenv("UPLOAD_TMPDIR", "/dev/shm")
    assert instance._env()["TEMP"] == "/dev/shm"


def test_inference_arguments_are_typed_and_checked() -> None:
    assert parse_inference([]) == InferenceOptions()
    options = parse_inference(["precision=bf16", "compile=true", "channels_last=no", "decode_workers=2"])
    assert options == InferenceOptions(precision="bf16", compile=True, channels_last=False, decode_workers=2)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_inference(["threads=2"])
    with pytest.raises(ValueError, match="not true or false"):
        parse_inference(["warmup=maybe"])
    with pytest.raises(ValueError, match="precision must be"):
        parse_inference(["precision=fp8"])


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_has_help_with_an_example(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert f"usage: slowfast-serve {name}" in help_text
    examples = help_text.split("\nexample")[-1]  # after the options
    assert re.search(rf"^  slowfast-serve {name}( |$)", examples, flags=re.M)


def test_the_command_line_is_installed_and_lists_every_subcommand() -> None:
    result = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in cli.COMMANDS:
        assert f"    {name}" in result.stdout


def test_bad_arguments_and_expected_failures_are_reported_not_raised(tmp_path: Path) -> None:
    command = [CLI, "convert", str(tmp_path / "nothing.pth"), "--describe"]
    missing = subprocess.run(command, capture_output=True, text=True)
    assert missing.returncode == 2
    assert "is not a file" in missing.stderr
    assert "Traceback" not in missing.stderr
    unreachable = subprocess.run(
        [CLI, "models", "--url", "http://127.0.0.1:9", "--key-file", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
    )
    assert unreachable.returncode == 1
    assert "cannot reach TorchServe at http://127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
