"""Every hostile, broken or odd upload gets predictions or a clear 4xx JSON error from a real TorchServe, and
the worker survives them all."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from slowfast_serve.server.torchserve import TorchServe
from tests.serving import post_video, worker_pids
from tests.videos import audio_only, encode, faststart, moving_frames

pytestmark = pytest.mark.integration

MODEL = "motion_demo"


def _video(frames: int = 60, **kwargs) -> bytes:
    return encode(moving_frames(frames, 96, 128), fps=30, **kwargs)


def _cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(moving_frames(1, 64, 64)[0]).save(buffer, "PNG")
    return buffer.getvalue()


def _zeroed_middle() -> bytes:
    data = bytearray(faststart(_video()))
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)
    return bytes(data)


def _unknown_codec() -> bytes:
    data = encode(moving_frames(30, 64, 80), fps=25, codec="mpeg4", container="avi")
    assert data.count(b"FMP4") == 2
    return data.replace(b"FMP4", b"ZQZQ")  # a fourcc no decoder knows


def _header_only() -> bytes:
    data = faststart(_video())
    return data[: data.index(b"mdat") + 4]


Upload = Callable[[], dict]


def raw(body: Callable[[], bytes], content_type: str = "video/mp4", **headers: str) -> Upload:
    return lambda: {"data": body(), "headers": {"Content-Type": content_type, **headers}}


def form(body: Callable[[], bytes] | None = _video, **fields: str) -> Upload:
    return lambda: {"files": {"data": ("upload", body())} if body else {"top_k": (None, "3")}, "data": fields}


# (upload, expected status, expected error type or None for success)
CASES: dict[str, tuple[Upload, int, str | None]] = {
    "empty body": (raw(lambda: b""), 400, "EmptyVideo"),
    "empty multipart field": (form(lambda: b""), 400, "EmptyVideo"),
    "text bytes": (raw(lambda: b"hello, this is not a video\n" * 50, "application/octet-stream"), 400, "InvalidVideo"),
    "png image": (raw(_png, "application/octet-stream"), 400, "StillImage"),
    "random bytes": (raw(lambda: np.random.default_rng(0).bytes(50_000)), 400, "InvalidVideo"),
    "audio only": (raw(audio_only, "audio/mp4"), 400, "NoVideoStream"),
    "mp4 cut before its index": (raw(lambda: _video()[:3000]), 400, "InvalidVideo"),
    "faststart mp4 cut inside the clip": (raw(lambda: _cut_in_half(faststart(_video()))), 400, "InvalidVideo"),
    "faststart mp4 cut after the clip": (raw(lambda: faststart(_video(150))[:-3000]), 200, None),
    "header only": (raw(_header_only), 400, "NoFrames"),
    "zeroed middle": (raw(_zeroed_middle), 400, "InvalidVideo"),
    "single frame": (raw(lambda: _video(frames=1)), 200, None),
    "shorter than the clip": (raw(lambda: _video(frames=20)), 200, None),
    "start past the end": (form(start_sec="30"), 400, "ClipOutOfRange"),
    "top_k 0": (form(top_k="0"), 400, "InvalidOption"),
    "top_k abc": (form(top_k="abc"), 400, "InvalidOption"),
    "top_k huge": (form(top_k="1" + "0" * 40), 400, "InvalidOption"),
    "negative start_sec": (raw(_video, **{"X-Start-Sec": "-1"}), 400, "InvalidOption"),
    "unknown option": (form(topk="3"), 400, "UnknownOption"),
    "unsupported codec": (raw(_unknown_codec, "video/x-msvideo"), 400, "UnsupportedCodec"),
    "multipart without data": (form(None), 400, "MissingVideo"),
    "form-urlencoded body": (raw(_video, "application/x-www-form-urlencoded"), 400, "MissingVideo"),
    "text content type": (raw(lambda: b"some text", "text/plain"), 415, "UnsupportedMediaType"),
    "8K frames": (
        raw(lambda: encode(np.zeros((2, 4320, 7680, 3), np.uint8), fps=30, options={"preset": "ultrafast"})),
        413,
        "FrameTooLarge",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_upload_gets_predictions_or_a_clear_4xx_and_the_worker_survives(
    demo_server: TorchServe, case: str
) -> None:
    upload, status, error_type = CASES[case]
    pids_before = worker_pids(demo_server, MODEL)
    response = post_video(demo_server, MODEL, **upload())
    # the same worker process answered and is still the one serving (a crash would bring a new pid, or none)
    assert worker_pids(demo_server, MODEL) == pids_before
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert (response.status_code, body.get("type")) == (status, error_type), body
    if error_type is None:
        assert body["predictions"]
        assert body["clip"]["source_frames"] >= 1
    else:
        assert body["code"] == status
        assert len(body["message"]) > 30  # says what was wrong and what to send


def test_an_upload_over_max_request_size_is_413(demo_server: TorchServe) -> None:
    limit = int(demo_server.properties()["max_request_size"])
    response = post_video(demo_server, MODEL, data=b"\0" * (limit + 1), headers={"Content-Type": "video/mp4"})
    assert response.status_code == 413
