#!/usr/bin/env python3
"""Memory benchmark: a TorchServe worker's resident memory under bursts of concurrent requests.

Builds one archive of a random-init model (default ``slowfast_r50``, speed and memory only: the answers mean
nothing) with the options of a plain ``make serve`` (or ``--inference``), starts one TorchServe on free loopback
ports, and for every workload (10 s H.264 at 30 fps, ``bench/workloads.py``), every ``--views`` and every
``--concurrency`` sends that many requests at once (one burst) while sampling the worker's RSS every 20 ms. It
reports, per burst: the answers' statuses, the peak RSS, the RSS ``--settle`` seconds after the burst, and the
slowest answer's latency; and the idle RSS before the first burst. The burst named by ``--headline`` is measured
again after ``--headline-settle`` seconds (the issue's target: 30 s after the burst).

Writes ``--report`` (Markdown) and a JSON beside it. Loopback only.

Example:
    .venv/bin/python -m bench.memory --workloads 256p 720p 1080p --concurrency 1 4 8 --report docs/bench-memory.md
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import requests

from bench.workloads import WORKLOADS, describe, machine, make_workload, publish
from handler.checkpoints import save_random_checkpoint
from handler.models import get_spec
from slowfast_serve.client.management import worker_metadata
from slowfast_serve.load.soak import rss_mb, worker_pids
from slowfast_serve.server.archive import ServingConfig, build_archive, parse_inference
from slowfast_serve.server.torchserve import TorchServe, free_port_overrides

VERSIONS = ("torch", "av", "torchserve", "openvino")


def worker_rss_mb(pid: int) -> float:
    """Resident memory of the worker process ``pid`` in MiB (0 once it is gone)."""
    return rss_mb([pid])


def worker_pid(server: TorchServe, model: str) -> int:
    """The pid of ``model``'s (one) worker, from the management API."""
    return worker_pids(server.management_url, model, server.token("management"))[0]


class PeakRss:
    """The peak resident memory (MiB) of process ``pid`` while the ``with`` block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mb = pid, worker_rss_mb(pid)
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak_mb = max(self.peak_mb, worker_rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()


def burst(server: TorchServe, model: str, video: bytes, views: str, concurrency: int) -> dict:
    """``concurrency`` requests of ``video`` with ``views`` sent at once; the worker's peak RSS meanwhile."""
    pid, token = worker_pid(server, model), server.token()

    def post(_: int) -> tuple[int, float]:
        started = time.perf_counter()
        response = requests.post(
            f"{server.inference_url}/predictions/{model}",
            files={"data": ("video.mp4", video, "video/mp4")},
            data={"views": views},
            headers={"Authorization": f"Bearer {token}"},
            timeout=1800,
        )
        return response.status_code, time.perf_counter() - started

    with PeakRss(pid) as memory, ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(post, range(concurrency)))
    peak = memory.peak_mb
    statuses = sorted({status for status, _ in answers})
    return {
        "views": views,
        "concurrency": concurrency,
        "statuses": statuses,
        "all_ok": statuses == [200],
        "peak_mb": round(peak, 1),
        "slowest_s": round(max(seconds for _, seconds in answers), 2),
        "worker_pid_after": worker_pid(server, model),  # another pid: the worker died and was restarted
        "worker_pid": pid,
    }


def run(args: argparse.Namespace) -> dict:
    spec = get_spec(args.model)
    serving = ServingConfig(response_timeout_s=1800)  # make serve's batching, a timeout for 10x3 bursts
    inference = parse_inference(args.inference)
    staging = Path(tempfile.mkdtemp(prefix="bench-memory-", dir="/tmp"))  # short: the workers' sockets live below
    try:
        store = staging / "store"
        checkpoint = save_random_checkpoint(spec, staging / f"{args.model}-random-init.pyth")
        build_archive(args.model, checkpoint, model_store=store, serving=serving, inference=inference)
        server = TorchServe(staging / "run", store)
        server.start({args.model: f"{args.model}.mar"}, overrides=free_port_overrides())
        rows, headline = [], None
        try:
            server.wait_ready(args.model, timeout=600)
            time.sleep(args.settle)
            idle = worker_rss_mb(worker_pid(server, args.model))
            engine = _engine(server, args.model)
            print(f"idle worker RSS {idle:.0f} MiB, engine {engine}", flush=True)
            for name in args.workloads:
                video = make_workload(staging, name).read_bytes()
                for views in args.views:
                    for concurrency in args.concurrency:
                        row = {"workload": describe(name), **burst(server, args.model, video, views, concurrency)}
                        time.sleep(args.settle)
                        row["after_mb"] = round(worker_rss_mb(row["worker_pid_after"]), 1)
                        if args.headline == f"{name} {views} {concurrency}":
                            time.sleep(max(args.headline_settle - args.settle, 0))
                            headline = {**row, "after_s": args.headline_settle}
                            headline["after_mb"] = round(worker_rss_mb(row["worker_pid_after"]), 1)
                        rows.append(row)
                        print(
                            f"{name} {views} x{concurrency}: {row['statuses']} peak {row['peak_mb']:.0f} MiB, "
                            f"after {row['after_mb']:.0f} MiB, slowest {row['slowest_s']} s",
                            flush=True,
                        )
        finally:
            server.stop()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "model": args.model,
        "weights": "random-init (memory and speed only)",
        "machine": machine(),
        "versions": {n: metadata.version(n) for n in VERSIONS},
        "serving": serving.as_yaml(),
        "inference": asdict(inference),
        "engine": engine,
        "idle_mb": round(idle, 1),
        "settle_s": args.settle,
        "headline": headline,
        "results": rows,
    }


def _engine(server: TorchServe, model: str) -> dict:
    """The engine the worker reports in its customized description."""
    headers = {"Authorization": f"Bearer {server.token('management')}"}
    url = f"{server.management_url}/models/{model}"
    response = requests.get(url, params={"customized": "true"}, headers=headers, timeout=60)
    response.raise_for_status()
    return worker_metadata(response.json()[0]).get("engine", {})


def markdown(report: dict, command: str) -> str:
    lines = [
        f"| {r['workload']} | {r['views']} | {r['concurrency']} | {', '.join(map(str, r['statuses']))} | "
        f"{r['peak_mb']:.0f} | {r['after_mb']:.0f} | {r['slowest_s']:.1f} |"
        + (" worker restarted |" if r["worker_pid_after"] != r["worker_pid"] else " |")
        for r in report["results"]
    ]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    engine = report["engine"]
    head = report["headline"]
    headline = ""
    if head:
        headline = (
            f"\nHeadline: {head['concurrency']} concurrent `views={head['views']}` requests on the {head['workload']} "
            f"video: statuses {head['statuses']}, peak worker RSS **{head['peak_mb']:.0f} MiB**, "
            f"{head['after_s']} s after the burst **{head['after_mb']:.0f} MiB** "
            f"({head['after_mb'] / report['idle_mb']:.2f}x the idle {report['idle_mb']:.0f} MiB).\n"
        )
    return f"""# Worker memory under bursts ({report["model"]}, {report["weights"]})

Command: `{command}`
Machine: {report["machine"]}; {versions}
Serving: {report["serving"]}; inference options {report["inference"]}; engine served:
{engine.get("name")} {engine.get("precision")} on {engine.get("device")}.
Idle worker RSS (after loading and warm-up): **{report["idle_mb"]:.0f} MiB**. Each burst sends its requests at
once; peak is the worker's largest RSS sampled every 20 ms during the burst, after is its RSS {report["settle_s"]} s
after the last answer.
{headline}
| workload | views | concurrent | statuses | peak RSS (MiB) | after (MiB) | slowest answer (s) | |
|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="slowfast_r50", help="registry model (random-init weights)")
    parser.add_argument("--workloads", nargs="+", default=["256p", "720p", "1080p"], choices=list(WORKLOADS))
    parser.add_argument("--views", nargs="+", default=["1x1", "10x3"], help="views per request, CLIPSxCROPS")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8], help="requests per burst")
    parser.add_argument("--inference", action="append", default=[], metavar="NAME=VALUE", help="archive option")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a burst before 'after' is read")
    parser.add_argument("--headline", default="1080p 10x3 4", help="'WORKLOAD VIEWS CONCURRENCY' measured again")
    parser.add_argument("--headline-settle", type=float, default=30.0, help="seconds after the headline burst")
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    report = run(args)
    text = markdown(report, "python -m bench.memory " + shlex.join(argv if argv is not None else sys.argv[1:]))
    publish(report, text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
