"""TorchServe's key file read while TorchServe is still writing it: the client's reader and the start-up wait."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slowfast_serve.client.errors import KeyFileError
from slowfast_serve.client.keys import Key, read_key, read_token
from slowfast_serve.client.options import TOKEN_VARIABLE, add_service_arguments, token_from_args
from slowfast_serve.server.torchserve import TorchServe

KEYS = {"management": {"key": "m-123"}, "inference": {"key": "i-456"}, "API": {"key": "a-789"}}


def _write_later(path: Path, stages: list[tuple[float, str]]) -> threading.Thread:
    """Writes each text to ``path`` after its delay (seconds from now), as TorchServe writes the file in steps."""

    def write() -> None:
        started = time.monotonic()
        for delay, text in stages:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            path.write_text(text)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("partial", ["", '{"management": {"key": "m-1', '{"management": {"key": "m-123"}}'])
def test_read_token_waits_for_a_file_being_written(tmp_path: Path, partial: str) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(partial)  # empty, half-written JSON, or JSON without the inference key yet
    writer = _write_later(key_file, [(0.5, json.dumps(KEYS))])
    assert read_token(key_file, "inference", wait=10) == "i-456"
    writer.join()


def test_read_token_gives_up_after_its_wait(tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text('{"inference": {"ke')
    started = time.monotonic()
    with pytest.raises(KeyFileError, match="has no 'inference' key"):
        read_token(key_file, "inference", wait=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    with pytest.raises(KeyFileError, match="no token file"):
        read_token(tmp_path / "missing.json")


class _Management(BaseHTTPRequestHandler):
    """A management API that answers READY only to the final management key."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        ok = self.headers.get("Authorization") == f"Bearer {KEYS['management']['key']}"
        body = json.dumps([{"modelName": "demo", "workers": [{"status": "READY"}]}] if ok else {"code": 401})
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def management() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Management)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_wait_ready_survives_an_empty_then_half_written_key_file(
    tmp_path: Path, management: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = TorchServe(tmp_path / "run", tmp_path / "store")
    instance.runtime_dir.mkdir()
    instance.config_path.write_text(f"management_address={management}\n")
    monkeypatch.setattr(TorchServe, "pid", lambda self: os.getpid())  # "the frontend is alive"
    instance.key_file.write_text("")  # TorchServe has created the file and not written it yet
    half = json.dumps(KEYS)[:20]
    writer = _write_later(instance.key_file, [(0.7, half), (1.6, json.dumps(KEYS))])
    description = instance.wait_ready("demo", timeout=30)
    assert description["workers"][0]["status"] == "READY"
    writer.join()


def test_read_key_gives_the_expiry_torchserve_writes(tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    # As TorchServe 0.12 writes it (Java's Instant: nanoseconds, Z); the API key has no expiry.
    entry = {"key": "k1", "expiration time": "2026-12-07T21:50:12.123456789Z"}
    path.write_text(json.dumps({"inference": entry, "management": entry, "API": {"key": "a"}}))
    key = read_key(path, "inference")
    assert key.key == "k1"
    assert key.expires == datetime(2026, 12, 7, 21, 50, 12, 123456, tzinfo=UTC)
    assert read_key(path, "API") == Key("a", None)


@pytest.mark.parametrize(
    ("argv", "variable", "expected"),
    [
        ([], "pod-token", "pod-token"),  # a gateway's token, from the environment
        (["--key-file", "{key_file}"], "pod-token", "from-file"),  # an explicit key file wins
        ([], "  ", "from-file"),  # blank: as if unset, so the implied key file ($TS_KEY_FILE)
    ],
)
def test_the_token_variable_and_key_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], variable: str, expected: str
) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"inference": {"key": "from-file"}}))
    monkeypatch.setenv("TS_KEY_FILE", str(key_file))
    monkeypatch.setenv(TOKEN_VARIABLE, variable)
    parser = argparse.ArgumentParser()
    add_service_arguments(parser, timeout=10)
    args = parser.parse_args([a.format(key_file=key_file) for a in argv])
    assert token_from_args(args) == expected
