"""Registry entries and checkpoint loading in the official format."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from handler.checkpoints import load_checkpoint, load_model, save_random_checkpoint
from handler.models import MODEL_ZOO, RANDOM_INIT, REGISTRY, ClipSpec, get_spec
from handler.networks import build_model, fold_batch_norms
from handler.transforms import model_inputs

EXPECTED = {
    # name: (checkpoint file, frames, sampling rate, alpha, top-1)
    "slowfast_r50": ("SLOWFAST_8x8_R50.pyth", 32, 2, 4, 76.94),
    "slowfast_r101": ("SLOWFAST_8x8_R101.pyth", 32, 2, 4, 77.90),
    "slow_r50": ("SLOW_8x8_R50.pyth", 8, 8, None, 74.58),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registry_entry(name: str) -> None:
    spec = get_spec(name)
    filename, frames, rate, alpha, top1 = EXPECTED[name]
    assert spec.checkpoint_url == f"{MODEL_ZOO}/kinetics/{filename}"
    assert spec.checkpoint_filename == filename
    assert (spec.clip.num_frames, spec.clip.sampling_rate, spec.clip.alpha) == (frames, rate, alpha)
    assert (spec.clip.side_size, spec.clip.crop_size) == (256, 256)
    assert spec.clip.duration_sec == pytest.approx(64 / 30)
    assert (spec.labels, spec.num_classes, spec.output) == ("kinetics400", 400, "logits")
    assert spec.accuracy is not None
    assert spec.accuracy.top1 == top1
    assert spec.clip.pathways == (1 if alpha is None else 2)


def test_registry_holds_at_least_the_slowfast_family() -> None:
    assert set(EXPECTED) <= set(REGISTRY)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="slowfast_r50"):
        get_spec("slowfast_r18")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"side_size": 224, "crop_size": 256}, "crop_size"), ({"alpha": 0}, "alpha"), ({"alpha": 64}, "alpha")],
)
def test_clip_spec_validation(kwargs: dict, message: str) -> None:
    base = {"num_frames": 32, "sampling_rate": 2, "side_size": 256, "crop_size": 256}
    with pytest.raises(ValueError, match=message):
        ClipSpec(**{**base, **kwargs})


@pytest.fixture(scope="module")
def slowfast_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_checkpoint(get_spec("slowfast_r50"), tmp_path_factory.mktemp("ckpt") / "random.pyth")


def test_random_checkpoint_is_official_format_and_marked(slowfast_checkpoint: Path) -> None:
    checkpoint = torch.load(slowfast_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["random_init"] is True
    state = checkpoint["model_state"]
    # The key layout of the official PyTorchVideo SlowFast checkpoints.
    assert state["blocks.6.proj.weight"].shape == (400, 2304)
    assert "blocks.0.multipathway_blocks.1.conv.weight" in state
    assert "blocks.1.multipathway_fusion.conv_fast_to_slow.weight" in state
    model, weights = load_model(get_spec("slowfast_r50"), slowfast_checkpoint)
    assert weights.description == RANDOM_INIT
    assert weights.num_classes == 400
    assert not model.training


def test_official_checkpoint_is_described_by_name_and_hash(slowfast_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(slowfast_checkpoint, map_location="cpu", weights_only=True)["model_state"]
    path = tmp_path / "SLOWFAST_8x8_R50.pyth"
    torch.save({"model_state": state, "epoch": 196, "cfg": "TRAIN:\n  ENABLE: false\n"}, path)
    _, weights = load_model(get_spec("slowfast_r50"), path)
    assert weights.description == f"SLOWFAST_8x8_R50.pyth sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def test_bare_state_dict_loads(slowfast_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(slowfast_checkpoint, map_location="cpu", weights_only=True)["model_state"]
    torch.save(state, tmp_path / "bare.pth")
    assert load_checkpoint(tmp_path / "bare.pth").num_classes == 400


def test_checkpoint_of_another_architecture_is_refused(slowfast_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="does not fit the slow_r50 architecture"):
        load_model(get_spec("slow_r50"), slowfast_checkpoint)


def test_custom_class_count_loads_with_its_own_head(tmp_path: Path) -> None:
    path = save_random_checkpoint(get_spec("slow_r50"), tmp_path / "eight.pyth", num_classes=8)
    model, weights = load_model(get_spec("slow_r50"), path)
    assert weights.num_classes == 8
    assert model.blocks[-1].proj.out_features == 8


class NotWeights:
    """An arbitrary object: pickling it into a checkpoint must not make the loader run code."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pyth"
    torch.save({"model_state": {}, "extra": NotWeights()}, path)
    with pytest.raises(ValueError, match="not a loadable PyTorch checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", bytes(range(256))])
def test_garbage_is_not_a_checkpoint(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "x.pyth").write_bytes(content)
    with pytest.raises(ValueError, match="not a loadable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "x.pyth")


def test_checkpoint_without_weights_is_refused(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "optimizer_state": {}}, tmp_path / "x.pyth")
    with pytest.raises(ValueError, match="no 'model_state'"):
        load_checkpoint(tmp_path / "x.pyth")


def test_build_model_is_in_eval_mode_with_the_requested_head() -> None:
    model = build_model(get_spec("slow_r50"), num_classes=5)
    assert not model.training
    assert model.blocks[-1].proj.out_features == 5


# Families whose every batch norm follows a plain convolution; X3D and R(2+1)D keep the norms inside their
# (2+1)D convolutions, MViT has layer norms only.
FULLY_FOLDED = {"slowfast_r50", "slowfast_r101", "slowfast_16x8_r101_50_50", "slow_r50", "c2d_r50", "i3d_r50"}
FULLY_FOLDED |= {"csn_r101", "motion_demo"}


def _norms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_batch_norms_fold_into_the_convolution_before_them(name: str) -> None:
    model = build_model(get_spec(name))
    norms = _norms(model)
    folded = fold_batch_norms(model)
    assert folded + _norms(model) == norms
    if name in FULLY_FOLDED:
        assert folded == norms > 0


@pytest.mark.parametrize("name", ["motion_demo", "x3d_xs"])
def test_folding_keeps_the_function(name: str) -> None:
    spec = get_spec(name)
    torch.manual_seed(0)
    model = build_model(spec)
    for module in model.modules():  # statistics far from the identity, so folding changes every weight
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.3, 3.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    clips = torch.randn(2, 3, spec.clip.num_frames, spec.clip.crop_size, spec.clip.crop_size)
    with torch.inference_mode():
        expected = model(model_inputs(clips, spec.clip))
        fold_batch_norms(model)
        folded = model(model_inputs(clips, spec.clip))
    assert (folded - expected).abs().max() <= 1e-4 * expected.abs().max()
