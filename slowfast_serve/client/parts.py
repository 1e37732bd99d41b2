"""A timeline of a video of any length, sent in parts that fit the service's limits, merged into the answer one
request without limits would give, window for window.

How: the video is indexed once (its key frames, :mod:`slowfast_serve.client.cutting`); a first part asks for
window 0 alone, whose answer gives the stride and the window length the service uses; the windows
``start_sec + k * stride_sec`` of the whole video are then handed out in runs, each sent as the smallest run of
whole GOPs holding its windows (overlapping the next part by what the windows share), with ``first_window``,
``window_count`` and ``origin_pts`` (docs/api.md), so the service places and decodes each window exactly as in
the whole file. Parts are sized from the service's limits as its answers reveal them: a ``413`` that names a
limit (``max_timeline_windows``, ``max_decoded_frames``, ``max_decode_seconds``) or TorchServe's bare 413 for
an upload over ``max_request_size`` resizes the parts and resends; a part that fails otherwise (no answer, 5xx)
is retried. ``concurrency`` parts are in flight at once, each cut only when it is sent, so memory holds at most
that many parts. The windows are merged in order (and written to ``output`` as they come, which a rerun
resumes); the intervals are merged from them as the service merges them (:mod:`handler.timeline`).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from handler.timeline import intervals, keyframe_count, window_count, window_starts
from slowfast_serve.client.cutting import SourceIndex, cut, index_source
from slowfast_serve.client.errors import ServiceError
from slowfast_serve.client.part_limits import Caps, PartSettings
from slowfast_serve.client.timeline_output import TimelineOutput

#: Sends one upload with its form options -> (HTTP status, JSON body); called from several threads at once.
Send = Callable[[bytes, dict[str, object]], tuple[int, dict[str, Any]]]
#: Refusals that shrink the parts before the run gives up (each at least halves a cap, so a few suffice).
MAX_RESIZES = 64
#: How far (seconds) a part reaches beyond its windows' first and last frame, so float rounding never cuts one off.
MARGIN_SEC = 0.002


@dataclass(frozen=True)
class Grid:
    """The whole video's windows: ``count`` of them, window ``k`` at ``start + k * stride`` seconds and reading
    the frames of ``[that - before, that + after)`` (a classifier's window starts there; a detector's keyframe
    clip is centred there)."""

    start_sec: float
    stride_sec: float
    before_sec: float
    after_sec: float
    count: int

    def starts(self, first: int, count: int) -> list[float]:
        return window_starts(self.start_sec, self.stride_sec, first, count)


@dataclass(frozen=True)
class Kind:
    """What a timeline is made of: a classifier's windows (``segments``) or a detector's keyframes.

    Attributes:
        items: the key of the list in ``timeline`` (``segments`` or ``keyframes``).
        start_option: the option that places window 0 (``start_sec`` or ``keyframe_sec``).
        formats: the ``--output`` suffixes it can be written as.
        count: how many windows a video has, from its duration, window 0's place and the stride (as the service
            counts them: :mod:`handler.timeline`).
        reach: how far before and after its place a window reads frames, from window 0's answer and its place.
    """

    items: str
    start_option: str
    formats: tuple[str, ...]
    count: Callable[[float, float, float], int]
    reach: Callable[[dict[str, Any], float], tuple[float, float]]

    def grid(self, timeline: dict[str, Any], duration_sec: float) -> Grid:
        """The whole video's grid, from window 0's answer (``timeline``) and the video's duration."""
        # The service names window 0's exact place (``start_sec`` / ``keyframe_sec``: its default, or the float
        # sent); the items' own times are rounded to the millisecond.
        item, stride, start = timeline[self.items][0], timeline["stride_sec"], timeline[self.start_option]
        before, after = self.reach(item, start)
        return Grid(start, stride, before, after, self.count(duration_sec, start, stride))


def _window_reach(segment: dict[str, Any], start: float) -> tuple[float, float]:
    """A classifier's window reads from its start for one clip."""
    return 0.0, segment["end_sec"] - segment["start_sec"]


def _keyframe_reach(keyframe: dict[str, Any], start: float) -> tuple[float, float]:
    """A detector's keyframe reads a clip centred on it."""
    clip = keyframe["clip"]
    half = max(start - clip["start_sec"], clip["end_sec"] - start)
    return half, half


CLASSIFIER = Kind("segments", "start_sec", (".jsonl", ".csv"), window_count, _window_reach)
DETECTOR = Kind("keyframes", "keyframe_sec", (".jsonl",), keyframe_count, _keyframe_reach)


@dataclass(frozen=True)
class Part:
    """Windows ``first .. end - 1``, cut as key frames ``key_first .. key_end - 1``."""

    first: int
    end: int
    key_first: int
    key_end: int


@dataclass
class _Job:
    """One timeline being sent in parts: what every part needs, and the counts its answer reports."""

    index: SourceIndex
    send: Send
    options: dict[str, object]
    kind: Kind
    settings: PartSettings
    caps: Caps
    parts: int = 0
    retries: int = 0
    resumed_windows: int = 0


def timeline_in_parts(
    path: Path,
    send: Send,
    options: dict[str, object],
    *,
    kind: Kind = CLASSIFIER,
    model: str,
    settings: PartSettings | None = None,
    caps: Caps | None = None,
    output: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """The timeline of ``path`` as one answer: ``model``, ``weights``, ``engine`` (``detector``), ``video`` (the
    whole file's duration), ``timeline`` (``stride_sec`` and the windows: ``segments`` and their ``intervals``,
    or ``keyframes``) and ``parts`` (``count``, ``retries``, ``resized``, ``resumed_windows``). A classifier's
    answer has no top-level ``predictions``: they would average every window's full probabilities, which parts
    do not return.

    Args:
        send: one upload -> (status, body) (:meth:`Client.send <slowfast_serve.client.Client.send>`).
        options: the request's options (``mode=timeline``, the start, ``stride_sec``, ``top_k`` ...).
        kind: :data:`CLASSIFIER` or :data:`DETECTOR`.
        model: the model's name, recorded with ``output``.
        caps: part limits already learned (from a whole-file request's 413).
        output: written as windows come, resumed when it exists (:mod:`~slowfast_serve.client.timeline_output`;
            ``kind.formats``).
        console: where the progress bar goes (``None``: no progress shown).

    Raises:
        ServiceError: the service refused a part in a way smaller parts do not help, a part failed after its
            retries, or the file cannot be cut (the windows done so far are in ``output``).
    """
    settings = settings or PartSettings()
    index = index_source(path)
    request = {**options, "video": path.name, "video_bytes": path.stat().st_size, "model": model}
    saved = TimelineOutput(output, request, kind.formats) if output else None
    caps = caps or Caps(bytes=int(settings.part_mb * 2**20))
    job = _Job(index, send, options, kind, settings, caps, resumed_windows=len(saved.segments) if saved else 0)
    service = saved.service if saved and saved.service else None
    if service is None:
        service = _first_window(job)
        if saved:
            saved.set_service(service)
    grid = kind.grid(service["timeline"], index.duration_sec)
    job.options = {**options, kind.start_option: grid.start_sec}  # window 0's exact place, as the service chose
    items = saved.segments if saved else []
    if not items:
        first_item = service["timeline"][kind.items][0]
        if saved:
            saved.append([first_item])
        else:
            items.append(first_item)
    progress = _progress(console, grid.count, len(items))
    try:
        for first, part_items in _send_parts(job, grid, len(items), progress):
            assert first == len(items), "parts are merged in order"
            if saved:
                saved.append(part_items)
            else:
                items.extend(part_items)
    finally:
        if progress:
            progress.stop()
    return _merged(job, grid, items, service)


def _progress(console: Console | None, total: int, done: int) -> Progress | None:
    if console is None:
        return None
    progress = Progress(
        TextColumn("timeline in parts"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    progress.add_task("windows", total=total, completed=done)
    progress.start()
    return progress


def _first_window(job: _Job) -> dict[str, Any]:
    """Window 0 alone, from a part reaching far enough around it for any clip (reaching further until it holds
    the window): its answer gives the grid (the service's default start and stride, the window's extent) and what
    the service says about itself."""
    index = job.index
    start = float(job.options.get(job.kind.start_option) or 0.0)  # about: a detector's default is half a clip in
    reach = 10.0
    while True:
        part = Part(0, 1, index.key_before(start - reach), index.key_after(start + reach))
        try:
            body = _send(job, part)
        except _ResizeError:
            raise ServiceError(None, "PartTooLarge", "the service refused even window 0 alone") from None
        grid = job.kind.grid(body["timeline"], index.duration_sec)
        low, high = grid.start_sec - grid.before_sec - 2 * MARGIN_SEC, grid.start_sec + grid.after_sec + 2 * MARGIN_SEC
        if (part.key_first == 0 or index.key_secs[part.key_first] <= low) and (
            part.key_end == len(index.key_pts) or index.key_secs[part.key_end] >= high
        ):
            break
        reach *= 4  # a window reaching past the part: send it again with more of the video
    service = {key: body.get(key) for key in ("model", "weights", "engine", "detector", "video")}
    return {**service, "timeline": body["timeline"]}


def _send_parts(
    job: _Job, grid: Grid, done: int, progress: Progress | None
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """``(first window, its items)`` of every part from window ``done`` on, in window order, sent
    ``settings.concurrency`` at a time."""
    redo: list[tuple[int, int]] = []  # window ranges to plan again (after a 413), smallest first
    next_window, merged = done, done
    in_flight: dict[Future, Part] = {}
    results: dict[int, list[dict[str, Any]]] = {}  # answered parts by first window, until merged in order
    index, caps, concurrency = job.index, job.caps, job.settings.concurrency
    with ThreadPoolExecutor(concurrency, thread_name_prefix="timeline-part") as pool:
        try:
            while merged < grid.count:
                while len(in_flight) < concurrency and (redo or next_window < grid.count):
                    if redo:
                        first, end = heapq.heappop(redo)
                        part = plan_part(index, grid, caps, first, end)
                        if part.end < end:
                            heapq.heappush(redo, (part.end, end))
                    else:
                        part = plan_part(index, grid, caps, next_window, grid.count)
                        next_window = part.end
                    in_flight[pool.submit(_send_part, job, part)] = part
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    part = in_flight.pop(future)
                    segments = future.result()  # a ServiceError ends the run (what was merged is kept)
                    if segments is None:
                        if job.caps.refusals > MAX_RESIZES:
                            raise ServiceError(
                                None, "PartTooLarge", f"the service refused parts {job.caps.refusals} times"
                            )
                        heapq.heappush(redo, (part.first, part.end))
                        continue
                    results[part.first] = segments
                    if progress:
                        progress.advance(progress.task_ids[0], len(segments))
                while merged in results:
                    segments = results.pop(merged)
                    yield merged, segments
                    merged += len(segments)
        finally:
            for future in in_flight:
                future.cancel()


def plan_part(index: SourceIndex, grid: Grid, caps: Caps, first: int, end: int) -> Part:
    """The longest run of windows from ``first`` (before ``end``) whose part fits the caps; at least one."""
    key_first = index.key_before(grid.starts(first, 1)[0] - grid.before_sec - MARGIN_SEC)
    best = None
    limit = end if caps.windows is None else min(end, first + caps.windows)
    for last in range(first, limit):
        key_end = index.key_after(grid.starts(last, 1)[0] + grid.after_sec + MARGIN_SEC)
        fits = index.span_bytes(key_first, key_end) <= caps.bytes and (
            caps.frames is None or index.span_packets(key_first, key_end) <= caps.frames
        )
        if best is not None and not fits:
            break
        best = Part(first, last + 1, key_first, key_end)
    assert best is not None
    return best


def _send_part(job: _Job, part: Part) -> list[dict[str, Any]] | None:
    """The part's windows; ``None`` when the service's limits made the caps smaller (plan it again)."""
    try:
        body = _send(job, part)
    except _ResizeError:
        return None
    items = body["timeline"][job.kind.items]
    if len(items) != part.end - part.first:
        raise ServiceError(None, "PartMismatch", f"asked for {part.end - part.first} windows, got {len(items)}")
    return items


class _ResizeError(Exception):
    """A part was over a limit of the service; the caps were made smaller."""


def _send(job: _Job, part: Part) -> dict[str, Any]:
    """The service's answer to the part, retried after no answer or a 5xx.

    Raises:
        _ResizeError: a 413 for a limit that a smaller part avoids (``caps`` were made smaller).
        ServiceError: any other refusal, or no success after ``settings.retries`` resends.
    """
    index = job.index
    data = cut(index, part.key_first, part.key_end)
    options = {
        **job.options,
        "first_window": part.first,
        "window_count": part.end - part.first,
        "origin_pts": index.start_pts,
    }
    delays = [min(2.0**attempt, 30.0) for attempt in range(job.settings.retries)]
    while True:
        try:
            status, body = job.send(data, options)
        except (ServiceError, requests.RequestException) as e:  # no answer: TorchServe restarting, a timeout
            status, body, failure = None, {}, e
        else:
            failure = None
        if status == 200:
            job.parts += 1
            return body
        if status is not None and 400 <= status < 500:
            if job.caps.learn(status, body, part.end - part.first, index.span_bytes(part.key_first, part.key_end)):
                raise _ResizeError
            raise ServiceError.from_body(status, body)
        if not delays:
            if failure is not None:
                raise failure
            raise ServiceError.from_body(status or 0, body)
        job.retries += 1
        time.sleep(delays.pop(0))


def _merged(job: _Job, grid: Grid, items: list[dict[str, Any]], service: dict[str, Any]) -> dict[str, Any]:
    kind = job.kind
    end = job.index.container_duration_sec
    timeline: dict[str, Any] = {"stride_sec": grid.stride_sec, kind.items: items}
    if kind is CLASSIFIER:
        tops = [segment["predictions"][0] for segment in items]
        timeline["intervals"] = intervals(grid.starts(0, grid.count), tops, grid.stride_sec, end)
    body = {key: service.get(key) for key in ("model", "weights", "engine")}
    if kind is DETECTOR:
        body["detector"] = service.get("detector")
    return {
        **body,
        "timeline": timeline,
        "video": {**(service.get("video") or {}), "duration_sec": None if end is None else round(end, 3)},
        "parts": {
            "count": job.parts,
            "retries": job.retries,
            "resized": job.caps.refusals,
            "resumed_windows": job.resumed_windows,
        },
    }
