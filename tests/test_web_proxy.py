"""The web page's server on its own (uvicorn on a loopback port), against a stand-in TorchServe that records
what reaches it: which headers pass and which token is added, uploads streamed as they arrive, the page's
guards, and TorchServe down, hung or refusing an upload answered with an error the page can show."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import uvicorn

from slowfast_serve.server.torchserve import free_port
from slowfast_serve.web.proxy import STATIC, WebSettings, create_app
from tests.serving import CLI

KEYS = {"inference": {"key": "inference-key-1"}, "management": {"key": "management-key-2"}, "API": {"key": "api-3"}}
API = {"X-Requested-With": "slowfast-web"}


class Upstream(ThreadingHTTPServer):
    """A stand-in for TorchServe: records each request (path, headers, body size, when its first bytes came) and
    answers ``reply`` (status, body bytes); ``delay_s`` before answering (a hung server)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.first_bytes = threading.Event()
        self.reply: tuple[int, bytes] = (200, b'{"predictions": []}')
        self.delay_s = 0.0
        #: TorchServe's token API (``GET /token?type=...``): rewrites the key file, answers (status, body).
        self.renew: Callable[[], tuple[int, bytes]] = lambda: (200, b"{}")
        super().__init__(("127.0.0.1", 0), _Recorder)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body_size(self) -> int:
        size = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                length = int(self.rfile.readline().strip(), 16)
                if length == 0:
                    self.rfile.readline()
                    return size
                size += len(self.rfile.read(length))
                self.server.first_bytes.set()
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length", 0))
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            self.server.first_bytes.set()
            size, remaining = size + len(chunk), remaining - len(chunk)
        return size

    def _answer(self) -> None:
        size = self._body_size() if self.command == "POST" else 0
        self.server.requests.append(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "size": size}
        )
        time.sleep(self.server.delay_s)
        status, body = self.server.reply
        if self.path.startswith("/models"):
            status, body = 200, json.dumps(_management(self.path)).encode()
        elif self.path.startswith("/token"):
            status, body = self.server.renew()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815 - http.server looks them up by these names

    def log_message(self, *args: object) -> None:
        pass


def _management(path: str) -> object:
    if path.startswith("/models?"):
        return {"models": [{"modelName": "demo", "modelUrl": "demo.mar"}]}
    described = {"model": "motion_demo", "kind": "classifier", "clip": {"frames": 16, "seconds": 3.2}, "classes": 8}
    workers = [{"status": "READY"}, {"status": "UNLOADING"}]
    return [
        {
            "modelVersion": "1.0",
            "workers": workers,
            "batchSize": 4,
            "maxBatchDelay": 100,
            "customizedMetadata": described,
        }
    ]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key_file.json"
    path.write_text(json.dumps(KEYS))
    return path


@pytest.fixture
def serve_page() -> Iterator:
    """``serve_page(settings)``: the page's app on uvicorn in a thread; returns its URL."""
    servers = []

    def start(settings: WebSettings) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error"))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.should_exit = True


def _settings(upstream_url: str, key_file: Path | None, **changes: object) -> WebSettings:
    return replace(WebSettings(inference_url=upstream_url, management_url=upstream_url, key_file=key_file), **changes)


def test_the_token_is_added_and_the_browsers_own_headers_stay_behind(
    upstream: Upstream, key_file: Path, serve_page
) -> None:
    page = serve_page(_settings(upstream.url, key_file))
    headers = {**API, "Authorization": "Bearer from-the-browser", "Cookie": "session=1", "X-Top-K": "3"}
    answer = requests.post(f"{page}/api/predictions/demo", files={"data": b"\0" * 1000}, headers=headers, timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"predictions": []}
    (seen,) = upstream.requests
    assert seen["path"] == "/predictions/demo"
    assert seen["headers"]["authorization"] == "Bearer inference-key-1"
    assert seen["headers"]["x-top-k"] == "3"
    assert seen["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert "cookie" not in seen["headers"]
    assert "x-requested-with" not in seen["headers"]
    assert seen["size"] == int(seen["headers"]["content-length"]) > 1000
    # The models listing uses the management key and merges the worker's description.
    listed = requests.get(f"{page}/api/models", headers=API, timeout=10)
    assert listed.status_code == 200
    (model,) = listed.json()["models"]
    assert model["description"]["kind"] == "classifier"
    assert model["workers"] == {"ready": 1, "all": 2}
    assert model["batch_size"] == 4
    assert {r["headers"]["authorization"] for r in upstream.requests[1:]} == {"Bearer management-key-2"}
    # A renewed token (slowfast-serve token rewrites the file) is used from the next call on.
    key_file.write_text(json.dumps({**KEYS, "inference": {"key": "renewed"}}))
    requests.post(f"{page}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=10)
    assert upstream.requests[-1]["headers"]["authorization"] == "Bearer renewed"


def test_large_uploads_stream_through(upstream: Upstream, key_file: Path, serve_page) -> None:
    """The second half of the upload is sent only once TorchServe has received the first: a proxy that held the
    body whole before forwarding it would never get there."""
    page = serve_page(_settings(upstream.url, key_file))
    chunk, chunks = b"\1" * (1 << 20), 48
    streamed = []

    def body() -> Iterator[bytes]:
        for index in range(chunks):
            if index == chunks // 2:
                streamed.append(upstream.first_bytes.wait(timeout=20))
            yield chunk

    headers = {**API, "Content-Type": "video/mp4"}
    answer = requests.post(f"{page}/api/predictions/demo", data=body(), headers=headers, timeout=60)
    assert answer.status_code == 200
    assert streamed == [True]
    assert upstream.requests[-1]["size"] == chunks * len(chunk)


def test_torchserve_down_or_hung_is_a_prompt_clear_error(upstream: Upstream, key_file: Path, serve_page) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    page = serve_page(_settings(closed, key_file))
    started = time.monotonic()
    for answer in (
        requests.post(f"{page}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=30),
        requests.get(f"{page}/api/models", headers=API, timeout=30),
    ):
        assert answer.status_code == 502
        assert answer.json()["type"] == "ServiceUnreachable"
        assert "make serve" in answer.json()["message"]
        assert closed in answer.json()["message"]
    assert time.monotonic() - started < 10
    upstream.delay_s = 3
    hung = serve_page(_settings(upstream.url, key_file, timeout_s=1))
    answer = requests.post(f"{hung}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=30)
    assert answer.status_code == 504
    assert answer.json()["type"] == "ServiceTimeout"


def test_answers_without_json_become_the_services_error_shape(upstream: Upstream, key_file: Path, serve_page) -> None:
    page = serve_page(_settings(upstream.url, key_file))
    upstream.reply = (413, b"")  # TorchServe's own answer to an upload over max_request_size
    answer = requests.post(f"{page}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=10)
    assert answer.status_code == 413
    assert answer.json()["type"] == "RequestEntityTooLarge"
    assert "max_request_size" in answer.json()["message"]
    upstream.reply = (400, b'{"code": 400, "type": "InvalidVideo", "message": "not a video"}')
    answer = requests.post(f"{page}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=10)
    assert (answer.status_code, answer.json()["message"]) == (400, "not a video")


def test_a_missing_key_file_is_named(upstream: Upstream, tmp_path: Path, serve_page) -> None:
    page = serve_page(_settings(upstream.url, tmp_path / "gone.json"))
    answer = requests.post(f"{page}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=10)
    assert answer.status_code == 500
    assert answer.json()["type"] == "KeyFile"
    assert "gone.json" in answer.json()["message"]
    assert upstream.requests == []


def test_other_sites_cannot_use_the_page(upstream: Upstream, key_file: Path, serve_page) -> None:
    page = serve_page(_settings(upstream.url, key_file))
    # A form another site posts to the loopback port carries no X-Requested-With (it would need a CORS preflight).
    forged = requests.post(f"{page}/api/predictions/demo", files={"data": b"x"}, timeout=10)
    assert forged.status_code == 403
    # DNS rebinding: the page answers only the host names it was started for.
    rebound = requests.get(f"{page}/api/models", headers={**API, "Host": "attacker.example"}, timeout=10)
    assert rebound.status_code == 400
    assert upstream.requests == []
    index = requests.get(f"{page}/", timeout=10)
    assert index.status_code == 200
    assert "default-src 'self'" in index.headers["Content-Security-Policy"]
    assert "Access-Control-Allow-Origin" not in index.headers


def test_the_pages_files_name_no_other_origin() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        for other_origin in ("http://", "https://", "//cdn", "import(", "@import"):
            assert other_origin not in text, path


def test_the_command_refuses_a_public_address_unless_told_and_a_taken_port() -> None:
    public = subprocess.run([CLI, "web", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert public.returncode == 1
    assert "--public" in public.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([CLI, "web", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1
    assert f"127.0.0.1:{port}" in busy.stderr
    assert f"--port {port + 1}" in busy.stderr


def _keys_expiring(key: str, seconds: float) -> str:
    expires = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return json.dumps({**KEYS, "inference": {"key": key, "expiration time": expires}})


def test_a_key_about_to_expire_is_renewed_once_then_used(upstream: Upstream, tmp_path: Path, serve_page) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(_keys_expiring("old", 30))  # within the minute before it expires

    def renew() -> tuple[int, bytes]:  # as TorchServe's token API does: a new key, in the file
        time.sleep(0.2)
        key_file.write_text(_keys_expiring("new", 3600))
        return 200, b'{"message": "new key"}'

    upstream.renew = renew
    page = serve_page(_settings(upstream.url, key_file))
    post = lambda _: requests.post(  # noqa: E731
        f"{page}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=10
    )
    with ThreadPoolExecutor(4) as pool:
        assert [answer.status_code for answer in pool.map(post, range(4))] == [200] * 4
    renewals = [r for r in upstream.requests if r["path"].startswith("/token")]
    assert [r["path"] for r in renewals] == ["/token?type=inference"]
    assert renewals[0]["headers"]["authorization"] == "Bearer api-3"  # the API key authorizes renewals
    used = {r["headers"]["authorization"] for r in upstream.requests if r["path"].startswith("/predictions")}
    assert used == {"Bearer new"}
    # A key far from its expiry is used as it is.
    post(0)
    assert len([r for r in upstream.requests if r["path"].startswith("/token")]) == 1


def test_a_refused_renewal_is_an_error_the_caller_can_read(upstream: Upstream, tmp_path: Path, serve_page) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(_keys_expiring("old", -5))
    refusal = {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"}
    upstream.renew = lambda: (400, json.dumps(refusal).encode())
    page = serve_page(_settings(upstream.url, key_file))
    answer = requests.post(f"{page}/api/predictions/demo", files={"data": b"x"}, headers=API, timeout=10)
    assert answer.status_code == 500
    assert answer.json()["type"] == "KeyFile"
    assert "refused to renew its inference key (HTTP 400: Token Authorization failed)" in answer.json()["message"]
    assert not [r for r in upstream.requests if r["path"].startswith("/predictions")]
