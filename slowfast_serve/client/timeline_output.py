"""``--output`` of a timeline sent in parts: its windows (a classifier's segments, a detector's keyframes)
written as they come (JSON Lines, or CSV for segments), so that a run that stops can be resumed by running it
again.

Beside the file, ``<output>.meta.json`` records what the windows were made from (the video's name and size, the
model, ``start_sec``, ``stride_sec``, ``top_k``) and what the service said about itself; a rerun with other
settings is refused rather than mixed in. Windows are written in order, each on its own line, floats as Python
writes them (they read back exactly); a line cut short by a crash is dropped on resume.

- ``.jsonl``: one object per window, ``{"window": k, ...}`` and the window as the service answers it (a segment
  ``"start_sec", "end_sec", "predictions": [{"label", "class_id", "score"}, ...]``, or a keyframe).
- ``.csv`` (segments): ``window,start_sec,end_sec,label_1,class_id_1,score_1,...`` (a triple per class).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from slowfast_serve.client.errors import ServiceError

FORMATS = (".jsonl", ".csv")


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


class TimelineOutput:
    """The windows of one timeline on disk, appended in order.

    Args:
        path: ``.jsonl`` or ``.csv`` file; created, or resumed when it exists with the same ``settings``.
        settings: what the windows depend on (compared on resume).
        formats: the suffixes allowed (a detector's keyframes: ``.jsonl`` only).

    Raises:
        ServiceError: (``OutputMismatch``) the file exists but was made with other settings, or without its
            ``.meta.json``; (``InvalidOption``) an unknown suffix.
    """

    def __init__(self, path: Path, settings: dict[str, Any], formats: tuple[str, ...] = FORMATS) -> None:
        if path.suffix not in formats:
            raise ServiceError(None, "InvalidOption", f"--output must end in {' or '.join(formats)}, not {path.name}")
        self.path = path
        self.meta = {"settings": settings, "service": None}
        self.segments: list[dict[str, Any]] = []
        if path.exists():
            self._resume(settings)
        else:
            path.write_text("")
            self._save_meta()

    @property
    def service(self) -> dict[str, Any] | None:
        """What the service said about itself (model, weights, engine, video, stride, window length), once known."""
        return self.meta["service"]

    def set_service(self, service: dict[str, Any]) -> None:
        self.meta["service"] = service
        self._save_meta()

    def append(self, segments: list[dict[str, Any]]) -> None:
        """Writes the next windows (``segments`` as the service answers them) and keeps them."""
        with self.path.open("a", newline="") as file:
            for segment in segments:
                window = len(self.segments)
                line = _jsonl(window, segment) if self.path.suffix == ".jsonl" else _csv(window, segment, window == 0)
                file.write(line)
                self.segments.append(segment)

    def _save_meta(self) -> None:
        meta_path(self.path).write_text(json.dumps(self.meta, indent=1) + "\n")

    def _resume(self, settings: dict[str, Any]) -> None:
        meta = meta_path(self.path)
        if not meta.exists():
            raise ServiceError(
                None,
                "OutputMismatch",
                f"{self.path} exists but has no {meta.name}, so what it holds is unknown: move it or choose "
                "another path",
            )
        self.meta = json.loads(meta.read_text())
        before = self.meta.get("settings", {})
        changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
        if changed:
            raise ServiceError(
                None,
                "OutputMismatch",
                f"{self.path} holds a timeline made with other settings ({', '.join(changed)}: "
                f"{', '.join(f'{before.get(k)!r} then, {settings.get(k)!r} now' for k in changed)}); "
                "run with the same settings to resume it, or choose another path",
            )
        text = self.path.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line cut short by a crash is dropped
        if complete != text:
            self.path.write_text(complete)
        if self.path.suffix == ".jsonl":
            self.segments = [_segment(json.loads(line)) for line in complete.splitlines()]
        else:
            self.segments = [_from_csv(row) for row in csv.DictReader(io.StringIO(complete))]


def _segment(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "window"}


def _jsonl(window: int, segment: dict[str, Any]) -> str:
    return json.dumps({"window": window, **segment}) + "\n"


def _csv(window: int, segment: dict[str, Any], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        ranks = range(1, len(segment["predictions"]) + 1)
        writer.writerow(["window", "start_sec", "end_sec", *(f"{c}_{r}" for r in ranks for c in _COLUMNS)])
    cells = [repr(p[c]) if c == "score" else p[c] for p in segment["predictions"] for c in _COLUMNS]
    writer.writerow([window, repr(segment["start_sec"]), repr(segment["end_sec"]), *cells])
    return buffer.getvalue()


_COLUMNS = ("label", "class_id", "score")


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    ranks = sum(1 for key in row if key.startswith("label_"))
    predictions = [
        {"label": row[f"label_{r}"], "class_id": int(row[f"class_id_{r}"]), "score": float(row[f"score_{r}"])}
        for r in range(1, ranks + 1)
    ]
    return {"start_sec": float(row["start_sec"]), "end_sec": float(row["end_sec"]), "predictions": predictions}
