"""The toolbox reference environments (.venv-ref/, built by `scripts/install.sh --venv .venv --dev`) and the runner
interface of tests/toolboxes/reference.py, where the parity tests do not exercise them: each toolbox's own label
list, the runners' error reporting, the message when an environment is missing, the command lines.

Each runner's ``checkpoint`` (build, randomise, save in the native format, with ``--caffe2`` PySlowFast's Caffe2
.pkl), its combined ``checkpoint --inputs --forward-out`` (the toolbox's own loader reads the file back and runs it,
in float32 and float64) and its ``forward`` are exercised, and their files and outputs checked, for every entry by
tests/test_toolbox_models.py (keys, calibration, the loaders' missing and unexpected keys, the Caffe2 file's
layout); ``pipeline`` by tests/test_toolbox_parity.py.
"""

from __future__ import annotations

import json

import pytest

from handler.labels import label_set
from tests.toolboxes import reference
from tests.toolboxes.reference import ToolboxReferenceError, run_reference

pytestmark = pytest.mark.reference


def test_labels():
    """PaddleVideo ships a Kinetics-400 list: it is ours (the ids' order, names with '_' for ' '); the MMAction2 and
    PySlowFast wheels ship none."""
    assert run_reference("mmaction2", "labels", {}, 120)["labels"] is None
    assert run_reference("pyslowfast", "labels", {}, 120)["labels"] is None
    labels = run_reference("paddlevideo", "labels", {}, 120)["labels"]
    assert len(labels) == 400
    assert (labels[0], labels[-1]) == ("abseiling", "zumba")
    assert [name.replace("_", " ") for name in labels] == label_set("kinetics400")


def test_runner_errors_carry_stderr(tmp_path):
    with pytest.raises(ToolboxReferenceError, match="unknown MMAction2 configuration"):
        run_reference("mmaction2", "checkpoint", {"config": "nope", "seed": 0, "out": tmp_path / "x"}, 120)
    args = {"config": "pyslowfast_slowfast_8x8_r50", "seed": 0, "out": tmp_path / "x", "inputs": tmp_path / "in.npz"}
    with pytest.raises(ToolboxReferenceError, match="--inputs and --forward-out go together"):
        run_reference("pyslowfast", "checkpoint", args, 120)
    assert not (tmp_path / "x").exists()


def test_missing_environment_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "REPO", tmp_path)
    with pytest.raises(ToolboxReferenceError, match=r"scripts/install\.sh --venv \.venv --dev"):
        reference.reference_python("pyslowfast")


def test_argv():
    argv = reference.runner_argv("pipeline", {"config": "k", "view": (4, 1), "caffe2": False, "crops": 3, "x_y": True})
    assert argv == ["pipeline", "--config", "k", "--view", "4,1", "--crops", "3", "--x-y"]
    argv = reference.runner_argv("checkpoint", {"inputs": "i.npz", "forward_out": "o.npz", "dtype": "float64"})
    assert argv == ["checkpoint", "--inputs", "i.npz", "--forward-out", "o.npz", "--dtype", "float64"]
    assert json.loads(json.dumps(reference.CONFIGS))["pyslowfast"][-1] == "pyslowfast_slowfast_16x8_r101_50_50"
