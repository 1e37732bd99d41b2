"""Serving AVA action detection without TorchServe: detection requests in, one answer (or one error) per request out.

Data flow for a batch (requests prepared in parallel like the classifiers', :func:`handler.pipeline.stream_prepared`)::

    DetectionRequest ─probe─▶ keyframes (one, or one every stride_sec) ─decode─▶ per keyframe: the window's
        frames [t - 0.5, t + 0.5) by timestamp, num_frames of them uniformly spread + the window's middle frame
        ─boxes given, or the person detector on the middle frame─▶ prepare_keyframe (the tutorial's transform)
        ─▶ keyframes of every request, max_clips_per_forward at a time ─score_boxes─▶ one forward, RoIs carrying
        their keyframe's batch index ─▶ per box: top-k AVA actions

A keyframe without a box runs no forward. Errors stay in their request's slot.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from handler.container import VideoInfo, probe, video_duration
from handler.decode import iter_clips
from handler.decode_limits import DecodeLimits
from handler.detection import (
    DetectionSpec,
    KeyframeClip,
    clip_boxes,
    keyframe_window,
    load_detector_network,
    prepare_keyframe,
    score_boxes,
    top_actions,
)
from handler.errors import RequestError, bad_request
from handler.export import DetectionRunner, load_detection_openvino
from handler.networks import fold_batch_norms
from handler.persons import PersonDetector, describe
from handler.pipeline import (
    CpuEngine,
    InferenceOptions,
    ServedModel,
    autocast,
    resolve_engine,
    stream_prepared,
    video_summary,
)
from handler.request import DEFAULT_MAX_BOXES, DetectionRequest
from handler.timeline import keyframe_count, part_starts
from handler.transforms import short_side_size

logger = logging.getLogger(__name__)

DEFAULT_STRIDE_SEC = 1.0  # AVA annotates one keyframe a second


@dataclass
class PreparedKeyframe:
    """One keyframe of a request, ready for the action model.

    Attributes:
        keyframe_sec: the keyframe's time.
        clip: the network input and boxes (:class:`~handler.detection.KeyframeClip`; the clip on the model's device).
        person_scores: ``(N,)`` the detector's score of each box, ``None`` for boxes the request gave.
        window: ``[start_sec, end_sec)`` decoded.
        source_frames: frames of the window.
        info, rotation: the video's metadata and the rotation applied to show it upright.
        decode_ms, persons_ms, preprocess_ms: wall-clock time of decoding, the person detector and the transform.
    """

    keyframe_sec: float
    clip: KeyframeClip
    person_scores: torch.Tensor | None
    window: tuple[float, float]
    source_frames: int
    info: VideoInfo
    rotation: int
    decode_ms: float
    persons_ms: float
    preprocess_ms: float


def keyframe_times(request: DetectionRequest, duration_sec: float, spec: DetectionSpec) -> list[float]:
    """The keyframes of a request: ``keyframe_sec`` (default: the middle of the video), or for a timeline one every
    ``stride_sec`` (default 1 s) from ``keyframe_sec`` (default: half a clip in) while before the end.

    Raises:
        RequestError: 400 ``KeyframeOutOfRange`` for a keyframe at or past the end of the video.
    """
    if request.mode == "timeline":
        first, stride = first_keyframe_sec(request, spec), request.stride_sec or DEFAULT_STRIDE_SEC
        total = lambda: keyframe_count(duration_sec, first, stride)  # noqa: E731
        times = part_starts(first, stride, request.first_window, request.window_count, total)
        if request.origin_pts is not None:
            return times  # a part: its duration is not the video's (a window past the end finds no frame)
    else:
        times = [duration_sec / 2 if request.keyframe_sec is None else request.keyframe_sec]
    if times[0] >= duration_sec:
        raise bad_request(
            "KeyframeOutOfRange",
            f"keyframe_sec {times[0]:g} is not inside the video, which lasts {duration_sec:.3f} s: send a keyframe_sec "
            f"below {duration_sec:.3f}",
        )
    return times


def first_keyframe_sec(request: DetectionRequest, spec: DetectionSpec) -> float:
    """A timeline's first keyframe: ``keyframe_sec``, by default half a clip in (the first whole window)."""
    return spec.clip_sec / 2 if request.keyframe_sec is None else request.keyframe_sec


def check_detection_options(options: InferenceOptions) -> None:
    """The inference options an AVA detection model runs with: eager, or (``export=auto`` on a CPU) the archive's
    OpenVINO fp32 network; not compiled.

    Raises:
        ValueError: another export or ``compile``, saying what to use.
    """
    if options.export not in ("auto", "eager", "openvino") or (
        options.export == "openvino" and options.precision != "fp32"
    ):
        raise ValueError(
            f"export={options.export} precision={options.precision}: the AVA detection models are served eager "
            "(any precision) or, by export=auto on CPUs, as their checked OpenVINO fp32 network; TorchScript, "
            "AOTInductor and OpenVINO bf16/int8 archives of them are not built"
        )
    if options.compile:
        raise ValueError("compile applies to the classifiers; the AVA detection models are not compiled")


class ActionDetector(ServedModel):
    """A loaded AVA detection model, its labels and its person detector: answers batches of detection requests.

    Args:
        spec: the registry entry (network, recipe).
        network: the network in eval mode (moved to ``device`` here).
        labels: action names, one per output column (column ``i`` is AVA id ``i + 1``).
        weights: what answers report as ``"weights"``.
        device: where the forward runs.
        persons: finds the boxes of requests that give none; ``None``: such requests get a 400.
        limits: bounds on each request's decoding work.
        options: precision, memory format, batch-norm folding, warm-up, preparation threads, keyframes per forward
            (``export`` must be ``auto`` or ``eager``: the detection networks are served eager).
        max_boxes: the most boxes one keyframe is scored with (given boxes beyond it are refused when the request
            is parsed; the detector's best ``max_boxes`` are kept).
    """

    kind = "detector"

    def __init__(
        self,
        spec: DetectionSpec,
        network: torch.nn.Module | DetectionRunner,
        labels: Sequence[str],
        weights: str,
        device: torch.device,
        persons: PersonDetector | None = None,
        limits: DecodeLimits | None = None,
        options: InferenceOptions | None = None,
        max_boxes: int = DEFAULT_MAX_BOXES,
    ) -> None:
        options = options or InferenceOptions()
        check_detection_options(options)
        openvino = isinstance(network, DetectionRunner)
        classes = network.metadata.num_classes if openvino else network.detection_head.proj.out_features
        if len(labels) != classes:
            raise ValueError(f"{len(labels)} labels for a detection head of {classes} actions")
        self.spec, self.labels, self.weights, self.device = spec, list(labels), weights, device
        self.persons, self.limits, self.max_boxes = persons, limits or DecodeLimits(), max_boxes
        self.options = replace(options, export="openvino" if openvino else "eager")
        if not openvino:  # an OpenVINO network was folded when it was built, and takes contiguous clips
            network = network.to(device).eval()
            if self.options.fold_batchnorm:
                fold_batch_norms(network)
            if self.options.channels_last:
                network = network.to(memory_format=torch.channels_last_3d)
        self.network = network
        self._start()

    @classmethod
    def load(
        cls,
        spec: DetectionSpec,
        checkpoint: str | Path,
        labels: Sequence[str],
        device: torch.device,
        persons: PersonDetector | None = None,
        limits: DecodeLimits | None = None,
        options: InferenceOptions | None = None,
        max_boxes: int = DEFAULT_MAX_BOXES,
        openvino: CpuEngine | None = None,
    ) -> ActionDetector:
        """Builds ``spec``'s network and loads ``checkpoint`` into it strictly, or, where
        :func:`~handler.pipeline.resolve_engine` picks it (``export=auto`` on a CPU, fp32), loads the archive's
        OpenVINO network ``openvino``; checks ``labels`` against the head."""
        options = options or InferenceOptions()
        chosen, artifact = resolve_engine(options, device, checkpoint, openvino)
        if chosen.export == "openvino":
            try:
                runner = load_detection_openvino(artifact, device, spec.name)
                weights = runner.metadata.weights
                return cls(spec, runner, labels, weights, device, persons, limits, chosen, max_boxes)
            except (ValueError, RuntimeError) as e:  # e.g. an IR this OpenVINO cannot read: eager still can
                logger.warning("serving eager on the CPU: the archive's OpenVINO network does not load (%s)", e)
        network, loaded = load_detector_network(spec, checkpoint)
        eager = replace(options, export="eager")
        return cls(spec, network, labels, loaded.description, device, persons, limits, eager, max_boxes)

    def clip(self) -> dict[str, float]:
        return {"frames": self.spec.num_frames, "seconds": self.spec.clip_sec}

    def describe(self) -> dict[str, Any]:
        """The models' description plus the person detector (``None``: boxes must be given)."""
        return {**super().describe(), "detector": describe(self.persons)}

    def warm_up(self) -> None:
        """One forward of a zero clip with one box: kernel choice and lazy initialisation happen now."""
        started = time.perf_counter()
        side = self.spec.side_size
        clip = torch.zeros(3, self.spec.num_frames, side, side, device=self.device)
        box = torch.tensor([[0.0, 0.0, side - 1.0, side - 1.0]])
        self.score([KeyframeClip(clip, box, box)])
        logger.info("warm-up forward on %s: %.0f ms", self.device, (time.perf_counter() - started) * 1000)

    def score(self, keyframes: Sequence[KeyframeClip]) -> list[torch.Tensor]:
        """Per keyframe, ``(N_i, num_actions)`` float32 scores of its boxes (:func:`~handler.detection.score_boxes`)
        with this detector's engine, precision and memory format."""
        channels_last = self.options.channels_last and self.options.export == "eager"
        with autocast(self.device, self.options.precision):
            return score_boxes(
                self.network, keyframes, self.spec, channels_last=channels_last, num_classes=len(self.labels)
            )

    def detect(self, requests: Sequence[DetectionRequest | RequestError]) -> list[dict[str, Any] | RequestError]:
        """Runs a batch: one answer per request, in order. An item that is already a :class:`RequestError`, or
        fails while prepared, stays an error in its slot. The keyframes of all requests go through the network
        ``max_clips_per_forward`` at a time as they are ready (a keyframe without boxes runs nothing)."""
        results: list[Any] = list(requests)
        work = []
        for slot, request in enumerate(requests):
            if not isinstance(request, DetectionRequest):
                continue
            if request.boxes is None and self.persons is None:
                results[slot] = bad_request(
                    "NoBoxes",
                    "this archive has no person detector: send the people's boxes (field 'boxes', JSON "
                    "[[x1, y1, x2, y2], ...] in pixels of the upright frame), or rebuild the archive with one "
                    "(make serve MODEL=... DETECTOR=hog or DETECTOR=fasterrcnn_resnet50_fpn; docs/detection.md)",
                )
            else:
                work.append((slot, request))
        keyframes: dict[int, list[PreparedKeyframe]] = {slot: [] for slot, _ in work}
        scores: dict[int, list[torch.Tensor]] = {slot: [] for slot, _ in work}
        pending: list[tuple[int, PreparedKeyframe]] = []
        inference_s = 0.0

        def forward() -> None:
            nonlocal inference_s
            started = time.perf_counter()
            out = self.score([keyframe.clip for _, keyframe in pending])
            inference_s += time.perf_counter() - started
            for (slot, keyframe), rows in zip(pending, out, strict=True):
                keyframe.clip = replace(keyframe.clip, clip=torch.empty(0))  # its pixels are no longer needed
                if slot in scores:  # a request that failed meanwhile has no slot left
                    scores[slot].append(rows)
            pending.clear()

        for slot, item in stream_prepared(self._pool, self.decode_workers, work, self.prepare):
            if isinstance(item, RequestError):
                results[slot] = item
                keyframes.pop(slot)
                scores.pop(slot)
                pending[:] = [(s, k) for s, k in pending if s != slot]
                continue
            keyframes[slot].append(item)
            pending.append((slot, item))
            if len(pending) >= self.options.max_clips_per_forward:
                forward()
        if pending:
            forward()
        for slot, prepared in keyframes.items():
            results[slot] = self._response(requests[slot], prepared, scores[slot], len(requests), inference_s * 1000)
        return results

    def prepare(self, request: DetectionRequest, threads: int = 0) -> Iterator[PreparedKeyframe]:
        """The request's keyframes, one after the other (one window decoded at a time, with ``threads`` decoder
        threads): its frames, its boxes (given, or the person detector's on the window's middle frame, the
        tutorial's choice) and the tutorial's transform.

        Raises:
            RequestError: for bad input (possibly after some keyframes were yielded); 413 over a limit.
        """
        started = time.perf_counter()
        video, spec, limits = request.video, self.spec, self.limits
        info = probe(video)
        self._check_memory(info)
        times = keyframe_times(request, video_duration(video), spec)
        if len(times) > limits.max_timeline_windows:
            raise RequestError(
                413,
                "TimelineTooLong",
                f"the timeline needs {len(times)} keyframes; this service scores at most "
                f"{limits.max_timeline_windows} per request: use a larger stride_sec, or let the client cut the "
                "video into parts (slowfast-serve detect --every, Client.detect; docs/detection.md)",
                ("max_timeline_windows", limits.max_timeline_windows),
            )
        windows = [keyframe_window(t, spec) for t in times]
        decoded = iter_clips(
            video,
            windows,
            num_samples=spec.num_frames,
            limits=limits,
            threads=threads,
            select=spec.frames_and_middle,
            origin_pts=request.origin_pts,
        )
        for t, clip in zip(times, decoded, strict=True):
            decoded_at = time.perf_counter()
            *frames, keyframe = clip.frames
            boxes, person_scores = self._boxes(request, keyframe)
            found_at = time.perf_counter()
            prepared = prepare_keyframe(frames, boxes, spec)
            prepared = replace(prepared, clip=prepared.clip.to(self.device, non_blocking=True))
            done = time.perf_counter()
            yield PreparedKeyframe(
                keyframe_sec=t,
                clip=prepared,
                person_scores=person_scores,
                window=(clip.start_sec, clip.end_sec),
                source_frames=clip.source_frames,
                info=clip.info,
                rotation=clip.rotation,
                decode_ms=(decoded_at - started) * 1000,
                persons_ms=(found_at - decoded_at) * 1000,
                preprocess_ms=(done - found_at) * 1000,
            )
            started = time.perf_counter()

    def _boxes(self, request: DetectionRequest, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The keyframe's boxes ``(N, 4)`` float32 in the frame's pixels, and the detector's scores (``None`` for
        given boxes).

        Raises:
            RequestError: 400 ``InvalidBoxes`` for a given box entirely outside the frame.
        """
        height, width = frame.shape[:2]
        if request.boxes is None:
            found = self.persons.find(frame)  # type: ignore[union-attr]  (detect() refuses requests without one)
            return found.boxes[: self.max_boxes], found.scores[: self.max_boxes]
        boxes = torch.tensor(request.boxes, dtype=torch.float32).reshape(-1, 4)
        clipped = clip_boxes(boxes, height, width)
        for i, (x1, y1, x2, y2) in enumerate(clipped.tolist()):
            if x2 <= x1 or y2 <= y1:
                given = ", ".join(f"{v:g}" for v in request.boxes[i])
                raise bad_request(
                    "InvalidBoxes",
                    f"boxes[{i}] = [{given}] lies outside the {width}x{height} frame (pixels of the upright frame: "
                    "x in [0, width), y in [0, height))",
                )
        return boxes, None

    def _check_memory(self, info: VideoInfo) -> None:
        """413 ``RequestTooLarge`` when a keyframe would hold more than ``max_request_mb``: the window's decoded
        frames (YUV 4:2:0), its kept RGB frames and the float clip before and after scaling."""
        pixels = info.width * info.height
        frames = math.ceil((info.fps or 30.0) * self.spec.clip_sec) + 1
        kept = self.spec.num_frames + 1
        scaled = math.prod(short_side_size(info.height, info.width, self.spec.side_size))
        floats = 3 * self.spec.num_frames * (pixels + 2 * scaled) * 4  # [0, 1] frames, scaled, normalised
        needed = (frames * pixels * 1.5 + kept * pixels * 3 + floats) / 2**20
        if needed > self.limits.max_request_mb:
            raise RequestError(
                413,
                "RequestTooLarge",
                f"scoring a keyframe of this video would hold about {needed:.0f} MB ({info.width}x{info.height} "
                f"frames at {info.fps or 30:.3g} fps); this service prepares requests of up to "
                f"{self.limits.max_request_mb} MB: send a video scaled down (e.g. ffmpeg -i in.mp4 -vf scale=-2:720 "
                "out.mp4; boxes in the scaled frame's pixels)",
            )

    def _detections(self, keyframe: PreparedKeyframe, scores: torch.Tensor, request: DetectionRequest) -> list[dict]:
        person_scores = keyframe.person_scores
        return [
            {
                "box": [round(v, 2) for v in box],
                "person_score": None if person_scores is None else round(float(person_scores[i]), 4),
                "actions": top_actions(row, self.labels, request.top_k, request.threshold),
            }
            for i, (box, row) in enumerate(zip(keyframe.clip.frame_boxes.tolist(), scores, strict=True))
        ]

    def _keyframe(self, keyframe: PreparedKeyframe, scores: torch.Tensor, request: DetectionRequest) -> dict:
        start, end = keyframe.window
        return {
            "keyframe_sec": round(keyframe.keyframe_sec, 3),
            "clip": {
                "start_sec": round(start, 3),
                "end_sec": round(end, 3),
                "frames": self.spec.num_frames,
                "source_frames": keyframe.source_frames,
            },
            "detections": self._detections(keyframe, scores, request),
        }

    def _response(
        self,
        request: DetectionRequest,
        keyframes: list[PreparedKeyframe],
        scores: list[torch.Tensor],
        batch_size: int,
        inference_ms: float,
    ) -> dict[str, Any]:
        """The JSON answer: one keyframe's fields at the top, or for a timeline ``timeline.keyframes``."""
        answers = [self._keyframe(k, s, request) for k, s in zip(keyframes, scores, strict=True)]
        if request.mode == "timeline":
            stride = request.stride_sec or DEFAULT_STRIDE_SEC
            first = first_keyframe_sec(request, self.spec)
            body: dict[str, Any] = {"timeline": {"keyframe_sec": first, "stride_sec": stride, "keyframes": answers}}
        else:
            body = answers[0]
        first = keyframes[0]
        return {
            "model": self.spec.name,
            "weights": self.weights,
            "engine": self.engine,
            "detector": describe(self.persons) if request.boxes is None else None,
            **body,
            "video": video_summary(first.info, first.rotation),
            "batch_size": batch_size,
            "timing_ms": {
                "decode": round(sum(k.decode_ms for k in keyframes), 1),
                "persons": round(sum(k.persons_ms for k in keyframes), 1),
                "preprocess": round(sum(k.preprocess_ms for k in keyframes), 1),
                "inference": round(inference_ms, 1),
            },
        }
