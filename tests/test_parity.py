"""Parity with the PyTorchVideo hub tutorial: same frames, same model inputs, same probabilities.

The reference is the tutorial's code path (``EncodedVideo.from_path`` + ``get_clip`` + the hub transform
composition + the hub's checkpoint loading + ``nn.Softmax``), built in :mod:`tests.reference`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from handler.decode import decode_clip
from handler.models import get_spec
from handler.pipeline import VideoClassifier
from handler.request import VideoRequest
from handler.transforms import pack_pathways, uniform_temporal_indices
from tests import reference
from tests.videos import encode, moving_frames

pytestmark = pytest.mark.slow  # make test-quick leaves this module out (CONTRIBUTING.md)

TOLERANCE = 1e-5


@dataclass(frozen=True)
class Case:
    name: str
    fps: float | Fraction
    height: int
    width: int
    seconds: float
    start_sec: float = 0.0
    encoding: dict = field(default_factory=dict)

    def make(self) -> bytes:
        frames = moving_frames(round(self.seconds * float(self.fps)), self.height, self.width, seed=len(self.name))
        return encode(frames, fps=self.fps, **self.encoding)


MODEL_CASES = [
    Case("h264-30fps-landscape", 30, 240, 320, 3.0),
    Case("h264-25fps-portrait-start1", 25, 320, 240, 4.0, start_sec=1.0),
    Case("h264-60fps-odd-size-start0.5", 60, 211, 317, 3.0, start_sec=0.5, encoding={"pix_fmt": "yuv444p"}),
    Case("vp9-10fps-shorter-than-clip", 10, 180, 320, 1.2, encoding={"container": "webm", "codec": "libvpx-vp9"}),
    Case("h264-29.97fps-bframes-start2", Fraction(30000, 1001), 270, 480, 5.0, start_sec=2.0),
]

DECODE_CASES = [
    *MODEL_CASES,
    Case(
        "mpeg4-avi-24fps-start1.52", 24, 144, 176, 4.0, start_sec=1.52, encoding={"container": "avi", "codec": "mpeg4"}
    ),
    Case("h264-mkv-50fps-start1", 50, 120, 160, 3.0, start_sec=1.0, encoding={"container": "matroska"}),
    Case("h264-mov-30fps-frame-boundary", 30, 96, 128, 4.0, start_sec=1.0, encoding={"container": "mov"}),
    Case(
        "h264-long-gop-start3.3",
        30,
        96,
        128,
        6.0,
        start_sec=3.3,
        encoding={"options": {"g": "300", "keyint_min": "300", "sc_threshold": "0"}},
    ),
    Case(
        "vp9-webm-15fps-start0.7",
        15,
        90,
        160,
        4.0,
        start_sec=0.7,
        encoding={"container": "webm", "codec": "libvpx-vp9"},
    ),
]


@pytest.fixture(scope="module")
def video_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case written to disk (only the reference needs a path; the pipeline reads bytes)."""
    directory = tmp_path_factory.mktemp("parity-videos")
    files = {}
    for case in DECODE_CASES:
        files[case.name] = directory / f"{case.name}.bin"
        files[case.name].write_bytes(case.make())
    return files


@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("model_name", ["slowfast_r50", "slow_r50"])
def test_decoded_frames_equal_get_clip(case: Case, model_name: str, video_files: dict[str, Path]) -> None:
    spec = get_spec(model_name)
    path = video_files[case.name]
    ours = decode_clip(
        path.read_bytes(),
        start_sec=case.start_sec,
        end_sec=case.start_sec + spec.clip.duration_sec,
        num_samples=spec.clip.num_frames,
    )
    theirs = reference.tutorial_clip(path, spec, case.start_sec)  # (C, T, H, W) float in [0, 255]
    assert theirs is not None
    assert ours.source_frames == theirs.shape[1]
    kept = theirs.index_select(1, uniform_temporal_indices(theirs.shape[1], spec.clip.num_frames))
    assert torch.equal(ours.stacked(), kept.permute(1, 2, 3, 0).to(torch.uint8))


def _inputs_of(clf: VideoClassifier, tensor: torch.Tensor) -> list[torch.Tensor]:
    batch = tensor[None]
    alpha = clf.spec.clip.alpha
    return [batch] if alpha is None else pack_pathways(batch, alpha)


def _hub_model(name: str, checkpoint: Path) -> torch.nn.Module:
    """The model as ``torch.hub.load(..., pretrained=True)`` builds it, but from a local checkpoint."""
    import pytorchvideo.models.hub as hub

    model = getattr(hub, name)(pretrained=False)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu")["model_state"])
    return model.eval()


# The first three run every case; the other hub models two (a landscape clip at 0 s, a portrait one at 1 s),
# which is enough for their own clip specs and keeps the suite short.
PARITY = [(name, MODEL_CASES) for name in ("slowfast_r50", "slowfast_r101", "slow_r50")]
PARITY += [
    (name, MODEL_CASES[:2])
    for name in (
        "slowfast_16x8_r101_50_50",
        "c2d_r50",
        "i3d_r50",
        "csn_r101",
        "r2plus1d_r50",
        "x3d_xs",
        "x3d_s",
        "x3d_m",
        "x3d_l",
        "mvit_base_16x4",
        "mvit_base_32x3",
    )
]


@pytest.mark.parametrize(("model_name", "cases"), PARITY, ids=[name for name, _ in PARITY])
def test_inputs_and_probabilities_equal_tutorial(
    model_name: str,
    cases: list[Case],
    video_files: dict[str, Path],
    classifier: Callable[[str], VideoClassifier],
    random_checkpoint: Callable[[str], Path],
) -> None:
    clf = classifier(model_name)
    num_classes = len(clf.labels)
    hub_model = _hub_model(model_name, random_checkpoint(model_name))
    requests = [VideoRequest(video_files[c.name].read_bytes(), num_classes, c.start_sec) for c in cases]

    references = []
    for case, request in zip(cases, requests, strict=True):
        expected_inputs = reference.tutorial_inputs(video_files[case.name], clf.spec, case.start_sec)
        ours = _inputs_of(clf, clf.prepare(request).clips[0])
        assert len(ours) == len(expected_inputs)
        for mine, theirs in zip(ours, expected_inputs, strict=True):
            assert mine.shape == theirs.shape
            torch.testing.assert_close(mine, theirs, atol=TOLERANCE, rtol=0, msg=f"{case.name}: model inputs differ")
        # X3D's and R(2+1)D's heads already end in a softmax: the model's output is the answer.
        as_probabilities = clf.spec.output == "probabilities"
        references.append(reference.tutorial_probabilities(hub_model, expected_inputs, as_probabilities)[0])

    responses = clf.classify(requests)  # every clip in one batched forward
    for case, response, expected in zip(cases, responses, references, strict=True):
        assert isinstance(response, dict), response
        assert response["batch_size"] == len(cases)
        got = torch.zeros(num_classes)
        for p in response["predictions"]:
            got[p["class_id"]] = p["score"]
        torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=0, msg=f"{case.name}: probabilities differ")
        assert [p["class_id"] for p in response["predictions"][:5]] == expected.topk(5).indices.tolist()
        assert expected.max() > 5 / num_classes, "the sharpened random head should not be near-uniform"
