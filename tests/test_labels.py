"""Kinetics-400 names and label-file formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.labels import kinetics400, label_set, read_labels, save_labels


def test_kinetics400_ids_match_the_official_class_file() -> None:
    names = kinetics400()
    assert len(names) == len(set(names)) == 400
    # Ids of PyTorchVideo's kinetics_classnames.json: its example entries ("abseiling": 0,
    # "sharpening knives": 290), the hub tutorial's archery clip (id 5); the ids are Python's sorted order.
    assert (names[0], names[5], names[290]) == ("abseiling", "archery", "sharpening knives")
    assert names == sorted(names)


def test_label_set_by_name() -> None:
    assert label_set("kinetics400") == kinetics400()
    with pytest.raises(KeyError, match="kinetics400"):
        label_set("kinetics700")


def test_official_classnames_json_with_quoted_names(tmp_path: Path) -> None:
    names = kinetics400()
    official = {(f'"{n}"' if " " in n else n): i for i, n in enumerate(names)}
    path = tmp_path / "kinetics_classnames.json"
    path.write_text(json.dumps(official))
    assert read_labels(path) == names


def test_index_to_name_json(tmp_path: Path) -> None:
    path = tmp_path / "index_to_name.json"
    path.write_text(json.dumps({"1": ["n02", "right"], "0": ["n01", "left"], "2": "up"}))
    assert read_labels(path) == ["left", "right", "up"]


def test_text_file_and_round_trip(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("moving left\nmoving right\n\n")
    names = read_labels(tmp_path / "labels.txt")
    assert names == ["moving left", "moving right"]
    assert read_labels(save_labels(names, tmp_path / "labels.json")) == names


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"a": 0, "b": 2}, "class ids must be exactly"),
        (["a", "b", "a"], "repeated label names"),
        (["a", ""], "non-empty"),
        ([], "non-empty"),
        ("just a string", "expected a JSON list or object"),
    ],
)
def test_bad_label_files(content: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        read_labels(path)
