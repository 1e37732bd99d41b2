"""The GPU path (``pytest -m gpu``; bench/gpu_check.sh runs it on a GPU machine): the handler on ``cuda:0``
through a real TorchServe with GPU workers, answers equal to the CPU's in fp32 within float tolerance, bf16 and
fp16 agreement, page-locked non-blocking copies, several workers sharing one GPU, and the exports on CUDA.
Without a CUDA device every test here is skipped, saying so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from handler.labels import label_set
from handler.models import get_spec
from handler.pipeline import InferenceOptions, VideoClassifier
from handler.request import VideoRequest
from handler.transforms import gather_frames, plan_for
from slowfast_serve.server.archive import build_archive
from slowfast_serve.server.export import calibration_clips, export_checkpoint
from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.training.motion_data import make_video, write_dataset
from tests import REPO
from tests.serving import post_video, running_torchserve

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path runs on a GPU machine"),
]

SPEC = get_spec("motion_demo")
CHECKPOINT = REPO / SPEC.bundled_checkpoint
LABELS = label_set(SPEC.labels)
CPU, GPU = torch.device("cpu"), torch.device("cuda:0")
QUIET = {"warmup": False, "decode_workers": 2}
# cuDNN may use TF32 for float32 convolutions on Ampere and later (torch's default): about 1e-3 relative, so the
# GPU's fp32 answers are compared with the CPU's to this absolute probability tolerance.
FP32_PROBABILITY_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def new_clips(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    """One served clip of each of 64 motion videos new to the model (generator seed 41)."""
    root = tmp_path_factory.mktemp("gpu-clips")
    write_dataset(root, 8, 41)
    cpu = VideoClassifier.load(SPEC, CHECKPOINT, LABELS, CPU, options=InferenceOptions(**QUIET))
    return calibration_clips(cpu, [root])


def _classifier(device: torch.device, **options: object) -> VideoClassifier:
    return VideoClassifier.load(SPEC, CHECKPOINT, LABELS, device, options=InferenceOptions(**{**QUIET, **options}))


def test_fp32_on_the_gpu_answers_like_the_cpu(new_clips: torch.Tensor) -> None:
    cpu, gpu = _classifier(CPU), _classifier(GPU)
    for batch in new_clips.split(8):
        assert torch.allclose(gpu.probabilities(batch), cpu.probabilities(batch), atol=FP32_PROBABILITY_TOLERANCE)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_the_gpu_agrees(new_clips: torch.Tensor, precision: str) -> None:
    reference = torch.cat([_classifier(CPU).probabilities(b) for b in new_clips.split(8)])
    reduced = _classifier(GPU, precision=precision)
    ours = torch.cat([reduced.probabilities(b) for b in new_clips.split(8)])
    assert (ours.argmax(1) == reference.argmax(1)).float().mean().item() >= 0.95
    assert (ours - reference).abs().max().item() <= 0.1


def test_requests_are_prepared_with_page_locked_non_blocking_copies() -> None:
    gpu = _classifier(GPU)
    video = make_video("moving up", 5, 0)[0]
    prepared = gpu.prepare(VideoRequest(video=video, top_k=3, start_sec=0.0, views=(2, 3)))
    assert prepared.clips.device == GPU
    assert prepared.clips.shape[0] == 6
    frames = [torch.zeros((120, 160, 3), dtype=torch.uint8)] * 4  # (H, W, 3) uint8, as decoded
    plan = plan_for(frames, SPEC.clip)
    assert gather_frames(frames, plan, pin_memory=True).is_pinned()
    cpu = _classifier(CPU).prepare(VideoRequest(video=video, top_k=3, start_sec=0.0, views=(2, 3)))
    assert torch.allclose(prepared.clips.cpu(), cpu.clips, atol=1e-4)  # the same clips, interpolated on the GPU


@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_exports_build_and_run_on_cuda(tmp_path: Path, fmt: str) -> None:
    options = InferenceOptions(export=fmt, max_clips_per_forward=4)
    suffix = ".ts.pt" if fmt == "torchscript" else ".pt2"
    report = export_checkpoint(SPEC, CHECKPOINT, LABELS, options, GPU, tmp_path / f"demo{suffix}")
    assert report.device == "cuda:0"
    assert report.max_rel_diff <= 1e-3, report.summary()
    exported = VideoClassifier.load(
        SPEC, report.path, LABELS, GPU, options=InferenceOptions(export=fmt, **QUIET, max_clips_per_forward=4)
    )
    clips = torch.randn((2, 3, SPEC.clip.num_frames, SPEC.clip.crop_size, SPEC.clip.crop_size))
    assert torch.allclose(exported.probabilities(clips), _classifier(GPU).probabilities(clips), atol=1e-3)


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """motion_demo with 2 GPU workers on one TorchServe (they share cuda:0 on a one-GPU machine)."""
    from slowfast_serve.server.archive import ServingConfig

    store = tmp_path_factory.mktemp("gpu-store")
    two = ServingConfig(min_workers=2, max_workers=2)
    mar = build_archive("motion_demo", CHECKPOINT, model_store=store, serving=two, export_device=GPU)
    with running_torchserve(mar, tmp_path_factory.mktemp("ts")) as instance:
        yield instance


@pytest.mark.integration
def test_torchserve_gpu_workers_answer_like_the_cpu(gpu_server: TorchServe) -> None:
    import requests

    description = requests.get(
        f"{gpu_server.management_url}/models/motion_demo",
        headers={"Authorization": f"Bearer {gpu_server.token('management')}"},
        timeout=30,
    ).json()[0]
    workers = description["workers"]
    assert len(workers) == 2
    assert all(w["gpu"] for w in workers), workers
    cpu = _classifier(CPU)
    for motion in ("growing", "moving left", "rotating clockwise"):
        video = make_video(motion, 6, 1)[0]
        response = post_video(gpu_server, "motion_demo", files={"data": ("v.mp4", video)}, data={"top_k": "8"})
        assert response.status_code == 200, response.text
        served = {p["label"]: p["score"] for p in response.json()["predictions"]}
        (expected,) = cpu.classify([VideoRequest(video=video, top_k=8, start_sec=0.0)])
        for p in expected["predictions"]:
            assert served[p["label"]] == pytest.approx(p["score"], abs=FP32_PROBABILITY_TOLERANCE)
