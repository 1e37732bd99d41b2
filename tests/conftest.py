"""Shared fixtures: random-init checkpoints in the official format, loaded classifiers, archives, and a real
TorchServe serving the bundled motion_demo model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from handler.labels import label_set
from handler.models import get_spec, save_random_checkpoint
from handler.pipeline import VideoClassifier

# A freshly initialised head gives nearly uniform probabilities (~1/400 each), where parity at 1e-5 would
# prove little. Scaling the classifier layer spreads the logits so the top classes stand out.
HEAD_SCALE = 40.0


def sharpened_random_checkpoint(name: str, path: Path, seed: int = 0) -> Path:
    """A random-init checkpoint of registry model ``name`` (official format) with a scaled classifier head."""
    save_random_checkpoint(get_spec(name), path, seed=seed)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["model_state"]
    head = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2][-1]
    state[head] *= HEAD_SCALE
    state[head.replace(".weight", ".bias")] *= HEAD_SCALE
    if get_spec(name).output == "probabilities":
        # X3D's and R(2+1)D's random features are too weak for the scaled projection alone to single out
        # classes; a random bias does (the features still move every score, which the 1e-5 parity sees).
        generator = torch.Generator().manual_seed(seed)
        bias = head.replace(".weight", ".bias")
        state[bias] += 3.0 * torch.randn(state[bias].shape, generator=generator)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``random_checkpoint(name)``: path of a (cached) sharpened random-init checkpoint for that model."""
    directory = tmp_path_factory.mktemp("checkpoints")
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            cache[name] = sharpened_random_checkpoint(name, directory / f"{name}.pyth")
        return cache[name]

    return make


@pytest.fixture(scope="session")
def classifier(random_checkpoint: Callable[[str], Path]) -> Callable[[str], VideoClassifier]:
    """``classifier(name)``: a (cached) CPU classifier with random-init weights and the model's label set."""
    cache: dict[str, VideoClassifier] = {}

    def make(name: str) -> VideoClassifier:
        if name not in cache:
            spec = get_spec(name)
            cache[name] = VideoClassifier.load(
                spec, random_checkpoint(name), label_set(spec.labels), torch.device("cpu")
            )
        return cache[name]

    return make


@pytest.fixture(scope="session")
def archive(
    tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Callable[[str], Path]
) -> Callable[[str], Path]:
    """``archive(name)``: a (cached) ``.mar`` of that model with random-init weights, built by the real script.

    Batching is set up for tests: batches of up to 4 requests, waiting up to 500 ms for a batch to fill.
    """
    from build_archive import ServingConfig, build_archive

    store = tmp_path_factory.mktemp("model_store")
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            serving = ServingConfig(batch_size=4, max_batch_delay_ms=500, response_timeout_s=300)
            cache[name] = build_archive(name, random_checkpoint(name), model_store=store, serving=serving)
        return cache[name]

    return make


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real TorchServe (repository config, free loopback ports) serving the bundled ``motion_demo`` model."""
    from build_archive import build_archive
    from torchserve_ctl import REPO

    from tests.serving import running_torchserve

    spec = get_spec("motion_demo")
    mar = build_archive("motion_demo", REPO / spec.bundled_checkpoint, model_store=tmp_path_factory.mktemp("demo"))
    with running_torchserve(mar, tmp_path_factory.mktemp("ts")) as instance:
        yield instance
