"""Benchmark baseline: the PyTorchVideo hub tutorial's inference code as a TorchServe handler.

Not part of the product (nothing here is imported by ``handler/``): ``bench/serving.py`` packages this file
alone, with the checkpoint and the tutorial's ``kinetics_classnames.json``, so that TorchServe runs the tutorial
pipeline exactly as written, one request at a time: the upload is written to a file, ``EncodedVideo.from_path``
+ ``get_clip``, the ``pytorchvideo.transforms`` composition, ``PackPathway``, the hub ``slowfast_r50`` forward,
softmax, top 5. Its responses carry the same ``timing_ms`` keys as the product's, so the benchmark can compare
stages.

``pytorchvideo.transforms`` 0.1.5 imports ``torchvision.transforms.functional_tensor``, which current
torchvision no longer has; the alias below (benchmark-only, as in ``tests/reference.py``) lets it import.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from typing import Any

import torch
import torchvision.transforms.functional

sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pytorchvideo.data.encoded_video import EncodedVideo
    from pytorchvideo.models.hub import slowfast_r50
    from pytorchvideo.transforms import ApplyTransformToKey, ShortSideScale, UniformTemporalSubsample
    from torchvision.transforms import Compose, Lambda
    from torchvision.transforms._transforms_video import CenterCropVideo, NormalizeVideo

# The tutorial's constants for slowfast_r50.
side_size = 256
mean = [0.45, 0.45, 0.45]
std = [0.225, 0.225, 0.225]
crop_size = 256
num_frames = 32
sampling_rate = 2
frames_per_second = 30
slowfast_alpha = 4
clip_duration = (num_frames * sampling_rate) / frames_per_second


class PackPathway(torch.nn.Module):
    """The tutorial's transform from a video tensor to SlowFast's ``[slow, fast]`` list."""

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        fast_pathway = frames
        slow_pathway = torch.index_select(
            frames, 1, torch.linspace(0, frames.shape[1] - 1, frames.shape[1] // slowfast_alpha).long()
        )
        return [slow_pathway, fast_pathway]


transform = ApplyTransformToKey(
    key="video",
    transform=Compose(
        [
            UniformTemporalSubsample(num_frames),
            Lambda(lambda x: x / 255.0),
            NormalizeVideo(mean, std),
            ShortSideScale(size=side_size),
            CenterCropVideo(crop_size),
            PackPathway(),
        ]
    ),
)


class TutorialHandler:
    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_dir = properties["model_dir"]
        gpu = properties.get("gpu_id")
        self.device = f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"
        model = slowfast_r50(pretrained=False)  # the hub entry point; weights from the archive (no download)
        checkpoint = torch.load(
            os.path.join(model_dir, context.manifest["model"]["serializedFile"]), map_location="cpu", weights_only=True
        )
        model.load_state_dict(checkpoint["model_state"])
        self.model = model.eval().to(self.device)
        with open(os.path.join(model_dir, "kinetics_classnames.json")) as f:
            kinetics_classnames = json.load(f)
        self.kinetics_id_to_classname = {v: str(k).replace('"', "") for k, v in kinetics_classnames.items()}

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        return [self.classify(row.get("data") or row.get("body")) for row in data]

    def classify(self, upload: bytes) -> dict[str, Any]:
        started = time.perf_counter()
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(upload)
            f.flush()
            video = EncodedVideo.from_path(f.name)
            video_data = video.get_clip(start_sec=0, end_sec=clip_duration)
        decoded = time.perf_counter()
        video_data = transform(video_data)
        inputs = [i.to(self.device)[None, ...] for i in video_data["video"]]
        preprocessed = time.perf_counter()
        with torch.no_grad():
            preds = self.model(inputs)
        post_act = torch.nn.Softmax(dim=1)
        preds = post_act(preds)
        scores, pred_classes = preds.topk(k=5)
        done = time.perf_counter()
        return {
            "predictions": [
                {"label": self.kinetics_id_to_classname[int(i)], "class_id": int(i), "score": float(s)}
                for s, i in zip(scores[0], pred_classes[0], strict=True)
            ],
            "timing_ms": {
                "decode": (decoded - started) * 1000,
                "preprocess": (preprocessed - decoded) * 1000,
                "inference": (done - preprocessed) * 1000,
            },
        }


_service: TutorialHandler | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[dict[str, Any]] | None:
    """TorchServe's entry point: a module-level ``handle`` is preferred to a class (TorchServe accepts only one
    class per handler module, and the tutorial's ``PackPathway`` is a class too)."""
    global _service
    if _service is None:
        _service = TutorialHandler()
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)
