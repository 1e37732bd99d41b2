"""``slowfast-serve detect``: who does what, person by person, with a served AVA detection model.

Sends VIDEO (HTTP multipart, or ``--grpc``) with the detection options and prints one table per keyframe: each
person box and its top AVA actions. ``--boxes`` gives the people's boxes (JSON ``[[x1, y1, x2, y2], ...]`` in
pixels of the upright frame); without it the archive's person detector finds them. ``--every SEC`` runs the whole
video, a keyframe every SEC seconds (``mode=timeline``); over HTTP a video of any length, sent in parts when the
service's limits require (``--output`` keyframes as JSON Lines, resumable; ``--concurrency``, ``--retries``,
``--part-mb``: :mod:`slowfast_serve.client.parts`). ``--annotate out.mp4`` writes a copy of the video with
each box and its top actions drawn, each keyframe's from the start of its clip until the next keyframe's (the last
until its clip ends), like the detection tutorial's visualiser. ``--json`` prints the server's answer instead of
the tables. Exit status: 0 on an answer, 1 on an error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.table import Table

from slowfast_serve.client.classify import DEFAULT_GRPC, grpc_sender, http_sender
from slowfast_serve.client.errors import ServiceError, ServiceUnreachableError
from slowfast_serve.client.inference import Detections, Keyframe, engine_text
from slowfast_serve.client.options import (
    add_part_arguments,
    add_service_arguments,
    client_from_args,
    part_settings_from_args,
    token_from_args,
)
from slowfast_serve.client.overlay import burn_in

# Box colours, one per box of a keyframe in turn (matplotlib's tab10, as RGB).
COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
LINE = 3  # box outline width, pixels


def render(console: Console, video: Path, answer: Detections) -> None:
    """One table per keyframe: box, person score and top actions of each detection."""
    detector = answer.detector
    source = "given" if detector is None else f"found by {detector['name']} (score >= {detector['threshold']:g})"
    console.print(f"[bold]{video}[/bold]  {answer.model}, boxes {source}")
    for keyframe in answer.keyframes:
        clip = keyframe.clip
        table = Table(title=f"keyframe {keyframe.keyframe_sec:g} s (clip {clip['start_sec']}-{clip['end_sec']} s)")
        for column in ("#", "box (x1, y1, x2, y2)", "person", "actions (AVA id: score)"):
            table.add_column(column)
        for rank, detection in enumerate(keyframe.detections, start=1):
            person = "-" if detection.person_score is None else f"{detection.person_score:.2f}"
            actions = ", ".join(f"{a.label} ({a.class_id}: {a.score:.2f})" for a in detection.actions)
            table.add_row(str(rank), ", ".join(f"{v:.0f}" for v in detection.box), person, actions or "-")
        if not keyframe.detections:
            table.add_row("-", "no one", "-", "-")
        console.print(table)
    if answer.weights == "random-init":
        console.print("[yellow]weights: random-init: these actions are meaningless[/yellow]")
    else:
        console.print(f"weights: {answer.weights}", style="dim")
    if detector is not None and detector.get("weights") == "random-init":
        console.print("[yellow]person detector weights: random-init: these boxes are meaningless[/yellow]")
    console.print(f"engine: {engine_text(answer.engine)}", style="dim")


def shown_at(keyframes: tuple[Keyframe, ...], seconds: float) -> Keyframe | None:
    """The keyframe whose boxes a frame at ``seconds`` shows: the last one whose clip has started, until the next
    one's starts (the last keyframe until its clip ends); ``None`` before the first and after the last."""
    current = None
    for keyframe in keyframes:
        if keyframe.clip["start_sec"] <= seconds:
            current = keyframe
    if current is keyframes[-1] and seconds >= current.clip["end_sec"]:
        return None
    return current


def draw_keyframe(image: Image.Image, keyframe: Keyframe, actions: int = 2) -> None:
    """Each box of ``keyframe`` outlined on ``image`` (in place), its top ``actions`` written above it."""
    draw = ImageDraw.Draw(image)
    size = max(12, image.height // 40)
    font = ImageFont.load_default(size=size)
    for i, detection in enumerate(keyframe.detections):
        colour = COLOURS[i % len(COLOURS)]
        x1, y1, x2, y2 = detection.box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=LINE)
        text = ", ".join(f"{a.label} {a.score:.2f}" for a in detection.actions[:actions])
        if text:
            top = y1 - size - 4 if y1 >= size + 4 else y1 + LINE
            left, _, right, bottom = draw.textbbox((x1 + LINE, top), text, font=font)
            draw.rectangle((left - 2, top, right + 2, bottom + 2), fill=colour)
            draw.text((x1 + LINE, top), text, fill="white", font=font)


def annotate(source: Path, answer: Detections, path: Path) -> Path:
    """A copy of ``source`` (H.264 mp4, upright) with the answer's boxes and top actions drawn."""

    def draw(image: Image.Image, seconds: float) -> None:
        keyframe = shown_at(answer.keyframes, seconds)
        if keyframe is not None:
            draw_keyframe(image, keyframe)

    return burn_in(source, path, draw)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, metavar="VIDEO")
    parser.add_argument("--keyframe-sec", type=float, help="the keyframe (default: the middle of the video)")
    parser.add_argument(
        "--boxes",
        help="the people's boxes, JSON [[x1, y1, x2, y2], ...] in pixels of the upright frame (default: the "
        "archive's person detector finds them)",
    )
    parser.add_argument(
        "--every", type=float, metavar="SEC", help="a keyframe every SEC seconds over the whole video (timeline)"
    )
    parser.add_argument("--top-k", type=int, help="actions per box (server default: 5)")
    parser.add_argument("--threshold", type=float, help="lowest action score shown (server default: 0)")
    parser.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="write a copy with the boxes drawn")
    parser.add_argument("--json", action="store_true", help="print the server's JSON")
    add_service_arguments(parser, timeout=900)
    add_part_arguments(parser, ".jsonl; with --every over HTTP")
    parser.add_argument("--grpc", action="store_true", help="use TorchServe's gRPC inference API instead of HTTP")
    parser.add_argument("--grpc-address", default=DEFAULT_GRPC, help="gRPC inference address (default: %(default)s)")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the arguments give (``None``: the server's default)."""
    timeline = {"mode": "timeline", "stride_sec": args.every} if args.every is not None else {}
    fields = {"keyframe_sec": args.keyframe_sec, "boxes": args.boxes, "top_k": args.top_k, "threshold": args.threshold}
    return {**fields, **timeline}


def _timeline(args: argparse.Namespace, errors: Console) -> tuple[int, dict[str, Any]]:
    """``--every`` over HTTP: the whole video's keyframes, sent in parts when it must be (as ``timeline``)."""
    try:
        answer = client_from_args(args).detect(
            args.video,
            keyframe_sec=args.keyframe_sec,
            top_k=args.top_k,
            threshold=args.threshold,
            every=args.every,
            parts=part_settings_from_args(args),
            output=args.output,
            progress=errors,
        )
    except ServiceError as e:
        return e.status or 0, {"type": e.type, "message": e.message}
    return 200, answer.body


def run(args: argparse.Namespace) -> int:
    console, errors = Console(), Console(stderr=True)
    if not args.video.is_file():
        errors.print(f"error: {args.video}: no such file")
        return 1
    if args.every is not None and args.boxes is None and not args.grpc:
        status, body = _timeline(args, errors)
    else:
        send = (grpc_sender if args.grpc else http_sender)(args, token_from_args(args), options(args))
        try:
            status, body = send(args.video)
        except ServiceUnreachableError as e:
            errors.print(f"error: {e.message}")
            return 1
    if status != 200:
        where = f"{status} " if status else ""  # 0: refused here, before or without an answer
        errors.print(f"error: {args.video}: {where}{body.get('type', '')}: {body.get('message', body)}", markup=False)
        return 1
    if "detections" not in body and "timeline" not in body:
        errors.print(f"error: {args.model} is no AVA detection model (it answered {sorted(body)}); use classify")
        return 1
    answer = Detections.from_json(body)
    if args.json:
        print(json.dumps(body))
    else:
        render(console, args.video, answer)
    if args.annotate:
        console.print(f"annotated video: {annotate(args.video, answer, args.annotate)}", highlight=False)
    return 0
