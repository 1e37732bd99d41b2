"""The serving pipeline without TorchServe: requests in, one response (or one error) per request out.

Data flow for a batch::

    VideoRequest ──decode_clip──▶ DecodedClip (T, H, W, 3) uint8 ──preprocess_frames──▶ (3, T, S, S) float
          │                                                                                   │
          └─ RequestError (bad bytes, empty window, ...) stays in its slot          stack ▼ (N, 3, T, S, S)
                                                      one forward: [slow, fast] or clip ─▶ softmax ─▶ top-k

Clips, not requests, are what gets stacked, so a request that later expands into several clips shares the
same forward with the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from handler.decode import DecodeLimits, VideoInfo, decode_model_clip
from handler.errors import RequestError
from handler.models import ModelSpec, load_model
from handler.request import VideoRequest
from handler.transforms import model_inputs, preprocess_frames


def select_device(gpu_id: int | None) -> torch.device:
    """``cuda:{gpu_id}`` when TorchServe assigned a GPU and CUDA is usable, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


@dataclass
class PreparedClip:
    """One clip ready for the model.

    Attributes:
        tensor: ``(3, T, S, S)`` float32, normalised, on the CPU.
        start_sec, end_sec, source_frames, info, rotation: the decoded clip's window and metadata (its frames
            are not kept: they are no longer needed once the tensor exists).
        decode_ms, preprocess_ms: wall-clock time of the two CPU stages.
    """

    tensor: torch.Tensor
    start_sec: float
    end_sec: float
    source_frames: int
    info: VideoInfo
    rotation: int
    decode_ms: float
    preprocess_ms: float


class VideoClassifier:
    """A loaded model with its labels: classifies batches of video requests.

    Args:
        spec: the registry entry (clip spec, output kind).
        model: the network, in eval mode, on ``device``.
        labels: class names, index = class id; must match the model's head size.
        weights: what responses report as ``"weights"``.
        device: where the forward runs.
        limits: bounds on each request's decoding work.
    """

    def __init__(
        self,
        spec: ModelSpec,
        model: torch.nn.Module,
        labels: Sequence[str],
        weights: str,
        device: torch.device,
        limits: DecodeLimits | None = None,
    ) -> None:
        self.spec = spec
        self.model = model
        self.labels = list(labels)
        self.weights = weights
        self.device = device
        self.limits = limits or DecodeLimits()

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        checkpoint: str | Path,
        labels: Sequence[str],
        device: torch.device,
        limits: DecodeLimits | None = None,
    ) -> VideoClassifier:
        """Builds ``spec``, loads ``checkpoint`` and checks that ``labels`` fit the classifier head."""
        model, weights = load_model(spec, checkpoint)
        if len(labels) != weights.num_classes:
            raise ValueError(
                f"{len(labels)} labels for a model with {weights.num_classes} classes ({checkpoint}); "
                "give the label file the checkpoint was trained with"
            )
        return cls(spec, model.to(device), labels, weights.description, device, limits)

    def prepare(self, request: VideoRequest) -> PreparedClip:
        """Decodes and preprocesses the request's clip on the CPU; raises :class:`RequestError` for bad input."""
        clip = self.spec.clip
        started = time.perf_counter()
        decoded = decode_model_clip(request.video, clip, request.start_sec, self.limits)
        decoded_at = time.perf_counter()
        tensor = preprocess_frames(decoded.frames, clip)
        return PreparedClip(
            tensor=tensor,
            start_sec=decoded.start_sec,
            end_sec=decoded.end_sec,
            source_frames=decoded.source_frames,
            info=decoded.info,
            rotation=decoded.rotation,
            decode_ms=(decoded_at - started) * 1000,
            preprocess_ms=(time.perf_counter() - decoded_at) * 1000,
        )

    @torch.inference_mode()
    def probabilities(self, clips: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a clip batch.

        Args:
            clips: ``(N, 3, T, S, S)`` float32 normalised clips (any device).

        Returns:
            ``(N, num_classes)`` float32 on the CPU, each row summing to 1.
        """
        batch = clips.to(self.device, non_blocking=True)
        output = self.model(model_inputs(batch, self.spec.clip.alpha))
        if self.spec.output == "logits":
            output = torch.softmax(output.float(), dim=1)
        return output.float().cpu()

    def classify(self, requests: Sequence[VideoRequest | RequestError]) -> list[dict[str, Any] | RequestError]:
        """Runs a batch: one result per request, in order.

        An item that is already a :class:`RequestError` (it failed parsing), or fails decoding, stays an error in
        its slot; all other clips go through one forward together.
        """
        results: list[Any] = list(requests)  # errors stay in place; requests are replaced by responses
        prepared: dict[int, PreparedClip] = {}
        for i, request in enumerate(requests):
            if isinstance(request, VideoRequest):
                try:
                    prepared[i] = self.prepare(request)
                except RequestError as error:
                    results[i] = error
        if prepared:
            started = time.perf_counter()
            probs = self.probabilities(torch.stack([clip.tensor for clip in prepared.values()]))
            inference_ms = (time.perf_counter() - started) * 1000
            for row, (i, clip) in enumerate(prepared.items()):
                results[i] = self._response(probs[row], requests[i], clip, len(requests), inference_ms)
        return results

    def _response(
        self, probs: torch.Tensor, request: VideoRequest, clip: PreparedClip, batch_size: int, inference_ms: float
    ) -> dict[str, Any]:
        scores, ids = probs.topk(request.top_k)
        info = clip.info
        return {
            "model": self.spec.name,
            "weights": self.weights,
            "predictions": [
                {"label": self.labels[i], "class_id": i, "score": s}
                for s, i in zip(scores.tolist(), ids.tolist(), strict=True)
            ],
            "clip": {
                "start_sec": round(clip.start_sec, 3),
                "end_sec": round(clip.end_sec, 3),
                "frames": self.spec.clip.num_frames,
                "source_frames": clip.source_frames,
            },
            "video": {
                "width": info.width,
                "height": info.height,
                "fps": None if info.fps is None else round(info.fps, 3),
                "duration_sec": None if info.duration_sec is None else round(info.duration_sec, 3),
                "codec": info.codec,
                "container": info.container,
                "rotation": clip.rotation,
            },
            "batch_size": batch_size,
            "timing_ms": {
                "decode": round(clip.decode_ms, 1),
                "preprocess": round(clip.preprocess_ms, 1),
                "inference": round(inference_ms, 1),
            },
        }
