"""What the three toolbox runners share; imported by them INSIDE the reference environments (stdlib + numpy only).

Importing this module first (before numpy's, torch's or paddle's native libraries load) pins 2 threads, moves
file descriptor 1 to stderr, so that only :func:`emit` writes to the real stdout (toolbox loggers and C libraries
that print to stdout cannot corrupt the one JSON line the caller reads), and makes the runner work in a private
temporary directory (path arguments are made absolute first).
"""

from __future__ import annotations

import os
import sys

THREADS = 2
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "CPU_NUM"):
    os.environ.setdefault(_name, str(THREADS))
_RESULT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

import argparse  # noqa: E402
import atexit  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# Calibration clips are 112 px: the networks' outputs on 224-256 px clips stay as informative as with 224 px
# calibration (top-1 well below 1, top 5 apart), at a quarter of the cost. Heads with a fixed 7x7 pooling kernel
# (PySlowFast, PaddleVideo 4x16), which need 224 px, pool adaptively for the calibration forward only
# (``adaptive_head`` in their runners; it reduces to the same global mean the 7x7 kernel takes at 224 px).
CALIBRATION_SIZE = 112
PATH_OPTIONS = ("--out", "--checkpoint", "--inputs", "--forward-out", "--video")
DTYPES = ("float32", "float64")

# Toolboxes write where they run (PaddleVideo's logger creates ./.log.txt and ./paddlevideo/ at import): make the
# path arguments absolute and run in a private temporary directory, removed at exit.
for _i, _arg in enumerate(sys.argv):
    if _arg in PATH_OPTIONS and _i + 1 < len(sys.argv):
        sys.argv[_i + 1] = os.path.abspath(sys.argv[_i + 1])
    elif _arg.split("=", 1)[0] in PATH_OPTIONS and "=" in _arg:
        _option, _value = _arg.split("=", 1)
        sys.argv[_i] = f"{_option}={os.path.abspath(_value)}"
WORKDIR = tempfile.mkdtemp(prefix="toolbox-runner-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
os.chdir(WORKDIR)


def emit(result: dict) -> None:
    """Print the command's result: one JSON object on the real stdout (floats as repr, i.e. full float64)."""
    _RESULT.write(json.dumps(result) + "\n")
    _RESULT.flush()


def logger(name: str):
    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return log


def parser(description: str, speed: bool = False) -> argparse.ArgumentParser:
    """The command line shared by the runners (see tests/toolboxes/reference.py for the interface); ``speed``: the
    runner has the ``speed`` command too (MMAction2's, for ``make bench``)."""
    top = argparse.ArgumentParser(description=description)
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("checkpoint", help="build, randomise and save a model in the toolbox's native format")
    p.add_argument("--config", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--caffe2", action="store_true", help="PySlowFast only: a Caffe2-style .pkl")
    p.add_argument("--inputs", help="with --forward-out: then the forward command on the saved file, reloaded")
    p.add_argument("--forward-out", help="OUT.npz of that forward")
    _dtype(p)
    p = sub.add_parser("forward", help="raw head output for IN.npz (fast, slow)")
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--out", required=True)
    _dtype(p)
    p = sub.add_parser("pipeline", help="the toolbox's own test pipeline on a video file")
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--clips", type=int, required=True)
    p.add_argument("--crops", type=int, required=True)
    p.add_argument("--view", help="T,S: only temporal view T and spatial view S")
    p.add_argument("--out", required=True)
    sub.add_parser("labels", help="the toolbox's own Kinetics-400 label list, if its package ships one")
    if not speed:
        return top
    p = sub.add_parser("speed", help="clips/s of the toolbox's own inference call on a video, model built once")
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--requests", type=int, required=True, help="measured calls, after one warm-up call")
    p.add_argument("--decoder", choices=("pyav", "decord"), default="pyav", help="decord: the config's own")
    return top


def _dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="the forward's dtype (model and inputs)")


def arguments(description: str, speed: bool = False) -> argparse.Namespace:
    """The parsed command line; ``checkpoint``'s ``--inputs`` and ``--forward-out`` come together or not at all."""
    top = parser(description, speed)
    args = top.parse_args()
    if args.command == "checkpoint" and (args.inputs is None) != (args.forward_out is None):
        top.error("checkpoint: --inputs and --forward-out go together")
    return args


def forward_file(load, apply, config: str, checkpoint: str, inputs: str, out: str, dtype: str) -> dict:
    """The ``forward`` command: ``load(config, checkpoint, dtype) -> (model, report)`` reads the file with the
    toolbox's own loader into a fresh model (in ``dtype``), ``apply(model, fast, slow) -> scores`` runs it on
    IN.npz's pathways (in ``dtype``); OUT.npz ``scores`` in ``dtype``."""
    start = time.perf_counter()
    model, report = load(config, checkpoint, dtype)
    with np.load(inputs) as data:
        fast, slow = (np.ascontiguousarray(data[k], dtype=dtype) if k in data else None for k in ("fast", "slow"))
    forward_start = time.perf_counter()
    scores = np.asarray(apply(model, fast, slow))
    forward_seconds = time.perf_counter() - forward_start
    np.savez(out, scores=scores.astype(dtype))
    return {
        "out": str(out),
        "shape": list(scores.shape),
        "dtype": dtype,
        **report,
        "forward_seconds": forward_seconds,
        "seconds": time.perf_counter() - start,
    }


def forward_command(load, apply):
    """The ``forward`` command of a runner with these ``load`` and ``apply`` (see :func:`forward_file`)."""
    return lambda args: forward_file(load, apply, args.config, args.checkpoint, args.inputs, args.out, args.dtype)


def forward_saved(load, apply, args: argparse.Namespace) -> dict:
    """``checkpoint --inputs IN --forward-out OUT``: ``{"forward": the forward command's result}`` on the file just
    written (``args.out``), READ BACK from disk by the toolbox's own loader into a fresh model (not the in-memory
    one); ``{}`` without ``--inputs``."""
    if args.inputs is None:
        return {}
    return {"forward": forward_file(load, apply, args.config, args.out, args.inputs, args.forward_out, args.dtype)}


def parse_view(view: str | None, clips: int, crops: int) -> tuple[int, int] | None:
    if view is None:
        return None
    t, s = (int(v) for v in view.split(","))
    if not (0 <= t < clips and 0 <= s < crops):
        raise SystemExit(f"--view {view} is outside {clips} clips x {crops} crops")
    return t, s


def floats(values) -> list[float]:
    """Probabilities as JSON floats: float32 values widen exactly to float64, and json writes repr."""
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


# ---------------------------------------------------------------- deterministic randomisation ------------------
# Random weights alone make a deep ResNet's activations explode or vanish and its softmax one-hot. Every runner
# therefore draws (numpy Generator seeded with S, in module order) conv weights ~ N(0, 2/fan_in), BN affine weight ~
# U(0.6, 1.4) and bias ~ N(0, 0.2), classifier weight ~ N(0, 1/fan_in) and bias ~ N(0, 0.5); then runs ONE
# eval-mode forward of the three calibration clips in which a pre-hook on every BatchNorm sets its running mean /
# variance from the actual per-channel statistics of its input (variance floored at 5% of the layer's median so
# that no channel is a near-constant that a different video would blow up), jittered by bn_statistics, before the
# layer runs: activations stay O(1) through any depth. All three kinds of clip are needed: statistics of the
# natural clip alone leave the output on a texture clip like the tests' one-hot (top-1 1.000). Finally the
# classifier is centred on the clips' mean feature and scaled so that the natural-looking clip's top-1 probability
# is about 0.3 (see fit_classifier).


def _pink(rng: np.random.Generator, channels: int, height: int, width: int) -> np.ndarray:
    """Noise with a 1/f amplitude spectrum (the spectrum of natural images), zero mean, unit std per channel."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = 1.0 / f
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, size=(channels, height, width // 2 + 1))
    noise = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width))
    noise -= noise.mean(axis=(1, 2), keepdims=True)
    return noise / noise.std(axis=(1, 2), keepdims=True)


def _rectangle(rng, frames, size):
    colour = rng.uniform(0, 1, size=3)
    h, w = rng.integers(size // 8, size // 3, size=2)
    y0, x0 = rng.uniform(0, size - h), rng.uniform(0, size - w)
    vy, vx = rng.uniform(-2.0, 2.0, size=2)
    return colour, int(h), int(w), y0, x0, vy, vx


def calibration_clips(rng: np.random.Generator, frames: int, size: int = CALIBRATION_SIZE) -> np.ndarray:
    """Three (3, T, size, size) RGB clips in [0, 1], stacked (3, 3, T, size, size) float64.

    0: natural-looking: a 1/f-noise scene panned by a moving camera, with two hard-edged objects moving across it;
    1: a fixed per-pixel random texture with a bright rotating bar (the project's tests/videos.py moving_frames);
    2: a synthetic pattern: saturated colour bars, a moving gradient and a flat region.
    """
    clips = np.empty((3, 3, frames, size, size))
    pad = 3 * frames
    scene = 0.7 * _pink(rng, 1, size + pad, size + pad) + 0.3 * _pink(rng, 3, size + pad, size + pad)
    scene = np.clip(0.45 + 0.2 * scene, 0, 1)
    vy, vx = rng.uniform(-1.5, 1.5, size=2)
    objects = [_rectangle(rng, frames, size) for _ in range(2)]
    texture = rng.integers(0, 160, size=(3, size, size)) / 255.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    bars = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]], float)
    band = np.minimum((xs * len(bars) / size).astype(int), len(bars) - 1)
    for t in range(frames):
        oy, ox = int(pad / 2 + vy * t), int(pad / 2 + vx * t)
        frame = scene[:, oy : oy + size, ox : ox + size].copy()
        for colour, h, w, y0, x0, dy, dx in objects:
            y, x = int(np.clip(y0 + dy * t, 0, size - h)), int(np.clip(x0 + dx * t, 0, size - w))
            frame[:, y : y + h, x : x + w] = colour[:, None, None]
        clips[0, :, t] = frame
        angle, cx = 0.15 * t, size * (0.2 + 0.6 * ((t * 7) % frames) / frames)
        along = (xs - cx) * np.cos(angle) + (ys - size / 2) * np.sin(angle)
        across = -(xs - cx) * np.sin(angle) + (ys - size / 2) * np.cos(angle)
        bar = (np.abs(along) < size * 0.25) & (np.abs(across) < size * 0.05)
        frame = texture.copy()
        frame[:, bar] = np.array([250, 220 - (t * 3) % 200, 40])[:, None] / 255.0
        clips[1, :, t] = frame
        frame = bars[band].transpose(2, 0, 1).copy()
        lower = ys > size * 0.6
        frame[:, lower] = ((xs[lower] + 4 * t) % size / size)[None, :]
        frame[:, : size // 5, : size // 3] = 0.5
        clips[2, :, t] = frame
    return clips


def normalise(clips: np.ndarray, mean: float = 0.45, std: float = 0.225) -> np.ndarray:
    return ((clips - mean) / std).astype(np.float32)


def conv_weight(rng: np.random.Generator, shape) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def bn_affine(rng: np.random.Generator, channels: int) -> tuple[np.ndarray, np.ndarray]:
    weight = rng.uniform(0.6, 1.4, size=channels).astype(np.float32)
    return weight, (rng.standard_normal(channels) * 0.2).astype(np.float32)


def linear(rng: np.random.Generator, out_features: int, in_features: int) -> tuple[np.ndarray, np.ndarray]:
    weight = rng.standard_normal((out_features, in_features)) / math.sqrt(in_features)
    return weight.astype(np.float32), (rng.standard_normal(out_features) * 0.5).astype(np.float32)


def bn_statistics(rng: np.random.Generator, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jittered running statistics for a BatchNorm whose input has per-channel ``mean`` and (biased) ``var``."""
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    var = np.maximum(var, max(0.05 * float(np.median(var)), 1e-4))
    mean = mean + rng.standard_normal(mean.shape) * 0.1 * np.sqrt(var)
    var = var * np.exp(rng.standard_normal(var.shape) * 0.2)
    return mean.astype(np.float32), var.astype(np.float32)


def overall_std(mean: np.ndarray, var: np.ndarray) -> float:
    """The standard deviation of a whole activation from its per-channel mean and (biased) variance."""
    return float(np.sqrt(np.mean(var + mean**2) - np.mean(mean) ** 2))


def head_probabilities(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Softmax per position, then the mean over positions: (N, ..., C_in) -> (N, classes)."""
    logits = features.astype(np.float64) @ weight.T.astype(np.float64) + bias.astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    return p.reshape(p.shape[0], -1, p.shape[-1]).mean(axis=1)


def fit_classifier(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[float, np.ndarray, dict]:
    """Centre and scale the classifier on the calibration clips' features (N, ..., C_in).

    Post-ReLU features share a large positive mean, which alone would give every clip the same top classes: the
    bias absorbs ``weight @ mean`` so that the logits follow how a clip differs from the mean. Then one factor c
    for weight and bias puts the natural clip's top-1 probability near 0.3 (or the next target that keeps every
    calibration clip's top-1 within [0.05, 0.9] and the natural clip's top 5 more than 1e-3 apart); near-ties
    left among the natural clip's top 5 are then spread apart through the bias.
    Returns (c, the centred bias before scaling, a report of every clip's top-5 probabilities).
    """
    mean = features.reshape(-1, features.shape[-1]).astype(np.float64).mean(axis=0)
    bias = (bias.astype(np.float64) - weight.astype(np.float64) @ mean).astype(np.float32)
    best = None
    for target in (0.3, 0.25, 0.2, 0.35, 0.15, 0.4, 0.5):
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            top1 = head_probabilities(features[:1], math.exp(mid) * weight, math.exp(mid) * bias).max()
            lo, hi = (mid, hi) if top1 < target else (lo, mid)
        c = math.exp((lo + hi) / 2)
        probabilities = head_probabilities(features, c * weight, c * bias)
        tops = probabilities.max(axis=1)
        natural = np.sort(probabilities[0])[::-1][:5]
        gap = float((natural[:-1] - natural[1:]).min())
        score = (bool(np.all((tops >= 0.05) & (tops <= 0.9))) + (gap > 1e-3), gap)
        if best is None or score > best[0]:
            best = (score, c, probabilities)
        if score[0] == 2:
            break
    _, c, probabilities = best
    natural = np.argsort(probabilities[0])[::-1][:5]
    top = probabilities[0][natural]
    if float((top[:-1] - top[1:]).min()) <= 2e-3:
        # Near-ties among the natural clip's top 5: spread their logits apart (0.1 per rank) so that a ranking
        # is never decided by rounding.
        bias = bias.copy()
        bias[natural] += (np.arange(4, -1, -1) * 0.1 / c).astype(np.float32)
        probabilities = head_probabilities(features, c * weight, c * bias)
    report = {"classifier_scale": c}
    for name, p in zip(("natural", "texture", "synthetic"), probabilities, strict=False):
        top = np.sort(p)[::-1][:5]
        report[name] = {
            "top5": floats(top),
            "min_top5_gap": float((top[:-1] - top[1:]).min()),
            "argmax": int(p.argmax()),
        }
    return c, bias, report


def labels_from_file(path) -> list[str]:
    return [line.strip() for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]


def randomise_torch(model, forward, classifier, frames: int, seed: int) -> dict:
    """The randomisation above for a torch model (MMAction2, PySlowFast); ``forward(clips)`` runs the model in eval
    mode on normalised calibration clips (N, 3, T, H, W) and ``classifier`` is its final ``nn.Linear``."""
    import torch  # only the torch environments call this
    from torch import nn

    rng = np.random.default_rng(seed)
    clips = torch.from_numpy(normalise(calibration_clips(rng, frames)))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                module.weight.copy_(torch.from_numpy(conv_weight(rng, tuple(module.weight.shape))))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                weight, bias = bn_affine(rng, module.num_features)
                module.weight.copy_(torch.from_numpy(weight))
                module.bias.copy_(torch.from_numpy(bias))
            elif isinstance(module, nn.Linear):
                weight, bias = linear(rng, module.out_features, module.in_features)
                module.weight.copy_(torch.from_numpy(weight))
                module.bias.copy_(torch.from_numpy(bias))
    spreads: list[float] = []

    def set_statistics(bn, inputs):
        x = inputs[0].detach()
        dims = [0, *range(2, x.dim())]
        var, mean = (v.double().numpy() for v in torch.var_mean(x, dim=dims, unbiased=False))
        spreads.append(overall_std(mean, var))
        mean, var = bn_statistics(rng, mean, var)
        bn.running_mean.copy_(torch.from_numpy(mean))
        bn.running_var.copy_(torch.from_numpy(var))
        bn.num_batches_tracked.fill_(1)

    captured = []
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks = [m.register_forward_pre_hook(set_statistics) for m in batchnorms]
    hooks.append(classifier.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach())))
    model.eval()
    with torch.no_grad():
        forward(clips)
    for hook in hooks:
        hook.remove()
    weight, bias = classifier.weight.detach().numpy(), classifier.bias.detach().numpy()
    scale, bias, report = fit_classifier(captured[0].numpy(), weight, bias)
    with torch.no_grad():
        classifier.weight.mul_(scale)
        classifier.bias.copy_(torch.from_numpy(bias * np.float32(scale)))
    return {
        "calibration_clips": list(clips.shape),
        "batchnorms": len(batchnorms),
        "bn_input_std": {"min": min(spreads), "max": max(spreads), "last": spreads[-1]},
        **report,
    }
