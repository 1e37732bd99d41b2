"""Model-level parity with each toolbox's OWN code, for all ten toolbox entries.

For every entry, the toolbox writes a randomised model in its native format with its own save function (MMAction2's
mmengine ``save_checkpoint``, ``paddle.save``, PySlowFast's ``save_checkpoint``, and for the PySlowFast R50 models
also a Caffe2 ``.pkl`` that PySlowFast's own Caffe2 loader reads back), reads that file back with its own loader and
runs a clip (tests/toolboxes/reference.py runs it in its reference environment; the session fixture
``toolbox_checkpoint`` of tests/conftest.py does both in one runner process and shares the files with
tests/test_toolbox_parity.py). This project loads the same file the way it serves it
(``handler.checkpoints.load_model``:
format recognition, conversion, strict load) and runs its network on the pathways ``handler.transforms.model_inputs``
packs with the entry's slow-frame rule. The outputs (MMAction2: logits; PaddleVideo, PySlowFast: probabilities) must
agree within 1e-5 of the largest score, with the same top class.

MMAction2 and PySlowFast are torch networks and are compared in float32 (they agree within about 1e-6). PaddleVideo
runs its own kernels (Paddle's oneDNN convolutions), whose float32 rounding differs from torch's; the random weights of
these networks amplify rounding, and the two float32 outputs differ by 1.5e-5 to 4e-5 (relative), above 1e-5 whatever
the conversion. What is tested is the conversion, not the kernels: PaddleVideo's model (every parameter and buffer
cast, batch norms included) and ours (converted by ``load_model``, then ``.double()``) both run in float64 on the same
float64 clip, and must agree within 1e-5 there too (they do within about 1e-11).

The toolbox's side is checked too: its loader found every tensor of its own file (MMAction2's and PaddleVideo's
loaders are not strict), its calibration left the natural clip's top-1 probability within [0.05, 0.9] with its top 5
more than 1e-3 apart and the three calibration clips' outputs different, and on the test clip its output is not
saturated and its top 5 are apart (a 1e-5 comparison of near-uniform or one-hot outputs would prove little).

Negative controls show the comparison can fail: MMAction2's classifier columns left fast-first, MMAction2's slow
pathway taken by linspace, PaddleVideo's (in, out) linear weight read as (out, in) memory, PySlowFast's slow
pathway taken by stride; each moves the output by far more than the tolerance.

The reference environments (.venv-ref/, built by ``scripts/install.sh --dev``, which ``make test`` runs) are part of
the test setup: when one is missing these tests fail with the message saying how to build it, they do not skip.
"""

from __future__ import annotations

import functools
import itertools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from handler.checkpoint_names import HEAD_WEIGHT, fast_width
from handler.checkpoints import load_model
from handler.models import TOOLBOX_MODELS, ModelSpec, get_spec
from handler.networks import build_model
from handler.recipes import SlowFrames
from handler.transforms import model_inputs, pack_pathways
from tests.conftest import ToolboxCheckpoints
from tests.videos import moving_frames

pytestmark = pytest.mark.slow  # make test-quick leaves this module out (CONTRIBUTING.md)

TOLERANCE = 1e-5
CONTROL_MARGIN = 100  # a control must move the output by at least this many tolerances
# PaddleVideo is compared in float64: its own float32 kernels round differently (see the docstring).
DTYPE = {"mmaction2": torch.float32, "paddlevideo": torch.float64, "pyslowfast": torch.float32}
CAFFE2 = ("pyslowfast_slowfast_8x8_r50", "pyslowfast_slowfast_4x16_r50")
CASES = [(spec.name, False) for spec in TOOLBOX_MODELS] + [(name, True) for name in CAFFE2]
# The tensors each toolbox saves for its R50 8x8 model (PaddleVideo and Caffe2 keep no num_batches_tracked).
SAVED_TENSORS = {
    ("mmaction2_slowfast_r50_8x8", False): 642,
    ("paddlevideo_slowfast_8x8", False): 552,
    ("pyslowfast_slowfast_8x8_r50", False): 662,
    ("pyslowfast_slowfast_8x8_r50", True): 552,
}


@dataclass(frozen=True)
class Reference:
    """One toolbox run: its native checkpoint, the clip both sides ran and the toolbox's output."""

    checkpoint: Path
    fast: torch.Tensor  # (1, 3, T, S, S) in the comparison's dtype, normalised as the entry's recipe does
    scores: torch.Tensor  # (1, 400) in that dtype: the toolbox's head output
    made: dict  # the toolbox's checkpoint command's report
    ran: dict  # its forward's report


def clip_for(spec: ModelSpec) -> torch.Tensor:
    """A realistic clip: textured, moving content at the entry's frame count and crop size, normalised as its
    recipe does (``(x / pixel_scale - mean) / std``). ``(1, 3, T, S, S)`` float32."""
    clip = spec.clip
    frames = torch.from_numpy(moving_frames(clip.num_frames, clip.crop_size, clip.crop_size)).float()
    frames = frames.permute(3, 0, 1, 2)[None] / clip.recipe.pixel_scale  # (1, 3, T, S, S)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1, 1)
    return ((frames - mean) / std).contiguous()


@pytest.fixture(scope="module")
def reference(toolbox_checkpoint: ToolboxCheckpoints) -> Callable[[str, bool], Reference]:
    """``reference(name, caffe2)``: the toolbox's checkpoint and its output on the entry's clip, in the entry's
    comparison dtype (cached; the session's toolbox checkpoint, written and run in one process)."""

    @functools.cache
    def run(name: str, caffe2: bool) -> Reference:
        spec = get_spec(name)
        fast = clip_for(spec).to(DTYPE[spec.checkpoint_layout])
        inputs = {"fast": fast.numpy(), "slow": model_inputs(fast, spec.clip)[0].numpy()}
        dtype = str(fast.dtype).removeprefix("torch.")
        scores, ran = toolbox_checkpoint.forward(name, inputs, caffe2=caffe2, dtype=dtype)
        made = toolbox_checkpoint.report(name, caffe2)
        return Reference(toolbox_checkpoint(name, caffe2), fast, torch.from_numpy(scores), made, ran)

    return run


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|."""
    return float((ours - theirs).abs().max() / theirs.abs().max())


@torch.inference_mode()
def forward(model: torch.nn.Module, pathways: list[torch.Tensor]) -> torch.Tensor:
    return model.to(pathways[0].dtype)(pathways)


def probabilities(spec: ModelSpec, scores: torch.Tensor) -> torch.Tensor:
    return scores.softmax(dim=1) if spec.output == "logits" else scores


@pytest.mark.parametrize(("name", "caffe2"), CASES)
def test_our_network_on_the_toolboxs_own_file_matches_the_toolbox(
    name: str, caffe2: bool, reference: Callable[[str, bool], Reference]
) -> None:
    spec = get_spec(name)
    run = reference(name, caffe2)
    model, weights = load_model(spec, run.checkpoint)  # the serving path: recognised, converted, strictly loaded
    assert weights.num_classes == 400
    assert weights.description.startswith(f"{run.checkpoint.name} sha256:")
    ours = forward(model, model_inputs(run.fast, spec.clip))
    assert ours.shape == run.scores.shape == (1, 400)
    assert ours.dtype == run.scores.dtype == DTYPE[spec.checkpoint_layout]
    difference = relative_difference(ours, run.scores)
    print(
        f"{name}{' (Caffe2)' if caffe2 else ''}: relative difference {difference:.1e} ({ours.dtype}); toolbox "
        f"{run.made['seconds']:.0f} s (calibration and save) + {run.ran['seconds']:.0f} s (load and forward)"
    )
    assert difference <= TOLERANCE
    assert int(ours.argmax()) == int(run.scores.argmax())


@pytest.mark.parametrize(("name", "caffe2"), CASES)
def test_the_toolbox_reads_its_own_file_and_its_outputs_are_informative(
    name: str, caffe2: bool, reference: Callable[[str, bool], Reference]
) -> None:
    """What makes the comparison above meaningful, on the toolbox's side."""
    spec = get_spec(name)
    run = reference(name, caffe2)
    assert run.checkpoint.stat().st_size > 100e6  # SlowFast R50 and larger, float32
    if (name, caffe2) in SAVED_TENSORS:
        assert run.made["keys"] == SAVED_TENSORS[(name, caffe2)]
    assert run.ran.get("missing_keys", []) == []  # MMAction2's and PaddleVideo's loaders are not strict
    assert run.ran.get("unexpected_keys", []) == []
    calibration = run.made["calibration"]
    natural = calibration["natural"]
    assert 0.05 < natural["top5"][0] < 0.9
    assert natural["min_top5_gap"] > 1e-3
    tops = [np.asarray(calibration[clip]["top5"]) for clip in ("natural", "texture", "synthetic")]
    assert all(np.abs(a - b).max() > 1e-3 for a, b in itertools.combinations(tops, 2))  # the clips told apart
    assert torch.isfinite(run.scores).all()
    if spec.output == "probabilities":  # the heads' eval output: softmax per position, averaged
        torch.testing.assert_close(run.scores.sum(1), torch.ones(1, dtype=run.scores.dtype), rtol=0, atol=1e-5)
    top5 = probabilities(spec, run.scores)[0].sort(descending=True).values[:5]
    assert top5[0] < 0.999  # not saturated
    assert top5[0] - top5[4] > 1e-3


@pytest.mark.parametrize("name", CAFFE2)
def test_the_caffe2_file_is_laid_out_as_a_caffe2_zoo_file(name: str, toolbox_checkpoint: ToolboxCheckpoints) -> None:
    """The runner loads its .pkl back with PySlowFast's own convert_from_caffe2 loader and compares every tensor;
    here: the file is a Caffe2-zoo pickle (protocol 2, ``{"blobs": ...}`` with training blobs loaders skip)."""
    pkl = toolbox_checkpoint(name, caffe2=True)
    made = toolbox_checkpoint.report(name, caffe2=True)
    assert made["keys"] == made["verified_tensors"] == 552  # 662 state-dict entries less 110 num_batches_tracked
    with pkl.open("rb") as f:
        assert f.read(2) == b"\x80\x02"  # pickle protocol 2
        f.seek(0)
        blobs = pickle.load(f, encoding="latin1")["blobs"]
    assert {"lr", "model_iter", "conv1_w_momentum", "pred_w", "t_res2_0_branch2a_bn_riv"} <= set(blobs)
    assert blobs["pred_w"].shape == (400, 2304)
    assert blobs["pred_w"].dtype == np.float32


def _head_columns_fast_first(weight: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    slow = weight.shape[1] - (fast_width(state) or 0)
    return torch.cat([weight[:, slow:], weight[:, :slow]], dim=1)  # MMAction2's order, as its file stores it


def _paddle_memory_as_out_in(weight: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    return weight.t().contiguous().reshape(weight.shape)  # the .pdparams' (in, out) array read as (out, in)


Edit = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@pytest.mark.parametrize(
    ("name", "head", "slow_frames"),
    [
        ("mmaction2_slowfast_r50_8x8", _head_columns_fast_first, None),
        ("mmaction2_slowfast_r50_8x8", None, "linspace"),
        ("paddlevideo_slowfast_8x8", _paddle_memory_as_out_in, None),
        ("pyslowfast_slowfast_8x8_r50", None, "stride"),
    ],
    ids=[
        "mmaction2-head-fast-first",
        "mmaction2-slow-linspace",
        "paddlevideo-linear-not-transposed",
        "pyslowfast-slow-stride",
    ],
)
def test_negative_control_moves_the_output_far_beyond_the_tolerance(
    name: str, head: Edit | None, slow_frames: SlowFrames | None, reference: Callable[[str, bool], Reference]
) -> None:
    """One conversion or slow-pathway rule of the entry done wrong: the comparison above would fail."""
    spec = get_spec(name)
    run = reference(name, False)
    model, weights = load_model(spec, run.checkpoint)
    if head is not None:
        state = dict(weights.state_dict)
        state[HEAD_WEIGHT] = head(state[HEAD_WEIGHT], state)
        model = build_model(spec)
        model.load_state_dict(state)
        model.eval()
    assert spec.clip.alpha is not None
    pathways = pack_pathways(run.fast, spec.clip.alpha, slow_frames or spec.clip.recipe.slow_frames)
    difference = relative_difference(forward(model, pathways), run.scores)
    print(f"{name} control: relative difference {difference:.1e}")
    assert difference > CONTROL_MARGIN * TOLERANCE
