"""``slowfast-serve classify``: classify videos with a running TorchServe instance.

Uploads each VIDEO as multipart field ``data`` (options as form fields beside it), or with ``--grpc`` through
TorchServe's gRPC ``Predictions`` call (the same fields), and prints a table of the top classes, or with
``--json`` the server's JSON, one document per line in argument order. The token is read
from TorchServe's ``key_file.json``: ``--key-file``, else ``$TS_KEY_FILE``, else ``run/key_file.json`` of
the checkout (where ``make serve`` starts TorchServe), else ``./run/key_file.json``, else ``./key_file.json``.
Exit status: 0 if every video was classified, 1 otherwise.

Folder mode (a folder among the arguments, or ``--output``): every video under the folders, at most
``--concurrency`` requests at a time, one record per video appended to ``--output`` (``.jsonl`` or ``.csv``;
default ``classifications.jsonl``), videos already classified in that file skipped, failures recorded rather
than fatal, and a summary table at the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from slowfast_serve.client import folders
from slowfast_serve.client.errors import ServiceUnreachableError
from slowfast_serve.client.inference import Client, engine_text
from slowfast_serve.client.keys import find_key_file
from slowfast_serve.client.options import add_service_arguments, token_from_args

DEFAULT_GRPC = "127.0.0.1:7070"


def _options(args: argparse.Namespace) -> dict[str, object]:
    return {
        "top_k": args.top_k,
        "start_sec": args.start_sec,
        "views": args.views,
        "mode": args.mode,
        "stride_sec": args.stride_sec,
    }


def http_sender(args: argparse.Namespace, token: str | None, options: dict[str, object]) -> folders.Sender:
    """``video -> (HTTP status, JSON body)`` of a request with ``options`` as form fields; raises
    ``ServiceUnreachableError`` when the server is unreachable."""
    client = Client(args.url, token, model=args.model, timeout=args.timeout)

    def send(video: Path) -> tuple[int, dict]:
        return client.send(video, **options)

    return send


def grpc_sender(args: argparse.Namespace, token: str | None, options: dict[str, object]) -> folders.Sender:
    """``video -> (status, JSON body)`` over gRPC (``options`` as input fields): a handler error's own status,
    else the gRPC failure."""
    import grpc

    from slowfast_serve.client.grpc_client import GrpcClient, PredictionError

    client = GrpcClient(inference=args.grpc_address, token=token, timeout=args.timeout)
    kinds = {grpc.StatusCode.PERMISSION_DENIED: (401, "InvalidKeyException"), grpc.StatusCode.NOT_FOUND: (404, "")}

    def send(video: Path) -> tuple[int, dict]:
        try:
            return 200, client.predict(args.model, video.read_bytes(), **options)
        except PredictionError as e:
            return e.status, {"code": e.status, "type": e.type, "message": e.message}
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise ServiceUnreachableError(args.grpc_address, str(e.details())) from e
            status, kind = kinds.get(e.code(), (500, ""))
            return status, {"code": status, "type": kind or e.code().name, "message": e.details()}

    return send


def render(console: Console, video: Path, body: dict) -> None:
    """A readable table of one successful response."""
    if "parts" in body:  # a timeline sent in parts (slowfast_serve.client.parts): windows only
        parts = body["parts"]
        console.print(
            f"[bold]{video}[/bold]  {body.get('model')}, sent in {parts['count']} parts ({parts['retries']} retries, "
            f"{parts['resumed_windows']} windows resumed from --output)"
        )
    else:
        clip = body.get("clip", {})
        console.print(
            f"[bold]{video}[/bold]  {body.get('model')}, clip {clip.get('start_sec')}-{clip.get('end_sec')} s"
        )
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("label")
        table.add_column("score", justify="right")
        table.add_column("class id", justify="right")
        for rank, prediction in enumerate(body.get("predictions", []), start=1):
            table.add_row(str(rank), prediction["label"], f"{prediction['score']:.4f}", str(prediction["class_id"]))
        console.print(table)
    if "timeline" in body:
        timeline = body["timeline"]
        console.print(_runs_table(f"timeline (windows every {timeline['stride_sec']:.3g} s)", timeline["intervals"]))
        if "events" in timeline:  # added by `slowfast-serve timeline` (slowfast_serve.client.smoothing)
            smoothing = timeline["smoothing"]
            title = f"events (smoothed over {smoothing['seconds']:g} s, >= {smoothing['min_event_sec']:g} s)"
            console.print(_runs_table(title, timeline["events"]))
    if body.get("weights") == "random-init":
        console.print("[yellow]weights: random-init: these predictions are meaningless[/yellow]")
    else:
        console.print(f"weights: {body.get('weights')}", style="dim")
    console.print(f"engine: {engine_text(body.get('engine'))}", style="dim")


def _runs_table(title: str, runs: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for column in ("from (s)", "to (s)", "label", "mean score"):
        table.add_column(column)
    for run in runs:
        table.add_row(f"{run['start_sec']:.2f}", f"{run['end_sec']:.2f}", run["label"], f"{run['mean_score']:.3f}")
    return table


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files or folders to classify")
    parser.add_argument("--top-k", type=int, help="classes to return (server default: 5)")
    parser.add_argument("--start-sec", type=float, help="clip start in seconds (server default: 0)")
    parser.add_argument("--views", help="CLIPSxCROPS averaged, e.g. 10x3 (server default: the archive's, 1x1)")
    parser.add_argument("--mode", choices=["clip", "timeline"], help="timeline: one answer per window (default: clip)")
    parser.add_argument("--stride-sec", type=float, help="timeline: seconds between windows (default: a clip)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON (one line per video)")
    add_service_arguments(parser, timeout=300)
    parser.add_argument("--grpc", action="store_true", help="use TorchServe's gRPC inference API instead of HTTP")
    parser.add_argument("--grpc-address", default=DEFAULT_GRPC, help="gRPC inference address (default: %(default)s)")
    parser.add_argument("--output", type=Path, help="folder mode: records file, .jsonl or .csv (resumable)")
    parser.add_argument("--concurrency", type=int, default=4, help="folder mode: requests at a time (default: 4)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    errors = Console(stderr=True)
    key_file = find_key_file(args.key_file)
    token = token_from_args(args)
    send = (grpc_sender if args.grpc else http_sender)(args, token, _options(args))
    if args.output or any(video.is_dir() for video in args.videos):
        output = args.output or Path("classifications.jsonl")
        try:
            summary = folders.run(folders.expand(args.videos), send, output, max(1, args.concurrency), errors)
        except ServiceUnreachableError as e:
            errors.print(f"error: {e.message}")
            return 1
        console.print(summary.table())
        console.print(f"records: {output}")
        return 1 if summary.failed else 0
    failures = 0
    for video in args.videos:
        if not video.is_file():
            errors.print(f"error: {video}: no such file")
            failures += 1
            continue
        try:
            status, body = send(video)
        except ServiceUnreachableError as e:
            errors.print(f"error: {e.message}")
            return 1
        if args.json:
            print(json.dumps(body), flush=True)
        if status == 200:
            if not args.json:
                render(console, video, body)
            continue
        failures += 1
        transport = "gRPC, status" if args.grpc else "HTTP"
        errors.print(f"error: {video}: {transport} {status} {body.get('type', '')}: {body.get('message', body)}")
        if body.get("type") == "InvalidKeyException":
            errors.print(
                f"hint: token from {key_file or 'nowhere (no key_file.json found)'}; TorchServe tokens expire after "
                "60 minutes: `slowfast-serve token` issues a new one, or pass --key-file"
            )
        elif body.get("type") == "ModelNotFoundException":
            errors.print(f"hint: no model served as {args.model!r}; pass --model with the name `make serve` printed")
    return 1 if failures else 0
