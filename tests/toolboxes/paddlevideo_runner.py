"""PaddleVideo (ppvideo 2.3.1, Paddle 3.3.1) reference runner: runs INSIDE .venv-ref/paddlevideo (see reference.py).

The models are PaddleVideo's own ``paddlevideo.modeling.builder.build_model(cfg.MODEL)`` (Recognizer3D with
ResNetSlowFast and SlowFastHead) built from the config values written below (the YAML configs are not in the wheel).
The wheel ships PaddleVideo as ``site-packages/ppvideo/paddlevideo`` with absolute ``paddlevideo.*`` imports, so
``site-packages/ppvideo`` goes on sys.path. Commands (one JSON object on stdout, logs on stderr):

checkpoint --config KEY --seed S --out FILE [--inputs IN.npz --forward-out OUT.npz [--dtype D]]
    build_model, deterministic randomisation (``randomise``: the scheme of runner_common, on Paddle layers), then
    ``paddle.save(model.state_dict(), FILE)``, as PaddleVideo's ``utils/save_load.py`` saves (a .pdparams: a pickle
    of numpy arrays plus the ``StructuredToParameterName@@`` table). ``--caffe2`` is refused.
    With ``--inputs``: then ``forward`` on FILE in the same process (``load`` builds a fresh model from FILE).
forward --config KEY --checkpoint FILE --inputs IN.npz --out OUT.npz [--dtype float32|float64]
    ``model.set_state_dict(paddle.load(FILE))``; eval mode; with ``dtype="float64"`` ``model.to(dtype="float64")``
    (every parameter and buffer: float64 convolutions, batch norms and linear; checked against our float64 network
    to about 1e-11); ``model([slow, fast], mode="test")`` (Recognizer3D.test_step -> forward_net). OUT.npz
    ``scores`` (N, 400) in ``dtype`` = the eval-mode SlowFastHead output: softmax per position, mean over positions.
    4x16 pools with the fixed kernel (NUM_FRAMES // ALPHA or NUM_FRAMES, crop_size // 32 = 7, 7), which needs
    H, W >= 224 and T = 32; 8x8 (``multigrid_short``) pools adaptively.
pipeline --config KEY --checkpoint FILE --video PATH --clips C --crops K [--view T,S] --out OUT.json
    ``SFVideoDataset`` (test mode, num_ensemble_views = C, num_spatial_crops = K) over a temporary index file, with
    the config's test pipeline built by ``paddlevideo.loader.builder.build_pipeline``: DecodeSampler (decord,
    decode-order indices ``linspace(start, start + clip - 1, 32)`` with ``clip = 64 * fps / 30``), JitterScale (PIL
    bilinear), MultiCrop(test_mode), Image2Array, Normalization, PackOutput; then ``model(data, mode="test")`` one
    view at a time and ``MultiCropMetric.update`` (built by ``build_metric`` as tasks/test.py does, fed the batch
    layout of PaddleVideo's DataLoader): the fused score is the SUM of the views' probabilities
    (float64, ``video_preds``). Dataset index = temporal * K + spatial; MultiCrop's spatial 0, 1, 2 = left (top),
    centre, right (bottom), so the centre crop is ``--view T,1`` with K = 3. K = 1 is refused: MultiCrop divides by
    ``spatial_num_clips - 1`` (ZeroDivisionError). ``frame_indices`` are the indices DecodeSampler passed to
    ``VideoReader.get_batch`` (recorded by wrapping decord's reader); ``video.frames_declared`` is
    ``len(VideoReader)`` and ``fps`` ``get_avg_fps()``.
labels
    ``ppvideo/data/k400/Kinetics-400_label_list.txt`` as shipped ("<index> <name_with_underscores>" lines): the
    names in index order.

Workaround: Paddle 3 removed ``paddle.fluid``, which ``paddlevideo/modeling/backbones/resnext101.py`` and
``modeling/heads/ops.py`` import at module level; ``import paddlevideo.modeling`` fails with ``ModuleNotFoundError:
No module named 'paddle.fluid'``. ``stubs.install`` (tests/toolboxes/stubs.py) stubs it (nothing on
the SlowFast path uses it). The environment pins numpy 2.3 (see requirements-paddlevideo.txt): MultiCropMetric
fails on numpy 2.4.
"""

from __future__ import annotations

import runner_common as common  # first: 2 threads, stdout kept for the JSON result (tests/toolboxes/runner_common.py)

# isort: split
import contextlib
import importlib.util
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import stubs  # tests/toolboxes/stubs.py, next to this script

stubs.install("paddlevideo", ["paddle.fluid"])

import decord  # noqa: E402
import paddle  # noqa: E402

PPVIDEO = Path(importlib.util.find_spec("ppvideo").submodule_search_locations[0])
sys.path.insert(0, str(PPVIDEO))

import paddlevideo.loader.pipelines.decode_sampler as decode_sampler  # noqa: E402
from paddlevideo.loader.builder import build_pipeline  # noqa: E402
from paddlevideo.loader.dataset.slowfast_video import SFVideoDataset  # noqa: E402
from paddlevideo.metrics import build_metric  # noqa: E402
from paddlevideo.modeling.builder import build_model  # noqa: E402
from paddlevideo.utils.config import AttrDict, create_attr_dict  # noqa: E402

paddle.set_device("cpu")
paddle.base.core.set_num_threads(common.THREADS)
log = common.logger("paddlevideo_runner")

# The MODEL and test-time values of PaddleVideo's configs/recognition/slowfast/slowfast.yaml (4x16) and
# slowfast_multigrid.yaml (8x8), read at PaddlePaddle/PaddleVideo develop ed245e9ce5eb32d27db8d8d2fef921e4f43e30e5
# (2024-03-05).


def _test_pipeline(alpha: int, short_side: int, crop: int) -> dict:
    return {
        "decode_sampler": {"name": "DecodeSampler", "num_frames": 32, "sampling_rate": 2, "test_mode": True},
        "transform": [
            {"JitterScale": {"min_size": short_side, "max_size": short_side}},
            {"MultiCrop": {"target_size": crop, "test_mode": True}},
            {"Image2Array": {"transpose": False}},
            {"Normalization": {"mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225], "tensor_shape": [1, 1, 1, 3]}},
            {"PackOutput": {"alpha": alpha}},
        ],
    }


CONFIGS = {
    "paddlevideo_slowfast_4x16": {
        "file": "configs/recognition/slowfast/slowfast.yaml",
        "MODEL": {
            "framework": "Recognizer3D",
            "backbone": {
                "name": "ResNetSlowFast",
                "depth": 50,
                "alpha": 8,
                "beta": 8,
                "width_per_group": 64,
                "fusion_kernel_sz": 5,
            },
            "head": {
                "name": "SlowFastHead",
                "width_per_group": 64,
                "alpha": 8,
                "beta": 8,
                "num_classes": 400,
                "num_frames": 32,
                "crop_size": 224,
                "dropout_rate": 0.5,
            },
        },
        "PIPELINE_test": _test_pipeline(alpha=8, short_side=256, crop=256),
        "METRIC": {"name": "MultiCropMetric", "num_ensemble_views": 10, "num_spatial_crops": 3, "num_classes": 400},
    },
    "paddlevideo_slowfast_8x8": {
        "file": "configs/recognition/slowfast/slowfast_multigrid.yaml",
        "MODEL": {
            "framework": "Recognizer3D",
            "backbone": {
                "name": "ResNetSlowFast",
                "depth": 50,
                "alpha": 4,
                "beta": 8,
                "width_per_group": 64,
                "fusion_kernel_sz": 7,
                "bn_norm_type": "batchnorm",
            },
            "head": {
                "name": "SlowFastHead",
                "width_per_group": 64,
                "alpha": 4,
                "beta": 8,
                "num_classes": 400,
                "num_frames": 32,
                "crop_size": 224,
                "dropout_rate": 0.5,
                "multigrid_short": True,
            },
        },
        "PIPELINE_test": _test_pipeline(alpha=4, short_side=224, crop=224),
        "METRIC": {"name": "MultiCropMetric", "num_ensemble_views": 10, "num_spatial_crops": 3, "num_classes": 400},
    },
}


def attr(value: dict) -> AttrDict:
    """A config section as PaddleVideo's get_config makes it (AttrDict all the way down)."""
    out = AttrDict(json.loads(json.dumps(value)))
    create_attr_dict(out)
    return out


def config(key: str) -> dict:
    if key not in CONFIGS:
        raise SystemExit(f"unknown PaddleVideo configuration {key!r}; expected one of {', '.join(CONFIGS)}")
    return CONFIGS[key]


def build(key: str):
    return build_model(attr(config(key)["MODEL"]))


def pathways(fast: np.ndarray, alpha: int) -> list:
    """[slow, fast] as PackOutput makes them: slow = fast[linspace(0, T - 1, T // alpha).astype(int64)]."""
    index = np.linspace(0, fast.shape[2] - 1, fast.shape[2] // alpha).astype("int64")
    return [paddle.to_tensor(np.ascontiguousarray(fast[:, :, index])), paddle.to_tensor(fast)]


@contextlib.contextmanager
def adaptive_head(model):
    """4x16's fixed (NUM_FRAMES // ALPHA or NUM_FRAMES, 7, 7) head pooling made a global average for the duration of
    the block: the 112 px calibration forward (runner_common.CALIBRATION_SIZE). SlowFastHead pools adaptively where
    ``pool_size`` is None (as 8x8's ``multigrid_short`` does); at 224 px the fixed kernel takes exactly that global
    average. The pooling has no parameters, so nothing saved changes."""
    head = model.head
    pool_size, head.pool_size = head.pool_size, [None] * len(head.pool_size)
    try:
        yield
    finally:
        head.pool_size = pool_size


def randomise(model, key: str, seed: int) -> dict:
    """runner_common's randomisation on Paddle layers (Conv3D, BatchNorm, Linear with its [in, out] weight)."""
    rng = np.random.default_rng(seed)
    clips = common.normalise(common.calibration_clips(rng, 32))
    batchnorms = []
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, paddle.nn.layer.conv._ConvNd):
            layer.weight.set_value(common.conv_weight(rng, tuple(layer.weight.shape)))
            if layer.bias is not None:
                layer.bias.set_value(np.zeros(layer.bias.shape, dtype=np.float32))
        elif isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
            weight, bias = common.bn_affine(rng, layer.weight.shape[0])
            layer.weight.set_value(weight)
            layer.bias.set_value(bias)
            batchnorms.append(layer)
        elif isinstance(layer, paddle.nn.Linear):
            in_features, out_features = layer.weight.shape
            weight, bias = common.linear(rng, out_features, in_features)
            layer.weight.set_value(weight.T.copy())
            layer.bias.set_value(bias)
    spreads: list[float] = []

    def set_statistics(bn, inputs):
        x = inputs[0]
        dims = [0, *range(2, x.ndim)]
        mean, var = (v.numpy().astype(np.float64) for v in (x.mean(axis=dims), x.var(axis=dims, unbiased=False)))
        spreads.append(common.overall_std(mean, var))
        mean, var = common.bn_statistics(rng, mean, var)
        bn._mean.set_value(mean)
        bn._variance.set_value(var)

    captured = []
    hooks = [bn.register_forward_pre_hook(set_statistics) for bn in batchnorms]
    projection = model.head.projection
    hooks.append(projection.register_forward_pre_hook(lambda _layer, inputs: captured.append(inputs[0].numpy())))
    model.eval()
    with paddle.no_grad(), adaptive_head(model):
        model(pathways(clips, config(key)["MODEL"]["backbone"]["alpha"]), mode="test")
    for hook in hooks:
        hook.remove()
    weight, bias = projection.weight.numpy().T, projection.bias.numpy()
    scale, bias, report = common.fit_classifier(captured[0], weight, bias)
    projection.weight.set_value((weight * np.float32(scale)).T.copy())
    projection.bias.set_value(bias * np.float32(scale))
    return {
        "calibration_clips": list(clips.shape),
        "batchnorms": len(batchnorms),
        "bn_input_std": {"min": min(spreads), "max": max(spreads), "last": spreads[-1]},
        **report,
    }


def command_checkpoint(args) -> dict:
    if args.caffe2:
        raise SystemExit("--caffe2 is a PySlowFast format; PaddleVideo checkpoints are .pdparams")
    start = time.perf_counter()
    model = build(args.config)
    calibration = randomise(model, args.config, args.seed)
    state_dict = model.state_dict()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    paddle.save(state_dict, args.out)
    log(f"saved {len(state_dict)} tensors to {args.out}")
    return {
        "file": str(args.out),
        "keys": len(state_dict),
        "config_file": config(args.config)["file"],
        "calibration": calibration,
        "seconds": time.perf_counter() - start,
        **common.forward_saved(load, apply, args),
    }


def load(key: str, checkpoint: str, dtype: str = "float32") -> tuple[object, dict]:
    """PaddleVideo's own loading (``set_state_dict(paddle.load(FILE))``), then every parameter and buffer cast to
    ``dtype`` (``Layer.to``: float64 convolutions, batch norms with float64 statistics, float64 linear)."""
    model = build(key)
    missing, unexpected = model.set_state_dict(paddle.load(checkpoint))
    model.eval()
    if dtype != "float32":
        model.to(dtype=dtype)
    return model, {"missing_keys": sorted(missing), "unexpected_keys": sorted(unexpected)}


def apply(model, fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return model([paddle.to_tensor(slow), paddle.to_tensor(fast)], mode="test").numpy()


command_forward = common.forward_command(load, apply)


class _RecordingReader(decord.VideoReader):
    """decord's VideoReader, recording what DecodeSampler asked of it (the class is swapped in decode_sampler's
    namespace only for the duration of a pipeline run)."""

    calls: list[dict] = []

    def get_batch(self, indices):
        _RecordingReader.calls.append(
            {"indices": [int(i) for i in indices], "frames": len(self), "fps": float(self.get_avg_fps())}
        )
        return super().get_batch(indices)


def command_pipeline(args) -> dict:
    start = time.perf_counter()
    if args.crops < 2:
        raise SystemExit("PaddleVideo's MultiCrop(test_mode=True) needs K >= 2 (it divides by K - 1); use K = 3")
    view = common.parse_view(args.view, args.clips, args.crops)
    cfg = config(args.config)
    model, _ = load(args.config, args.checkpoint)
    video = Path(args.video).resolve()
    views = [(t, s) for t in range(args.clips) for s in range(args.crops)] if view is None else [view]
    # As tasks/test.py builds it (the module-level name MultiCropMetric is None: `@METRIC.register` without
    # parentheses registers the class but returns None).
    metric = build_metric(
        attr(
            {
                **cfg["METRIC"],
                "num_ensemble_views": args.clips,
                "num_spatial_crops": args.crops,
                "data_size": args.clips * args.crops,
                "batch_size": 1,
            }
        )
    )
    out_views = []
    original = decode_sampler.de
    decode_sampler.de = types.SimpleNamespace(VideoReader=_RecordingReader)
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            link = Path(data_dir) / f"video{video.suffix}"  # SFVideoDataset splits each index line on whitespace
            link.symlink_to(video)
            index_file = Path(data_dir) / "test.list"
            index_file.write_text(f"{link} 0\n")
            dataset = SFVideoDataset(
                file_path=str(index_file),
                pipeline=build_pipeline(attr(cfg["PIPELINE_test"])),
                num_ensemble_views=args.clips,
                num_spatial_crops=args.crops,
                test_mode=True,
            )
            for batch_id, (t, s) in enumerate(views):
                index = t * args.crops + s  # load_file: for tidx in views: for sidx in crops
                _RecordingReader.calls.clear()
                sample = dataset[index]
                if sample is None or int(sample[3][0]) != index:  # prepare_test retries failures at random
                    raise SystemExit(f"SFVideoDataset could not prepare view {index} of {video}")
                data = [paddle.to_tensor(np.asarray(x)[None]) for x in sample[:2]]
                data += [paddle.to_tensor(sample[2][None]), paddle.to_tensor(sample[3][None])]
                with paddle.no_grad():
                    outputs = model(data, mode="test")
                metric.update(batch_id, data, outputs)
                call = _RecordingReader.calls[-1]
                out_views.append(
                    {
                        "temporal": t,
                        "spatial": s,
                        "frame_indices": call["indices"],
                        "probabilities": common.floats(outputs.numpy()[0]),
                    }
                )
    finally:
        decode_sampler.de = original
    result = {
        "toolbox": "paddlevideo",
        "config": args.config,
        "fusion": "sum",
        "views": out_views,
        "fused": common.floats(metric.video_preds[0]),
        "video": {"frames_declared": call["frames"], "fps": call["fps"]},
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).write_text(json.dumps(result))
    return result


def command_labels(_args) -> dict:
    path = PPVIDEO / "data" / "k400" / "Kinetics-400_label_list.txt"
    if not path.is_file():
        return {"labels": None, "why": f"{path} is not in the installed ppvideo"}
    rows = [line.split(maxsplit=1) for line in common.labels_from_file(path)]
    return {"labels": [name for _, name in sorted(rows, key=lambda row: int(row[0]))], "file": str(path)}


COMMANDS = {"checkpoint": command_checkpoint, "forward": command_forward, "pipeline": command_pipeline}

if __name__ == "__main__":
    arguments = common.arguments(__doc__.splitlines()[0])
    common.emit({**COMMANDS, "labels": command_labels}[arguments.command](arguments))
