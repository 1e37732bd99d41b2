#!/usr/bin/env python3
"""End-to-end benchmark: the tutorial pipeline as a TorchServe handler against ours, in one TorchServe run.

Builds two archives around one random-init slowfast_r50 checkpoint in the official format (speed only: the
answers mean nothing): ``baseline`` (``bench/baseline_handler.py``: the hub tutorial's code, one request at a
time) and ``ours`` (the product's archive, with ``--batch-size``, ``--workers`` and ``--inference`` options;
each ``--also "NAME=VALUE ..."`` adds an archive ``ours NAME=VALUE ...`` with those options changed, e.g.
``precision=bf16`` or ``export=openvino precision=int8``, calibrated on ``--calibration-per-class`` synthetic
motion videos per class; a variant this machine cannot build, such as OpenVINO bf16 on a CPU without bfloat16,
is reported as such).
Starts one TorchServe on free loopback ports serving both, then for every workload (10 s H.264 at 30 fps:
720p, 1080p, 256p) drives each model in turn with ``--concurrency`` clients posting the same upload
``--requests`` times (after ``--concurrency`` warm-up requests), and reports:

- clips/s (requests / wall time) and latency p50/p95/p99, seen by the client;
- per-stage means from the responses' ``timing_ms`` (decode, preprocess, inference: the same keys for both);
- mean queue time from TorchServe's own ``ts_queue_latency_microseconds`` counter (Prometheus endpoint);
- ours / baseline ratios.

With ``--toolbox-model mmaction2_slowfast_r50_8x8`` it also serves that model (ours, from a random-init checkpoint
that MMAction2's own code writes in its own format) and times MMAction2's own test pipeline on the same upload:
``mmaction.apis.inference_recognizer`` in-process, model built once, one view, decoding with PyAV and with the
config's own decord (``tests/toolboxes/mmaction2_runner.py speed``, in the reference environment
``.venv-ref/mmaction2`` that ``scripts/install.sh --dev`` builds); the report adds the ours / MMAction2 ratios.

Writes ``--report`` (Markdown) and a JSON beside it. Loopback only.

Example:
    .venv/bin/python -m bench.serving --workloads 720p 1080p 256p --requests 16 --report docs/bench.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench import REPO
from bench.workloads import WORKLOADS, describe, machine, make_workload, publish
from handler.checkpoints import save_random_checkpoint
from handler.labels import label_set
from handler.models import get_spec
from handler.pipeline import InferenceOptions
from slowfast_serve.server.archive import ServingConfig, build_archive, parse_inference, run_archiver
from slowfast_serve.server.torchserve import TorchServe, free_port_overrides
from slowfast_serve.training.motion_data import write_dataset
from tests.toolboxes.reference import CONFIGS, ToolboxReferenceError, run_reference

VERSIONS = ("torch", "torchvision", "av", "pytorchvideo", "torchserve", "openvino", "nncf")
MODEL = "slowfast_r50"  # the tutorial's model; the baseline handler is written for it
STAGES = ("decode", "preprocess", "inference")
TOOLBOX_TIMEOUT_S = 1800
#: MMAction2's decoders timed: PyAV (PyAVInit/PyAVDecode: the comparison the targets name) and decord (the
#: Kinetics configs' own DecordInit/DecordDecode).
DECODERS = ("pyav", "decord")


def latency_percentiles(latencies_ms: Iterable[float]) -> dict[str, float]:
    """p50, p95 and p99 of a run's latencies (inclusive quantiles)."""
    percentiles = statistics.quantiles(sorted(latencies_ms), n=100, method="inclusive")
    return {"p50": percentiles[49], "p95": percentiles[94], "p99": percentiles[98]}


def toolbox_checkpoint(model: str, directory: Path) -> Path:
    """A random-init checkpoint of the toolbox ``model`` written by the toolbox's own code, in its own format."""
    path = directory / f"{model}-random-init.pth"
    run_reference("mmaction2", "checkpoint", {"config": model, "seed": 0, "out": path}, TOOLBOX_TIMEOUT_S)
    return path


def toolbox_speed(model: str, checkpoint: Path, video: Path, requests: int, decoder: str) -> dict:
    """MMAction2's own inference call on ``video``, in-process in its reference environment: clips/s."""
    args = {"config": model, "checkpoint": checkpoint, "video": video, "requests": requests, "decoder": decoder}
    result = run_reference("mmaction2", "speed", args, TOOLBOX_TIMEOUT_S)
    return {
        "requests": requests,
        "concurrency": 1,
        "clips_per_s": round(result["clips_per_s"], 3),
        "latency_ms": latency_percentiles(seconds * 1000 for seconds in result["seconds"]),
        "call": result["call"],
        "decoder": decoder,
    }


def build_baseline(checkpoint: Path, store: Path, staging: Path) -> Path:
    """``baseline.mar``: the tutorial handler, the checkpoint and the tutorial's ``kinetics_classnames.json``."""
    extra = staging / "baseline-extra"
    extra.mkdir()
    names = {name: i for i, name in enumerate(label_set("kinetics400"))}  # the tutorial's {name: id} format
    (extra / "kinetics_classnames.json").write_text(json.dumps(names))
    config = staging / "baseline-config.yaml"
    one_at_a_time = ServingConfig(batch_size=1, max_batch_delay_ms=0, min_workers=1, max_workers=1)
    config.write_text(yaml.safe_dump({**one_at_a_time.as_yaml(), "responseTimeout": 600}))
    run_archiver("baseline", REPO / "bench" / "baseline_handler.py", checkpoint, extra, config, store, "1.0")
    return store / "baseline.mar"


def queue_microseconds(server: TorchServe, model: str) -> float:
    """TorchServe's cumulative queue time of ``model`` in microseconds (0 before its first request)."""
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "ts_queue_latency_microseconds":
            return sum(s.value for s in family.samples if s.labels.get("model_name") == model)
    return 0.0


def post(server: TorchServe, model: str, video: bytes, token: str) -> tuple[float, dict]:
    started = time.perf_counter()
    response = requests.post(
        f"{server.inference_url}/predictions/{model}",
        data=video,
        headers={"Content-Type": "video/mp4", "Authorization": f"Bearer {token}"},
        timeout=900,
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def drive(server: TorchServe, model: str, video: bytes, count: int, concurrency: int) -> dict:
    """``count`` uploads of ``video`` from ``concurrency`` clients (after a warm-up); the measurements."""
    token = server.token()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: post(server, model, video, token), range(concurrency)))  # warm-up
        queue_before = queue_microseconds(server, model)
        started = time.perf_counter()
        results = list(pool.map(lambda _: post(server, model, video, token), range(count)))
        wall = time.perf_counter() - started
    stages = {stage: statistics.mean(body["timing_ms"][stage] for _, body in results) for stage in STAGES}
    batch_sizes = [body.get("batch_size", 1) for _, body in results]
    return {
        "requests": count,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "clips_per_s": round(count / wall, 3),
        "latency_ms": latency_percentiles(seconds * 1000 for seconds, _ in results),
        "stage_ms": {**stages, "queue": (queue_microseconds(server, model) - queue_before) / count / 1000},
        "mean_batch_size": statistics.mean(batch_sizes),
    }


def run(args: argparse.Namespace) -> dict:
    spec = get_spec(MODEL)
    serving = ServingConfig(
        batch_size=args.batch_size,
        max_batch_delay_ms=args.max_batch_delay,
        min_workers=args.workers,
        max_workers=args.workers,
        response_timeout_s=600,
    )
    inference = parse_inference(args.inference)
    staging = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))  # short: the workers' sockets live below
    try:
        store = staging / "store"
        checkpoint = save_random_checkpoint(spec, staging / f"{MODEL}-random-init.pyth")
        build_baseline(checkpoint, store, staging)
        calibration = staging / "calibration"
        write_dataset(calibration, args.calibration_per_class, seed=40)
        variants = {"ours": inference}
        variants.update({f"ours {also}": parse_inference([*args.inference, *also.split()]) for also in args.also})
        archives, not_built = {}, {}
        for name, options in variants.items():
            archive = name.replace(" ", "_").replace("=", "-")
            try:
                build_archive(
                    MODEL,
                    checkpoint,
                    name=archive,
                    model_store=store,
                    serving=serving,
                    inference=options,
                    calibration=[calibration],
                    enforce=False,  # random-init weights: a reduced precision's agreement is reported, not judged
                )
            except ValueError as e:
                not_built[name] = str(e).splitlines()[0][:200]
                print(f"{name}: not built: {not_built[name]}", flush=True)
                continue
            archives[name] = archive
        variants = {name: options for name, options in variants.items() if name in archives}
        models = ["baseline", *variants]
        archives["baseline"] = "baseline"
        toolbox = toolbox_archive(args.toolbox_model, store, staging, serving, inference) if args.toolbox_model else {}
        if "archive" in toolbox:
            archives[f"ours {args.toolbox_model}"] = toolbox["archive"]
        server = TorchServe(staging / "run", store)
        server.start({archive: f"{archive}.mar" for archive in archives.values()}, overrides=free_port_overrides())
        rows = []
        try:
            for archive in archives.values():
                server.wait_ready(archive, timeout=300)
            for name in args.workloads:
                path = make_workload(staging, name, require_ffmpeg=not args.pyav_if_no_ffmpeg)
                video = path.read_bytes()
                row = {"workload": describe(name), "models": {}}
                for model in models:
                    row["models"][model] = drive(server, archives[model], video, args.requests, args.concurrency)
                    print(f"{name} {model}: {row['models'][model]['clips_per_s']:.3f} clips/s", flush=True)
                baseline = row["models"]["baseline"]["clips_per_s"]
                row["throughput_ratio"] = {v: round(row["models"][v]["clips_per_s"] / baseline, 2) for v in variants}
                if "archive" in toolbox and name in args.toolbox_workloads:
                    row["toolbox"] = compare_toolbox(server, toolbox, args, path)
                rows.append(row)
        finally:
            server.stop()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "model": MODEL,
        "weights": "random-init (speed only)",
        "machine": machine(),
        "versions": {n: metadata.version(n) for n in VERSIONS},
        "serving": serving.as_yaml(),
        "inference": {name: asdict(options) for name, options in variants.items()},
        "not_built": not_built,
        "baseline": "bench/baseline_handler.py, batch size 1, 1 worker",
        "toolbox": {k: v for k, v in toolbox.items() if k != "checkpoint"},
        "results": rows,
    }


def toolbox_archive(
    model: str, store: Path, staging: Path, serving: ServingConfig, inference: InferenceOptions
) -> dict:
    """Ours for the toolbox ``model``, archived from the toolbox's own checkpoint file with ours' options; or why
    it could not be (no reference environment)."""
    try:
        checkpoint = toolbox_checkpoint(model, staging)
    except ToolboxReferenceError as e:
        print(f"{model}: MMAction2 comparison not run: {str(e).splitlines()[0]}", flush=True)
        return {"model": model, "not_run": str(e).splitlines()[0]}
    archive = model.replace("_", "-")
    build_archive(model, checkpoint, name=archive, model_store=store, serving=serving, inference=inference)
    return {"model": model, "archive": archive, "checkpoint": checkpoint}


def compare_toolbox(server: TorchServe, toolbox: dict, args: argparse.Namespace, video: Path) -> dict:
    """Ours serving the toolbox model and the toolbox's own pipeline on the same ``video``: both rows and ours /
    theirs."""
    model = toolbox["model"]
    ours = drive(server, toolbox["archive"], video.read_bytes(), args.requests, args.concurrency)
    theirs = {d: toolbox_speed(model, toolbox["checkpoint"], video, args.requests, d) for d in DECODERS}
    for decoder, row in theirs.items():
        print(f"{model}: ours {ours['clips_per_s']:.3f}, MMAction2 {decoder} {row['clips_per_s']:.3f}", flush=True)
    ratio = {decoder: round(ours["clips_per_s"] / row["clips_per_s"], 2) for decoder, row in theirs.items()}
    return {"ours": ours, "mmaction2": theirs, "ratio": ratio}


def _served_row(workload: str, handler: str, measured: dict) -> str:
    """A table row of one handler served through TorchServe (what :func:`drive` measured)."""
    lat, st = measured["latency_ms"], measured["stage_ms"]
    return (
        f"| {workload} | {handler} | {measured['clips_per_s']:.2f} | {lat['p50']:.0f} / {lat['p95']:.0f} / "
        f"{lat['p99']:.0f} | {st['decode']:.0f} | {st['preprocess']:.0f} | {st['inference']:.0f} | "
        f"{st['queue']:.0f} | {measured['mean_batch_size']:.1f} |"
    )


def _toolbox_lines(workload: str, model: str, compared: dict) -> list[str]:
    lines = [_served_row(workload, f"ours `{model}`", compared["ours"])]
    for decoder, theirs in compared["mmaction2"].items():
        their = theirs["latency_ms"]
        lines.append(
            f"| {workload} | MMAction2 `{theirs['call']}`, {decoder} (in-process) | {theirs['clips_per_s']:.2f} | "
            f"{their['p50']:.0f} / {their['p95']:.0f} / {their['p99']:.0f} | | | | | 1.0 |"
        )
    lines += [
        f"| | **ours `{model}` / MMAction2 {decoder}** | **{ratio:.2f}x** | | | | | | |"
        for decoder, ratio in compared["ratio"].items()
    ]
    return lines


def markdown(report: dict, command: str) -> str:
    lines = []
    for row in report["results"]:
        lines += [_served_row(row["workload"], model, measured) for model, measured in row["models"].items()]
        for variant, ratio in row["throughput_ratio"].items():
            lines.append(f"| | **{variant} / baseline** | **{ratio:.2f}x** | | | | | | |")
        if "toolbox" in row:
            lines += _toolbox_lines(row["workload"], report["toolbox"]["model"], row["toolbox"])
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    inference = "; ".join(f"{name}: {json.dumps(options)}" for name, options in report["inference"].items())
    not_built = "".join(f"\nNot built on this machine: {name} ({why})." for name, why in report["not_built"].items())
    first = report["results"][0]["models"]["baseline"] if report["results"] else {}
    toolbox = report.get("toolbox") or {}
    if "not_run" in toolbox:
        not_built += f"\nMMAction2's own pipeline was not measured: {toolbox['not_run']}."
    elif toolbox:
        not_built += (
            f"\n`{toolbox['model']}`: ours serves it from a random-init checkpoint written by MMAction2's own code;"
            " MMAction2's rows are `mmaction.apis.inference_recognizer` in-process (model built once, the config's"
            " test pipeline for one view, 2 threads, one call at a time), decoding with PyAVInit/PyAVDecode (its"
            " default 'accurate' mode decodes every frame up to the clip's last) and with the config's own"
            " DecordInit/DecordDecode."
        )
    return f"""# End-to-end benchmark through TorchServe ({report["model"]}, {report["weights"]})

Command: `{command}`
Machine: {report["machine"]}; {versions}
Baseline: {report["baseline"]}. Ours: {json.dumps(report["serving"])}; inference options {inference}.{not_built}
Requests per model and workload: {first.get("requests", "-")}, {first.get("concurrency", "-")} concurrent clients on
loopback, after a warm-up. Latency is the client's; stage times are the handlers' own (means per request);
inference is the forward of the request's whole batch; queue is TorchServe's mean queue time per request; stage
columns in ms.

| workload | handler | clips/s | latency p50 / p95 / p99 (ms) | decode | preprocess | inference | queue | batch |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["720p", "1080p", "256p"], choices=list(WORKLOADS))
    parser.add_argument("--requests", type=int, default=16, help="measured requests per model and workload")
    parser.add_argument("--concurrency", type=int, default=4, help="clients posting at once")
    parser.add_argument("--batch-size", type=int, default=ServingConfig().batch_size, help="ours: batchSize")
    parser.add_argument("--max-batch-delay", type=int, default=ServingConfig().max_batch_delay_ms, help="ours, ms")
    parser.add_argument("--workers", type=int, default=ServingConfig().min_workers, help="ours: workers")
    parser.add_argument("--inference", action="append", default=[], metavar="NAME=VALUE", help="ours: option")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar='"NAME=VALUE ..."',
        help="serve a variant of ours too, with these options changed (repeatable)",
    )
    parser.add_argument("--calibration-per-class", type=int, default=2, help="int8 calibration motion videos")
    parser.add_argument(
        "--toolbox-model",
        choices=sorted(CONFIGS["mmaction2"]),
        help="also serve this MMAction2 model and time MMAction2's own test pipeline on the same uploads",
    )
    parser.add_argument(
        "--toolbox-workloads", nargs="+", default=["720p"], choices=list(WORKLOADS), help="where to compare it"
    )
    parser.add_argument(
        "--pyav-if-no-ffmpeg", action="store_true", help="without ffmpeg, make the workloads with PyAV (GPU check)"
    )
    parser.add_argument("--report", type=Path, help="write a Markdown report here (and JSON beside it)")
    args = parser.parse_args(argv)
    report = run(args)
    text = markdown(report, "python -m bench.serving " + shlex.join(argv if argv is not None else sys.argv[1:]))
    publish(report, text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
