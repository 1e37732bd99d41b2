"""The inference API of a running service, from Python: :class:`Client` and its typed results.

Every failure raises :class:`~slowfast_serve.client.errors.ServiceError` with the server's JSON error.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from slowfast_serve.client.errors import ServiceError, ServiceUnreachableError
from slowfast_serve.client.keys import find_key_file, read_token
from slowfast_serve.client.part_limits import Caps, PartSettings

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MODEL = "slowfast_r50"

#: What :meth:`Client.classify` and :meth:`Client.detect` accept as a video: a path, or the file's bytes.
Video = str | Path | bytes


@dataclass(frozen=True)
class Prediction:
    """One class of a response: its label, its index in the model's label set and its probability in [0, 1]."""

    label: str
    class_id: int
    score: float

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Prediction:
        return cls(str(item["label"]), int(item["class_id"]), float(item["score"]))


@dataclass(frozen=True)
class Segment:
    """One timeline window ``[start_sec, end_sec)`` and its own predictions."""

    start_sec: float
    end_sec: float
    predictions: tuple[Prediction, ...]


@dataclass(frozen=True)
class Interval:
    """A run of consecutive timeline windows with the same top class."""

    label: str
    start_sec: float
    end_sec: float
    mean_score: float


@dataclass(frozen=True)
class Timeline:
    """The windows of a ``mode=timeline`` request and their merged intervals."""

    stride_sec: float
    segments: tuple[Segment, ...]
    intervals: tuple[Interval, ...]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Timeline:
        return cls(
            stride_sec=float(body["stride_sec"]),
            segments=tuple(
                Segment(float(s["start_sec"]), float(s["end_sec"]), tuple(map(Prediction.from_json, s["predictions"])))
                for s in body["segments"]
            ),
            intervals=tuple(
                Interval(str(i["label"]), float(i["start_sec"]), float(i["end_sec"]), float(i["mean_score"]))
                for i in body["intervals"]
            ),
        )


@dataclass(frozen=True)
class Classification:
    """A successful answer (docs/api.md "Response").

    Attributes:
        model: the served model's registry name.
        weights: the checkpoint's file name and hash, or ``"random-init"`` (meaningless predictions).
        engine: what ran the forward (``name``, ``precision``, ``device``), as the service reported it.
        predictions: the top classes, best first.
        clip: the first clip's window (``start_sec``, ``end_sec``, ``frames``, ``source_frames``).
        views: the clips and crops averaged.
        video: the stream as stored (size, fps, duration, codec, container, rotation).
        timeline: the windows, with ``mode=timeline``; else ``None``.
        body: the JSON as received.
    """

    model: str
    weights: str
    engine: dict[str, str]
    predictions: tuple[Prediction, ...]
    clip: dict[str, Any]
    views: dict[str, Any]
    video: dict[str, Any]
    timeline: Timeline | None
    body: dict[str, Any]

    @property
    def top(self) -> Prediction:
        """The best class."""
        return self.predictions[0]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Classification:
        return cls(
            model=str(body.get("model", "")),
            weights=str(body.get("weights", "")),
            engine=dict(body.get("engine", {})),
            predictions=tuple(map(Prediction.from_json, body.get("predictions", []))),
            clip=dict(body.get("clip", {})),
            views=dict(body.get("views", {})),
            video=dict(body.get("video", {})),
            timeline=Timeline.from_json(body["timeline"]) if "timeline" in body else None,
            body=body,
        )


@dataclass(frozen=True)
class Detection:
    """One person box of a keyframe and its AVA actions.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the upright frame, as the service clipped it to the frame.
        person_score: the person detector's score, ``None`` for a box the request gave.
        actions: the box's actions, best first; ``class_id`` is the AVA action id (1..80), each score a
            probability of its own (several actions hold at once: a person can stand, talk and carry).
    """

    box: tuple[float, float, float, float]
    person_score: float | None
    actions: tuple[Prediction, ...]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Detection:
        score = item.get("person_score")
        return cls(
            box=tuple(float(v) for v in item["box"]),  # type: ignore[arg-type]
            person_score=None if score is None else float(score),
            actions=tuple(map(Prediction.from_json, item["actions"])),
        )


@dataclass(frozen=True)
class Keyframe:
    """One keyframe's answer: its time, the clip around it and one :class:`Detection` per box, in the order the
    boxes were given (or found)."""

    keyframe_sec: float
    clip: dict[str, Any]
    detections: tuple[Detection, ...]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Keyframe:
        return cls(float(item["keyframe_sec"]), dict(item["clip"]), tuple(map(Detection.from_json, item["detections"])))


@dataclass(frozen=True)
class Detections:
    """A successful answer of an AVA detection model (docs/detection.md "Response").

    Attributes:
        model, weights, engine, video: as in :class:`Classification`.
        detector: the person detector that found the boxes (``name``, ``weights``, ``threshold``), ``None`` when
            the request gave them.
        keyframes: one keyframe, or with ``every`` one per keyframe of the timeline.
        body: the JSON as received.
    """

    model: str
    weights: str
    engine: dict[str, str]
    detector: dict[str, Any] | None
    keyframes: tuple[Keyframe, ...]
    video: dict[str, Any]
    body: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Detections:
        keyframes = body["timeline"]["keyframes"] if "timeline" in body else [body]
        return cls(
            model=str(body.get("model", "")),
            weights=str(body.get("weights", "")),
            engine=dict(body.get("engine", {})),
            detector=body.get("detector"),
            keyframes=tuple(map(Keyframe.from_json, keyframes)),
            video=dict(body.get("video", {})),
            body=body,
        )


def engine_text(engine: Any) -> str:
    """``openvino fp32 on cpu``: an ``engine`` object of a response or a worker description (``-`` without one)."""
    if not isinstance(engine, dict) or "name" not in engine:
        return "-"
    return f"{engine['name']} {engine.get('precision', '?')} on {engine.get('device', '?')}"


class Client:
    """Calls ``POST {url}/predictions/{model}`` with the video as multipart field ``data``.

    Args:
        url: the inference address (``make serve`` configures ``http://127.0.0.1:8080``).
        token: the ``inference`` key of TorchServe's ``key_file.json``, or ``None`` when token authorization is
            off (:meth:`from_key_file` reads it).
        model: the served model name used when a call names none.
        timeout: seconds per request (a 10x3 request on a CPU takes tens of seconds).
    """

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, *, model: str = DEFAULT_MODEL, timeout: float = 300
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._local = threading.local()  # a requests.Session per thread: a timeline's parts are sent from several
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    @classmethod
    def from_key_file(cls, url: str = DEFAULT_URL, key_file: Path | None = None, **kwargs: Any) -> Client:
        """A client with the ``inference`` token of ``key_file`` (default: found as :func:`find_key_file` does;
        no token when there is no key file)."""
        found = find_key_file(key_file)
        return cls(url, read_token(found) if found else None, **kwargs)

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self._headers)
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, video: Video, *, model: str | None = None, **options: object) -> tuple[int, dict[str, Any]]:
        """One request as sent and answered: ``(HTTP status, JSON body)``, whatever the status.

        Options left ``None`` are left to the server (docs/api.md lists them: ``top_k``, ``start_sec``, ``views``,
        ``mode``, ``stride_sec``).

        Raises:
            ServiceUnreachableError: nothing answered at ``url``.
        """
        name, data = ("video", video) if isinstance(video, bytes) else (Path(video).name, Path(video).read_bytes())
        try:
            response = self._session.post(
                f"{self.url}/predictions/{model or self.model}",
                files={"data": (name, data, "application/octet-stream")},
                data={k: str(v) for k, v in options.items() if v is not None},
                timeout=self.timeout,
            )
        except requests.ConnectionError as e:
            raise ServiceUnreachableError(self.url, type(e).__name__) from e
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"type": "NonJsonResponse", "message": response.text[:500]}

    def _answer(self, video: Video, model: str | None, options: dict[str, object]) -> Classification:
        return Classification.from_json(self._body(video, model, options))

    def _body(self, video: Video, model: str | None, options: dict[str, object]) -> dict[str, Any]:
        status, body = self.send(video, model=model, **options)
        if status != 200:
            raise ServiceError.from_body(status, body)
        return body

    def classify(
        self,
        video: Video,
        *,
        model: str | None = None,
        top_k: int | None = None,
        start_sec: float | None = None,
        views: str | None = None,
    ) -> Classification:
        """The top classes of one clip (or of ``views``, e.g. ``"10x3"``, averaged) of ``video``.

        Raises:
            ServiceError: the server's error (``InvalidVideo``, ``ClipOutOfRange``, ``InvalidKeyException`` ...).
        """
        return self._answer(video, model, {"top_k": top_k, "start_sec": start_sec, "views": views})

    def timeline(
        self,
        video: Video,
        *,
        model: str | None = None,
        stride_sec: float | None = None,
        start_sec: float | None = None,
        top_k: int | None = None,
        parts: PartSettings | None = None,
        output: Path | None = None,
        progress: Console | None = None,
    ) -> Classification:
        """One answer per window every ``stride_sec`` (default: a clip) from ``start_sec`` to the end; the
        result's ``timeline`` holds the windows and merged intervals.

        A file of any length: sent whole when it fits ``parts.part_mb`` and the service takes it, else (or with
        ``output``) cut into parts that fit the service's limits and merged into the same windows
        (:mod:`slowfast_serve.client.parts`, which needs PyAV: the ``media`` extra). Such an answer has no
        top-level ``predictions`` and carries ``parts``. ``output`` (``.jsonl``/``.csv``) receives the windows as
        they come and is resumed by a rerun; ``progress``: a console for a progress bar with an ETA.

        Raises:
            ServiceError: the server's error, or (status ``None``) a file that cannot be cut.
        """
        options: dict[str, object] = {"mode": "timeline", "stride_sec": stride_sec, "start_sec": start_sec}
        options["top_k"] = top_k
        return Classification.from_json(self._timeline_body(video, model, options, "segments", parts, output, progress))

    def _timeline_body(
        self,
        video: Video,
        model: str | None,
        options: dict[str, object],
        items: str,
        parts: PartSettings | None,
        output: Path | None,
        progress: Console | None,
    ) -> dict[str, Any]:
        """A timeline's answer: one request for bytes, and for a file that fits one upload and the service's
        limits; else the file's timeline sent in parts (``items``: ``segments`` or ``keyframes``)."""
        if isinstance(video, bytes):
            return self._body(video, model, options)
        path, parts = Path(video), parts or PartSettings()
        caps = Caps(bytes=int(parts.part_mb * 2**20))
        if output is None and path.stat().st_size <= caps.bytes:
            status, body = self.send(path, model=model, **options)
            if status == 200:
                return body
            if not caps.learn(status, body, windows=None, part_bytes=path.stat().st_size):
                raise ServiceError.from_body(status, body)
        # Imported here: cutting needs PyAV (the media extra), which a client of short videos does without.
        from slowfast_serve.client.parts import CLASSIFIER, DETECTOR, timeline_in_parts

        def send(data: bytes, part_options: dict[str, object]) -> tuple[int, dict[str, Any]]:
            return self.send(data, model=model, **part_options)

        kind = CLASSIFIER if items == CLASSIFIER.items else DETECTOR
        return timeline_in_parts(
            path,
            send,
            options,
            kind=kind,
            model=model or self.model,
            settings=parts,
            caps=caps,
            output=output,
            console=progress,
        )

    def detect(
        self,
        video: Video,
        *,
        model: str | None = None,
        keyframe_sec: float | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        every: float | None = None,
        parts: PartSettings | None = None,
        output: Path | None = None,
        progress: Console | None = None,
    ) -> Detections:
        """Who does what (an AVA detection model): the actions of each person box at ``keyframe_sec`` (default:
        the middle of the video), or with ``every`` at a keyframe every that many seconds from ``keyframe_sec``
        (default: half a clip in) to the end. ``boxes``: ``[[x1, y1, x2, y2], ...]`` in pixels of the upright
        frame; ``None``: the archive's person detector finds them. With ``every``, a file of any length is sent
        in parts when it must be, as :meth:`timeline` does (``parts``, ``output`` as ``.jsonl``, ``progress``).

        Raises:
            ServiceError: the server's error (``InvalidBoxes``, ``NoBoxes``, ``KeyframeOutOfRange`` ...).
        """
        options: dict[str, object] = {"keyframe_sec": keyframe_sec, "top_k": top_k, "threshold": threshold}
        if boxes is not None:
            options["boxes"] = json.dumps([[float(v) for v in box] for box in boxes])
        if every is None:
            return Detections.from_json(self._body(video, model, options))
        options.update(mode="timeline", stride_sec=every)
        return Detections.from_json(self._timeline_body(video, model, options, "keyframes", parts, output, progress))
