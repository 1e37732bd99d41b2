"""Folder mode of ``slowfast-serve classify``: every video under the given folders, a bounded number at a time, with a
progress bar, one record per video in a resumable JSONL or CSV file, and a summary.

Records (JSONL: one object per line; CSV: the same keys except ``response``):
``path``, ``ok``, ``status``, ``label`` and ``score`` (the top class), ``error_type``, ``error`` and, in JSONL,
the server's whole ``response``. Resuming: videos that already have an ``ok`` record in the output file are
skipped; failed ones are tried again (a new record is appended; the last record of a path is the one that
counts). A failure is recorded and the run goes on; only an unreachable server stops it.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .ts .mts .m2ts .flv .ogv .ogg .gif .mpg .mpeg .wmv .3gp .3g2 .mxf .y4m".split()  # noqa: SIM905
)
CSV_FIELDS = ("path", "ok", "status", "label", "score", "error_type", "error")

Sender = Callable[[Path], tuple[int, dict]]


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, and under each folder every file with a video suffix (recursively), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            found.append(path)
    return found


def record(path: Path, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """One output record for ``path`` from the server's answer."""
    ok = status == 200
    top = (body.get("predictions") or [{}])[0] if ok else {}
    return {
        "path": str(path),
        "ok": ok,
        "status": status,
        "label": top.get("label"),
        "score": top.get("score"),
        "error_type": None if ok else body.get("type"),
        "error": None if ok else body.get("message"),
        "response": body,
    }


def done_paths(output: Path) -> set[str]:
    """Paths whose last record in ``output`` succeeded (nothing when the file does not exist yet)."""
    if not output.exists():
        return set()
    last: dict[str, bool] = {}
    with output.open(newline="") as f:
        rows = (
            csv.DictReader(f) if output.suffix.lower() == ".csv" else (json.loads(line) for line in f if line.strip())
        )
        for row in rows:
            last[row["path"]] = row["ok"] in (True, "True")
    return {path for path, ok in last.items() if ok}


class Writer:
    """Appends records to a ``.jsonl`` or ``.csv`` file as they come (flushed: a killed run loses nothing)."""

    def __init__(self, output: Path) -> None:
        self.csv = output.suffix.lower() == ".csv"
        new = not output.exists() or output.stat().st_size == 0
        output.parent.mkdir(parents=True, exist_ok=True)
        self.file = output.open("a", newline="")
        self.rows = csv.DictWriter(self.file, CSV_FIELDS, extrasaction="ignore") if self.csv else None
        if self.rows and new:
            self.rows.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.rows:
            self.rows.writerow(row)
        else:
            self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class Summary:
    classified: int = 0
    failed: int = 0
    skipped: int = 0
    labels: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def table(self) -> Table:
        table = Table(title="summary")
        table.add_column("")
        table.add_column("videos", justify="right")
        table.add_row("classified", str(self.classified))
        table.add_row("failed", str(self.failed))
        table.add_row("skipped (done in an earlier run)", str(self.skipped))
        for label, count in self.labels.most_common(5):
            table.add_row(f"top label: {label}", str(count))
        for kind, count in self.errors.most_common():
            table.add_row(f"error: {kind}", str(count))
        return table


def run(videos: list[Path], send: Sender, output: Path, concurrency: int, console: Console) -> Summary:
    """Classifies ``videos`` with at most ``concurrency`` requests in flight, appending to ``output``.

    Raises:
        ServiceUnreachableError: the server cannot be reached (the records written so far stay).
    """
    summary = Summary()
    finished = done_paths(output)
    todo = [v for v in videos if str(v) not in finished]
    summary.skipped = len(videos) - len(todo)
    writer = Writer(output)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as progress, ThreadPoolExecutor(concurrency) as pool:
            task = progress.add_task("classifying", total=len(todo))
            futures = {pool.submit(_send_file, send, video): video for video in todo}
            for future in as_completed(futures):
                row = record(futures[future], *future.result())
                writer.write(row)
                if row["ok"]:
                    summary.classified += 1
                    summary.labels[row["label"]] += 1
                else:
                    summary.failed += 1
                    summary.errors[row["error_type"] or str(row["status"])] += 1
                progress.advance(task)
    finally:
        writer.close()
    return summary


def _send_file(send: Sender, video: Path) -> tuple[int, dict]:
    if not video.is_file():
        return 404, {"type": "NoSuchFile", "message": f"{video}: no such file"}
    try:
        return send(video)
    except OSError as e:  # an unreadable file; ServiceUnreachableError (server down) propagates
        return 400, {"type": "UnreadableFile", "message": str(e)}
