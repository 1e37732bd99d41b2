"""Run a toolbox's OWN code (MMAction2, PaddleVideo, PySlowFast) in its reference environment, from the product venv.

``scripts/install.sh --venv .venv --dev`` builds one virtual environment per toolbox under ``.venv-ref/`` (pins in
``tests/toolboxes/requirements-<toolbox>.txt``). Each has a command-line runner,
``tests/toolboxes/<toolbox>_runner.py``, that runs inside it; this module starts the runner as a subprocess and
returns the JSON object it prints.

Runner interface (identical for the three toolboxes; ``args`` keys are the option names without ``--``, with ``-``
or ``_``; ``True`` makes a flag, ``False``/``None`` leaves the option out)::

    checkpoint --config KEY --seed S --out FILE [--caffe2] [--inputs IN.npz --forward-out OUT.npz [--dtype D]]
        Build the toolbox's own model for KEY from its own config values, randomise it deterministically from S and
        save it with the toolbox's own save function in its native format: MMAction2 mmengine
        ``save_checkpoint({"meta", "state_dict"})`` (.pth); PaddleVideo ``paddle.save(model.state_dict())``
        (.pdparams); PySlowFast ``slowfast.utils.checkpoint.save_checkpoint`` (.pyth: epoch, model_state,
        optimizer_state, cfg), or with ``caffe2=True`` a Caffe2-zoo ``.pkl`` (pickle protocol 2 as Python 2 wrote
        it, ``{"blobs": {c2_name: ndarray}}`` plus ``lr``/``model_iter``/``*_momentum`` blobs that loaders skip),
        named by inverting PySlowFast's ``get_name_convert_func`` and verified by loading it back with PySlowFast's
        own ``load_checkpoint(convert_from_caffe2=True)`` (``verified_tensors``).
        Randomisation (tests/toolboxes/runner_common.py): random conv/linear weights and BN affine parameters;
        BN running statistics from the actual per-channel statistics of three 112 px calibration clips (natural,
        texture, synthetic) at every layer, jittered (heads with a fixed 7x7 pooling kernel pool globally for that
        forward only); the classifier centred on the clips' mean feature and scaled so that the natural clip's
        top-1 probability is about 0.3 with its top 5 more than 1e-3 apart. The same seed gives PaddleVideo 8x8 and
        PySlowFast 8x8 the same weights (identical layer order and shapes).
        With ``inputs`` and ``forward_out`` (together or not at all), the same process then does what ``forward``
        does with ``--checkpoint FILE``: a fresh model READ BACK from the saved file by the toolbox's own loader
        (not the in-memory model) runs IN.npz in ``dtype``; OUT.npz as ``forward`` writes it. One process instead of
        two (imports and model building once).
        -> {"file", "keys", "seconds" (build, randomise, save), "calibration": {...}, ..., and with inputs
        "forward": forward's result}
    forward --config KEY --checkpoint FILE --inputs IN.npz --out OUT.npz [--dtype float32|float64]
        IN.npz: ``fast`` (N, 3, T, H, W) already normalised and ``slow`` (N, 3, T/alpha, H, W), cast to ``dtype``
        (default float32). MMAction2 takes ``fast`` only (its backbone subsamples the slow pathway itself,
        ``x[:, :, ::alpha]``). ``dtype="float64"`` runs the toolbox's model in float64: every parameter and buffer
        cast (torch ``Module.to``, Paddle ``Layer.to(dtype=...)``; batch norms included), the input too.
        OUT.npz ``scores`` (N, 400) in ``dtype``: MMAction2 = ``cls_head`` logits (before average_clips' softmax);
        PaddleVideo / PySlowFast = their eval-mode head output (softmax per position, averaged over positions).
        Heads with a fixed pooling kernel (PySlowFast, PaddleVideo 4x16) need H, W >= 224 and T = NUM_FRAMES;
        MMAction2 and PaddleVideo 8x8 pool adaptively. -> {"out", "shape", "dtype", "seconds", "forward_seconds",
        ...}; MMAction2 and PaddleVideo add ``missing_keys``/``unexpected_keys`` (their loaders are not strict).
    pipeline --config KEY --checkpoint FILE --video PATH --clips C --crops K [--view T,S] --out OUT.json
        The toolbox's own test pipeline end to end (decoder, sampler, resize, crops, normalisation, model, view
        fusion), one view per forward. ``view="T,S"`` computes only temporal view T of C and spatial view S of K,
        S in the toolbox's own crop order: PaddleVideo / PySlowFast 0, 1, 2 = left (top), centre, right (bottom);
        MMAction2 ThreeCrop 0, 1, 2 = left (top), right (bottom), MIDDLE. So the centre crop is S=1 for
        PaddleVideo / PySlowFast and S=2 for MMAction2. K: MMAction2 3 (ThreeCrop) or 1 (CenterCrop); PySlowFast
        3 only (slowfast 1.0 asserts it); PaddleVideo >= 2 (MultiCrop divides by K - 1).
        OUT.json (also the returned dict): {"toolbox", "config", "fusion": "mean"|"sum", "views": [{"temporal",
        "spatial", "frame_indices", "probabilities": [400 floats]}], "fused": [400 floats], "video":
        {"frames_declared", "fps"}, "seconds"}. ``frame_indices``: MMAction2 and PaddleVideo decode-order indices
        (decord), PySlowFast pts-order indices over the whole video. Floats are float64 repr (exact).
    labels
        -> {"labels": [...400 names...]} as shipped in the toolbox package, or {"labels": null, "why": "..."}.
        Only ppvideo ships a list (names with underscores, in index order).

Configuration keys: ``mmaction2_slowfast_r50_8x8``, ``mmaction2_slowfast_r50_4x16``, ``mmaction2_slowfast_r101_8x8``,
``mmaction2_slowfast_r101_r50_4x16``, ``mmaction2_slowfast_r152_r50_4x16``, ``paddlevideo_slowfast_4x16``,
``paddlevideo_slowfast_8x8``, ``pyslowfast_slowfast_8x8_r50``, ``pyslowfast_slowfast_4x16_r50``,
``pyslowfast_slowfast_16x8_r101_50_50``.

Every runner uses 2 CPU threads (the variables below, plus ``torch.set_num_threads(2)`` in the torch runners).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNERS = Path(__file__).resolve().parent
TOOLBOXES = ("mmaction2", "paddlevideo", "pyslowfast")
CONFIGS = {
    "mmaction2": (
        "mmaction2_slowfast_r50_8x8",
        "mmaction2_slowfast_r50_4x16",
        "mmaction2_slowfast_r101_8x8",
        "mmaction2_slowfast_r101_r50_4x16",
        "mmaction2_slowfast_r152_r50_4x16",
    ),
    "paddlevideo": ("paddlevideo_slowfast_4x16", "paddlevideo_slowfast_8x8"),
    "pyslowfast": (
        "pyslowfast_slowfast_8x8_r50",
        "pyslowfast_slowfast_4x16_r50",
        "pyslowfast_slowfast_16x8_r101_50_50",
    ),
}
THREADS = 2
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "CPU_NUM")


class ToolboxReferenceError(RuntimeError):
    """A reference environment is missing or its runner failed."""


def _check(toolbox: str) -> None:
    if toolbox not in TOOLBOXES:
        raise ValueError(f"unknown toolbox {toolbox!r}; expected one of {', '.join(TOOLBOXES)}")


def reference_env(toolbox: str) -> Path:
    """The toolbox's reference environment directory (``.venv-ref/<toolbox>``)."""
    _check(toolbox)
    return REPO / ".venv-ref" / toolbox


def reference_python(toolbox: str) -> Path:
    """The interpreter of the toolbox's reference environment; :class:`ToolboxReferenceError` when it is missing."""
    env = reference_env(toolbox)
    python = env / "bin" / "python"
    if not python.exists() or not (env / ".stamp").is_file():
        raise ToolboxReferenceError(
            f"the {toolbox} reference environment ({env}) is missing or incomplete: "
            "run `scripts/install.sh --venv .venv --dev` to build .venv-ref/"
        )
    return python


def runner_script(toolbox: str) -> Path:
    _check(toolbox)
    return RUNNERS / f"{toolbox}_runner.py"


def runner_argv(command: str, args: dict) -> list[str]:
    """``{"config": "x", "caffe2": True, "view": (0, 1)}`` -> ``[cmd, "--config", "x", "--caffe2", "--view", "0,1"]``.

    Keys are option names (``_`` becomes ``-``); ``True`` makes a flag; ``False`` and ``None`` leave the option out.
    """
    argv = [command]
    for key, value in args.items():
        if value is None or value is False:
            continue
        option = "--" + key.replace("_", "-")
        if value is True:
            argv.append(option)
        elif isinstance(value, list | tuple):
            argv += [option, ",".join(str(v) for v in value)]
        else:
            argv += [option, str(value)]
    return argv


def reference_environ() -> dict[str, str]:
    """The runner's environment: this one, 2 threads, and nothing from the product venv on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({name: str(THREADS) for name in THREAD_VARIABLES})
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_reference(toolbox: str, command: str, args: dict, timeout: float) -> dict:
    """Run ``<toolbox>_runner.py COMMAND ARGS`` in the toolbox's reference environment and return its JSON result.

    Raises :class:`ToolboxReferenceError` with the tail of the runner's stderr when it exits non-zero, times out or
    prints no JSON object.
    """
    python = reference_python(toolbox)
    argv = [str(python), str(runner_script(toolbox)), *runner_argv(command, args)]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=reference_environ(), cwd=REPO, check=False
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise ToolboxReferenceError(f"{toolbox} {command} timed out after {timeout:.0f} s\n{_tail(stderr)}") from None
    if proc.returncode != 0:
        raise ToolboxReferenceError(
            f"{toolbox} {command} failed (exit {proc.returncode}): {' '.join(argv[1:])}\n{_tail(proc.stderr)}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise ToolboxReferenceError(
            f"{toolbox} {command} printed no JSON object\nstdout: {_tail(proc.stdout)}\nstderr: {_tail(proc.stderr)}"
        ) from None
    if not isinstance(result, dict):
        raise ToolboxReferenceError(f"{toolbox} {command} printed {type(result).__name__}, not a JSON object")
    return result


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


if __name__ == "__main__":  # python -m tests.toolboxes.reference TOOLBOX COMMAND [--opt value ...]
    toolbox, command, *rest = sys.argv[1:]
    options: dict = {}
    i = 0
    while i < len(rest):
        key = rest[i].lstrip("-")
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            options[key], i = rest[i + 1], i + 2
        else:
            options[key], i = True, i + 1
    print(json.dumps(run_reference(toolbox, command, options, timeout=3600)))
