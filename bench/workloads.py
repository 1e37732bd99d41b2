"""Benchmark workloads: 10 s H.264 clips at 30 fps made with Debian's ffmpeg (``testsrc2``: moving, detailed,
coloured content), at 720p (the default), 1080p and 256p (small frames: the model dominates); and the
benchmarks' report output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from slowfast_serve.load.videos import moving_texture_video

WORKLOADS = {"720p": (1280, 720), "1080p": (1920, 1080), "256p": (456, 256)}


def describe(name: str) -> str:
    """The workload as the reports name it."""
    return f"{name} H.264 30 fps, 10 s"


def make_workload(directory: Path, name: str, seconds: float = 10.0, *, require_ffmpeg: bool = True) -> Path:
    """A ``seconds``-long H.264 mp4 at 30 fps of ffmpeg's ``testsrc2`` pattern, in the ``name`` resolution.

    Without ffmpeg: exits saying so, or with ``require_ffmpeg=False`` (the GPU check, on machines without it)
    writes a moving pattern of the same size and rate with PyAV's libx264 instead (not the same content: its
    reports say which).
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None and not require_ffmpeg:
        return _pyav_workload(directory, name, seconds)
    if ffmpeg is None:
        sys.exit("the benchmarks need ffmpeg (apt-get install ffmpeg; scripts/install.sh --dev installs it)")
    width, height = WORKLOADS[name]
    path = directory / f"{name}.mp4"
    source = f"testsrc2=size={width}x{height}:rate=30:duration={seconds}"
    command = [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", source, "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    subprocess.run([*command, str(path)], check=True)
    return path


def _pyav_workload(directory: Path, name: str, seconds: float) -> Path:
    width, height = WORKLOADS[name]
    return moving_texture_video(directory / f"{name}-pyav.mp4", width, height, seconds)


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), where ``platform.processor()`` is usually empty."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def machine() -> str:
    """The machine as the reports name it: architecture, CPU, cores this process may use, torch threads, and
    the GPU when there is one."""
    import platform

    import torch

    from handler.pipeline import cpu_count

    text = f"{platform.machine()}, {_cpu_model() or platform.processor() or 'cpu'}, {cpu_count()} cores, "
    text += f"{torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def publish(report: dict, text: str, path: Path | None) -> None:
    """Prints the Markdown ``text``; with ``path``, writes it there and ``report`` as JSON beside it."""
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
