"""MMAction2 1.2.0 reference runner: runs INSIDE .venv-ref/mmaction2 (see tests/toolboxes/reference.py).

The models are MMAction2's own, built by ``mmaction.apis.init_recognizer`` from the configs shipped in the wheel
(``mmaction/.mim/configs/recognition/slowfast/``). Commands (one JSON object on stdout, logs on stderr):

checkpoint --config KEY --seed S --out FILE [--inputs IN.npz --forward-out OUT.npz [--dtype D]]
    init_recognizer(config, None, "cpu"), deterministic randomisation (runner_common.randomise_torch), then mmengine's
    ``save_checkpoint({"meta": {...}, "state_dict": model.state_dict()}, FILE)``: the layout of a released MMAction2
    file (``tools/deployment/publish_model.py`` keeps meta + state_dict, no optimizer). ``--caffe2`` is refused.
    With ``--inputs``: then ``forward`` on FILE in the same process (``load`` builds a fresh recognizer from FILE).
forward --config KEY --checkpoint FILE --inputs IN.npz --out OUT.npz [--dtype float32|float64]
    ``init_recognizer(config, FILE, device="cpu")``, cast to ``dtype`` (``Module.to``); IN.npz ``fast`` (N, 3, T, H,
    W), already normalised (``slow`` is
    ignored: ResNet3dSlowFast subsamples it itself, ``x[:, :, ::resample_rate]``). The calls are those of the
    recognizer's test step after its data preprocessor, i.e. of ``Recognizer3D.predict`` before
    ``predict_by_feat``: ``feats, kw = model.extract_feat(fast[:, None], test_mode=True)`` (inputs laid out
    (N, num_views=1, C, T, H, W) as ActionDataPreprocessor leaves them) then ``scores = model.cls_head(feats, **kw)``.
    OUT.npz ``scores`` = those logits (N, 400) in ``dtype``, before ``average_clips='prob'``'s softmax.
pipeline --config KEY --checkpoint FILE --video PATH --clips C --crops K [--view T,S] --out OUT.json
    The config's ``test_pipeline`` (DecordInit, SampleFrames(clip_len, frame_interval, num_clips=C, test_mode=True),
    DecordDecode, Resize(-1, 256), ThreeCrop(256) when K == 3 or CenterCrop(256) when K == 1, FormatShape('NCTHW'),
    PackActionInputs), then ``model.test_step`` (ActionDataPreprocessor: ImageNet mean/std on 0-255 RGB) with
    ``average_clips='prob'``: the fused score is the MEAN of per-view softmaxes. Views are ordered as FormatShape
    stacks them, crop-major: view = S * C + T. ThreeCrop's order is 0 = left (top), 1 = right (bottom),
    2 = MIDDLE, so the centre crop is ``--view T,2``. Views go through the backbone one at a time (the
    recognizer's own ``test_cfg.max_testing_views = 1``), so a single ``--view`` run and the same view of a full
    run differ only by the batch of the final linear layer (measured <= 4e-7). ``frame_indices`` are
    SampleFrames' ``frame_inds`` (decode order, as DecordDecode reads them); ``video.frames_declared`` is
    DecordInit's ``total_frames`` (``len(VideoReader)``).
speed --config KEY --checkpoint FILE --video PATH --requests N [--decoder pyav|decord]
    What a user of MMAction2 runs in-process, timed: the recognizer built once (``init_recognizer``), then
    ``mmaction.apis.inference_recognizer(model, PATH, test_pipeline)`` N times after one warm-up call, with the
    config's test pipeline for one view (SampleFrames num_clips=1, CenterCrop(256), as ``pipeline --clips 1
    --crops 1``) decoding with PyAV (PyAVInit, PyAVDecode in its default 'accurate' mode, in place of
    DecordInit, DecordDecode) or, with ``--decoder decord``, with the config's own decord steps. Returns
    ``clips_per_s`` and the per-call seconds.
labels
    The wheel's own Kinetics-400 list if it ships one (1.2.0 does not: no ``label_map_k400.txt`` under
    ``mmaction/.mim/tools/data/kinetics``).

Workaround: the 1.2.0 wheel lacks ``mmaction/models/localizers/drn/`` (open-mmlab/mmaction2#2714), imported by
``mmaction/models/localizers/__init__.py``; without it ``import mmaction.apis`` fails with ``ModuleNotFoundError: No
module named 'mmaction.models.localizers.drn'``. ``stubs.install`` (tests/toolboxes/stubs.py) stubs it only
when the real module cannot be found.
"""

from __future__ import annotations

import runner_common as common  # first: 2 threads, stdout kept for the JSON result (tests/toolboxes/runner_common.py)

# isort: split
import copy
import json
import time
from pathlib import Path

import numpy as np
import stubs  # tests/toolboxes/stubs.py, next to this script
import torch
from torch import nn

stubs.install("mmaction2", ["mmaction.models.localizers.drn"])

import mmaction  # noqa: E402
import mmengine  # noqa: E402
from mmaction.apis import inference_recognizer, init_recognizer  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import Compose, pseudo_collate  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner.checkpoint import save_checkpoint  # noqa: E402

torch.set_num_threads(2)

CONFIG_DIR = Path(mmaction.__file__).resolve().parent / ".mim" / "configs" / "recognition" / "slowfast"
# Configuration key -> (shipped config file, overrides). No 1.x config exists for R152-R50: MMAction2 0.x's
# configs/recognition/slowfast/slowfast_r152_r50_4x16x1_256e_kinetics400_rgb.py (open-mmlab/mmaction2 @ 27f5eb31) is
# the R50 4x16 model (resample_rate 8, speed_ratio 8, fusion_kernel 5, fast depth 50) with
# model.backbone.slow_pathway.depth = 152, which is what the override does.
CONFIGS = {
    "mmaction2_slowfast_r50_8x8": ("slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb.py", {}),
    "mmaction2_slowfast_r50_4x16": ("slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py", {}),
    "mmaction2_slowfast_r101_8x8": ("slowfast_r101_8xb8-8x8x1-256e_kinetics400-rgb.py", {}),
    "mmaction2_slowfast_r101_r50_4x16": ("slowfast_r101-r50_32xb8-4x16x1-256e_kinetics400-rgb.py", {}),
    "mmaction2_slowfast_r152_r50_4x16": (
        "slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py",
        {"model.backbone.slow_pathway.depth": 152},
    ),
}


log = common.logger("mmaction2_runner")


def load_config(key: str, max_testing_views: int | None = None) -> Config:
    if key not in CONFIGS:
        raise SystemExit(f"unknown MMAction2 configuration {key!r}; expected one of {', '.join(CONFIGS)}")
    name, overrides = CONFIGS[key]
    cfg = Config.fromfile(str(CONFIG_DIR / name))
    cfg.merge_from_dict(overrides)
    if max_testing_views:
        # The toolbox's own option to run test views through the backbone in chunks (Recognizer3D.extract_feat).
        cfg.model.test_cfg = {"max_testing_views": max_testing_views}
    return cfg


def build(key: str, checkpoint: str | None, max_testing_views: int | None = None) -> nn.Module:
    init_default_scope("mmaction")
    return init_recognizer(load_config(key, max_testing_views), checkpoint, device="cpu")


def command_checkpoint(args) -> dict:
    if args.caffe2:
        raise SystemExit("--caffe2 is a PySlowFast format; MMAction2 checkpoints are mmengine .pth files")
    start = time.perf_counter()
    model = build(args.config, None)

    def forward(clips):  # the whole calibration batch through backbone and head at once
        feats, _ = model.extract_feat(clips[:, None], stage="backbone")
        return model.cls_head(feats)

    calibration = common.randomise_torch(model, forward, model.cls_head.fc_cls, 32, args.seed)
    state_dict = model.state_dict()
    meta = {
        "mmengine_version": mmengine.__version__,
        "mmaction2_version": mmaction.__version__,
        "time": time.strftime("%Y%m%d_%H%M%S"),
        "epoch": 256,
        "iter": 0,
        "seed": args.seed,
        "experiment_name": f"{args.config} (random weights, seed {args.seed})",
        "cfg": model.cfg.pretty_text,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"meta": meta, "state_dict": state_dict}, str(args.out))
    log(f"saved {len(state_dict)} tensors to {args.out}")
    return {
        "file": str(args.out),
        "keys": len(state_dict),
        "config_file": str(CONFIG_DIR / CONFIGS[args.config][0]),
        "calibration": calibration,
        "seconds": time.perf_counter() - start,
        **common.forward_saved(load, apply, args),
    }


def key_report(model: nn.Module, checkpoint: str) -> dict:
    """mmengine's load_checkpoint is not strict (it only logs): report what did not match."""
    raw = torch.load(checkpoint, map_location="cpu", weights_only=False)
    saved = set(raw.get("state_dict", raw))
    expected = set(model.state_dict())
    return {"missing_keys": sorted(expected - saved), "unexpected_keys": sorted(saved - expected)}


def load(key: str, checkpoint: str, dtype: str) -> tuple[nn.Module, dict]:
    model = build(key, checkpoint)
    return model.to(getattr(torch, dtype)), key_report(model, checkpoint)


def apply(model: nn.Module, fast: np.ndarray, _slow: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        # Recognizer3D.predict before predict_by_feat; inputs (N, num_views=1, C, T, H, W).
        feats, kwargs = model.extract_feat(torch.from_numpy(fast)[:, None], test_mode=True)
        return model.cls_head(feats, **kwargs).numpy()


command_forward = common.forward_command(load, apply)


def test_pipeline(cfg: Config, clips: int, crops: int) -> list[dict]:
    steps = []
    for step in copy.deepcopy(cfg.test_pipeline):
        if step["type"] == "SampleFrames":
            step.update(num_clips=clips, test_mode=True)
        elif step["type"] == "ThreeCrop":
            if crops == 1:
                step = {"type": "CenterCrop", "crop_size": step["crop_size"]}
            elif crops != 3:
                raise SystemExit(f"MMAction2's test pipeline has ThreeCrop (K=3) or CenterCrop (K=1), not K={crops}")
        steps.append(step)
    return steps


def command_pipeline(args) -> dict:
    start = time.perf_counter()
    view = common.parse_view(args.view, args.clips, args.crops)
    model = build(args.config, args.checkpoint, max_testing_views=1)
    steps = test_pipeline(model.cfg, args.clips, args.crops)
    results = {"filename": str(args.video), "label": -1, "start_index": 0, "modality": "RGB"}  # inference_recognizer's
    frame_inds = total_frames = avg_fps = None
    for transform in Compose(steps).transforms:
        results = transform(results)
        if frame_inds is None and "frame_inds" in results:
            frame_inds = np.asarray(results["frame_inds"]).reshape(args.clips, -1)
            total_frames, avg_fps = int(results["total_frames"]), float(results["avg_fps"])
    inputs = results["inputs"]  # (K * C, 3, T, H, W) uint8, crop-major (FormatShape)
    assert inputs.shape[0] == args.clips * args.crops, inputs.shape
    views = [(t, s) for s in range(args.crops) for t in range(args.clips)]
    if view is not None:
        index = view[1] * args.clips + view[0]
        results["inputs"] = inputs[index : index + 1]
        views = [view]
    logits = []
    hook = model.cls_head.register_forward_hook(lambda _m, _i, output: logits.append(output.detach()))
    with torch.no_grad():
        sample = model.test_step(pseudo_collate([results]))[0]
    hook.remove()
    out_views = [
        {
            "temporal": t,
            "spatial": s,
            "frame_indices": [int(i) for i in frame_inds[t]],
            # average_clips='prob' over a single view: that view's softmax, by the head's own function.
            "probabilities": common.floats(model.cls_head.average_clip(logits[0][row : row + 1], num_segs=1)),
        }
        for row, (t, s) in enumerate(views)
    ]
    result = {
        "toolbox": "mmaction2",
        "config": args.config,
        "fusion": "mean",
        "views": out_views,
        "fused": common.floats(sample.pred_score),
        "video": {"frames_declared": total_frames, "fps": avg_fps},
        "pipeline": [dict(s) for s in steps],
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).write_text(json.dumps(result))
    return result


def command_speed(args) -> dict:
    model = build(args.config, args.checkpoint)
    decoders = {"DecordInit": "PyAVInit", "DecordDecode": "PyAVDecode"} if args.decoder == "pyav" else {}
    steps = [{**step, "type": decoders.get(step["type"], step["type"])} for step in test_pipeline(model.cfg, 1, 1)]
    pipeline = Compose(steps)
    seconds = []
    for _ in range(args.requests + 1):  # the first call warms up
        start = time.perf_counter()
        with torch.no_grad():
            inference_recognizer(model, str(args.video), pipeline)
        seconds.append(time.perf_counter() - start)
    measured = seconds[1:]
    return {
        "toolbox": "mmaction2",
        "config": args.config,
        "call": "mmaction.apis.inference_recognizer",
        "decoder": args.decoder,
        "pipeline": [dict(s) for s in steps],
        "threads": torch.get_num_threads(),
        "seconds": measured,
        "clips_per_s": len(measured) / sum(measured),
    }


def command_labels(_args) -> dict:
    package = Path(mmaction.__file__).resolve().parent
    found = sorted(package.rglob("label_map_k400.txt"))
    if found:
        return {"labels": common.labels_from_file(found[0]), "file": str(found[0])}
    return {
        "labels": None,
        "why": f"the mmaction2 {mmaction.__version__} wheel ships no label_map_k400.txt (its .mim/tools/data/kinetics "
        "holds only download and extraction scripts; the list is in the GitHub repository, tools/data/kinetics)",
    }


COMMANDS = {
    "checkpoint": command_checkpoint,
    "forward": command_forward,
    "pipeline": command_pipeline,
    "speed": command_speed,
}


if __name__ == "__main__":
    arguments = common.arguments(__doc__.splitlines()[0], speed=True)
    common.emit({**COMMANDS, "labels": command_labels}[arguments.command](arguments))
