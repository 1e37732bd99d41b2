"""slowfast-serve stream on live sources that drop and come back, against the demo server: a real RTSP server on
loopback (GStreamer's, tests/rtsp_server.py: a live H.264 camera stand-in) and an HTTP MJPEG stream served by
ffmpeg. Each is stopped in the middle of the stream and started again: the client says so, reconnects with
backoff and goes on answering, its stream time counting the outage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slowfast_serve.server.torchserve import TorchServe, free_port
from tests.serving import CLI

pytestmark = pytest.mark.integration

DEBIAN_PYTHON = "/usr/bin/python3"  # Debian's interpreter: the one python3-gi serves
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
OUTAGE_S = 3.0


def _gstreamer_missing() -> str | None:
    check = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        ok = subprocess.run([DEBIAN_PYTHON, "-c", check], capture_output=True, timeout=60).returncode == 0
    except OSError:
        ok = False
    return None if ok else "GStreamer's RTSP server is missing (scripts/install.sh --dev installs it as root)"


def _start_rtsp(port: int) -> subprocess.Popen:
    server = subprocess.Popen([DEBIAN_PYTHON, str(RTSP_SERVER), str(port)], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    return server


def _start_mjpeg(port: int) -> subprocess.Popen:
    """ffmpeg serving a live test pattern as multipart MJPEG over HTTP (one client, as a cheap IP camera)."""
    command = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]
    command += ["-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/camera.mjpg"]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + 20
    while not _listening(port):  # not probed by connecting: ffmpeg serves one client, then exits
        assert time.monotonic() < deadline, "ffmpeg did not listen"
        time.sleep(0.1)
    return server


def _listening(port: int) -> bool:
    """Whether a socket listens on loopback ``port`` (from /proc/net/tcp: state 0A is LISTEN)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A" for row in rows)


def _stop(server: subprocess.Popen) -> None:
    server.kill()
    server.wait(timeout=30)


@pytest.fixture
def follow(demo_server: TorchServe) -> Iterator[Callable[..., tuple[list[dict], str]]]:
    """``follow(url, restart)``: runs ``slowfast-serve stream URL --json`` for 12 s of stream time while
    ``restart()`` stops the source after the third answer and starts it again ``OUTAGE_S`` later; returns the
    answers and what the client told its user (stderr)."""
    processes = []

    def run(url: str, restart: Callable[[], None]) -> tuple[list[dict], str]:
        command = [CLI, "stream", url, "--model", "motion_demo", "--json", "--every", "1", "--max-seconds", "12"]
        command += ["--url", demo_server.inference_url, "--key-file", str(demo_server.key_file)]
        command += ["--give-up-sec", "60", "--read-timeout", "5"]
        client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(client)
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.extend(client.stderr), daemon=True)
        reader.start()
        answers = []
        for line in client.stdout:
            answers.append(json.loads(line))
            if len(answers) == 3:
                restart()
        assert client.wait(timeout=120) == 0, "".join(errors)
        reader.join(timeout=10)
        return answers, "".join(errors)

    yield run
    for process in processes:
        if process.poll() is None:
            process.kill()


def _through_an_outage(follow, url: str, start: Callable[[int], subprocess.Popen], port: int) -> list[dict]:
    """Follows ``url`` served by ``start(port)`` while that server is stopped after the third answer and
    started again ``OUTAGE_S`` later; checks what the client said and answered; returns the answers."""
    servers = [start(port)]

    def restart() -> None:
        _stop(servers[-1])
        time.sleep(OUTAGE_S)
        servers.append(start(port))

    try:
        answers, told = follow(url, restart)
    finally:
        _stop(servers[-1])
    assert "source lost" in told
    assert "reconnected after" in told
    times = [a["stream_sec"] for a in answers]
    assert times == sorted(times)
    assert times[-1] >= 10  # followed on after the outage (to 12 s of stream time)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) >= OUTAGE_S  # the outage is in stream time
    assert sum(gap >= OUTAGE_S for gap in gaps) == 1
    assert all(a["predictions"] and a["latency_ms"] > 0 for a in answers)
    return answers


def test_an_rtsp_camera_that_restarts_is_followed_again(follow) -> None:
    missing = _gstreamer_missing()
    if missing and os.environ.get("CI"):  # CI installs it: its absence there is a broken set-up
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)
    port = free_port()
    answers = _through_an_outage(follow, f"rtsp://127.0.0.1:{port}/live", _start_rtsp, port)
    assert all(a["video"]["width"] == 340 and a["video"]["height"] == 256 for a in answers)  # 320x240 sent at 256p


def test_an_http_mjpeg_stream_that_restarts_is_followed_again(follow) -> None:
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is missing (scripts/install.sh --dev installs it as root)")
    port = free_port()
    _through_an_outage(follow, f"http://127.0.0.1:{port}/camera.mjpg", _start_mjpeg, port)
