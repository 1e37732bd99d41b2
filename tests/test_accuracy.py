"""Accuracy figures of scored clips: per class, confusion matrix, per attribute, the report's tables."""

from __future__ import annotations

from slowfast_serve.evaluation.accuracy import Accuracy, Scored

CLASSES = ("growing", "moving left", "rotating clockwise")


def _accuracy() -> Accuracy:
    clips = (
        Scored("growing", "growing", 0.9, {"codec": "h264"}),
        Scored("growing", "rotating clockwise", 0.5, {"codec": "vp9"}),
        Scored("moving left", "moving left", 0.8, {"codec": "h264"}),
        Scored("rotating clockwise", "rotating clockwise", 0.7, {"codec": "vp9"}),
    )
    return Accuracy(CLASSES, clips)


def test_top1_confusion_and_breakdowns() -> None:
    accuracy = _accuracy()
    assert (accuracy.correct, accuracy.top1) == (3, 0.75)
    assert accuracy.confusion() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]  # rows: truth, columns: predicted
    assert accuracy.by("class") == {"growing": (1, 2), "moving left": (1, 1), "rotating clockwise": (1, 1)}
    assert accuracy.by("codec") == {"h264": (2, 2), "vp9": (1, 2)}
    assert [(m.truth, m.predicted) for m in accuracy.mistakes()] == [("growing", "rotating clockwise")]
    record = accuracy.as_dict()
    assert record["top1"] == 0.75
    assert record["mistakes"] == [{"truth": "growing", "predicted": "rotating clockwise", "score": 0.5, "codec": "vp9"}]


def test_markdown_tables() -> None:
    from slowfast_serve.evaluation.accuracy import markdown

    text = markdown(_accuracy(), breakdowns=("codec",))
    assert "| growing | 50.0% | 1/2 |" in text
    assert "| **all** | **75.0%** | 3/4 |" in text
    assert "| true \\ predicted | growing | left | rot cw |" in text
    assert "| growing | 1 | · | 1 |" in text
    assert "| vp9 | 50.0% | 1/2 |" in text
