"""slowfast-serve timeline against the demo server: the intervals, the PNG plot and the annotated video."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from slowfast_serve.server.torchserve import TorchServe
from tests.serving import CLI
from tests.test_pipeline import _there_and_back

pytestmark = pytest.mark.integration


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_timeline_plot_and_annotated_video(demo_server: TorchServe, tmp_path: Path) -> None:
    source, plot, labelled = tmp_path / "there-and-back.mp4", tmp_path / "plot.png", tmp_path / "labelled.mp4"
    data, duration = _there_and_back()
    source.write_bytes(data)
    command = [CLI, "timeline", str(source), "--model", "motion_demo"]
    command += ["--url", demo_server.inference_url, "--key-file", str(demo_server.key_file), "--stride-sec", "1"]
    result = subprocess.run(
        [*command, "--plot", str(plot), "--annotate", str(labelled)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "moving left" in result.stdout
    assert "moving right" in result.stdout

    image = np.asarray(Image.open(plot).convert("RGB"))
    assert image.shape[1] == 1000  # 10 in at 100 dpi
    assert ((np.abs(image.astype(int) - (31, 119, 180)).sum(axis=-1)) < 30).sum() > 500  # a bar in tab10 blue

    original, annotated = _frames(source), _frames(labelled)
    assert len(annotated) == len(original)
    band = max(14, original[0].shape[0] // 12)
    early, late = annotated[len(annotated) // 10], annotated[-len(annotated) // 10]
    for frame in (early, late):
        top = frame[:band]
        assert (top.mean(axis=-1) < 60).mean() > 0.6  # the black band
        assert (top.mean(axis=-1) > 180).sum() > 20  # with white text on it
    assert np.abs(early[:band].astype(int) - late[:band].astype(int)).mean() > 5  # another label later on
    below = slice(band + 4, None)
    similar = np.abs(annotated[0][below].astype(int) - original[0][: annotated[0].shape[0]][below].astype(int))
    assert similar.mean() < 8  # the picture itself is kept (re-encoded)
