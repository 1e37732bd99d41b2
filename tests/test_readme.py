"""The README and docs tell the truth about the registry, the options, the errors, the limits and the test command."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from handler.decode_limits import DecodeLimits
from handler.detection import DETECTION_MODELS
from handler.models import REGISTRY, TOOLBOX_MODELS, ModelSpec
from handler.persons import DETECTORS
from handler.pipeline import InferenceOptions
from handler.request import DEFAULT_TOP_K, DETECTION_OPTIONS, OPTIONS
from slowfast_serve.cli import COMMANDS
from tests import REPO

README = (REPO / "README.md").read_text()
API = (REPO / "docs" / "api.md").read_text()
MODELS = (REPO / "docs" / "models.md").read_text()
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()
MODELS_BENCH = json.loads((REPO / "docs" / "bench-models.json").read_text())  # make bench-models


def _table(doc: str, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the Markdown table in ``doc`` whose header row starts with ``header``."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def _cpu(name: str) -> str:
    """The models tables' CPU cell: the default CPU engine and its measured forward time (ms)."""
    return f"{MODELS_BENCH['engine'][name]} {MODELS_BENCH['forward_ms'][name]:.0f}"


def _model_row(spec: ModelSpec) -> str:
    clip = spec.clip
    slow = "–" if clip.alpha is None else str(clip.num_frames // clip.alpha)
    accuracy = "–" if spec.accuracy is None else f"{spec.accuracy.top1:.2f} / {spec.accuracy.top5:.2f}"
    gflops = "–" if spec.gflops is None else f"{spec.gflops:g}"
    params = "–" if spec.params_m is None else f"{spec.params_m:g}"
    checkpoint = f"`{spec.checkpoint_filename}`" if spec.checkpoint_url else f"`{spec.bundled_checkpoint}` (bundled)"
    return (
        f"| `{spec.name}` | {clip.num_frames} × {clip.sampling_rate} | {slow} / {clip.num_frames} "
        f"| {clip.duration_sec:.3f} s | {clip.side_size} / {clip.crop_size} | {accuracy} | {gflops} | {params} "
        f"| {_cpu(spec.name)} | {checkpoint} |"
    )


def _toolbox_row(spec: ModelSpec) -> str:
    """A row of the table of other toolboxes' checkpoints (their accuracy protocol is said below the table)."""
    clip = spec.clip
    return (
        f"| `{spec.name}` | {clip.recipe.title} | {clip.num_frames} × {clip.sampling_rate} "
        f"| {clip.num_frames // clip.alpha} / {clip.num_frames} | {clip.side_size} / {clip.crop_size} "
        f"| {spec.accuracy.top1:.2f} / {spec.accuracy.top5:.2f} | {_cpu(spec.name)} "
        f"| `{spec.checkpoint_filename}` |"
    )


TOOLBOX_NAMES = {spec.name for spec in TOOLBOX_MODELS}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_models_tables_match_the_registry(name: str) -> None:
    spec = REGISTRY[name]
    assert (_toolbox_row(spec) if name in TOOLBOX_NAMES else _model_row(spec)) in MODELS


def test_models_tables_list_nothing_else() -> None:
    hub = re.findall(r"^\| `(\w+)` \| \d+ × \d+ \|", MODELS, flags=re.MULTILINE)
    toolbox = re.findall(r"^\| `(\w+)` \| (?:MMAction2|PaddleVideo|PySlowFast) \|", MODELS, flags=re.MULTILINE)
    assert sorted(hub) == sorted(set(REGISTRY) - TOOLBOX_NAMES)
    assert sorted(toolbox) == sorted(TOOLBOX_NAMES)


def test_demo_model_figures_match_its_training_record() -> None:
    record = json.loads((REPO / "models" / "motion_demo" / "training.json").read_text())
    claim = f"took {record['minutes']:.1f} minutes and reached {100 * record['best_val_accuracy']:.1f}% validation"
    assert claim in " ".join(MODELS.split())


def test_demo_accuracy_table_matches_its_report_on_the_committed_weights() -> None:
    report = json.loads((REPO / "docs" / "demo-accuracy.json").read_text())
    checkpoint = REPO / "models" / "motion_demo" / "motion_demo.pyth"
    assert report["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    own, drawn = report["sets"]["own"], report["sets"]["drawn"]
    for name in own["per_class"]:
        mine, theirs = own["per_class"][name], drawn["per_class"][name]
        row = f"| {name} | {mine['correct']}/{mine['clips']} | {theirs['correct']}/{theirs['clips']} |"
        assert row in MODELS, row
    for figures in (own, drawn):
        assert f"{figures['correct']}/{figures['clips']} ({100 * figures['top1']:.1f}%)" in MODELS


def test_options_table_matches_the_parser() -> None:
    rows = _table(API, "| option | multipart field |")
    assert [(row[1], row[2]) for row in rows] == [(f"`{o.name}`", f"`{o.header}`") for o in OPTIONS]
    assert rows[0][1:4] == ["`top_k`", "`X-Top-K`", str(DEFAULT_TOP_K)]


def test_error_table_lists_every_error_the_handler_raises() -> None:
    code = "".join(path.read_text() for path in (REPO / "handler").glob("*.py"))
    raised = set(re.findall(r'(?:bad_request|RequestError)\(\s*(?:\d+,\s*)?"(\w+)"', code))
    table = set(re.findall(r"^\| \d{3} \| (.*?) \|", API, flags=re.MULTILINE))
    documented = set(re.findall(r"`(\w+)`", " ".join(table)))
    # TorchServe's own, and those of a KServe deployment's gateway (slowfast_serve/web/gateway.py).
    gateway = (REPO / "slowfast_serve" / "web" / "gateway.py").read_text()
    not_handlers = {"InvalidKeyException", *re.findall(r'error\(\s*\d+,\s*"(\w+)"', gateway)}
    assert raised
    assert "Unauthorized" in not_handlers
    assert documented - not_handlers == raised


def test_limits_table_matches_the_defaults() -> None:
    rows = _table(CONFIGURATION, "| limit | default |")
    assert [(row[0], row[1]) for row in rows] == [
        (f"`{limit.name}`", str(getattr(DecodeLimits(), limit.name))) for limit in fields(DecodeLimits)
    ]


def test_performance_doc_lists_every_inference_option_with_its_default() -> None:
    rows = _table((REPO / "docs" / "performance.md").read_text(), "| option | default | what |")
    assert [(row[0], row[1]) for row in rows] == [
        (f"`{option.name}`", str(getattr(InferenceOptions(), option.name))) for option in fields(InferenceOptions)
    ]


def test_ci_runs_the_readme_test_command() -> None:
    tests_section = README.split("\n## ")[[s.split("\n")[0] for s in README.split("\n## ")].index("Tests")]
    commands = [line.split("#")[0].strip() for line in tests_section.split("```bash\n")[1].split("```")[0].splitlines()]
    assert commands[0] == "make test"
    assert (REPO / ".ci" / "run").read_text().strip().splitlines()[-1] == commands[0]


def test_observability_doc_and_dashboard_name_the_handlers_metrics() -> None:
    code = (REPO / "handler" / "ts_handler.py").read_text()
    emitted = set(re.findall(r'"(video_\w+)"', code)) | {
        f"video_{stage}_seconds" for stage in ("decode", "preprocess")
    }  # the per-stage names are built in a loop
    doc = (REPO / "docs" / "observability.md").read_text()
    assert emitted
    for name in emitted:
        assert f"| `{name}` |" in doc, name
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = {
        m.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        for m in re.findall(r"\b(video_\w+)", expressions)
    }
    assert used == emitted
    assert set(re.findall(r"\b(ts_\w+)", expressions)) <= {
        "ts_inference_requests_total",
        "ts_queue_latency_microseconds",
    }


def test_command_line_table_lists_every_subcommand() -> None:
    section = README.split("**The command line.**")[1].split("\n\n")[1]
    listed = set(re.findall(r"`([a-z-]+)`", "\n".join(row.split("|")[1] for row in section.splitlines()[2:])))
    assert listed == set(COMMANDS)


def test_detection_doc_lists_every_detection_option() -> None:
    doc = (REPO / "docs" / "detection.md").read_text()
    rows = _table(doc, "| option | multipart field |")
    assert sorted((row[1], row[2]) for row in rows) == sorted(
        (f"`{o.name}`", f"`{o.header}`") for o in DETECTION_OPTIONS
    )
    for name, threshold in DETECTORS.items():
        assert f"`{name}`" in doc
        assert str(threshold) in doc
    for spec in DETECTION_MODELS.values():
        assert f"| `{spec.name}` |" in doc
        assert f"| {spec.map_percent} | {spec.params_m} | `{spec.checkpoint_filename}` |" in doc


def test_readme_is_a_short_page() -> None:
    assert len(README.splitlines()) <= 200


DOCUMENTS = [REPO / "README.md", REPO / "SECURITY.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link of the README, SECURITY.md, CONTRIBUTING.md and docs/ names a file that exists, and a
    heading in it."""
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text()), f"{doc.name}: {target}"
