"""PySlowFast (PyPI slowfast==1.0) reference runner: runs INSIDE .venv-ref/pyslowfast (see reference.py).

The models are PySlowFast's own ``slowfast.models.build_model(cfg)`` (``SlowFastModel``), with ``NUM_GPUS = 0`` and
the values of the Kinetics Caffe2-zoo configs written below (the configs are not in the wheel). Commands (one JSON
object on stdout, logs on stderr):

checkpoint --config KEY --seed S --out FILE [--caffe2] [--inputs IN.npz --forward-out OUT.npz [--dtype D]]
    build_model, deterministic randomisation (runner_common.randomise_torch), then PySlowFast's own
    ``slowfast.utils.checkpoint.save_checkpoint(job_dir, model, optimizer, epoch, cfg)`` (a .pyth: epoch,
    model_state, optimizer_state (of ``slowfast.models.optimizer.construct_optimizer``), cfg as YAML), copied to
    FILE. With ``--caffe2``: a Caffe2-zoo style .pkl instead (see ``write_caffe2``), checked by loading it back with
    ``load_checkpoint(..., convert_from_caffe2=True)`` into a fresh model: every tensor must be equal.
    With ``--inputs``: then ``forward`` on FILE in the same process (``load`` builds a fresh model from FILE).
forward --config KEY --checkpoint FILE --inputs IN.npz --out OUT.npz [--dtype float32|float64]
    ``load_checkpoint(FILE, model, data_parallel=False, convert_from_caffe2=FILE.endswith(".pkl"))``; eval mode;
    cast to ``dtype`` (``Module.to``); ``model([slow, fast])``. OUT.npz ``scores`` (N, 400) in ``dtype`` = the
    eval-mode ResNetBasicHead output: AvgPool3d
    with the fixed kernel (NUM_FRAMES // ALPHA or NUM_FRAMES, CROP_SIZE // 32 = 7, 7), softmax per position,
    mean over positions. The fixed 7x7 kernel needs H, W >= 224 and T = NUM_FRAMES.
pipeline --config KEY --checkpoint FILE --video PATH --clips C --crops 3 [--view T,S] --out OUT.json
    ``slowfast.datasets.kinetics.Kinetics(cfg, "test")`` over a temporary test.csv listing the video, with
    TEST.NUM_ENSEMBLE_VIEWS = C and TEST.NUM_SPATIAL_CROPS = 3: its PyAV decoder (``decoder.decode``: pts-selective
    decoding of each clip window, frames sorted by pts, then ``temporal_sampling``'s linspace), /255, mean/std,
    ``random_short_side_scale_jitter(256, 256)``, ``uniform_crop(256, spatial_idx)``, ``pack_pathway_output``;
    then the model one view at a time and the SUM fusion of ``slowfast.utils.meters.TestMeter.update_stats``.
    Dataset index = temporal * 3 + spatial, as in the toolbox; spatial 0, 1, 2 = left (top), centre, right
    (bottom), so the centre crop is ``--view T,1``. K must be 3: slowfast 1.0's ``_assert_and_infer_cfg`` asserts
    ``TEST.NUM_SPATIAL_CROPS == 3`` (and its Kinetics with K = 1 would take spatial index 0, the LEFT crop).
    ``frame_indices`` are pts-order indices into the whole video (the decoder's window indices mapped through the
    frames' pts; the window's pts are reported too); ``video.frames_declared`` is the stream's ``frames`` and
    ``fps`` its ``average_rate``.
labels
    slowfast 1.0 ships no Kinetics class names.

Workarounds for slowfast 1.0 on a CPU-only torch 2.x (nothing inside site-packages is changed):
* ``slowfast/models/head_helper.py`` imports ``detectron2.layers.ROIAlign`` at module level; detectron2 is not on
  PyPI. ``stubs.install`` (tests/toolboxes/stubs.py) stubs it (only the AVA RoI head uses it).
* ``slowfast.models.model_builder.build_model`` calls ``torch.cuda.current_device()`` and ``model.cuda(...)``
  unconditionally (the GitHub code later checks NUM_GPUS). Without a GPU this raises ``RuntimeError: Found no
  NVIDIA driver on your system...`` (CUDA build of torch) after the model is built; the runner calls build_model
  with those two made no-ops for the duration of the call (``_cpu_build``).
* ``slowfast.config.defaults._assert_and_infer_cfg`` computes ``TRAIN.BATCH_SIZE % NUM_GPUS``: ZeroDivisionError
  with NUM_GPUS = 0, so it is not run again after the config values are applied (get_cfg() runs it on defaults).
"""

from __future__ import annotations

import runner_common as common  # first: 2 threads, stdout kept for the JSON result (tests/toolboxes/runner_common.py)

# isort: split
import contextlib
import io
import json
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import stubs  # tests/toolboxes/stubs.py, next to this script
import torch
from fvcore.common.config import CfgNode

stubs.install("pyslowfast", ["detectron2"])

import slowfast  # noqa: E402
import slowfast.datasets.decoder as decoder  # noqa: E402
import slowfast.utils.checkpoint as cu  # noqa: E402
from slowfast.config.defaults import get_cfg  # noqa: E402
from slowfast.datasets.kinetics import Kinetics  # noqa: E402
from slowfast.models import model_builder  # noqa: E402
from slowfast.models.optimizer import construct_optimizer  # noqa: E402
from slowfast.utils.c2_model_loading import get_name_convert_func  # noqa: E402
from slowfast.utils.meters import TestMeter  # noqa: E402

torch.set_num_threads(2)
log = common.logger("pyslowfast_runner")

# The values of facebookresearch/SlowFast configs/Kinetics/c2/{SLOWFAST_8x8_R50, SLOWFAST_4x16_R50,
# SLOWFAST_16x8_R101_50_50}.yaml, read at commit 287ec0076846560f44a9327e931a5a2360240533 (the three files last
# changed in bda005363ff589405e19b0ed0ba063eb0752ec97, 2020-06-25). Differences, forced by slowfast 1.0's CfgNode:
# MODEL.MODEL_NAME ("SlowFast") does not exist in 1.0 (it picks the class by MODEL.ARCH) and is left out;
# SOLVER.WARMUP_EPOCHS is 34 (YAML 34.0) because 1.0's default is an int and yacs refuses float-for-int;
# NUM_GPUS is 0 (YAML 8): CPU.
_COMMON = {
    "TRAIN": {
        "ENABLE": False,
        "DATASET": "kinetics",
        "BATCH_SIZE": 64,
        "EVAL_PERIOD": 10,
        "CHECKPOINT_PERIOD": 1,
        "AUTO_RESUME": True,
        "CHECKPOINT_TYPE": "caffe2",
    },
    "DATA": {
        "NUM_FRAMES": 32,
        "SAMPLING_RATE": 2,
        "TRAIN_JITTER_SCALES": [256, 320],
        "TRAIN_CROP_SIZE": 224,
        "TEST_CROP_SIZE": 256,
        "INPUT_CHANNEL_NUM": [3, 3],
    },
    "SLOWFAST": {"ALPHA": 4, "BETA_INV": 8, "FUSION_CONV_CHANNEL_RATIO": 2, "FUSION_KERNEL_SZ": 7},
    "RESNET": {
        "ZERO_INIT_FINAL_BN": True,
        "WIDTH_PER_GROUP": 64,
        "NUM_GROUPS": 1,
        "DEPTH": 50,
        "TRANS_FUNC": "bottleneck_transform",
        "STRIDE_1X1": False,
        "NUM_BLOCK_TEMP_KERNEL": [[3, 3], [4, 4], [6, 6], [3, 3]],
        "SPATIAL_STRIDES": [[1, 1], [2, 2], [2, 2], [2, 2]],
        "SPATIAL_DILATIONS": [[1, 1], [1, 1], [1, 1], [1, 1]],
    },
    "NONLOCAL": {
        "LOCATION": [[[], []], [[], []], [[], []], [[], []]],
        "GROUP": [[1, 1], [1, 1], [1, 1], [1, 1]],
        "INSTANTIATION": "dot_product",
    },
    "BN": {"USE_PRECISE_STATS": True, "NUM_BATCHES_PRECISE": 200},
    "SOLVER": {
        "BASE_LR": 0.1,
        "LR_POLICY": "cosine",
        "MAX_EPOCH": 196,
        "MOMENTUM": 0.9,
        "WEIGHT_DECAY": 1e-4,
        "WARMUP_EPOCHS": 34,
        "WARMUP_START_LR": 0.01,
        "OPTIMIZING_METHOD": "sgd",
    },
    "MODEL": {"NUM_CLASSES": 400, "ARCH": "slowfast", "LOSS_FUNC": "cross_entropy", "DROPOUT_RATE": 0.5},
    "TEST": {"ENABLE": True, "DATASET": "kinetics", "BATCH_SIZE": 64},
    "DATA_LOADER": {"NUM_WORKERS": 8, "PIN_MEMORY": True},
    "NUM_GPUS": 0,
    "NUM_SHARDS": 1,
    "RNG_SEED": 0,
    "OUTPUT_DIR": ".",
}
CONFIGS = {  # key -> (config file, the values in which it differs from _COMMON)
    "pyslowfast_slowfast_8x8_r50": ("SLOWFAST_8x8_R50.yaml", {}),
    "pyslowfast_slowfast_4x16_r50": ("SLOWFAST_4x16_R50.yaml", {"SLOWFAST": {"ALPHA": 8, "FUSION_KERNEL_SZ": 5}}),
    "pyslowfast_slowfast_16x8_r101_50_50": (
        "SLOWFAST_16x8_R101_50_50.yaml",
        {"DATA": {"NUM_FRAMES": 64}, "SLOWFAST": {"FUSION_KERNEL_SZ": 5}, "RESNET": {"DEPTH": 101}},
    ),
}


def _merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) else value
    return out


def load_config(key: str):
    if key not in CONFIGS:
        raise SystemExit(f"unknown PySlowFast configuration {key!r}; expected one of {', '.join(CONFIGS)}")
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode(_merged(_COMMON, CONFIGS[key][1])))
    return cfg


@contextlib.contextmanager
def _cpu_build():
    """slowfast 1.0's build_model ends with ``cur_device = torch.cuda.current_device(); model = model.cuda(...)``
    whatever NUM_GPUS says; on a machine without a GPU the first call raises. Both are no-ops inside this block."""
    current_device, cuda = torch.cuda.current_device, torch.nn.Module.cuda
    torch.cuda.current_device = lambda: 0
    torch.nn.Module.cuda = lambda self, device=None: self
    try:
        yield
    finally:
        torch.cuda.current_device, torch.nn.Module.cuda = current_device, cuda


def build(cfg) -> torch.nn.Module:
    with _cpu_build():
        model = model_builder.build_model(cfg)
    return model.cpu()


def pathways(cfg, fast: torch.Tensor) -> list[torch.Tensor]:
    """[slow, fast] as pack_pathway_output makes them (linspace over the fast frames), for a batch (N, C, T, H, W)."""
    index = torch.linspace(0, fast.shape[2] - 1, fast.shape[2] // cfg.SLOWFAST.ALPHA).long()
    return [torch.index_select(fast, 2, index), fast]


# ---------------------------------------------------------------- Caffe2 names -------------------------------
_BN_SUFFIX = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}


def caffe2_name(key: str, last_block: dict[int, int]) -> str | None:
    """The Caffe2-zoo blob name of a PySlowFast state-dict key: the inverse of ``get_name_convert_func`` (the
    result is checked against it). ``last_block[k]`` is the index of the last res block of stage k (the fast-to-slow
    fusion after stage k is named after it). None for ``num_batches_tracked`` (not in Caffe2 files)."""
    parts = key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    if key.startswith("head.projection."):
        return {"weight": "pred_w", "bias": "pred_b"}[parts[-1]]
    if parts[0] == "s1":  # s1.pathway{p}_stem.{conv,bn}.*
        prefix = "" if parts[1] == "pathway0_stem" else "t_"
        if parts[2] == "conv":
            return f"{prefix}conv1_w"
        return f"{prefix}res_conv1_bn_{_BN_SUFFIX[parts[3]]}"
    if parts[0].endswith("_fuse"):  # s{k}_fuse.{conv_f2s,bn}.*
        k = int(parts[0][1])
        base = "t_pool1_subsample" if k == 1 else f"t_res{k}_{last_block[k]}_branch2c_bn_subsample"
        return f"{base}_w" if parts[1] == "conv_f2s" else f"{base}_bn_{_BN_SUFFIX[parts[2]]}"
    # s{k}.pathway{p}_res{j}.branch1[_bn].* | s{k}.pathway{p}_res{j}.branch2.{a,b,c}[_bn].*
    k = int(parts[0][1:])
    pathway, block = parts[1].split("_res")
    prefix = "" if pathway == "pathway0" else "t_"
    stem = f"{prefix}res{k}_{block}_"
    if parts[2] == "branch1":
        return stem + "branch1_w"
    if parts[2] == "branch1_bn":
        return stem + f"branch1_bn_{_BN_SUFFIX[parts[3]]}"
    layer = parts[3]  # a, b, c, a_bn, b_bn, c_bn
    if layer.endswith("_bn"):
        return stem + f"branch2{layer[0]}_bn_{_BN_SUFFIX[parts[4]]}"
    return stem + f"branch2{layer}_w"


class _Py2Pickler(pickle.Pickler):
    """Protocol-2 pickles as Caffe2/Detectron (Python 2, numpy 1.x) wrote them: ndarrays reduce to
    ``numpy.core.multiarray._reconstruct`` (not numpy 2's ``numpy._core``) and their bytes are a latin-1 text string
    (Python 2's str), not ``_codecs.encode(...)`` as Python 3 pickles bytes at protocol 2. Loading with
    ``encoding="latin1"`` (what PySlowFast does) gives the same arrays."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            array = np.ascontiguousarray(obj)
            state = (1, array.shape, array.dtype, False, array.tobytes().decode("latin1"))
            return _Reconstruct, (np.ndarray, (0,), "b"), state
        return NotImplemented


class _Reconstruct:
    """Stands for numpy.core.multiarray._reconstruct in the pickle (see _py2_pickle_bytes)."""


def _py2_pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    pickler = _Py2Pickler(buffer, protocol=2)
    placeholder = f"{_Reconstruct.__module__}\n{_Reconstruct.__qualname__}\n".encode()
    pickler.dump(obj)
    data = buffer.getvalue()
    # The GLOBAL opcode of the first ndarray names the placeholder class; memoised references reuse it.
    assert data.count(b"c" + placeholder) == 1, "unexpected pickle layout"
    return data.replace(b"c" + placeholder, b"cnumpy.core.multiarray\n_reconstruct\n", 1)


def write_caffe2(model: torch.nn.Module, cfg, path: Path) -> dict:
    """``{"blobs": {c2_name: ndarray}}`` plus training blobs PySlowFast's loader skips (``lr``, ``model_iter``,
    ``*_momentum``), pickled as a Caffe2-zoo file."""
    depths = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[cfg.RESNET.DEPTH]
    last_block = {k: depths[k - 2] - 1 for k in (2, 3, 4)}
    convert = get_name_convert_func()
    blobs: dict[str, np.ndarray] = {}
    for key, tensor in model.state_dict().items():
        name = caffe2_name(key, last_block)
        if name is None:
            continue
        assert convert(name) == key, f"{key} -> {name} -> {convert(name)}"
        assert name not in blobs, name
        blobs[name] = tensor.detach().numpy().copy()
    model_blobs = len(blobs)
    rng = np.random.default_rng(0)
    training = {
        "lr": np.array([0.1], dtype=np.float32),
        "model_iter": np.array([940000], dtype=np.int64),
        "conv1_w_momentum": (rng.standard_normal(blobs["conv1_w"].shape) * 1e-3).astype(np.float32),
        "pred_w_momentum": (rng.standard_normal(blobs["pred_w"].shape) * 1e-3).astype(np.float32),
        "pred_b_momentum": (rng.standard_normal(blobs["pred_b"].shape) * 1e-3).astype(np.float32),
    }
    blobs.update(training)
    path.write_bytes(_py2_pickle_bytes({"blobs": blobs}))
    return {"keys": model_blobs, "training_blobs": sorted(training)}


def verify_caffe2(cfg, model: torch.nn.Module, path: Path) -> int:
    """Load the .pkl with PySlowFast's own loader into a fresh model: every tensor must equal the saved model's."""
    fresh = build(cfg)
    cu.load_checkpoint(str(path), fresh, data_parallel=False, convert_from_caffe2=True)
    expected, loaded = model.state_dict(), fresh.state_dict()
    checked = 0
    for key, tensor in expected.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not torch.equal(loaded[key], tensor):
            raise SystemExit(f"Caffe2 round trip: {key} differs after load_checkpoint(convert_from_caffe2=True)")
        checked += 1
    return checked


# ---------------------------------------------------------------- commands -------------------------------------
@contextlib.contextmanager
def adaptive_head(model: torch.nn.Module):
    """The head's fixed (NUM_FRAMES // ALPHA or NUM_FRAMES, 7, 7) pooling replaced by a global average for the
    duration of the block: the 112 px calibration forward (runner_common.CALIBRATION_SIZE). At 224 px the fixed kernel
    takes exactly that global average; the pooling has no parameters, so nothing saved changes."""
    head = model.head
    names = [name for name, _ in head.named_children() if name.endswith("_avgpool")]
    pools = {name: getattr(head, name) for name in names}
    for name in names:
        setattr(head, name, torch.nn.AdaptiveAvgPool3d(1))
    try:
        yield
    finally:
        for name, pool in pools.items():
            setattr(head, name, pool)


def command_checkpoint(args) -> dict:
    start = time.perf_counter()
    cfg = load_config(args.config)
    model = build(cfg)
    with adaptive_head(model):
        calibration = common.randomise_torch(
            model, lambda clips: model(pathways(cfg, clips)), model.head.projection, cfg.DATA.NUM_FRAMES, args.seed
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"file": str(out), "config_file": f"configs/Kinetics/c2/{CONFIGS[args.config][0]}"}
    if args.caffe2:
        result.update(write_caffe2(model, cfg, out))
        result["verified_tensors"] = verify_caffe2(cfg, model, out)
    else:
        with tempfile.TemporaryDirectory() as job:
            epoch = cfg.SOLVER.MAX_EPOCH - 1
            written = cu.save_checkpoint(job, model, construct_optimizer(model, cfg), epoch, cfg)
            shutil.copyfile(written, out)
            result["written_as"] = Path(written).name
        result["keys"] = len(model.state_dict())
    log(f"saved {result['keys']} tensors to {out}")
    result |= {"calibration": calibration, "seconds": time.perf_counter() - start}
    return result | common.forward_saved(load_entry, apply, args)


def load(cfg, checkpoint: str) -> torch.nn.Module:
    model = build(cfg)
    cu.load_checkpoint(checkpoint, model, data_parallel=False, convert_from_caffe2=checkpoint.endswith(".pkl"))
    return model.eval()


def load_entry(key: str, checkpoint: str, dtype: str) -> tuple[torch.nn.Module, dict]:
    return load(load_config(key), checkpoint).to(getattr(torch, dtype)), {}


def apply(model: torch.nn.Module, fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model([torch.from_numpy(slow), torch.from_numpy(fast)]).numpy()


command_forward = common.forward_command(load_entry, apply)


class _DecoderRecorder:
    """Records what slowfast.datasets.decoder decided, by wrapping (not changing) two of its module functions."""

    def __init__(self) -> None:
        self.window_pts: list[int] = []
        self.index: list[int] = []
        self._stream, self._sampling = decoder.pyav_decode_stream, decoder.temporal_sampling

    def __enter__(self):
        def stream(*args, **kwargs):
            frames, max_pts = self._stream(*args, **kwargs)
            self.window_pts = [int(frame.pts) for frame in frames]
            return frames, max_pts

        def sampling(frames, start_idx, end_idx, num_samples):
            out = self._sampling(frames, start_idx, end_idx, num_samples)
            # temporal_sampling's own index computation, checked against what it returned.
            index = torch.clamp(torch.linspace(start_idx, end_idx, num_samples), 0, frames.shape[0] - 1).long()
            assert torch.equal(torch.index_select(frames, 0, index), out)
            self.index = index.tolist()
            return out

        decoder.pyav_decode_stream, decoder.temporal_sampling = stream, sampling
        return self

    def __exit__(self, *exc):
        decoder.pyav_decode_stream, decoder.temporal_sampling = self._stream, self._sampling


def command_pipeline(args) -> dict:
    start = time.perf_counter()
    if args.crops != 3:
        raise SystemExit("PySlowFast 1.0 tests with TEST.NUM_SPATIAL_CROPS == 3 only (_assert_and_infer_cfg)")
    view = common.parse_view(args.view, args.clips, args.crops)
    cfg = load_config(args.config)
    model = load(cfg, args.checkpoint)
    video = Path(args.video).resolve()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        declared, fps = int(stream.frames), float(stream.average_rate)
        all_pts = sorted(int(frame.pts) for frame in container.decode(video=0))
    position = {pts: i for i, pts in enumerate(all_pts)}
    views = [(t, s) for t in range(args.clips) for s in range(args.crops)] if view is None else [view]
    meter = TestMeter(1, args.clips * args.crops, cfg.MODEL.NUM_CLASSES, len(views))
    out_views = []
    with tempfile.TemporaryDirectory() as data_dir:
        link = Path(data_dir) / f"video{video.suffix}"  # Kinetics splits each csv line on whitespace
        link.symlink_to(video)
        (Path(data_dir) / "test.csv").write_text(f"{link} 0\n")
        cfg.DATA.PATH_TO_DATA_DIR = data_dir
        cfg.TEST.NUM_ENSEMBLE_VIEWS = args.clips
        cfg.TEST.NUM_SPATIAL_CROPS = args.crops
        dataset = Kinetics(cfg, "test")
        for t, s in views:
            index = t * args.crops + s  # Kinetics: temporal = index // crops, spatial = index % crops
            with _DecoderRecorder() as recorder:
                frames, label, returned, _ = dataset[index]
            if returned != index:  # Kinetics retries failures with a random index
                raise SystemExit(f"Kinetics could not decode view {index} of {video}")
            with torch.no_grad():
                preds = model([f.unsqueeze(0) for f in frames])
            meter.update_stats(preds, torch.tensor([label]), torch.tensor([index]))
            window = recorder.window_pts
            out_views.append(
                {
                    "temporal": t,
                    "spatial": s,
                    "frame_indices": [position[window[i]] for i in recorder.index],
                    "window_indices": recorder.index,
                    "pts": [window[i] for i in recorder.index],
                    "probabilities": common.floats(preds[0]),
                }
            )
    result = {
        "toolbox": "pyslowfast",
        "config": args.config,
        "fusion": "sum",
        "views": out_views,
        "fused": common.floats(meter.video_preds[0]),
        "video": {"frames_declared": declared, "fps": fps, "frames_decoded": len(all_pts)},
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).write_text(json.dumps(result))
    return result


def command_labels(_args) -> dict:
    package = Path(slowfast.__file__).resolve().parent
    found = sorted(package.rglob("*classnames*.json"))
    if found:
        names = json.loads(found[0].read_text())
        return {"labels": [name for name, _ in sorted(names.items(), key=lambda item: item[1])], "file": str(found[0])}
    return {
        "labels": None,
        "why": "the slowfast 1.0 wheel ships no Kinetics class names (PySlowFast's kinetics_classnames.json is a "
        "separate download)",
    }


COMMANDS = {"checkpoint": command_checkpoint, "forward": command_forward, "pipeline": command_pipeline}

if __name__ == "__main__":
    arguments = common.arguments(__doc__.splitlines()[0])
    common.emit({**COMMANDS, "labels": command_labels}[arguments.command](arguments))
