"""Soak test: concurrent uploads to a running TorchServe for N minutes; errors, latency and worker memory.

Loopback only (it refuses other hosts): it is a load generator for your own machine, not for someone else's.
Uploads a fixed set of synthetic motion videos (``slowfast_serve.training.motion_data``, several codecs and sizes) with
``--concurrency`` clients, samples the resident memory (RSS) of the model's worker processes every
``--sample-sec`` seconds, and reports the error count, latency percentiles and RSS over time. It fails (exit
status 1) on any error or when worker RSS grows by more than ``--max-rss-growth-mb`` between the first and the
last fifth of the run (medians, so a single spike does not count). Samples of the first ``--warmup-minutes``
are reported but not judged: a worker's first requests grow memory it then keeps and reuses (OpenVINO's infer
request sized for the largest batch run, the allocator's arenas, codec contexts), which is not a leak. The
report also gives the least-squares trend of the judged samples in MB per minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import psutil
import requests
from rich.console import Console
from rich.table import Table

from slowfast_serve.cli import UsageError
from slowfast_serve.client.inference import DEFAULT_URL
from slowfast_serve.client.keys import find_key_file, read_token
from slowfast_serve.client.options import KEY_FILE_HELP
from slowfast_serve.load.videos import moving_texture_video
from slowfast_serve.training.motion_data import ENCODINGS, MOTION_CLASSES, make_video

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Results:
    """What the clients and the sampler saw; appended to from several threads (list appends are atomic)."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)  # 200s per kind of request
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)


def soak_videos(count: int, seed: int = 9000) -> list[bytes]:
    """``count`` synthetic videos cycling through the classes and every codec/container of the generator."""
    return [
        make_video(MOTION_CLASSES[i % len(MOTION_CLASSES)], seed, i, encoding=i % len(ENCODINGS))[0]
        for i in range(count)
    ]


def worker_pids(management_url: str, model: str, token: str) -> list[int]:
    response = requests.get(
        f"{management_url}/models/{model}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return [int(w["pid"]) for w in response.json()[0]["workers"] if w.get("pid")]


def rss_mb(pids: list[int]) -> float:
    """Summed resident memory of ``pids`` in MB (processes that vanished count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 2**20


#: The requests of a ``--mixed`` run: each client cycles through these on every video in turn.
MIXED_REQUESTS = {"1x1": {}, "10x3": {"views": "10x3"}, "timeline": {"mode": "timeline"}}
#: The videos of a ``--mixed`` run: 10 s of moving texture at 30 fps in these sizes.
MIXED_SIZES = {"256p": (456, 256), "720p": (1280, 720), "1080p": (1920, 1080)}


@dataclass(frozen=True)
class Work:
    """One kind of request a client sends: a video, the form fields, and a name for the report."""

    name: str
    video: bytes
    fields: dict[str, str] = field(default_factory=dict)


def mixed_work(directory: Path) -> list[Work]:
    """Every request of :data:`MIXED_REQUESTS` on every video of :data:`MIXED_SIZES` (written to ``directory``)."""
    videos = {
        size: moving_texture_video(directory / f"{size}.mp4", width, height).read_bytes()
        for size, (width, height) in MIXED_SIZES.items()
    }
    return [
        Work(f"{size} {kind}", video, fields)
        for kind, fields in MIXED_REQUESTS.items()
        for size, video in videos.items()
    ]


def client(url: str, token: str, work: list[Work], offset: int, deadline: float, results: Results) -> None:
    i = offset
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        while time.monotonic() < deadline:
            item = work[i % len(work)]
            started = time.perf_counter()
            try:
                response = session.post(url, files={"data": ("clip", item.video)}, data=item.fields, timeout=900)
                if response.status_code == 200:
                    results.latencies_ms.append((time.perf_counter() - started) * 1000)
                    results.answered[item.name] = results.answered.get(item.name, 0) + 1
                else:
                    results.errors.append(f"{item.name}: HTTP {response.status_code}: {response.text[:200]}")
            except requests.RequestException as e:
                results.errors.append(f"{item.name}: {type(e).__name__}: {e}")
            i += 1


def sampler(pids: list[int], started: float, deadline: float, every: float, results: Results) -> None:
    while time.monotonic() < deadline:
        results.rss_samples.append((time.monotonic() - started, rss_mb(pids)))
        time.sleep(every)


def summarize(results: Results, args: argparse.Namespace, seconds: float) -> dict:
    latencies = sorted(results.latencies_ms)
    judged = [(t, mb) for t, mb in results.rss_samples if t >= args.warmup_minutes * 60] or results.rss_samples
    samples = [mb for _, mb in judged]
    fifth = max(len(samples) // 5, 1)
    first, last = statistics.median(samples[:fifth]), statistics.median(samples[-fifth:])
    trend = statistics.linear_regression([t / 60 for t, _ in judged], samples).slope if len(judged) > 1 else 0.0

    def percentile(p: float) -> float:
        return latencies[min(int(p * len(latencies)), len(latencies) - 1)] if latencies else float("nan")

    return {
        "model": args.model,
        "minutes": round(seconds / 60, 2),
        "concurrency": args.concurrency,
        "requests_ok": len(latencies),
        "errors": len(results.errors),
        "server_errors": sum(" HTTP 5" in error for error in results.errors),
        "first_errors": results.errors[:5],
        "answered": dict(sorted(results.answered.items())),
        "throughput_rps": round(len(latencies) / seconds, 2),
        "latency_ms": {
            "p50": round(percentile(0.50), 1),
            "p99": round(percentile(0.99), 1),
            "max": round(max(latencies, default=0), 1),
        },
        "worker_rss_mb": {
            "first_fifth_median": round(first, 1),
            "last_fifth_median": round(last, 1),
            "growth": round(last - first, 1),
            "trend_mb_per_min": round(trend, 1),
            "judged_from_s": round(judged[0][0], 1),
            "max": round(max(mb for _, mb in results.rss_samples), 1),
        },
        "rss_samples": [(round(t, 1), round(mb, 1)) for t, mb in results.rss_samples],
        "max_rss_growth_mb": args.max_rss_growth_mb,
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "versions": {name: metadata.version(name) for name in ("torch", "av", "torchserve", "requests")},
    }


def markdown(summary: dict, command: str) -> str:
    latency, rss = summary["latency_ms"], summary["worker_rss_mb"]
    samples = summary["rss_samples"]
    rows = "\n".join(f"| {t:.0f} | {mb:.0f} |" for t, mb in samples[:: max(len(samples) // 20, 1)])
    growth = f"growth {rss['growth']} MB, bound {summary['max_rss_growth_mb']} MB"
    since = f"{rss['judged_from_s']:.0f} s"
    fifths = f"{rss['first_fifth_median']} / {rss['last_fifth_median']}"
    return f"""# Soak run: {summary["model"]}

Command: `{command}`
Machine: {summary["machine"]}; {", ".join(f"{k} {v}" for k, v in summary["versions"].items())}

| what | value |
|---|---|
| duration | {summary["minutes"]} min |
| concurrent clients | {summary["concurrency"]} |
| requests answered 200 | {summary["requests_ok"]} ({summary["throughput_rps"]} / s) |
| errors (of which 5xx) | {summary["errors"]} ({summary["server_errors"]}) |
| answered per request kind | {", ".join(f"{k}: {n}" for k, n in summary["answered"].items())} |
| latency p50 / p99 / max | {latency["p50"]} / {latency["p99"]} / {latency["max"]} ms |
| worker RSS, median of first / last fifth (from {since}) | {fifths} MB ({growth}) |
| worker RSS trend (from {since}) | {rss["trend_mb_per_min"]} MB / min |
| worker RSS max | {rss["max"]} MB |

Worker RSS over time:

| seconds | MB |
|---|---|
{rows}
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="motion_demo", help="served model name (default: %(default)s)")
    parser.add_argument("--url", default=DEFAULT_URL, help="inference address (default: %(default)s)")
    parser.add_argument("--management-url", default="http://127.0.0.1:8081", help="management address")
    parser.add_argument("--key-file", type=Path, help=KEY_FILE_HELP)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--videos", type=int, default=16, help="distinct videos to cycle through")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="instead of the motion videos: 1x1, 10x3 and timeline requests on 10 s videos at 256p, 720p and 1080p",
    )
    parser.add_argument("--sample-sec", type=float, default=5.0, help="RSS sampling period")
    parser.add_argument("--max-rss-growth-mb", type=float, default=100.0)
    parser.add_argument(
        "--warmup-minutes", type=float, default=0.0, help="RSS samples before this are shown, not judged"
    )
    parser.add_argument("--report", type=Path, help="write a markdown report here (and JSON beside it)")


def run(args: argparse.Namespace) -> int:
    for address in (args.url, args.management_url):
        if urlparse(address).hostname not in LOOPBACK:
            raise UsageError(f"{address}: soak only drives a service on this machine (loopback)")
    key_file = find_key_file(args.key_file)
    if key_file is None:
        raise UsageError("no key_file.json found; start TorchServe with `make serve` or pass --key-file")
    console = Console(stderr=True)
    if args.mixed:
        with tempfile.TemporaryDirectory() as directory:
            work = mixed_work(Path(directory))
    else:
        work = [Work(f"motion {i}", video) for i, video in enumerate(soak_videos(args.videos))]
    pids = worker_pids(args.management_url, args.model, read_token(key_file, "management"))
    console.print(f"{len(work)} kinds of request, workers {pids}, {args.concurrency} clients for {args.minutes} min")

    results = Results()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    url = f"{args.url.rstrip('/')}/predictions/{args.model}"
    token = read_token(key_file)
    threads = [threading.Thread(target=sampler, args=(pids, started, deadline, args.sample_sec, results))]
    threads += [
        threading.Thread(target=client, args=(url, token, work, i * 3, deadline, results))
        for i in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = summarize(results, args, time.monotonic() - started)

    table = Table(title=f"soak: {args.model}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("requests ok / errors", f"{summary['requests_ok']} / {summary['errors']}")
    table.add_row("throughput", f"{summary['throughput_rps']} / s")
    table.add_row("latency p50 / p99", f"{summary['latency_ms']['p50']} / {summary['latency_ms']['p99']} ms")
    table.add_row("worker RSS growth", f"{summary['worker_rss_mb']['growth']} MB")
    Console().print(table)
    if args.report:
        command = shlex.join(["slowfast-serve", *sys.argv[1:]])
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(summary, command))
        args.report.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = summary["errors"] > 0 or summary["worker_rss_mb"]["growth"] > args.max_rss_growth_mb
    return 1 if failed else 0
