"""Request parsing: where the video and the options come from, and how bad ones are refused."""

from __future__ import annotations

import pytest

from handler.errors import RequestError
from handler.request import MAX_INSTANCES, Limits, VideoRequest, parse_detection_request, parse_request, parse_row

LIMITS = Limits(num_classes=400, default_top_k=5)
VIDEO = bytearray(b"\x00\x00\x00\x18ftypmp42")


def _error(row: dict, headers: dict | None = None) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_request(row, headers or {}, LIMITS)
    return info.value


def test_multipart_fields() -> None:
    request = parse_request({"data": VIDEO, "top_k": bytearray(b"3"), "start_sec": bytearray(b" 1.5 ")}, {}, LIMITS)
    assert request == VideoRequest(video=bytes(VIDEO), top_k=3, start_sec=1.5)


def test_raw_body_with_option_headers_in_any_case() -> None:
    request = parse_request(
        {"body": VIDEO}, {"x-top-k": "2", "X-START-SEC": "0.25", "Content-Type": "video/mp4"}, LIMITS
    )
    assert (request.top_k, request.start_sec) == (2, 0.25)


def test_form_field_wins_over_header() -> None:
    request = parse_request({"data": VIDEO, "top_k": b"7"}, {"X-Top-K": "2"}, LIMITS)
    assert request.top_k == 7


def test_defaults() -> None:
    request = parse_request({"body": VIDEO}, {}, Limits(num_classes=8, default_top_k=3))
    assert (request.top_k, request.start_sec) == (3, 0.0)


def test_grpc_style_string_values() -> None:
    assert parse_request({"data": VIDEO, "top_k": "400"}, {}, LIMITS).top_k == 400


@pytest.mark.parametrize("value", [b"0", b"-1", b"401", b"abc", b"2.5", b"", b"1e3"])
def test_invalid_top_k(value: bytes) -> None:
    error = _error({"data": VIDEO, "top_k": value})
    assert (error.status, error.type) == (400, "InvalidOption")
    assert "top_k must be an integer from 1 to 400" in error.message


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf", "soon", ""])
def test_invalid_start_sec_header(value: str) -> None:
    error = _error({"body": VIDEO}, {"X-Start-Sec": value})
    assert (error.status, error.type) == (400, "InvalidOption")
    assert "start_sec" in error.message


def test_unknown_field_is_named() -> None:
    error = _error({"data": VIDEO, "topk": b"3"})
    assert (error.status, error.type) == (400, "UnknownOption")
    assert "'topk'" in error.message
    assert "top_k, start_sec" in error.message


def test_option_that_is_not_utf8() -> None:
    assert _error({"data": VIDEO, "top_k": b"\xff\xfe"}).type == "InvalidOption"


def test_missing_video_explains_content_types() -> None:
    # What TorchServe delivers for `curl --data-binary @clip.mp4` without a Content-Type: a parsed form.
    error = _error({"\x00\x00\x00\x18ftypmp42\x00junk": b""})
    assert (error.status, error.type) == (400, "MissingVideo")
    assert "application/x-www-form-urlencoded" in error.message


@pytest.mark.parametrize("body", ["text decoded by TorchServe", {"json": "object"}, [1, 2]])
def test_text_or_json_body_is_415(body: object) -> None:
    error = _error({"body": body})
    assert (error.status, error.type) == (415, "UnsupportedMediaType")


def test_views_as_field_or_header_and_the_archive_default() -> None:
    assert parse_request({"data": VIDEO, "views": bytearray(b"10x3")}, {}, LIMITS).views == (10, 3)
    assert parse_request({"body": VIDEO}, {"X-Views": "5X1"}, LIMITS).views == (5, 1)
    assert parse_request({"data": VIDEO}, {}, LIMITS).views == (1, 1)
    assert parse_request({"data": VIDEO}, {}, Limits(num_classes=400, default_views=(4, 3))).views == (4, 3)


@pytest.mark.parametrize("value", [b"0x1", b"10x2", b"11x3", b"31x1", b"3", b"x3", b"abc", b"1x1x1"])
def test_invalid_views(value: bytes) -> None:
    error = _error({"data": VIDEO, "views": value})
    assert error.type == "InvalidOption"
    assert "CLIPSxCROPS" in error.message


def test_timeline_options() -> None:
    request = parse_request(
        {"data": VIDEO, "mode": bytearray(b"timeline"), "stride_sec": bytearray(b"1.5")}, {}, LIMITS
    )
    assert (request.mode, request.stride_sec) == ("timeline", 1.5)
    assert parse_request({"body": VIDEO}, {"X-Mode": "Timeline"}, LIMITS).stride_sec is None
    assert parse_request({"data": VIDEO}, {}, LIMITS).mode == "clip"
    assert _error({"data": VIDEO, "mode": b"movie"}).type == "InvalidOption"
    assert _error({"data": VIDEO, "stride_sec": b"0.01"}).type == "InvalidOption"
    error = _error({"data": VIDEO, "mode": b"timeline", "views": b"3x1"})
    assert "views apply to mode=clip" in error.message


def test_timeline_part_options() -> None:
    fields = {"data": VIDEO, "mode": b"timeline", "first_window": b"120", "window_count": b"60"}
    request = parse_request({**fields, "origin_pts": b"-3600"}, {}, LIMITS)
    assert (request.first_window, request.window_count, request.origin_pts) == (120, 60, -3600)
    detection = parse_detection_request({"body": VIDEO}, {"X-Mode": "timeline", "X-Origin-Pts": "9000"}, AVA)
    assert (detection.first_window, detection.origin_pts) == (None, 9000)
    assert _error({**fields, "first_window": b"-1"}).message == "first_window must be an integer >= 0, got '-1'"
    assert _error({**fields, "window_count": b"0"}).type == "InvalidOption"
    assert _error({**fields, "origin_pts": b"1.5"}).message == "origin_pts must be an integer, got '1.5'"
    alone = _error({"data": VIDEO, "origin_pts": b"0"})
    assert alone.message == "origin_pts describes a timeline part: send it with mode=timeline"


def test_a_kserve_body_is_one_request_per_instance() -> None:
    import base64

    encoded = base64.b64encode(VIDEO).decode()
    body = {"instances": [{"data": {"b64": encoded}}, {"data": encoded, "top_k": 2, "views": "2x1"}]}
    row = parse_row({"body": body}, {"X-Top-K": "7"}, LIMITS)  # headers do not apply to instances
    assert row.instances
    assert [(r.video, r.top_k, r.views) for r in row.requests] == [(VIDEO, 5, (1, 1)), (VIDEO, 2, (2, 1))]
    single = parse_row({"body": VIDEO}, {"X-Top-K": "7"}, LIMITS)
    assert not single.instances
    assert single.requests[0].top_k == 7


@pytest.mark.parametrize(
    ("instances", "error_type", "where"),
    [
        ([], "InvalidInstances", "1 to"),
        ("video", "InvalidInstances", "1 to"),
        ([{"data": {"b64": "AAAA"}}] * (MAX_INSTANCES + 1), "InvalidInstances", f"{MAX_INSTANCES}"),
        (["AAAA"], "InvalidInstances", "instances[0]"),
        ([{"data": {"b64": "AAAA"}}, {"data": {"b64": "***"}}], "InvalidBase64", "instances[1]"),
        ([{"data": {"url": "x"}}], "MissingVideo", "instances[0]"),
        ([{"data": {"b64": "AAAA"}, "top_k": 0}], "InvalidOption", "instances[0]: top_k"),
        ([{"data": {"b64": "AAAA"}, "colour": "red"}], "UnknownOption", "instances[0]"),
    ],
)
def test_a_bad_kserve_body_fails_as_a_whole(instances: object, error_type: str, where: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_row({"body": {"instances": instances}}, {}, LIMITS)
    assert (caught.value.status, caught.value.type) == (400, error_type)
    assert where in caught.value.message


AVA = Limits(num_classes=80, default_top_k=5, max_boxes=3)


def _detection_error(row: dict, headers: dict | None = None) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_detection_request(row, headers or {}, AVA)
    return info.value


def test_detection_fields_and_defaults() -> None:
    request = parse_detection_request(
        {"data": VIDEO, "boxes": b"[[1, 2.5, 30, 40], [0, 0, 5, 5]]", "keyframe_sec": b"2.5", "threshold": b"0.2"},
        {},
        AVA,
    )
    assert request.boxes == ((1.0, 2.5, 30.0, 40.0), (0.0, 0.0, 5.0, 5.0))
    assert (request.keyframe_sec, request.threshold, request.top_k, request.mode) == (2.5, 0.2, 5, "keyframe")
    timeline = parse_detection_request({"body": VIDEO}, {"X-Stride-Sec": "2", "X-Mode": "Timeline"}, AVA)
    assert (timeline.boxes, timeline.keyframe_sec, timeline.mode, timeline.stride_sec) == (None, None, "timeline", 2)
    assert parse_detection_request({"body": VIDEO}, {"X-Boxes": "[]"}, AVA).boxes == ()  # no one: nothing to score
    assert parse_detection_request({"data": VIDEO}, {}, AVA).boxes is None  # the detector finds them


@pytest.mark.parametrize(
    ("boxes", "status", "kind", "says"),
    [
        (b"[[1, 2, 3, 4]", 400, "InvalidBoxes", "not JSON"),
        (b'{"x": 1}', 400, "InvalidBoxes", "a list of boxes"),
        (b"[[1, 2, 3]]", 400, "InvalidBoxes", "boxes[0] must be 4 finite numbers"),
        (b'[[0, 0, 9, 9], [1, 2, "3", 4]]', 400, "InvalidBoxes", "boxes[1] must be 4 finite numbers"),
        (b"[[1, 2, true, 4]]", 400, "InvalidBoxes", "4 finite numbers"),
        (b"[[1, 2, NaN, 4]]", 400, "InvalidBoxes", "4 finite numbers"),
        (b"[[10, 0, 10, 5]]", 400, "InvalidBoxes", "x2 must exceed x1"),
        (b"[[0, 8, 10, 5]]", 400, "InvalidBoxes", "y2 exceed y1"),
        (b"[[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]", 413, "TooManyBoxes", "at most 3"),
    ],
)
def test_bad_boxes(boxes: bytes, status: int, kind: str, says: str) -> None:
    error = _detection_error({"data": VIDEO, "boxes": boxes})
    assert (error.status, error.type) == (status, kind)
    assert says in error.message


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"threshold": b"1.5"}, "threshold must be a score from 0 to 1"),
        ({"keyframe_sec": b"-1"}, "keyframe_sec must be a number of seconds >= 0"),
        ({"mode": b"clip"}, "mode must be one of keyframe, timeline"),
        ({"mode": b"timeline", "boxes": b"[[0, 0, 5, 5]]"}, "boxes belong to one keyframe"),
    ],
)
def test_bad_detection_options(row: dict, says: str) -> None:
    error = _detection_error({"data": VIDEO, **row})
    assert (error.status, error.type) == (400, "InvalidOption")
    assert says in error.message


def test_each_kind_of_model_refuses_the_others_options() -> None:
    error = _detection_error({"data": VIDEO, "views": b"10x3", "start_sec": b"1"})
    assert error.type == "UnknownOption"
    assert "'start_sec', 'views' (start_sec, views: the classifiers' options)" in error.message
    assert "keyframe_sec, boxes, threshold" in error.message
    error = _error({"data": VIDEO, "boxes": b"[[0, 0, 5, 5]]"})
    assert error.type == "UnknownOption"
    assert "'boxes' (boxes: the AVA detection models' option)" in error.message


def test_detection_instances_of_a_kserve_body() -> None:
    body = {"instances": [{"data": {"b64": "AAAA"}, "boxes": "[[0, 0, 5, 5]]"}, {"data": {"b64": "AAAA"}}]}
    parsed = parse_row({"body": body}, {}, AVA, parse_detection_request)
    assert [r.boxes for r in parsed.requests] == [((0.0, 0.0, 5.0, 5.0),), None]
