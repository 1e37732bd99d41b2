"""A worker's memory under concurrent multi-view requests, through a real TorchServe: bounded by the per-request
estimate the service checks before decoding, and handed back to the OS after the batch."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from handler.container import probe
from handler.decode_limits import DecodeLimits
from handler.models import get_spec
from handler.pipeline import cpu_count, request_memory_mb
from slowfast_serve.server.torchserve import TorchServe
from tests.serving import post_video, worker_pids
from tests.videos import encode, moving_frames

pytestmark = pytest.mark.integration

#: What a worker may hold beyond its prepared requests: the clips waiting for a forward, the forward itself,
#: decoder threads and buffer pools (motion_demo's clips are small: 16 x 112 x 112).
ALLOWANCE_MB = 300


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_concurrent_multi_view_requests_stay_within_the_estimate(demo_server: TorchServe) -> None:
    video = encode(moving_frames(100, 1080, 1920), fps=30, options={"preset": "ultrafast"})  # 3.3 s of 1080p
    (pid,) = worker_pids(demo_server, "motion_demo")
    idle = _rss_mb(pid)
    peak, done = idle, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    request = {"files": {"data": ("v.mp4", video, "video/mp4")}, "data": {"views": "3x3"}}
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: post_video(demo_server, "motion_demo", **request), range(4)))
    done.set()
    sampler.join()
    assert [r.status_code for r in responses] == [200] * 4, responses[0].text
    assert all(len(r.json()["views"]["windows"]) == 3 for r in responses)
    # The worker prepares at most one request per core at once (decode_workers=0), each within its estimate.
    estimate = request_memory_mb(probe(video), get_spec("motion_demo").clip, (3, 3), DecodeLimits())
    bound = min(4, cpu_count()) * estimate + ALLOWANCE_MB
    assert peak - idle <= bound, f"peak {peak:.0f} MiB from {idle:.0f} MiB idle; bound {bound:.0f} MiB"
    assert _rss_mb(pid) - idle <= 100  # the batch's memory went back to the OS
