"""Turning one TorchServe request into a validated :class:`VideoRequest`.

TorchServe hands each request over as a dict: a raw body arrives as ``"body"``, multipart form fields (and
gRPC ``input`` keys) under their own names, with bytes values. URL query parameters never reach a handler in
TorchServe 0.12, so options come either as form fields beside ``data`` or, for raw-body uploads, as request
headers. Every option has one entry in :data:`OPTIONS` (the classifiers') or :data:`DETECTION_OPTIONS` (the AVA
detection models'); a form field wins over its header.

A JSON body in KServe's v1 protocol (``POST /v1/models/{name}:predict``, which TorchServe routes to the
handler like ``/predictions``) holds several videos: ``{"instances": [{"data": {"b64": "..."}, "top_k": 3},
...]}``; :func:`parse_row` turns it into one :class:`VideoRequest` per instance.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from handler.errors import RequestError, bad_request

VIDEO_FIELDS = ("data", "body")
DEFAULT_TOP_K = 5
MAX_VIEWS = 30  # clips per request: 10 x 3 is the published Kinetics protocol
SPATIAL_CROPS = (1, 3)


@dataclass(frozen=True)
class VideoRequest:
    """One classification request.

    Attributes:
        video: the encoded video file.
        top_k: how many classes to return, 1..num_classes.
        start_sec: clip start, seconds from the start of the video stream, >= 0.
        views: ``(clips, crops)``: temporal clips spread from ``start_sec`` to the end of the video, times
            spatial crops (1: the center crop; 3: both ends and the center of the long side); the answer
            averages their probabilities. ``(1, 1)`` is the tutorial's single clip at ``start_sec``.
        mode: ``"clip"`` (the views above) or ``"timeline"``: one clip every ``stride_sec`` from ``start_sec``
            to the end, each classified on its own (center crop).
        stride_sec: seconds between timeline windows (``None``: one clip duration, windows side by side).
        first_window, window_count: a timeline of windows ``first_window .. first_window + window_count - 1`` of
            the grid ``start_sec + k * stride_sec`` (``None``: from window 0, to the end of the video).
        origin_pts: the pts that second 0 stands for (``None``: the stream's start); a part cut from a longer
            video at a key frame, timestamps kept, sends that video's start so its windows hold the same frames.
    """

    video: bytes
    top_k: int
    start_sec: float
    views: tuple[int, int] = (1, 1)
    mode: str = "clip"
    stride_sec: float | None = None
    first_window: int | None = None
    window_count: int | None = None
    origin_pts: int | None = None

    def __repr__(self) -> str:
        return (
            f"VideoRequest(video=<{len(self.video)} bytes>, top_k={self.top_k}, start_sec={self.start_sec}, "
            f"views={format_views(self.views)}, mode={self.mode}, stride_sec={self.stride_sec}, "
            f"first_window={self.first_window}, window_count={self.window_count}, origin_pts={self.origin_pts})"
        )


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectionRequest:
    """One AVA action detection request.

    Attributes:
        video: the encoded video file.
        top_k: actions returned per box, 1..num_classes.
        keyframe_sec: the keyframe, seconds from the start of the video stream (``None``: the middle of the
            video); for ``mode="timeline"`` the first keyframe (``None``: half a clip in, the first whole window).
        boxes: person boxes ``(x1, y1, x2, y2)`` in pixels of the upright frame, in the order the answer keeps;
            ``None``: the archive's person detector finds them.
        threshold: the lowest action score returned, in [0, 1].
        mode: ``"keyframe"`` (one keyframe) or ``"timeline"`` (a keyframe every ``stride_sec`` to the end, boxes
            from the detector at each).
        stride_sec: seconds between timeline keyframes (``None``: one second, AVA's annotation rate).
        first_window, window_count, origin_pts: a part of a longer video's timeline, as for
            :class:`VideoRequest` (keyframe ``k`` at ``keyframe_sec + k * stride_sec``).
    """

    video: bytes
    top_k: int
    keyframe_sec: float | None = None
    boxes: tuple[Box, ...] | None = None
    threshold: float = 0.0
    mode: str = "keyframe"
    stride_sec: float | None = None
    first_window: int | None = None
    window_count: int | None = None
    origin_pts: int | None = None

    def __repr__(self) -> str:
        boxes = "detector" if self.boxes is None else len(self.boxes)
        return (
            f"DetectionRequest(video=<{len(self.video)} bytes>, top_k={self.top_k}, keyframe_sec={self.keyframe_sec}, "
            f"boxes={boxes}, threshold={self.threshold}, mode={self.mode}, stride_sec={self.stride_sec})"
        )


DEFAULT_MAX_BOXES = 32


@dataclass(frozen=True)
class Limits:
    """Per-model bounds that option validation needs (``max_boxes``: the AVA detection models')."""

    num_classes: int
    default_top_k: int = DEFAULT_TOP_K
    default_views: tuple[int, int] = (1, 1)
    max_boxes: int = DEFAULT_MAX_BOXES


@dataclass(frozen=True)
class Option:
    """A request option: its form-field / gRPC key, its header for raw-body uploads, parser and default."""

    name: str
    header: str
    parse: Callable[[str, Limits], Any]
    default: Callable[[Limits], Any]
    help: str


def _parse_top_k(text: str, limits: Limits) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= limits.num_classes:
        raise bad_request("InvalidOption", f"top_k must be an integer from 1 to {limits.num_classes}, got {text!r}")
    return value


def _seconds(name: str, least: float) -> Callable[[str, Limits], float]:
    """A parser of a finite number of seconds >= ``least`` for option ``name``."""

    def parse(text: str, limits: Limits) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < least:
            raise bad_request("InvalidOption", f"{name} must be a number of seconds >= {least:g}, got {text!r}")
        return value

    return parse


def _integer(name: str, least: int | None) -> Callable[[str, Limits], int]:
    """A parser of an integer >= ``least`` (``None``: any) for option ``name``."""

    def parse(text: str, limits: Limits) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (least is not None and value < least):
            bound = "an integer" if least is None else f"an integer >= {least}"
            raise bad_request("InvalidOption", f"{name} must be {bound}, got {text!r}")
        return value

    return parse


def parse_views(text: str) -> tuple[int, int]:
    """``"10x3"`` -> ``(10, 3)``: clips x crops, crops 1 or 3, at most :data:`MAX_VIEWS` in all.

    Raises:
        RequestError: 400 ``InvalidOption`` for anything else.
    """
    match = re.fullmatch(r"(\d{1,3})x(\d)", text.strip().lower())
    clips, crops = (int(match[1]), int(match[2])) if match else (0, 0)
    if clips < 1 or crops not in SPATIAL_CROPS or clips * crops > MAX_VIEWS:
        raise bad_request(
            "InvalidOption",
            f"views must be CLIPSxCROPS with CROPS 1 or 3 and at most {MAX_VIEWS} views in all (e.g. 1x1, 10x1, "
            f"10x3), got {text!r}",
        )
    return clips, crops


MODES = ("clip", "timeline")
DETECTION_MODES = ("keyframe", "timeline")


def _modes(allowed: tuple[str, ...]) -> Callable[[str, Limits], str]:
    def parse(text: str, limits: Limits) -> str:
        if text.lower() not in allowed:
            raise bad_request("InvalidOption", f"mode must be one of {', '.join(allowed)}, got {text!r}")
        return text.lower()

    return parse


def _parse_threshold(text: str, limits: Limits) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise bad_request("InvalidOption", f"threshold must be a score from 0 to 1, got {text!r}")
    return value


def parse_boxes(text: str, limits: Limits) -> tuple[Box, ...]:
    """``'[[x1, y1, x2, y2], ...]'`` (JSON, pixels of the upright frame) -> boxes, at most ``limits.max_boxes``.

    Raises:
        RequestError: 400 ``InvalidBoxes`` naming the first bad box (not JSON, not four finite numbers,
            ``x2 <= x1`` or ``y2 <= y1``); 413 ``TooManyBoxes`` over the limit.
    """
    example = "e.g. [[10, 20, 110, 220]] (JSON: a list of [x1, y1, x2, y2] in pixels of the upright frame)"
    try:
        value = json.loads(text)
    except ValueError:
        raise bad_request("InvalidBoxes", f"boxes is not JSON: {text!r:.80}; {example}") from None
    if not isinstance(value, list):
        raise bad_request("InvalidBoxes", f"boxes must be a list of boxes, got {text!r:.80}; {example}")
    if len(value) > limits.max_boxes:
        raise RequestError(
            413,
            "TooManyBoxes",
            f"{len(value)} boxes; this service scores at most {limits.max_boxes} per keyframe: send the rest in "
            "another request",
        )
    boxes = []
    for i, box in enumerate(value):
        numbers = isinstance(box, list) and len(box) == 4
        numbers = numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
        if not numbers or not all(math.isfinite(v) for v in box):
            raise bad_request("InvalidBoxes", f"boxes[{i}] must be 4 finite numbers [x1, y1, x2, y2], got {box!r:.80}")
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise bad_request(
                "InvalidBoxes", f"boxes[{i}] = {box}: x2 must exceed x1 and y2 exceed y1 ([x1, y1, x2, y2], corners)"
            )
        boxes.append((x1, y1, x2, y2))
    return tuple(boxes)


def format_views(views: tuple[int, int]) -> str:
    return f"{views[0]}x{views[1]}"


#: Options that make a timeline request one part of a longer video's timeline (``mode=timeline`` only).
PART_OPTIONS: tuple[Option, ...] = (
    Option("first_window", "X-First-Window", _integer("first_window", 0), lambda limits: None, "timeline part: first"),
    Option("window_count", "X-Window-Count", _integer("window_count", 1), lambda limits: None, "timeline part: count"),
    Option("origin_pts", "X-Origin-Pts", _integer("origin_pts", None), lambda limits: None, "timeline part: origin"),
)

OPTIONS: tuple[Option, ...] = (
    Option("top_k", "X-Top-K", _parse_top_k, lambda limits: limits.default_top_k, "number of classes to return"),
    Option("start_sec", "X-Start-Sec", _seconds("start_sec", 0), lambda limits: 0.0, "clip start, seconds"),
    Option(
        "views",
        "X-Views",
        lambda text, limits: parse_views(text),
        lambda limits: limits.default_views,
        "clips x crops averaged, e.g. 10x3",
    ),
    Option("mode", "X-Mode", _modes(MODES), lambda limits: "clip", "clip, or timeline: one answer per window"),
    Option("stride_sec", "X-Stride-Sec", _seconds("stride_sec", 0.1), lambda limits: None, "timeline window step"),
    *PART_OPTIONS,
)

#: The AVA detection models' options (docs/detection.md).
DETECTION_OPTIONS: tuple[Option, ...] = (
    Option("top_k", "X-Top-K", _parse_top_k, lambda limits: limits.default_top_k, "actions returned per box"),
    Option(
        "keyframe_sec",
        "X-Keyframe-Sec",
        _seconds("keyframe_sec", 0),
        lambda limits: None,
        "keyframe, seconds (default: the middle of the video)",
    ),
    Option("boxes", "X-Boxes", parse_boxes, lambda limits: None, "person boxes, JSON [[x1, y1, x2, y2], ...]"),
    Option("threshold", "X-Threshold", _parse_threshold, lambda limits: 0.0, "lowest action score returned"),
    Option(
        "mode",
        "X-Mode",
        _modes(DETECTION_MODES),
        lambda limits: "keyframe",
        "keyframe, or timeline: a keyframe every stride_sec",
    ),
    Option("stride_sec", "X-Stride-Sec", _seconds("stride_sec", 0.1), lambda limits: None, "timeline keyframe step"),
    *PART_OPTIONS,
)


def parse_request(row: Mapping[str, Any], headers: Mapping[str, str], limits: Limits) -> VideoRequest:
    """Validates one request of a TorchServe batch.

    Args:
        row: the request's fields as TorchServe delivers them (``"body"`` or ``"data"`` plus option fields).
        headers: the request's HTTP headers (names in any case).
        limits: bounds for option values.

    Raises:
        RequestError: 400 for a missing video or a bad or unknown option, 415 for a text or JSON body.
    """
    video = _video_bytes(row)
    values = _option_values(row, headers, limits, OPTIONS, DETECTION_OPTIONS, "the AVA detection models'")
    if values["mode"] == "timeline" and values["views"] != (1, 1):
        raise bad_request("InvalidOption", "views apply to mode=clip; a timeline classifies one center crop per window")
    _check_part(values)
    return VideoRequest(video=video, **values)


def parse_detection_request(row: Mapping[str, Any], headers: Mapping[str, str], limits: Limits) -> DetectionRequest:
    """:func:`parse_request` for the AVA detection models (:data:`DETECTION_OPTIONS`).

    Raises:
        RequestError: as :func:`parse_request`; 400 for boxes with ``mode=timeline`` (a timeline's boxes come
            from the detector at each keyframe), 413 for more than ``limits.max_boxes`` boxes.
    """
    video = _video_bytes(row)
    values = _option_values(row, headers, limits, DETECTION_OPTIONS, OPTIONS, "the classifiers'")
    _check_part(values)
    if values["mode"] == "timeline" and values["boxes"] is not None:
        raise bad_request(
            "InvalidOption",
            "boxes belong to one keyframe: send them with mode=keyframe (a timeline finds people at each keyframe "
            "with the archive's person detector)",
        )
    return DetectionRequest(video=video, **values)


def _check_part(values: Mapping[str, Any]) -> None:
    """400 for part options without ``mode=timeline``."""
    given = [option.name for option in PART_OPTIONS if values[option.name] is not None]
    if given and values["mode"] != "timeline":
        verb, them = ("describes", "it") if len(given) == 1 else ("describe", "them")
        raise bad_request("InvalidOption", f"{', '.join(given)} {verb} a timeline part: send {them} with mode=timeline")


def _option_values(
    row: Mapping[str, Any],
    headers: Mapping[str, str],
    limits: Limits,
    options: tuple[Option, ...],
    others: tuple[Option, ...],
    others_are: str,
) -> dict[str, Any]:
    """Each of ``options`` parsed from its field, else its header, else its default; a field that is no option
    of these is refused, naming the other kind of model's options as such (``others``)."""
    names = {o.name for o in options}
    unknown = sorted(set(row) - set(VIDEO_FIELDS) - names)
    if unknown:
        theirs = [name for name in unknown if name in {o.name for o in others}]
        note = f" ({', '.join(theirs)}: {others_are} option{'s' if len(theirs) > 1 else ''})" if theirs else ""
        raise bad_request(
            "UnknownOption",
            f"unknown field(s) {', '.join(map(repr, unknown))}{note}; this model takes beside 'data': "
            + ", ".join(o.name for o in options),
        )
    lowered = {k.lower(): v for k, v in headers.items()}
    values: dict[str, Any] = {}
    for option in options:
        raw = row.get(option.name)
        if raw is None:
            raw = lowered.get(option.header.lower())
        values[option.name] = option.default(limits) if raw is None else option.parse(_text(raw, option.name), limits)
    return values


MAX_INSTANCES = 32  # videos in one KServe v1 request


@dataclass(frozen=True)
class ParsedRow:
    """One TorchServe request: a single video (multipart, raw body, gRPC) or a KServe v1 list of ``instances``.

    Attributes:
        requests: the request's videos, in order.
        instances: whether the body was a KServe ``instances`` list (answered as ``{"predictions": [...]}``).
    """

    requests: list[VideoRequest] | list[DetectionRequest]
    instances: bool = False


def parse_row(
    row: Mapping[str, Any],
    headers: Mapping[str, str],
    limits: Limits,
    parse: Callable[[Mapping[str, Any], Mapping[str, str], Limits], Any] = parse_request,
) -> ParsedRow:
    """``parse`` (:func:`parse_request`, or :func:`parse_detection_request`) for a single-video request; for a
    KServe v1 JSON body, one request per instance (each instance holds ``data`` as ``{"b64": "..."}`` or a base64
    string, and its own options).

    Raises:
        RequestError: for the first invalid instance (a KServe request succeeds or fails as a whole).
    """
    body = row.get("body", row.get("data"))
    if not (isinstance(body, Mapping) and "instances" in body):
        return ParsedRow([parse(row, headers, limits)])
    instances = body["instances"]
    if not isinstance(instances, list) or not 1 <= len(instances) <= MAX_INSTANCES:
        raise bad_request("InvalidInstances", f"'instances' must be a list of 1 to {MAX_INSTANCES} objects")
    requests = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, Mapping):
            raise bad_request(
                "InvalidInstances", f"instances[{index}] must be an object with 'data', got {instance!r:.80}"
            )
        fields = {**instance, "data": _base64_video(instance.get("data"), index)}
        try:
            requests.append(parse(fields, {}, limits))
        except RequestError as e:
            raise RequestError(e.status, e.type, f"instances[{index}]: {e.message}") from None
    return ParsedRow(requests, instances=True)


def _base64_video(value: Any, index: int) -> bytes:
    text = value.get("b64") if isinstance(value, Mapping) else value
    if not isinstance(text, str):
        raise bad_request("MissingVideo", f'instances[{index}] needs \'data\': the video file as {{"b64": "<base64>"}}')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("InvalidBase64", f"instances[{index}].data is not valid base64") from None


def _video_bytes(row: Mapping[str, Any]) -> bytes:
    for field in VIDEO_FIELDS:
        value = row.get(field)
        if value is None:
            continue
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        raise RequestError(
            415,
            "UnsupportedMediaType",
            f"the video arrived as {type(value).__name__} (a text or JSON content type); send the file's bytes "
            "with Content-Type video/* or application/octet-stream, as multipart field 'data', or as KServe v1 "
            'JSON {"instances": [{"data": {"b64": "<base64>"}}]}',
        )
    raise bad_request(
        "MissingVideo",
        "no video in the request: send it as the raw body with Content-Type video/* or application/octet-stream, "
        "or as multipart form field 'data' (note: curl --data-binary without a Content-Type header sends "
        "application/x-www-form-urlencoded, which TorchServe parses as a form)",
    )


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise bad_request("InvalidOption", f"{name} must be UTF-8 text") from None
    return str(value).strip()
