"""The local TorchServe instance that ``make serve`` / ``make stop`` run: start, stop, status, token renewal.

``serve`` builds ``model_store/<name>.mar`` if it is missing or was built from other inputs, starts
TorchServe in the background with ``config.properties`` (runtime files in ``run/``), waits until the model has
a ready worker, and prints how to call it. Weights come from ``--checkpoint``, else a checkpoint bundled with
this repository (motion_demo), else the torch.hub cache, else a download of the official checkpoint; offline,
it stops at once and says how to proceed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from handler.decode_limits import DecodeLimits
from handler.detection import DETECTION_MODELS, SERVED_MODELS
from handler.models import RANDOM_INIT
from handler.pipeline import InferenceOptions
from handler.request import DEFAULT_TOP_K
from slowfast_serve.checkout import CHECKOUT, WORKSPACE
from slowfast_serve.client.keys import renewal_request
from slowfast_serve.server.archive import (
    DEFAULT_STORE,
    BuildRecord,
    DetectionBuild,
    ServingConfig,
    add_detection_arguments,
    add_setting_arguments,
    build_archive,
    detection_build,
    parse_inference,
    parse_limits,
)
from slowfast_serve.server.torchserve import DEFAULT_CONFIG, ServeError, TorchServe, java_environment
from slowfast_serve.server.weights import DownloadError, model_checkpoint
from slowfast_serve.web.command import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    SERVE_REMEDY,
    BackgroundPage,
    PageError,
    check_port,
)

DEFAULT_RUNTIME = WORKSPACE / "run"
# How the printed instructions name the commands: the checkout's own venv and make targets, else the installed ones.
CLI = ".venv/bin/slowfast-serve" if CHECKOUT else "slowfast-serve"
STOP = "make stop" if CHECKOUT else "slowfast-serve stop"
FAILURES = (ServeError, DownloadError, PageError, ValueError, KeyError, OSError)


def ensure_archive(
    model: str,
    checkpoint: Path | None,
    labels: Path | None,
    name: str,
    model_store: Path,
    random_init: bool,
    limits: DecodeLimits | None = None,
    inference: InferenceOptions | None = None,
    calibration: Sequence[Path] = (),
    detection: DetectionBuild | None = None,
) -> Path:
    """The archive for these inputs, built only when it is missing or its build record differs."""
    serving = ServingConfig()
    limits = limits or DecodeLimits()
    inference = inference or InferenceOptions()
    if random_init:
        wanted_checkpoint = RANDOM_INIT
    else:
        checkpoint = model_checkpoint(model, checkpoint)
        wanted_checkpoint = str(checkpoint.resolve())
    archive = model_store / f"{name}.mar"
    record = BuildRecord.load(name, model_store)
    labels_key = str(labels.resolve()) if labels else ""
    if (
        archive.exists()
        and record
        and record.matches(
            model,
            wanted_checkpoint,
            labels_key,
            serving.as_yaml(),
            DEFAULT_TOP_K,
            limits,
            inference,
            calibration=calibration,
            detection=(detection or DetectionBuild()).record(random_init) if model in DETECTION_MODELS else None,
        )
    ):
        print(f"using {archive} (weights: {record.weights})")
        return archive
    print(f"building {archive} ...", flush=True)
    return build_archive(
        model,
        None if random_init else checkpoint,
        labels=labels,
        name=name,
        model_store=model_store,
        serving=serving,
        limits=limits,
        inference=inference,
        calibration=calibration,
        detection=detection,
    )


def run_serve(args: argparse.Namespace) -> int:
    name = args.name or args.model
    java_environment()  # fail before any slow step if TorchServe could not run
    server = TorchServe(args.runtime_dir, args.model_store)
    if server.pid() is not None:
        raise ServeError(f"TorchServe is already running (pid {server.pid()}); run `{STOP}` first")
    page = BackgroundPage(server.runtime_dir)
    page.stop()  # a page left by a TorchServe that died
    if not args.no_web:
        check_port(DEFAULT_HOST, args.web_port, SERVE_REMEDY)
    limits, inference = parse_limits(args.limit), parse_inference(args.inference)
    ensure_archive(
        args.model,
        args.checkpoint,
        args.labels,
        name,
        args.model_store,
        args.random_init,
        limits,
        inference,
        args.calibration,
        detection_build(args),
    )
    server.start(
        {name: f"{name}.mar"},
        base_config=args.config,
        overrides={"enable_model_api": "true"} if args.enable_model_api else None,
    )
    print(f"TorchServe started (pid {server.pid()}), loading {name} ...", flush=True)
    try:
        server.wait_ready(name, timeout=args.timeout)
    except ServeError:
        server.stop()
        raise
    record = BuildRecord.load(name, args.model_store)
    weights = record.weights if record else "unknown"
    url = f"{server.inference_url}/predictions/{name}"
    page_url = None
    if not args.no_web:
        key_file = server.key_file if server.token_auth() else None
        try:
            page_url = page.start(server.inference_url, server.management_url, key_file, args.web_port)
        except PageError as e:  # TorchServe itself serves: say so, and how to start the page alone
            print(f"WARNING: the web page did not start: {e}\n  retry with: {CLI} web", file=sys.stderr)
    print(
        f"\nServing {name} (weights: {weights}) at {url}\n"
        + (
            "WARNING: random-init weights; predictions are meaningless (tests and benchmarks only).\n"
            if weights == RANDOM_INIT
            else ""
        )
        + f"Token: the 'inference' key in {server.key_file} (TorchServe expires it after 60 minutes;\n"
        f"  `{CLI} token` issues a new one).\n\n"
        + (_detect_help if args.model in DETECTION_MODELS else _classify_help)(name, url, server.key_file)
        + f"Stop: {STOP}"
        + (f"\n\nTry it in a browser: open {page_url}" if page_url else "")
    )
    return 0


def _token_line(key_file: Path) -> str:
    return f'  TOKEN=$(python3 -c \'import json; print(json.load(open("{key_file}"))["inference"]["key"])\')\n'


def _classify_help(name: str, url: str, key_file: Path) -> str:
    return (
        "Classify a video:\n"
        f"  {CLI} classify video.mp4 --model {name}\n"
        + _token_line(key_file)
        + f'  curl -H "Authorization: Bearer $TOKEN" -F data=@video.mp4 -F top_k=5 {url}\n'
        f'  curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: video/mp4" -H "X-Start-Sec: 1.5" '
        f"--data-binary @video.mp4 {url}\n"
    )


def _detect_help(name: str, url: str, key_file: Path) -> str:
    return (
        "Who does what (AVA actions per person box; docs/detection.md):\n"
        f"  {CLI} detect video.mp4 --model {name} --boxes '[[10, 20, 200, 400]]'\n"
        f"  {CLI} detect video.mp4 --model {name} --every 1 --annotate annotated.mp4\n"
        + _token_line(key_file)
        + f'  curl -H "Authorization: Bearer $TOKEN" -F data=@video.mp4 -F keyframe_sec=1.5 '
        f"-F 'boxes=[[10, 20, 200, 400]]' {url}\n"
    )


def run_stop(args: argparse.Namespace) -> int:
    server = TorchServe(args.runtime_dir, args.model_store)
    if BackgroundPage(server.runtime_dir).stop():
        print("the web page stopped")
    print("TorchServe stopped" if server.stop() else "TorchServe was not running")
    return 0


def run_status(args: argparse.Namespace) -> int:
    server = TorchServe(args.runtime_dir, args.model_store)
    pid = server.pid()
    print(
        f"TorchServe running (pid {pid}), inference at {server.inference_url}" if pid else "TorchServe is not running"
    )
    page = BackgroundPage(server.runtime_dir)
    if page.pid() is not None:
        print(f"the web page: {page.url()} (pid {page.pid()})")
    return 0


def run_token(args: argparse.Namespace) -> int:
    """Asks the management API for a new inference token (TorchServe rewrites key_file.json)."""
    import requests

    server = TorchServe(args.runtime_dir, args.model_store)
    response = requests.get(**renewal_request(server.management_url, server.key_file), timeout=30)
    if not response.ok:
        raise ServeError(f"token rotation failed: HTTP {response.status_code} {response.text}")
    print(f"new inference token written to {server.key_file}")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of every instance subcommand: where the instance lives."""
    parser.add_argument("--runtime-dir", type=Path, default=DEFAULT_RUNTIME, help="instance files (default: run/)")
    parser.add_argument("--model-store", type=Path, default=DEFAULT_STORE, help="archives (default: model_store/)")


def configure_serve(parser: argparse.ArgumentParser) -> None:
    configure(parser)
    parser.add_argument("--model", default="slowfast_r50", choices=SERVED_MODELS, help="registry model")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint",
        type=Path,
        help="the model's checkpoint: a PyTorchVideo .pyth, or for a toolbox entry its toolbox's own file "
        "(converted when the archive is built)",
    )
    weights.add_argument("--random-init", action="store_true", help="random weights (plumbing tests only)")
    parser.add_argument("--labels", type=Path, help="label file (default: the model's label set)")
    parser.add_argument("--name", help="served model name (default: the model name)")
    add_setting_arguments(parser)
    add_detection_arguments(parser)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the model (default: 600)")
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="TorchServe properties to start from, e.g. other ports (default: the package's config.properties: "
        "loopback ports 8080-8082, gRPC 7070-7071)",
    )
    parser.add_argument(
        "--web-port", type=int, default=DEFAULT_PORT, help="port of the web page (default: %(default)s, loopback only)"
    )
    parser.add_argument("--no-web", action="store_true", help="do not start the web page")
    parser.add_argument(
        "--enable-model-api",
        action="store_true",
        help="allow registering/unregistering archives of the model store over the management API (SECURITY.md)",
    )
