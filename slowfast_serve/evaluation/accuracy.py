"""Top-1 accuracy of a served classifier on labelled clips: per class, a confusion matrix, and per attribute.

Clips are sent to a running TorchServe with :class:`slowfast_serve.client.Client` (concurrently, so TorchServe
batches them, as in production), so the figures are those of the real service.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from slowfast_serve.client.inference import Client

#: A labelled clip to evaluate: its true class and a function returning the video's bytes and its attributes.
Clip = tuple[str, Callable[[], tuple[bytes, dict[str, str]]]]


@dataclass(frozen=True)
class Scored:
    """One clip's answer: its true class, the top class, the top score in [0, 1], and what describes the clip."""

    truth: str
    predicted: str
    score: float
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.truth == self.predicted


@dataclass(frozen=True)
class Accuracy:
    """Top-1 figures of a set of scored clips over ``classes``."""

    classes: tuple[str, ...]
    clips: tuple[Scored, ...]

    @property
    def correct(self) -> int:
        return sum(c.correct for c in self.clips)

    @property
    def top1(self) -> float:
        """Fraction of clips whose top class is the true one, in [0, 1]."""
        return self.correct / max(len(self.clips), 1)

    def confusion(self) -> list[list[int]]:
        """``[truth][predicted]`` clip counts, rows and columns in ``classes`` order."""
        counts = Counter((c.truth, c.predicted) for c in self.clips)
        return [[counts[truth, predicted] for predicted in self.classes] for truth in self.classes]

    def by(self, attribute: str) -> dict[str, tuple[int, int]]:
        """``{value: (correct, clips)}`` for one attribute (``"class"``, or a key of the clips' attributes)."""
        groups: dict[str, list[Scored]] = {}
        for clip in self.clips:
            value = clip.truth if attribute == "class" else clip.attributes.get(attribute, "-")
            groups.setdefault(value, []).append(clip)
        return {value: (sum(c.correct for c in group), len(group)) for value, group in sorted(groups.items())}

    def mistakes(self) -> list[Scored]:
        return [c for c in self.clips if not c.correct]

    def as_dict(self) -> dict:
        return {
            "clips": len(self.clips),
            "correct": self.correct,
            "top1": round(self.top1, 4),
            "per_class": {k: {"correct": c, "clips": n} for k, (c, n) in self.by("class").items()},
            "confusion": {"classes": list(self.classes), "rows_truth_columns_predicted": self.confusion()},
            "mistakes": [
                {"truth": m.truth, "predicted": m.predicted, "score": round(m.score, 3), **m.attributes}
                for m in self.mistakes()
            ],
        }


def evaluate(
    client: Client,
    clips: Sequence[Clip],
    classes: Sequence[str],
    *,
    concurrency: int = 4,
    model: str | None = None,
) -> Accuracy:
    """Scores labelled clips through a served model, ``concurrency`` requests in flight at once (so TorchServe
    batches them).

    Args:
        clips: ``(true class, a function returning the video's bytes and the clip's attributes)`` each; a video is
            made just before it is sent, so a large set never sits in memory at once.

    Raises:
        ServiceError: the server refused a clip (every clip of an evaluation set must be served).
    """

    def score(clip: Clip) -> Scored:
        truth, make = clip
        video, attributes = make()
        top = client.classify(video, model=model).top
        return Scored(truth, top.label, top.score, attributes)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return Accuracy(tuple(classes), tuple(pool.map(score, clips)))


def drawn_clips(seed: int, per_class: int) -> list[Clip]:
    """The independent generator's evaluation suite (``per_class`` clips per class), with the attributes the
    reports break accuracy down by: shape, size, background, codec."""
    from slowfast_serve.evaluation import drawn_motion

    def make(motion: str, index: int) -> tuple[bytes, dict[str, str]]:
        data, clip = drawn_motion.make_clip(motion, seed, index)
        return data, {"shape": clip.shape, "size": clip.size, "background": clip.background, "codec": clip.codec}

    return [(m, lambda m=m, i=i: make(m, i)) for m, i in drawn_motion.suite(seed, per_class)]


def markdown(accuracy: Accuracy, *, breakdowns: Sequence[str] = ()) -> str:
    """Per-class accuracy, the confusion matrix and per-attribute accuracy as Markdown tables."""
    lines = ["| class | top-1 | clips |", "|---|---|---|"]
    for value, (correct, total) in accuracy.by("class").items():
        lines.append(f"| {value} | {correct / total:.1%} | {correct}/{total} |")
    lines.append(f"| **all** | **{accuracy.top1:.1%}** | {accuracy.correct}/{len(accuracy.clips)} |")
    short = [_abbreviation(c) for c in accuracy.classes]
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(short) + " |")
    lines.append("|---" * (len(short) + 1) + "|")
    for name, row in zip(accuracy.classes, accuracy.confusion(), strict=True):
        lines.append(f"| {name} | " + " | ".join(str(n) if n else "·" for n in row) + " |")
    lines += ["", "Columns: " + ", ".join(f"{s} = {c}" for s, c in zip(short, accuracy.classes, strict=True)) + "."]
    for attribute in breakdowns:
        lines += ["", f"| {attribute} | top-1 | clips |", "|---|---|---|"]
        for value, (correct, total) in accuracy.by(attribute).items():
            lines.append(f"| {value} | {correct / total:.1%} | {correct}/{total} |")
    return "\n".join(lines) + "\n"


def _abbreviation(name: str) -> str:
    """``rotating counterclockwise`` -> ``rot ccw``, ``moving left`` -> ``left``: short column headers."""
    words = name.replace("counterclockwise", "ccw").replace("clockwise", "cw").split()
    return " ".join(["rot", *words[1:]]) if words[0] == "rotating" else words[-1]
