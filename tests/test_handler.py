"""The TorchServe adapter, in process, against an extracted archive and a stand-in for TorchServe's Context."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from handler.pipeline import select_device
from handler.ts_handler import SlowFastHandler
from tests.videos import encode, moving_frames

pytestmark = pytest.mark.slow  # make test-quick leaves this module out (CONTRIBUTING.md)


class RecordedMetrics:
    """Stands in for ``context.metrics``: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []

    def add_counter(self, name: str, value: float, idx: str | None = None, dimensions: list | None = None) -> None:
        self.calls.append(("counter", name, value, {d.name: d.value for d in dimensions or []}))

    def add_metric(self, name: str, value: float, unit: str, idx=None, dimensions=None, metric_type=None) -> None:
        self.calls.append((metric_type.value, name, value, {d.name: d.value for d in dimensions or []}))


class MockContext:
    """The parts of ``ts.context.Context`` the handler uses, recording what it sets per request."""

    def __init__(self, model_dir: Path, headers: list[dict[str, str]] | None = None) -> None:
        self.manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
        self.model_yaml_config = yaml.safe_load((model_dir / "model-config.yaml").read_text())
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 4}
        self.headers = headers or []
        self.request_ids = {i: f"request-{i}" for i in range(len(self.headers))}
        self.statuses: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}
        self.response_headers: dict[int, dict[str, str]] = {}
        self.metrics = RecordedMetrics()

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.headers[idx]

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers.setdefault(idx, {})[key] = value


@pytest.fixture(scope="module")
def model_dir(archive: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slow_r50 test archive, extracted as TorchServe extracts it."""
    directory = tmp_path_factory.mktemp("model_dir")
    with zipfile.ZipFile(archive("slow_r50")) as mar:
        mar.extractall(directory)
    return directory


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> SlowFastHandler:
    instance = SlowFastHandler()
    instance.initialize(MockContext(model_dir))
    return instance


def test_batch_with_bad_requests_answers_each_in_order(handler: SlowFastHandler, model_dir: Path) -> None:
    video = encode(moving_frames(75, 120, 160), fps=25)
    batch: list[dict[str, Any]] = [
        {"data": bytearray(video)},
        {"body": bytearray(b"definitely not a video")},
        {"body": bytearray(video)},
        {"data": bytearray(video), "top_k": bytearray(b"0")},
        {"data": bytearray(video), "start_sec": bytearray(b"1.0"), "top_k": bytearray(b"3")},
    ]
    http = {"url_path": "", "Host": "127.0.0.1:8080"}  # what TorchServe 0.12 adds to every HTTP request
    headers = [http, {**http, "Content-Type": "video/mp4"}, {**http, "X-Top-K": "2"}, http, http]
    context = MockContext(model_dir, headers)
    responses = handler.handle(batch, context)

    assert len(responses) == len(batch)
    assert context.statuses == {1: (400, "InvalidVideo"), 3: (400, "InvalidOption")}
    assert set(context.content_types.values()) == {"application/json"}
    assert context.response_headers == {}  # HTTP requests: the stream header would make TorchServe chunk
    assert responses[1]["code"] == 400
    assert responses[1]["type"] == "InvalidVideo"
    assert responses[3]["type"] == "InvalidOption"
    assert [len(responses[i]["predictions"]) for i in (0, 2, 4)] == [5, 2, 3]
    assert responses[4]["clip"]["start_sec"] == 1.0
    for i in (0, 2, 4):
        assert responses[i]["model"] == "slow_r50"
        assert responses[i]["weights"] == "random-init"
        assert responses[i]["batch_size"] == len(batch)
    json.dumps(responses)  # TorchServe serialises non-bytes results with json.dumps


def test_grpc_requests_are_marked_as_their_last_message(handler: SlowFastHandler, model_dir: Path) -> None:
    # As TorchServe 0.12 hands a gRPC request to the handler: no transport headers, no url_path.
    video = encode(moving_frames(75, 120, 160), fps=25)
    # The KServe v1 route is HTTP without url_path (headers as TorchServe 0.12 gives them there).
    kserve = {"Host": "127.0.0.1:8080", "Content-Type": "application/json", "explain": "False"}
    context = MockContext(model_dir, [{"data": {"content-type": ""}}, {"url_path": "", "Host": "127.0.0.1"}, kserve])
    responses = handler.handle(
        [{"data": bytearray(video)}, {"data": bytearray(video)}, {"data": bytearray(video)}], context
    )
    assert [len(r["predictions"]) for r in responses] == [5, 5, 5]
    assert context.response_headers == {0: {"ts_stream_next": "false"}}


def test_all_bad_batch_runs_no_forward(handler: SlowFastHandler, model_dir: Path) -> None:
    context = MockContext(model_dir, [{}, {}])
    responses = handler.handle([{"body": bytearray()}, {"nothing": bytearray(b"x")}], context)
    assert [r["type"] for r in responses] == ["EmptyVideo", "MissingVideo"]
    assert context.statuses == {0: (400, "EmptyVideo"), 1: (400, "MissingVideo")}


def test_handle_before_initialize_fails_loudly(model_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="initialize"):
        SlowFastHandler().handle([{"body": bytearray(b"x")}], MockContext(model_dir, [{}]))


def test_label_count_must_match_the_model(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text(json.dumps([f"class {i}" for i in range(10)]))
    context = MockContext(model_dir)
    context.model_yaml_config["handler"]["labels"] = str(tmp_path / "labels.json")
    with pytest.raises(ValueError, match="10 labels for a model with 400 classes"):
        SlowFastHandler().initialize(context)


def test_unknown_handler_setting_is_named(model_dir: Path) -> None:
    context = MockContext(model_dir)
    context.model_yaml_config["handler"]["topk"] = 3
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['topk'\]"):
        SlowFastHandler().initialize(context)


def test_device_follows_the_gpu_torchserve_assigns(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device(0) == torch.device("cpu")  # a GPU id on a machine without CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device(1) == torch.device("cuda:1")
    assert select_device(None) == torch.device("cpu")


def test_metrics_and_log_lines_per_request(handler: SlowFastHandler, model_dir: Path, caplog) -> None:
    video = encode(moving_frames(75, 120, 160), fps=25)
    http = {"url_path": "", "Host": "127.0.0.1:8080"}
    context = MockContext(model_dir, [http, http, http])
    batch = [{"data": bytearray(video)}, {"body": bytearray(b"junk")}, {"data": bytearray(video), "views": b"2x1"}]
    with caplog.at_level("INFO", logger="handler.ts_handler"):
        handler.handle(batch, context)
    calls = context.metrics.calls
    assert ("counter", "video_request_errors_total", 1, {"error_type": "InvalidVideo"}) in calls
    assert [c[3] for c in calls if c[1] == "video_requests_total"] == [{"resolution": "<=256p"}] * 2
    assert len([c for c in calls if c[1] == "video_decode_seconds" and c[0] == "histogram"]) == 2
    assert [c[2] for c in calls if c[1] == "video_clips_per_forward"] == [3.0]  # 1 + 2 clips, one forward
    lines = [
        json.loads(r.getMessage().removeprefix("request ")) for r in caplog.records if "request_id" in r.getMessage()
    ]
    assert [(line["request_id"], line["status"]) for line in lines] == [
        ("request-0", 200),
        ("request-1", 400),
        ("request-2", 200),
    ]
    assert lines[1]["error_type"] == "InvalidVideo"
    assert lines[2]["views"] == 2
    assert set(lines[0]["timing_ms"]) == {"decode", "preprocess", "inference"}
