"""handler.checkpoints: every toolbox's file format read, recognised and converted back to the exact tensors;
hostile and broken files refused with nothing run; another toolbox's file refused naming the entry it fits; the
conversion at archive build time (slowfast-serve archive) and in slowfast-serve convert.

The native files here are written by inverting the conversion (this project's names and layouts -> the
toolbox's), the way each toolbox writes them (mmcv's ``torch.save`` of ``{"meta", "state_dict"}``, Paddle's
``_legacy_save`` pickle, PySlowFast's ``torch.save``, a Python 2 Caffe2 blob pickle). A round trip proves the
conversion consistent with its inverse; parity with each toolbox's own code is tests/test_toolbox_models.py's.

The round trips run for every entry and prove its converted tensors identical to the original's, key for key. What
does not depend on the network runs once per toolbox layout, on its R50 8x8 entry: ``convert_checkpoint``'s file
(it converts through the same code as ``load_weights``), and the converted network's forward against the
original's on one small clip (identical tensors in the same architecture compute the same function; the forward
checks the path end to end, ``load_model`` included).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import math
import os
import pickle
import random
import re
import shutil
import subprocess
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from handler import models
from handler.checkpoint_files import CheckpointError
from handler.checkpoint_names import HEAD_WEIGHT, PADDLE_NAME_TABLE, PADDLE_SPLIT_ARRAYS
from handler.checkpoints import describe_checkpoint, load_checkpoint, load_model, save_random_checkpoint
from handler.checkpoints import load_weights as load_weights_checked
from handler.models import TOOLBOX_MODELS, get_spec
from handler.networks import build_model
from handler.pipeline import InferenceOptions
from handler.transforms import model_inputs
from tests import REPO
from tests.serving import CLI

ENTRIES = [spec.name for spec in TOOLBOX_MODELS]
NOT_LOADABLE = "not a loadable PyTorch checkpoint"


@pytest.fixture(autouse=True)
def _free_disk(tmp_path: Path) -> Iterator[None]:
    """The files here are 140-320 MB each and pytest keeps the last runs' temporary directories: delete them."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# The inverse of the conversion: this project's names -> each toolbox's


def _match(key: str, rules: list[tuple[str, Callable[..., str]]]) -> str:
    for pattern, build in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return build(*m.groups())
    raise AssertionError(f"no inverse rule for {key}")


def _bn(kind: str) -> str:
    return "" if kind == "conv" else "_bn"


_RES = r"blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)"
_TO_PYSLOWFAST = [
    (
        r"blocks\.0\.multipathway_blocks\.(\d)\.(conv|norm)\.(\w+)",
        lambda p, m, n: f"s1.pathway{p}_stem.{'conv' if m == 'conv' else 'bn'}.{n}",
    ),
    (
        r"blocks\.(\d)\.multipathway_fusion\.(conv_fast_to_slow|norm)\.(\w+)",
        lambda b, m, n: f"s{int(b) + 1}_fuse.{'conv_f2s' if m != 'norm' else 'bn'}.{n}",
    ),
    (
        rf"{_RES}\.branch1_(conv|norm)\.(\w+)",
        lambda b, p, j, m, n: f"s{int(b) + 1}.pathway{p}_res{j}.branch1{_bn(m)}.{n}",
    ),
    (
        rf"{_RES}\.branch2\.(conv|norm)_([abc])\.(\w+)",
        lambda b, p, j, m, x, n: f"s{int(b) + 1}.pathway{p}_res{j}.branch2.{x}{_bn(m)}.{n}",
    ),
    (r"blocks\.6\.proj\.(\w+)", lambda n: f"head.projection.{n}"),
]


def to_pyslowfast(key: str) -> str:
    return _match(key, _TO_PYSLOWFAST)


def to_paddle(key: str) -> str:
    """This project's name -> PaddleVideo's structured name (PySlowFast's with ``backbone.``, ``_conv``/``_bn``
    module names and ``_mean``/``_variance`` statistics)."""
    name = re.sub(r"(_stem|_fuse)\.(conv_f2s|conv|bn)\.", r"\1._\2.", to_pyslowfast(key))
    name = re.sub(r"\.running_mean$", "._mean", re.sub(r"\.running_var$", "._variance", name))
    return name if name.startswith("head.") else f"backbone.{name}"


def _path(p: str) -> str:
    return ("slow", "fast")[int(p)]


_TO_MMACTION2 = [
    (
        r"blocks\.0\.multipathway_blocks\.(\d)\.(conv|norm)\.(\w+)",
        lambda p, m, n: f"backbone.{_path(p)}_path.conv1.{'conv' if m == 'conv' else 'bn'}.{n}",
    ),
    (
        r"blocks\.0\.multipathway_fusion\.conv_fast_to_slow\.(\w+)",
        lambda n: f"backbone.slow_path.conv1_lateral.conv.{n}",
    ),
    (
        r"blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow\.(\w+)",
        lambda i, n: f"backbone.slow_path.layer{i}_lateral.conv.{n}",
    ),
    (
        rf"{_RES}\.branch2\.(conv|norm)_([abc])\.(\w+)",
        lambda i, p, j, m, x, n: (
            f"backbone.{_path(p)}_path.layer{i}.{j}.conv{'abc'.index(x) + 1}.{'conv' if m == 'conv' else 'bn'}.{n}"
        ),
    ),
    (
        rf"{_RES}\.branch1_(conv|norm)\.(\w+)",
        lambda i, p, j, m, n: f"backbone.{_path(p)}_path.layer{i}.{j}.downsample.{'conv' if m == 'conv' else 'bn'}.{n}",
    ),
    (r"blocks\.6\.proj\.(\w+)", lambda n: f"cls_head.fc_cls.{n}"),
]
_C2_BN = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_C2_PARAM = {"weight": "w", "bias": "b"}


def to_caffe2(key: str, last_fast_block: dict[str, int]) -> str:
    """This project's name -> PySlowFast's Caffe2 blob name; a stage's lateral is named after the fast pathway's last
    block in that stage (``last_fast_block["2"]`` for ``t_res2_2_branch2c_bn_subsample``)."""
    name = to_pyslowfast(key)
    rules = [
        (r"s1\.pathway(\d)_stem\.conv\.(\w+)", lambda p, n: f"{'t_' * int(p)}conv1_{_C2_PARAM[n]}"),
        (r"s1\.pathway(\d)_stem\.bn\.(\w+)", lambda p, n: f"{'t_' * int(p)}res_conv1_bn_{_C2_BN[n]}"),
        (r"s1_fuse\.conv_f2s\.(\w+)", lambda n: f"t_pool1_subsample_{_C2_PARAM[n]}"),
        (r"s1_fuse\.bn\.(\w+)", lambda n: f"t_pool1_subsample_bn_{_C2_BN[n]}"),
        (
            r"s(\d)_fuse\.conv_f2s\.(\w+)",
            lambda k, n: f"t_res{k}_{last_fast_block[k]}_branch2c_bn_subsample_{_C2_PARAM[n]}",
        ),
        (r"s(\d)_fuse\.bn\.(\w+)", lambda k, n: f"t_res{k}_{last_fast_block[k]}_branch2c_bn_subsample_bn_{_C2_BN[n]}"),
        (
            r"s(\d)\.pathway(\d)_res(\d+)\.branch(1|2\.[abc])(_bn)?\.(\w+)",
            lambda k, p, j, branch, bn, n: (
                f"{'t_' * int(p)}res{k}_{j}_branch{branch.replace('2.', '2')}_"
                + (f"bn_{_C2_BN[n]}" if bn else _C2_PARAM[n])
            ),
        ),
        (r"head\.projection\.(\w+)", lambda n: f"pred_{_C2_PARAM[n]}"),
    ]
    return _match(name, rules)


def _numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in state.items()}


def _fast_width(state: dict[str, torch.Tensor]) -> int:
    return state["blocks.4.multipathway_blocks.1.res_blocks.2.branch2.conv_c.weight"].shape[0]


def write_mmaction2(state: dict[str, torch.Tensor], path: Path, *, legacy: bool = False) -> Path:
    """mmcv's save_checkpoint after publish_model: ``{"meta", "state_dict"}``, the head's columns fast-first."""
    native = OrderedDict((_match(k, _TO_MMACTION2), v) for k, v in state.items())
    weight, slow = state["blocks.6.proj.weight"], state["blocks.6.proj.weight"].shape[1] - _fast_width(state)
    native["cls_head.fc_cls.weight"] = torch.cat([weight[:, slow:], weight[:, :slow]], dim=1)
    meta = {  # numpy scalars, as mmcv's hooks leave them
        "mmcv_version": "1.3.9",
        "time": "Fri Jul 16 05:24:31 2021",
        "epoch": np.int64(256),
        "iter": 245760,
        "seed": np.int32(0),
        "config": "model = dict(type='Recognizer3D', backbone=dict(type='ResNet3dSlowFast'))",
        "hook_msgs": {"best_score": np.float64(0.7694), "best_ckpt": "work_dirs/best_top1_acc_epoch_256.pth"},
    }
    torch.save({"meta": meta, "state_dict": native}, path, _use_new_zipfile_serialization=not legacy)
    return path


def _paddle_split(saved: dict, protocol: int, max_elements: int) -> dict:
    """Paddle's _unpack_saved_dict with its 2**30-byte limit as a parameter (no SlowFast array reaches it)."""
    if not 1 < protocol < 4:
        return saved
    info: dict = {}
    for key in [k for k, v in saved.items() if isinstance(v, np.ndarray) and v.size > max_elements]:
        value = saved.pop(key)
        flat = value.flatten()
        info[key] = {"OriginShape": value.shape, "slices": []}
        for i in range(math.ceil(flat.size / max_elements)):
            part = f"{key}@@.{i}"
            info[key]["slices"].append(part)
            saved[part] = flat[i * max_elements : (i + 1) * max_elements]
    if info:
        saved[PADDLE_SPLIT_ARRAYS] = info
    return saved


class _Paddle21Tensor:
    """A Paddle 2.1 tensor: its pickler reduces it to ``(tuple, ((name, array),))``."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array


class _Paddle21Pickler(pickle.Pickler):
    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, _Paddle21Tensor):
            return (tuple, ((obj.name, obj.array),))
        return NotImplemented


def write_paddle(
    state: dict[str, torch.Tensor],
    path: Path,
    *,
    protocol: int = 2,
    split_over: int | None = None,
    tuples: bool = False,
) -> Path:
    """``paddle.save(layer.state_dict())``: _build_saved_state_dict (numpy arrays + name table),
    _unpack_saved_dict, pickle.dump; or with ``tuples`` Paddle 2.1's form of tensors in a non-state-dict save."""
    arrays = {to_paddle(k): v for k, v in _numpy(state).items() if not k.endswith("num_batches_tracked")}
    arrays["head.projection.weight"] = np.ascontiguousarray(arrays["head.projection.weight"].T)  # (in, out)
    with path.open("wb") as f:
        if tuples:
            tensors = {k: _Paddle21Tensor(f"param_{i}", v) for i, (k, v) in enumerate(arrays.items())}
            _Paddle21Pickler(f, protocol).dump(tensors)
            return path
        saved: dict = dict(arrays)
        saved[PADDLE_NAME_TABLE] = {k: f"{k.split('.')[-2]}_{i}.w_0" for i, k in enumerate(arrays)}
        saved = _paddle_split(saved, protocol, split_over or (2**30 - 1) // 4)
        pickle.dump(saved, f, protocol=protocol)
    return path


def write_pyslowfast(state: dict[str, torch.Tensor], path: Path, *, prefix: str = "") -> Path:
    """PySlowFast's save_checkpoint: ``{"epoch", "model_state", "optimizer_state", "cfg"}``."""
    native = OrderedDict((prefix + to_pyslowfast(k), v) for k, v in state.items())
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": list(range(len(native)))}]}
    cfg = "MODEL:\n  ARCH: slowfast\n  NUM_CLASSES: 400\nSLOWFAST:\n  ALPHA: 4\n"
    torch.save({"epoch": 196, "model_state": native, "optimizer_state": optimizer, "cfg": cfg}, path)
    return path


def write_caffe2(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A Caffe2 ``.pkl`` as Python 2 wrote it: protocol 2, ``str`` raw array data (read back as latin-1), numpy 1's
    module names, blobs in hash order with their momentum, ``lr`` and ``model_iter``; ``pred_w`` with trailing
    singleton dimensions (reshaped as PySlowFast's loader does)."""
    last = {}
    for key in state:
        m = re.match(r"blocks\.(\d)\.multipathway_blocks\.1\.res_blocks\.(\d+)\.", key)
        if m:
            last[str(int(m[1]) + 1)] = max(last.get(str(int(m[1]) + 1), 0), int(m[2]))
    blobs = {to_caffe2(k, last): v for k, v in _numpy(state).items() if not k.endswith("num_batches_tracked")}
    blobs["pred_w"] = blobs["pred_w"].reshape(*blobs["pred_w"].shape, 1, 1, 1)
    for name in list(blobs)[::7]:
        blobs[f"{name}_momentum"] = np.zeros_like(blobs[name])
    blobs["lr"], blobs["model_iter"] = np.array([0.1], np.float32), np.array([196000], np.int64)
    order = list(blobs)
    random.Random(0).shuffle(order)
    data = _Py2Pickler.dumps({"blobs": {k: blobs[k] for k in order}})
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return path


class _Py2Pickler(pickle.Pickler):
    """Protocol 2 with every array's raw data as a ``str``, as Python 2's numpy pickled it."""

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, np.ndarray):
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return (np.ndarray.__reduce__(obj)[0], (np.ndarray, (0,), "b"), state)
        return NotImplemented

    @classmethod
    def dumps(cls, obj: object) -> bytes:
        buffer = io.BytesIO()
        cls(buffer, 2).dump(obj)
        return buffer.getvalue()


def write_pytorchvideo(state: dict[str, torch.Tensor], path: Path) -> Path:
    """PyTorchVideo's model-zoo ``.pyth``: ``{"model_state": state_dict}``."""
    torch.save({"model_state": state}, path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Round trips for every entry

# One entry per toolbox layout (its R50 8x8) for what does not depend on the network.
LAYOUT_ENTRIES = {
    "mmaction2": "mmaction2_slowfast_r50_8x8",
    "paddlevideo": "paddlevideo_slowfast_8x8",
    "pyslowfast": "pyslowfast_slowfast_8x8_r50",
}


@functools.lru_cache(maxsize=len(LAYOUT_ENTRIES))
def original_network(name: str) -> torch.nn.Module:
    """A random network of ``name`` with batch-norm statistics and affine terms far from their defaults (a swap of
    mean and variance, or of weight and bias, would show); ``num_batches_tracked`` stays 0 (Paddle and Caffe2
    keep none). Cached for a few entries: the round trips run entry by entry, the per-layout tests on
    :data:`LAYOUT_ENTRIES`."""
    torch.manual_seed(0)
    model = build_model(get_spec(name))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.3, 3.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model


def original(name: str) -> dict[str, torch.Tensor]:
    return original_network(name).state_dict()


_R50 = {"pyslowfast_slowfast_8x8_r50", "pyslowfast_slowfast_4x16_r50"}
WRITERS: dict[str, Callable[[dict[str, torch.Tensor], Path], Path]] = {
    "mmaction2 zip": write_mmaction2,
    "mmaction2 legacy": functools.partial(write_mmaction2, legacy=True),
    "paddle protocol 2": write_paddle,
    "paddle protocol 4": functools.partial(write_paddle, protocol=4),
    "paddle split arrays": functools.partial(write_paddle, split_over=400_000),
    "paddle 2.1 tuples": functools.partial(write_paddle, tuples=True),
    "pyslowfast pyth": write_pyslowfast,
    "pyslowfast pyth module.": functools.partial(write_pyslowfast, prefix="module."),
    "caffe2 pkl": write_caffe2,
    "pytorchvideo pyth": write_pytorchvideo,
}
# Every entry with its toolbox's main form; the other forms of a format once (they do not depend on the network).
CASES = [
    *[(name, "mmaction2 zip") for name in ENTRIES if name.startswith("mmaction2")],
    ("mmaction2_slowfast_r50_8x8", "mmaction2 legacy"),
    *[(name, "paddle protocol 2") for name in ENTRIES if name.startswith("paddlevideo")],
    *[
        ("paddlevideo_slowfast_4x16", form)
        for form in ("paddle protocol 4", "paddle split arrays", "paddle 2.1 tuples")
    ],
    *[(name, "pyslowfast pyth") for name in ENTRIES if name.startswith("pyslowfast")],
    ("pyslowfast_slowfast_8x8_r50", "pyslowfast pyth module."),
    *[(name, "caffe2 pkl") for name in sorted(_R50)],
    *[(name, "pytorchvideo pyth") for name in ENTRIES if name.startswith("pyslowfast")],
]
CASES.sort(key=lambda case: ENTRIES.index(case[0]))  # entry by entry: one network in memory at a time
NATIVE = {"mmaction2": "mmaction2 zip", "paddlevideo": "paddle protocol 2", "pyslowfast": "pyslowfast pyth"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(state) == list(expected)  # every key, in the network's order
    for key, tensor in expected.items():
        assert state[key].dtype == tensor.dtype, key
        assert torch.equal(state[key], tensor), key


@pytest.mark.slow
@pytest.mark.parametrize(("name", "form"), CASES)
def test_native_file_converts_back_to_the_exact_tensors(name: str, form: str, tmp_path: Path) -> None:
    spec = get_spec(name)
    path = WRITERS[form](original(name), tmp_path / f"native-{form.replace(' ', '_')}")
    weights = load_weights_checked(path, spec)
    _assert_same_tensors(weights.state_dict, original(name))
    assert weights.num_classes == 400
    assert weights.description == f"{path.name} sha256:{_digest(path)[:12]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYOUT_ENTRIES.values())
def test_converted_file_is_plain_and_names_the_original(name: str, tmp_path: Path) -> None:
    """convert_checkpoint's output: a weights_only torch file whose responses name the toolbox's file (once per
    layout: every entry's conversion is load_weights', proven by the round trips)."""
    from handler.checkpoints import convert_checkpoint

    spec = get_spec(name)
    native = WRITERS[NATIVE[spec.checkpoint_layout]](original(name), tmp_path / "downloaded file")
    conversion = convert_checkpoint(native, spec, tmp_path / "converted.pyth")
    content = torch.load(conversion.path, map_location="cpu", weights_only=True)  # no numpy, no safe globals
    assert set(content) == {"model_state", "source"}
    assert content["source"] == {
        "file": "downloaded file",
        "sha256": _digest(native),
        "layout": spec.checkpoint_layout,
        "format": {"mmaction2": "mmaction2-pth", "paddlevideo": "paddle-pdparams", "pyslowfast": "pyslowfast-pyth"}[
            spec.checkpoint_layout
        ],
    }
    weights = load_weights_checked(conversion.path, spec)
    _assert_same_tensors(weights.state_dict, original(name))
    assert weights.description == f"downloaded file sha256:{_digest(native)[:12]}"
    again = convert_checkpoint(conversion.path, spec, tmp_path / "again.pyth")  # keeps the original's record
    assert again.source == conversion.source


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYOUT_ENTRIES.values())
def test_converted_network_computes_what_the_original_does(name: str, tmp_path: Path) -> None:
    """Once per layout, on one small clip: the round trips prove every entry's tensors identical to the original's."""
    spec = get_spec(name)
    native = WRITERS[NATIVE[spec.checkpoint_layout]](original(name), tmp_path / "native")
    converted, _ = load_model(spec, native)
    reference = original_network(name)
    # The smallest crop the head takes: MMAction2's and PaddleVideo 8x8's adaptive pooling any, PySlowFast's fixed
    # 7x7 pooling 224.
    crop = 224 if spec.checkpoint_layout == "pyslowfast" else 64
    clip = torch.randn(1, 3, spec.clip.num_frames, crop, crop, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = reference(model_inputs(clip, spec.clip))
        actual = converted(model_inputs(clip, spec.clip))
    assert actual.shape == (1, 400)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_fine_tuned_head_size_is_read_from_the_file(tmp_path: Path) -> None:
    spec = get_spec("paddlevideo_slowfast_8x8")
    torch.manual_seed(1)
    state = build_model(spec, num_classes=7).state_dict()
    weights = load_weights_checked(write_paddle(state, tmp_path / "seven.pdparams"), spec)
    assert weights.num_classes == 7
    _assert_same_tensors(weights.state_dict, state)


def test_load_checkpoint_without_an_entry_converts_any_toolbox_file(tmp_path: Path) -> None:
    """finetune.py's --init reads a toolbox's file through checkpoints.load_checkpoint: PyTorchVideo names."""
    state = original("mmaction2_slowfast_r50_8x8")
    weights = load_checkpoint(write_mmaction2(state, tmp_path / "mm.pth"))
    assert weights.num_classes == 400
    assert set(weights.state_dict) == set(state)
    assert torch.equal(weights.state_dict["blocks.6.proj.weight"], state["blocks.6.proj.weight"])


# ----------------------------------------------------------------------------------------------------------------
# Hostile, broken and foreign files

TINY = {  # a few tensors under each toolbox's names: enough for the readers, small enough to cut anywhere
    "blocks.0.multipathway_blocks.0.conv.weight": torch.randn(4, 3, 1, 7, 7),
    "blocks.0.multipathway_blocks.0.norm.running_mean": torch.randn(4),
    "blocks.6.proj.weight": torch.randn(5, 8),
}


class Payload:
    """Unpickled, runs ``touch <marker>``: what a hostile checkpoint would do to a loader that trusts it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _hostile(kind: str, marker: Path, path: Path) -> Path:
    payload = Payload(marker)
    if kind == "pdparams":
        content = {"backbone.s1.pathway0_stem._conv.weight": np.zeros((4, 3, 1, 7, 7), np.float32), "x": payload}
        path.write_bytes(pickle.dumps(content, protocol=2))
    elif kind == "caffe2 pkl":
        path.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros(3, np.float32), "lr": payload}}, protocol=2))
    else:
        content = {"model_state": {"blocks.6.proj.weight": torch.zeros(2, 2)}, "hook": payload}
        torch.save(content, path, _use_new_zipfile_serialization=kind == "torch zip")
    return path


@pytest.mark.parametrize("kind", ["pdparams", "caffe2 pkl", "torch zip", "torch legacy"])
def test_pickled_code_is_refused_and_never_runs(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    if kind in ("pdparams", "caffe2 pkl"):  # the payload is live: a plain pickle.load runs it
        pickle.loads(_hostile(kind, marker, tmp_path / "control").read_bytes())
        assert marker.exists()
        marker.unlink()
    path = _hostile(kind, marker, tmp_path / f"evil.{'pdparams' if kind == 'pdparams' else 'pkl'}")
    for attempt in (
        load_checkpoint,
        describe_checkpoint,
        lambda p: load_model(get_spec("paddlevideo_slowfast_8x8"), p),
    ):
        with pytest.raises(CheckpointError, match=NOT_LOADABLE) as info:
            attempt(path)
        assert "system" in str(info.value)
        assert "refused" in str(info.value)
        assert "Nothing in it was run" in str(info.value)
    assert not marker.exists()


def _tiny_files(directory: Path) -> dict[str, Path]:
    state = {k: v.clone() for k, v in TINY.items()}
    paddle = {to_paddle(k): v.numpy() for k, v in state.items()}
    blobs = {"conv1_w": state["blocks.0.multipathway_blocks.0.conv.weight"].numpy(), "pred_w": np.ones((5, 8))}
    files = {
        "torch zip": directory / "zip.pth",
        "torch legacy": directory / "legacy.pth",
        "pdparams": directory / "x.pdparams",
        "caffe2 pkl": directory / "x.pkl",
    }
    torch.save({"meta": {"epoch": np.int64(1)}, "state_dict": state}, files["torch zip"])
    torch.save({"model_state": state}, files["torch legacy"], _use_new_zipfile_serialization=False)
    files["pdparams"].write_bytes(pickle.dumps({**paddle, PADDLE_NAME_TABLE: {}}, protocol=2))
    files["caffe2 pkl"].write_bytes(_Py2Pickler.dumps({"blobs": blobs}))
    return files


@pytest.mark.parametrize("kind", ["torch zip", "torch legacy", "pdparams", "caffe2 pkl"])
def test_truncated_files_are_refused_with_a_clear_message(kind: str, tmp_path: Path) -> None:
    whole = _tiny_files(tmp_path)[kind]
    load_checkpoint(whole)  # the whole file is fine
    data = whole.read_bytes()
    for cut in sorted({1, 2, 10, 64, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1}):
        cut_file = tmp_path / f"cut-{cut}"
        cut_file.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=NOT_LOADABLE) as info:
            load_checkpoint(cut_file)
        assert "truncated" in str(info.value) or "corrupt" in str(info.value) or "damaged" in str(info.value), cut


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def _mp4() -> bytes:
    from tests.videos import encode, moving_frames

    return encode(moving_frames(8, 32, 32), fps=30)


@pytest.mark.parametrize(
    ("content", "what"),
    [(lambda: b"", "the file is empty"), (_jpeg, "it is a JPEG image"), (_mp4, "it is an MP4/QuickTime video")],
)
def test_empty_and_media_files_are_named_for_what_they_are(
    content: Callable[[], bytes], what: str, tmp_path: Path
) -> None:
    path = tmp_path / "SLOWFAST_8x8_R50.pth"
    path.write_bytes(content())
    with pytest.raises(CheckpointError, match=f"{NOT_LOADABLE} \\({what}\\)"):
        load_model(get_spec("mmaction2_slowfast_r50_8x8"), path)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """R50 files of each toolbox (and a PyTorchVideo hub file), from random networks of the entries they fit."""
    directory = tmp_path_factory.mktemp("foreign")

    def state(name: str) -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        return build_model(get_spec(name)).state_dict()

    yield {
        "mmaction2": write_mmaction2(state("mmaction2_slowfast_r50_8x8"), directory / "mm_r50_8x8.pth"),
        "paddlevideo": write_paddle(state("paddlevideo_slowfast_4x16"), directory / "SlowFast.pdparams"),
        "pyslowfast": write_pyslowfast(state("pyslowfast_slowfast_8x8_r50"), directory / "SLOWFAST_8x8_R50.pyth"),
        "hub": write_pytorchvideo(state("slowfast_r50"), directory / "SLOWFAST_8x8_R50_hub.pyth"),
    }
    shutil.rmtree(directory, ignore_errors=True)


# Each entry is given a file of another toolbox; the message says what it is and which entry serves it.
FOREIGN = {
    "mmaction2": ("paddlevideo", "a PaddleVideo SlowFast R50 checkpoint", "MODEL=paddlevideo_slowfast_4x16"),
    "paddlevideo": ("pyslowfast", "a PySlowFast SlowFast R50 checkpoint", "MODEL=pyslowfast_slowfast_8x8_r50"),
    "pyslowfast": ("mmaction2", "an MMAction2 SlowFast R50 checkpoint", "MODEL=mmaction2_slowfast_r50_8x8"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRIES)
def test_another_toolboxs_file_is_refused_naming_the_entry_it_fits(name: str, foreign: dict[str, Path]) -> None:
    spec = get_spec(name)
    toolbox, what, fits = FOREIGN[spec.checkpoint_layout]
    with pytest.raises(CheckpointError) as info:
        load_model(spec, foreign[toolbox])
    message = str(info.value)
    assert what in message, message
    assert f"serve it with {fits}" in message, message
    assert f"{name} serves" in message


def test_a_smaller_network_of_the_same_toolbox_is_refused(foreign: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec("mmaction2_slowfast_r101_8x8"), foreign["mmaction2"])
    message = str(info.value)
    assert "does not fit the mmaction2_slowfast_r101_8x8 architecture" in message
    assert "an MMAction2 SlowFast R50 checkpoint (torch zip, meta + state_dict, 642 tensors" in message
    assert "missing: blocks.3.multipathway_blocks.0.res_blocks.6." in message
    assert message.endswith("serve it with MODEL=mmaction2_slowfast_r50_8x8")


def test_a_hub_file_serves_the_pyslowfast_entry_but_no_other_toolbox(foreign: dict[str, Path]) -> None:
    weights = load_weights_checked(foreign["hub"], get_spec("pyslowfast_slowfast_8x8_r50"))
    assert weights.description.startswith("SLOWFAST_8x8_R50_hub.pyth sha256:")
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec("mmaction2_slowfast_r50_8x8"), foreign["hub"])
    message = str(info.value)
    assert "is a PyTorchVideo SlowFast R50 checkpoint (torch zip, model_state, 662 tensors" in message
    assert message.endswith("serve it with MODEL=slowfast_r50 or MODEL=pyslowfast_slowfast_8x8_r50")


def test_a_toolbox_file_is_refused_by_a_hub_entry(foreign: dict[str, Path]) -> None:
    with pytest.raises(
        CheckpointError, match="slowfast_r50 serves PyTorchVideo checkpoints: serve it with MODEL=pyslow"
    ):
        load_model(get_spec("slowfast_r50"), foreign["pyslowfast"])


def test_random_init_files_of_toolbox_entries_still_load(tmp_path: Path) -> None:
    spec = get_spec("mmaction2_slowfast_r101_r50_4x16")
    path = save_random_checkpoint(spec, tmp_path / "random.pyth")
    assert load_weights_checked(path, spec).description == "random-init"
    assert "a random-init MMAction2 SlowFast R101-R50 checkpoint" in describe_checkpoint(path)


# ----------------------------------------------------------------------------------------------------------------
# Scripts: conversion, archives, downloads


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "convert", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_convert_script_end_to_end(foreign: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "converted.pyth"
    done = _script(str(foreign["paddlevideo"]), "--model", "paddlevideo_slowfast_4x16", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "read " in done.stdout
    assert "a PaddleVideo SlowFast R50 checkpoint (pickle protocol 2" in done.stdout
    assert f"wrote {out}: 662 tensors for paddlevideo_slowfast_4x16" in done.stdout
    assert f"SlowFast.pdparams sha256:{_digest(foreign['paddlevideo'])[:12]}" in done.stdout
    assert torch.load(out, weights_only=True)["source"]["format"] == "paddle-pdparams"

    refused = _script(str(foreign["mmaction2"]), "--model", "paddlevideo_slowfast_4x16", "--out", str(tmp_path / "x"))
    assert refused.returncode == 2
    assert "serve it with MODEL=mmaction2_slowfast_r50_8x8" in refused.stderr
    assert not (tmp_path / "x").exists()

    described = _script(str(foreign["pyslowfast"]), "--describe")
    assert described.returncode == 0, described.stderr
    assert (
        "SLOWFAST_8x8_R50.pyth: a PySlowFast SlowFast R50 checkpoint (torch zip, model_state, 662" in described.stdout
    )
    assert "fits: pyslowfast_slowfast_8x8_r50" in described.stdout


def test_convert_script_refuses_what_is_no_checkpoint(tmp_path: Path) -> None:
    picture = tmp_path / "weights.pth"
    picture.write_bytes(_jpeg())
    done = _script(str(picture), "--describe")
    assert done.returncode == 2
    assert f"error: {picture} is {NOT_LOADABLE} (it is a JPEG image)" in done.stderr


def labelled_state(name: str) -> dict[str, torch.Tensor]:
    """A state dict of ``name`` (shapes from the meta device) whose every tensor holds its own value, its index,
    except the classifier's weight, random: the layout the toolboxes change (MMAction2's column order, Paddle's
    transposition, Caffe2's trailing dimensions) shows in it, every other tensor is told apart from all others, and
    the archive's 140 MB file deflates in a fraction of the time random weights take (torch-model-archiver
    compresses). ``num_batches_tracked`` stays 0, as Paddle and Caffe2 files keep none."""
    with torch.device("meta"):
        shapes = build_model(get_spec(name)).state_dict()
    generator = torch.Generator().manual_seed(5)
    state = {}
    for index, (key, meta) in enumerate(shapes.items()):
        if key == HEAD_WEIGHT:
            state[key] = torch.randn(meta.shape, generator=generator)
        else:
            value = 0 if key.endswith("num_batches_tracked") else index + 1
            state[key] = torch.full(meta.shape, value, dtype=meta.dtype)
    return state


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "form", "filename"),
    [
        (
            "mmaction2_slowfast_r50_8x8",
            "mmaction2 zip",
            "slowfast_r50_8x8x1_256e_kinetics400_rgb_20200716-73547d2b.pth",
        ),
        ("paddlevideo_slowfast_8x8", "paddle protocol 2", "SlowFast_8*8.pdparams"),
        ("pyslowfast_slowfast_8x8_r50", "caffe2 pkl", "SLOWFAST_8x8_R50.pkl"),
    ],
)
def test_archive_ships_the_converted_file_and_names_the_original(
    name: str, form: str, filename: str, tmp_path: Path
) -> None:
    from slowfast_serve.server.archive import BuildRecord, build_archive

    state = labelled_state(name)
    native = WRITERS[form](state, tmp_path / filename)
    store = tmp_path / "store"
    # The checkpoint alone (export=eager): an OpenVINO export beside it is test_openvino's, and takes a minute here.
    archive = build_archive(name, native, model_store=store, inference=InferenceOptions(export="eager"))
    with zipfile.ZipFile(archive) as mar:
        serialized = json.loads(mar.read("MAR-INF/MANIFEST.json"))["model"]["serializedFile"]
        assert serialized == f"{name}.pyth"
        content = torch.load(io.BytesIO(mar.read(serialized)), map_location="cpu", weights_only=True)
    source = {"file": filename, "sha256": _digest(native), "layout": get_spec(name).checkpoint_layout}
    assert {k: content["source"][k] for k in source} == source
    _assert_same_tensors(content["model_state"], state)
    record = BuildRecord.load(name, store)
    assert record is not None
    assert record.weights == f"{filename} sha256:{_digest(native)[:12]}"
    assert record.checkpoint == str(native.resolve())
    assert record.conversion["file"] == filename
    assert record.conversion["archived_as"] == f"{name}.pyth"


@pytest.mark.parametrize("name", ENTRIES)
def test_the_hub_cache_finds_a_downloaded_toolbox_file(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from slowfast_serve.server.weights import download_checkpoint

    spec = get_spec(name)
    assert spec.checkpoint_url is not None
    assert spec.checkpoint_url.endswith("/" + spec.checkpoint_filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / spec.checkpoint_filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"downloaded before")
    offline = dataclasses.replace(spec, checkpoint_url=f"http://127.0.0.1:9/{spec.checkpoint_filename}")
    assert download_checkpoint(offline, timeout=2) == cached


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server of a directory: (base URL, directory)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_name_with_a_star_downloads_to_that_name(
    file_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from slowfast_serve.server.weights import download_checkpoint

    base, root = file_server
    spec = get_spec("paddlevideo_slowfast_8x8")
    (root / spec.checkpoint_filename).write_bytes(b"paddle weights")
    (root / "SlowFast_8x8.pdparams").write_bytes(b"a file a glob would also match")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    served = dataclasses.replace(spec, checkpoint_url=f"{base}/{spec.checkpoint_filename}")
    path = download_checkpoint(served, timeout=5)
    assert path.name == "SlowFast_8*8.pdparams"
    assert path.read_bytes() == b"paddle weights"
    assert download_checkpoint(served, timeout=5) == path  # found in the cache the second time


def test_make_passes_a_checkpoint_path_unglobbed() -> None:
    done = subprocess.run(
        [
            "make",
            "-n",
            "-o",
            ".venv/.installed",
            "archive",
            "MODEL=paddlevideo_slowfast_8x8",
            "CHECKPOINT=/d/SlowFast_8*8.pdparams",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert "--checkpoint '/d/SlowFast_8*8.pdparams'" in done.stdout, done.stdout + done.stderr


def test_registry_entries_name_their_layout() -> None:
    assert {spec.checkpoint_layout for spec in TOOLBOX_MODELS} == {"mmaction2", "paddlevideo", "pyslowfast"}
    assert all(models.REGISTRY[name].checkpoint_filename for name in ENTRIES)
