"""Shared fixtures: random-init checkpoints in the official format, loaded classifiers, archives, a real
TorchServe serving the bundled motion_demo model, and toolbox-written checkpoints (with the toolbox's own outputs)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from handler.checkpoints import save_random_checkpoint
from handler.labels import label_set
from handler.models import get_spec
from handler.pipeline import VideoClassifier
from tests.toolboxes.reference import run_reference


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Cases marked ``toolbox_matrix`` (an hour and more of the toolboxes' own pipelines) run only when ``-m`` names
    the marker, e.g. ``pytest -m toolbox_matrix tests/test_toolbox_parity.py``."""
    if "toolbox_matrix" in (config.option.markexpr or ""):
        return
    left_out = [item for item in items if item.get_closest_marker("toolbox_matrix")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("toolbox_matrix")]


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
    from slowfast_serve.server.archive import ServingConfig, build_archive

    store = tmp_path_factory.mktemp("model_store")
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            serving = ServingConfig(batch_size=4, max_batch_delay_ms=500, response_timeout_s=300)
            cache[name] = build_archive(name, random_checkpoint(name), model_store=store, serving=serving)
        return cache[name]

    return make


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``motion_demo.mar`` as ``slowfast-serve archive --model motion_demo`` builds it (bundled weights, default
    settings), built once per session; serve it from its store, or copy it (tests.serving.copy_archive)."""
    from slowfast_serve.server.archive import build_archive
    from tests import REPO

    spec = get_spec("motion_demo")
    return build_archive("motion_demo", REPO / spec.bundled_checkpoint, model_store=tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real TorchServe (repository config, free loopback ports) serving the bundled ``motion_demo`` model, shared
    by the modules that only send it requests; a test that kills, scales or reconfigures uses a server of its own."""
    from tests.serving import running_torchserve

    with running_torchserve(demo_archive, tmp_path_factory.mktemp("ts")) as instance:
        yield instance


TOOLBOX_SEED = 7  # the randomisation seed of every toolbox-written checkpoint
TOOLBOX_TIMEOUT_S = 1800  # one runner call: R152 and 16x8 models take minutes on 2 shared cores
TOOLBOX_SUFFIX = {"mmaction2": ".pth", "paddlevideo": ".pdparams", "pyslowfast": ".pyth"}


class ToolboxCheckpoints:
    """Randomised checkpoints written by each toolbox's OWN code (the ``checkpoint`` command of
    tests/toolboxes/reference.py, seed :data:`TOOLBOX_SEED`), one per entry and format for the whole session.

    ``toolbox_checkpoint(entry, caffe2=False)`` is the file's path. :meth:`forward` gives the toolbox's own output on
    given pathways; asked before the file exists, it is computed in the same runner process that writes the file
    (``checkpoint --inputs --forward-out``, which reads the saved file back with the toolbox's own loader), so an
    entry costs one process. Results are cached for the session.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.reports: dict[tuple[str, bool], dict] = {}  # the checkpoint command's result
        self._scores: dict[tuple, tuple[np.ndarray, dict]] = {}

    def __call__(self, entry: str, caffe2: bool = False) -> Path:
        return Path(self.report(entry, caffe2)["file"])

    def report(self, entry: str, caffe2: bool = False) -> dict:
        """What the toolbox's ``checkpoint`` command returned for the entry (keys, calibration, ...)."""
        if (entry, caffe2) not in self.reports:
            self._write(entry, caffe2, {})
        return self.reports[(entry, caffe2)]

    def forward(
        self, entry: str, inputs: dict[str, np.ndarray], *, caffe2: bool = False, dtype: str = "float32"
    ) -> tuple[np.ndarray, dict]:
        """The toolbox's own head output on ``inputs`` (``fast``, ``slow``: normalised pathways), its model and
        inputs in ``dtype``: (scores, the forward's report, with MMAction2's and PaddleVideo's missing and
        unexpected keys)."""
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(inputs[k]).tobytes() for k in sorted(inputs)))
        key = (entry, caffe2, dtype, digest.hexdigest())
        if key not in self._scores:
            stem = self.directory / f"{entry}{'-caffe2' if caffe2 else ''}-{len(self._scores)}"
            files = {"inputs": stem.with_suffix(".inputs.npz"), "out": stem.with_suffix(".scores.npz")}
            np.savez(files["inputs"], **inputs)
            if (entry, caffe2) in self.reports:
                args = {"config": entry, "checkpoint": self(entry, caffe2), **files, "dtype": dtype}
                ran = run_reference(_toolbox(entry), "forward", args, TOOLBOX_TIMEOUT_S)
            else:
                forward = {"inputs": files["inputs"], "forward_out": files["out"], "dtype": dtype}
                ran = self._write(entry, caffe2, forward)["forward"]
            with np.load(files["out"]) as data:
                self._scores[key] = (data["scores"], ran)
        return self._scores[key]

    def _write(self, entry: str, caffe2: bool, forward: dict) -> dict:
        toolbox = _toolbox(entry)
        suffix = ".pkl" if caffe2 else TOOLBOX_SUFFIX[toolbox]
        out = self.directory / f"{entry}{'-caffe2' if caffe2 else ''}{suffix}"
        args = {"config": entry, "seed": TOOLBOX_SEED, "out": out, "caffe2": caffe2, **forward}
        self.reports[(entry, caffe2)] = run_reference(toolbox, "checkpoint", args, TOOLBOX_TIMEOUT_S)
        return self.reports[(entry, caffe2)]


def _toolbox(entry: str) -> str:
    toolbox = get_spec(entry).checkpoint_layout
    assert toolbox in TOOLBOX_SUFFIX, f"{entry} is not a toolbox entry"
    return toolbox


@pytest.fixture(scope="session")
def toolbox_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolboxCheckpoints]:
    """``toolbox_checkpoint(entry, caffe2=False)``: the path of the entry's randomised model, written once per session
    by its toolbox's own code in the toolbox's native format (see :class:`ToolboxCheckpoints`)."""
    directory = tmp_path_factory.mktemp("toolbox-checkpoints")
    yield ToolboxCheckpoints(directory)
    shutil.rmtree(directory, ignore_errors=True)  # 140-320 MB a file: pytest keeps its last runs' directories
