"""TorchScript and AOTInductor exports: built and checked by the real scripts, loaded by the pipeline, served by
a real TorchServe with the same answers as the eager network."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from handler.export import ExportedModel, load_exported
from handler.labels import label_set
from handler.models import get_spec
from handler.pipeline import InferenceOptions, VideoClassifier
from handler.request import VideoRequest
from slowfast_serve.server import export as export_model
from slowfast_serve.server.archive import BuildRecord, build_archive
from slowfast_serve.server.export import TOLERANCE, export_checkpoint
from slowfast_serve.server.torchserve import TorchServe
from slowfast_serve.training.motion_data import make_video
from tests import REPO
from tests.serving import post_video, running_torchserve

pytestmark = pytest.mark.slow  # make test-quick leaves this module out (CONTRIBUTING.md)

SPEC = get_spec("motion_demo")
CHECKPOINT = REPO / SPEC.bundled_checkpoint
LABELS = label_set(SPEC.labels)
CPU = torch.device("cpu")
QUIET = {"warmup": False, "decode_workers": 1}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both exports of the trained motion_demo network, built (and checked) by slowfast-serve export."""
    directory = tmp_path_factory.mktemp("exports")
    paths = {}
    for fmt, suffix in (("torchscript", ".ts.pt"), ("aoti", ".pt2")):
        options = InferenceOptions(export=fmt, max_clips_per_forward=4)
        report = export_checkpoint(SPEC, CHECKPOINT, LABELS, options, CPU, directory / f"motion_demo{suffix}")
        assert report.batches == [1, 2, 3, 4]
        assert report.max_rel_diff <= 1e-5, report.summary()
        assert report.top1_agreement == 1.0
        paths[fmt] = Path(report.path)
    return paths


def _loaded(fmt: str, path: Path, **options: object) -> VideoClassifier:
    settings = InferenceOptions(export=fmt, max_clips_per_forward=4, **{**QUIET, **options})
    return VideoClassifier.load(SPEC, path, LABELS, CPU, options=settings)


@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_an_export_answers_like_the_eager_network(exports: dict[str, Path], fmt: str) -> None:
    eager = VideoClassifier.load(SPEC, CHECKPOINT, LABELS, CPU, options=InferenceOptions(**QUIET))
    exported = _loaded(fmt, exports[fmt])
    assert isinstance(exported.model, ExportedModel)
    assert exported.weights == eager.weights  # the checkpoint's name and hash travel in the export's metadata
    requests = [
        VideoRequest(video=make_video(motion, 77, 0)[0], top_k=5, start_sec=0.0, views=(2, 1))
        for motion in ("growing", "moving up")
    ]
    mine, theirs = exported.classify(requests), eager.classify(requests)
    for ours, reference in zip(mine, theirs, strict=True):
        assert [p["label"] for p in ours["predictions"]] == [p["label"] for p in reference["predictions"]]
        for a, b in zip(ours["predictions"], reference["predictions"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    assert [r["predictions"][0]["label"] for r in mine] == ["growing", "moving up"]


def test_a_torchscript_export_runs_under_autocast(exports: dict[str, Path]) -> None:
    clips = export_model.example_clips(SPEC, 2)
    fp32 = _loaded("torchscript", exports["torchscript"]).scores(clips)
    bf16 = _loaded("torchscript", exports["torchscript"], precision="bf16").scores(clips)
    assert not torch.equal(fp32, bf16)  # autocast reached the traced convolutions
    assert torch.allclose(fp32, bf16, atol=0.5)


def test_an_aoti_export_is_compiled_contiguous_and_bounded(exports: dict[str, Path]) -> None:
    classifier = _loaded("aoti", exports["aoti"])  # channels_last=true (the default) does not apply to aoti
    assert classifier.model.metadata.channels_last is False
    with pytest.raises(ValueError, match="at most 4"):
        classifier.scores(export_model.example_clips(SPEC, 5))


def test_an_export_refuses_what_it_was_not_built_for(exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="holds a torchscript export of motion_demo"):
        load_exported(exports["torchscript"], "torchscript", CPU, get_spec("x3d_xs"))
    with pytest.raises(ValueError, match="fold_batchnorm: settings False, export True"):
        _loaded("torchscript", exports["torchscript"], fold_batchnorm=False)
    with pytest.raises(ValueError, match="max_clips_per_forward: settings 8, export 4"):
        VideoClassifier.load(SPEC, exports["aoti"], LABELS, CPU, options=InferenceOptions(export="aoti", **QUIET))
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        load_exported(CHECKPOINT, "torchscript", CPU, SPEC)
    with pytest.raises(ValueError, match="not an AOTInductor package"):
        load_exported(exports["torchscript"], "aoti", CPU, SPEC)
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    with pytest.raises(ValueError, match=r"compiled with torch 2\.11.*this is 2\.99\.0.*Rebuild"):
        load_exported(exports["aoti"], "aoti", CPU, SPEC)


def test_the_export_check_fails_an_export_that_disagrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_export = export_model.export_network

    def export_a_changed_network(network: torch.nn.Module, *args: object) -> Path:
        changed = copy.deepcopy(network)  # the eager reference stays as it was: the check must see the change
        with torch.no_grad():
            next(changed.parameters()).mul_(-1)
        return real_export(changed, *args)

    monkeypatch.setattr(export_model, "export_network", export_a_changed_network)
    options = InferenceOptions(export="torchscript", max_clips_per_forward=2)
    with pytest.raises(ValueError, match=f"disagrees with the eager network.*relative difference {TOLERANCE:g}"):
        export_checkpoint(SPEC, CHECKPOINT, LABELS, options, CPU, tmp_path / "changed.ts.pt")


def test_export_options_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="compile applies to the eager network"):
        InferenceOptions(export="torchscript", compile=True)
    with pytest.raises(ValueError, match="export=aoti runs in fp32"):
        InferenceOptions(export="aoti", precision="bf16")
    with pytest.raises(ValueError, match="export must be one of auto, eager, torchscript, aoti"):
        InferenceOptions(export="onnx")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def export_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """One real TorchServe serving motion_demo three ways: eager, torchscript and aoti archives."""
    store = tmp_path_factory.mktemp("export-store")
    mars = [
        build_archive(
            "motion_demo", CHECKPOINT, name=f"demo_{fmt}", model_store=store, inference=InferenceOptions(export=fmt)
        )
        for fmt in ("eager", "torchscript", "aoti")
    ]
    with running_torchserve(mars, tmp_path_factory.mktemp("ts")) as instance:
        yield instance


@pytest.mark.integration
def test_exported_archives_serve_the_same_answers(export_server: TorchServe) -> None:
    store = export_server.model_store
    for fmt, suffix in (("torchscript", ".ts.pt"), ("aoti", ".pt2")):
        record = BuildRecord.load(f"demo_{fmt}", store)
        assert record is not None
        assert record.inference["export"] == fmt
        assert record.export["path"] == f"demo_{fmt}{suffix}"
        assert record.export["max_rel_diff"] <= 1e-5
    videos = [make_video(motion, 99, 1)[0] for motion in ("shrinking", "rotating clockwise", "moving down")]
    for video in videos:
        answers = {}
        for fmt in ("eager", "torchscript", "aoti"):
            response = post_video(export_server, f"demo_{fmt}", files={"data": ("v", video)}, data={"views": "2x1"})
            assert response.status_code == 200, response.text
            answers[fmt] = response.json()
        for fmt in ("torchscript", "aoti"):
            assert answers[fmt]["weights"] == answers["eager"]["weights"]
            ours = [(p["label"], p["score"]) for p in answers[fmt]["predictions"]]
            eager = [(p["label"], p["score"]) for p in answers["eager"]["predictions"]]
            assert [label for label, _ in ours] == [label for label, _ in eager]
            assert [p for _, p in ours] == pytest.approx([p for _, p in eager], abs=1e-4)
    bad = post_video(export_server, "demo_aoti", data=b"not a video", headers={"Content-Type": "video/mp4"})
    assert bad.status_code == 400
    assert bad.json()["type"] == "InvalidVideo"


def test_the_archive_config_names_the_export(export_server: TorchServe) -> None:
    import zipfile

    import yaml

    with zipfile.ZipFile(export_server.model_store / "demo_aoti.mar") as archive:
        config = yaml.safe_load(archive.read("model-config.yaml"))
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    assert config["handler"]["inference"]["export"] == "aoti"
    assert manifest["model"]["serializedFile"] == "demo_aoti.pt2"
    assert dataclasses.asdict(InferenceOptions(export="aoti")) == config["handler"]["inference"]
