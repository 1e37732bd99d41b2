"""TorchServe entry point: a thin adapter between TorchServe's handler contract and :mod:`handler.pipeline`.

TorchServe imports this file from the extracted archive (where the ``handler`` package sits beside it),
instantiates the one class defined here, calls ``initialize(context)`` once per worker and ``handle(data,
context)`` once per batch. This module only reads the context, parses requests, and writes one response per
request, in order; a request that fails gets its own status code and JSON error body while the rest of the
batch succeeds. Unexpected exceptions propagate, and TorchServe fails the batch with a 5xx.
"""

from __future__ import annotations

import json
import logging
from typing import Any

try:
    from ts.metrics.dimension import Dimension
    from ts.metrics.metric_type_enum import MetricTypes

    from handler.detection import DETECTION_MODELS
    from handler.detection_pipeline import ActionDetector
    from handler.errors import RequestError
    from handler.labels import read_labels
    from handler.memory import configure_allocator, release_memory
    from handler.models import get_spec
    from handler.persons import load_person_detector
    from handler.pipeline import VideoClassifier, select_device
    from handler.request import Limits, ParsedRow, parse_detection_request, parse_request, parse_row, parse_views
    from handler.settings import HandlerSettings
except ImportError as e:
    # TorchServe answers an ImportError here by trying its built-in handlers, which hides the real cause.
    raise RuntimeError(f"the slowfast handler's dependencies failed to import: {e}") from e

logger = logging.getLogger(__name__)


class SlowFastHandler:
    """TorchServe handler for the registry's video classifiers and AVA action detection models."""

    def __init__(self) -> None:
        self.classifier: VideoClassifier | ActionDetector | None = None
        self.limits: Limits | None = None
        self.parse = parse_request

    def initialize(self, context: Any) -> None:
        """Loads the model named in the archive's ``handler:`` settings onto the assigned device."""
        configure_allocator()
        properties = context.system_properties
        settings = HandlerSettings.from_archive(
            context.model_yaml_config.get("handler"),
            model_dir=properties["model_dir"],
            serialized_file=context.manifest["model"].get("serializedFile"),
        )
        labels = read_labels(settings.labels)
        device = select_device(properties.get("gpu_id"))
        detection = settings.detection
        if detection is not None:
            persons = None
            if detection.detector:
                persons = load_person_detector(detection.detector, detection.detector_file, detection.threshold, device)
            self.classifier = ActionDetector.load(
                DETECTION_MODELS[settings.model],
                settings.checkpoint,
                labels,
                device,
                persons,
                settings.limits,
                settings.inference,
                detection.max_boxes,
                settings.openvino,
            )
            self.parse = parse_detection_request
        else:
            self.classifier = VideoClassifier.load(
                get_spec(settings.model),
                settings.checkpoint,
                labels,
                device,
                settings.limits,
                settings.inference,
                settings.openvino,
            )
        self.limits = Limits(
            num_classes=len(labels),
            default_top_k=min(settings.top_k, len(labels)),
            default_views=parse_views(settings.views),
            max_boxes=detection.max_boxes if detection else Limits.max_boxes,
        )
        logger.info(
            "loaded %s (weights %s, %d classes) on %s, engine %s, batch size %s, %s, %s",
            settings.model,
            self.classifier.weights,
            len(labels),
            device,
            self.classifier.engine,
            properties.get("batch_size"),
            settings.limits,
            settings.inference,
        )

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        """Classifies one TorchServe batch; returns exactly ``len(data)`` JSON-able responses."""
        if self.classifier is None or self.limits is None:
            raise RuntimeError("handle() before initialize(): the worker did not load the model")
        headers = [context.get_all_request_header(idx) or {} for idx in range(len(data))]
        if headers and headers[0].get("describe") == "True":  # GET /models/NAME?customized=true
            return [json.dumps(self.describe())]
        rows: list[ParsedRow | RequestError] = []
        for row, row_headers in zip(data, headers, strict=True):
            try:
                rows.append(parse_row(row, row_headers, self.limits, self.parse))
            except RequestError as error:
                rows.append(error)
        # Every video of the batch (a KServe request may hold several) goes through one classify call, so they
        # share forwards; the results are then grouped back per TorchServe request.
        videos = [[row] if isinstance(row, RequestError) else row.requests for row in rows]
        flat = [video for group in videos for video in group]
        run = self.classifier.detect if isinstance(self.classifier, ActionDetector) else self.classifier.classify
        results = iter(run(flat))
        responses, outcomes = [], []
        for idx, row in enumerate(rows):
            mine = [next(results) for _ in videos[idx]]
            context.set_response_content_type(idx, "application/json")
            if _is_grpc(headers[idx]):
                # The request's last (only) message. For a gRPC StreamPredictions call TorchServe 0.12's
                # frontend reads this header and, when it is missing, fails with a NullPointerException and
                # kills the worker ("Worker died."). Over HTTP the same header switches the response to chunked
                # streaming and the client never gets an answer, hence gRPC only.
                context.set_response_header(idx, "ts_stream_next", "false")
            for result in mine:
                _log_request(context.request_ids.get(idx), result)
                outcomes.append(result.to_dict() if isinstance(result, RequestError) else result)
            error = next((result for result in mine if isinstance(result, RequestError)), None)
            if error is not None:
                context.set_response_status(error.status, error.type, idx)
                responses.append(error.to_dict())
            elif isinstance(row, ParsedRow) and row.instances:
                responses.append({"predictions": mine})
            else:
                responses.append(mine[0])
        _record_metrics(context.metrics, outcomes, self.classifier.options.max_clips_per_forward)
        release_memory()  # what the batch freed goes back to the OS, not to the worker's idle heaps
        return responses

    def describe(self) -> dict[str, Any]:
        """What the management API's customized description shows (``customizedMetadata``): the model, its kind
        (classifier or detector), clip, number of classes, weights, the engine this worker runs and an AVA
        detection model's person detector."""
        return self.classifier.describe()


def _is_grpc(headers: dict[str, Any]) -> bool:
    """Whether a request came over gRPC: TorchServe 0.12 gives HTTP requests their transport headers (``Host``
    on every route, ``url_path`` on ``/predictions`` but not on the KServe ``/v1/models/...:predict`` route),
    gRPC requests only the per-field content types (verified against 0.12.0)."""
    return not {"url_path", "Host", "host"} & set(headers)


# Heights a request's video is counted under (a bounded label set for the Prometheus counter).
_RESOLUTIONS = ((256, "<=256p"), (480, "<=480p"), (720, "<=720p"), (1080, "<=1080p"))


def _resolution(height: int) -> str:
    return next((name for limit, name in _RESOLUTIONS if height <= limit), ">1080p")


def _log_request(request_id: str | None, result: dict[str, Any] | RequestError) -> None:
    """One JSON line per request in the model log: id, outcome, timings, input size."""
    if isinstance(result, RequestError):
        line = {"request_id": request_id, "status": result.status, "error_type": result.type}
    elif "predictions" not in result:  # an AVA detection answer
        keyframes = result["timeline"]["keyframes"] if "timeline" in result else [result]
        video = result["video"]
        line = {
            "request_id": request_id,
            "status": 200,
            "keyframes": len(keyframes),
            "boxes": sum(len(keyframe["detections"]) for keyframe in keyframes),
            "resolution": f"{video['width']}x{video['height']}",
            "timing_ms": result["timing_ms"],
        }
    else:
        video = result["video"]
        line = {
            "request_id": request_id,
            "status": 200,
            "top1": result["predictions"][0]["label"],
            "views": len(result["views"]["windows"]) * result["views"]["crops"],
            "resolution": f"{video['width']}x{video['height']}",
            "timing_ms": result["timing_ms"],
        }
    logger.info("request %s", json.dumps(line))


def _record_metrics(metrics: Any, outcomes: list[dict[str, Any]], max_clips_per_forward: int) -> None:
    """TorchServe custom metrics, in Prometheus' conventions (seconds, ``_total`` counters), shown at
    ``/metrics`` (``model_metrics_auto_detect=true``): stage-time and clips-per-forward histograms, requests by
    input height, errors by type (one outcome per video: a KServe request may hold several). docs/observability.md
    lists them."""
    clips = 0
    for response in outcomes:
        if "timing_ms" not in response:  # an error body
            kind = Dimension("error_type", response["type"])
            metrics.add_counter("video_request_errors_total", 1, dimensions=[kind])
            continue
        timing = response["timing_ms"]
        for name, ms in (
            ("video_decode_seconds", timing["decode"]),
            ("video_preprocess_seconds", timing["preprocess"]),
        ):
            metrics.add_metric(name, ms / 1000, "s", metric_type=MetricTypes.HISTOGRAM)
        resolution = Dimension("resolution", _resolution(response["video"]["height"]))
        metrics.add_counter("video_requests_total", 1, dimensions=[resolution])
        if "views" in response:
            clips += len(response["views"]["windows"]) * response["views"]["crops"]
        else:  # an AVA detection answer: one clip per keyframe
            clips += len(response["timeline"]["keyframes"]) if "timeline" in response else 1
        inference_seconds = timing["inference"] / 1000  # the batch's forward: the same in every answer
    if clips:
        forwards = -(-clips // max_clips_per_forward)
        metrics.add_metric("video_inference_seconds", inference_seconds, "s", metric_type=MetricTypes.HISTOGRAM)
        metrics.add_metric("video_clips_per_forward", clips / forwards, "count", metric_type=MetricTypes.HISTOGRAM)
