#!/usr/bin/env python3
"""The GPU check's offline install, proven on this CPU machine as far as it goes: up to "no CUDA device".

1. ``bash bench/gpu_wheels.sh --out DIR/wheels``: the chunks, made as for the GPU machines (their wheels are
   cp311-abi3 or py3-none-any, so this machine's Python installs the very files a GPU machine would), each
   checked against the 64 MiB a run carries with the current working tree.
2. An emulated image: a fresh virtual environment of this Python that sees, of this project's environment, only
   the distributions the GPU image lists (bench/gpu_image_packages.txt): torch, numpy, pytest ..., but no PyAV,
   PyTorchVideo, TorchServe or OpenVINO.
3. The documented run sequence, each run a separate ``bash bench/gpu_check.sh`` with its own ``$OUT``: install
   chunk 1, then a check (it must say that chunk 2 is missing and that the TorchServe steps will not run, and
   still import and collect the rest, up to the GPU), install chunk 2, install chunk 3, then the full check,
   which must get past its imports and test collection and stop at its first GPU check with exit status 3 (no
   CUDA device here).

Writes ``--report`` (Markdown: each command, its exit status and its log). Exit status 0 when every stage did
what it must.

Example:
    .venv/bin/python -m bench.gpu_dry_run --report docs/gpu-dry-run.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench import REPO
from bench.workloads import machine

IMAGE_PACKAGES = REPO / "bench" / "gpu_image_packages.txt"


def image_distributions() -> list[str]:
    """The distribution names the GPU image lists."""
    lines = IMAGE_PACKAGES.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def emulate_image(directory: Path) -> tuple[Path, list[str]]:
    """A virtual environment of this Python whose site-packages links to this environment's files of the image's
    distributions only; returns its interpreter and the image distributions this environment lacks."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    site = Path(
        subprocess.run(
            [str(directory / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    absent = []
    for name in image_distributions():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            absent.append(name)
            continue
        root = Path(dist.locate_file(""))
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}):
            link = site / top
            if (root / top).exists() and not link.exists():
                link.symlink_to(root / top)
    return directory / "bin" / "python", absent


def run(command: list[str], env: dict[str, str], out: Path | None = None) -> dict:
    """Runs ``command`` in the checkout; its exit status, seconds, output and (with ``out``) gpu_check.log."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    log = (out / "gpu_check.log").read_text() if out and (out / "gpu_check.log").exists() else ""
    return {
        "command": " ".join(command),
        "status": result.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "output": (result.stdout + result.stderr).strip(),
        "log": log.strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "gpu-dry-run", help="scratch folder")
    parser.add_argument("--report", type=Path, help="write a Markdown report here")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    wheels = work / "wheels"
    base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "VENV", "OUT")}
    stages = [("make the chunks", run(["bash", "bench/gpu_wheels.sh", "--out", str(wheels)], base), 0)]
    image_python, absent = emulate_image(work / "image")
    env = {**base, "PYTHON": str(image_python), "GPU_VENV": str(work / "venv")}
    sequence = [
        ("run 1: install chunk 1", ["install", str(wheels / "1")], 0),
        ("a check with chunk 1 only", [], 3),
        ("run 2: install chunk 2", ["install", str(wheels / "2")], 0),
        ("run 3: install chunk 3", ["install", str(wheels / "3")], 0),
        ("run 3: the check", [], 3),
    ]
    for number, (title, arguments, expected) in enumerate(sequence, 1):
        out = work / f"out-{number}"
        out.mkdir()
        stages.append((title, run(["bash", "bench/gpu_check.sh", *arguments], {**env, "OUT": str(out)}, out), expected))
    checks = {
        "every chunk fits one run": "DOES NOT FIT" not in stages[0][1]["output"],
        "chunk 1 alone: says chunk 2 is missing, TorchServe will not run, the rest runs up to the GPU": "lacks chunk 2"
        in stages[2][1]["log"]
        and "the TorchServe steps will not run" in stages[2][1]["log"]
        and "collect: ok" in stages[2][1]["log"],
        "the full check imports and collects, then stops at the GPU": "imports: ok" in stages[-1][1]["log"]
        and "collect: ok" in stages[-1][1]["log"]
        and "no CUDA device" in stages[-1][1]["log"],
    }
    passed = all(result["status"] == expected for _, result, expected in stages) and all(checks.values())
    text = report_text(stages, checks, absent, passed, argv)
    print(text)
    if args.report:
        args.report.write_text(text)
    return 0 if passed else 1


def report_text(stages: list, checks: dict, absent: list[str], passed: bool, argv: list[str] | None) -> str:
    sections = []
    for title, result, expected in stages:
        body = result["log"] or result["output"]
        sections.append(
            f"### {title}: exit status {result['status']} (expected {expected}), {result['seconds']:.0f} s\n\n"
            f"`{result['command']}`\n\n```\n{body}\n```\n"
        )
    verdicts = "\n".join(f"- {'yes' if ok else 'NO'}: {name}" for name, ok in checks.items())
    command = " ".join(argv if argv is not None else sys.argv[1:])
    return f"""# GPU check: the offline install, dry run on a CPU machine

Command: `python -m bench.gpu_dry_run {command}`
Machine: {machine()}, Python {platform.python_version()} (the GPU machines have 3.12.3: the chunks' wheels are
cp311-abi3 or py3-none-any, the same files for both)
Result: {"passed" if passed else "FAILED"}

The emulated image is a fresh virtual environment seeing only the distributions bench/gpu_image_packages.txt
lists, linked from this project's environment (their versions are this project's pins; the real image's
versions are not recorded, and the check writes them to its machine.txt). Image packages this environment does
not have (so absent from the emulation too, and the check passed without them): {", ".join(absent) or "none"}.
This machine has a system Java, so the check finds Java without chunk 3; chunk 3 is still installed and
importable (a GPU machine without Java gets its JDK from it).

{verdicts}

{chr(10).join(sections)}"""


if __name__ == "__main__":
    sys.exit(main())
