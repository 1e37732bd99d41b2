"""Label sets: class id -> human-readable name.

The Kinetics-400 names come from torchvision's public weights metadata, the same alphabetical list (and the
same ids) as PyTorchVideo's official ``kinetics_classnames.json``. An archive carries its labels as
``labels.json`` (a JSON list, index = class id), written by :func:`save_labels`; :func:`read_labels` also reads
the other formats users have at hand.
"""

from __future__ import annotations

import json
from pathlib import Path


def kinetics400() -> list[str]:
    """The 400 Kinetics class names, ordered by class id."""
    from torchvision.models.video import R3D_18_Weights

    return list(R3D_18_Weights.KINETICS400_V1.meta["categories"])


# The synthetic motion classes of the bundled demo model (slowfast-serve motion-data draws them).
MOTION_CLASSES = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "rotating clockwise",
    "rotating counterclockwise",
    "growing",
    "shrinking",
)


def motion8() -> list[str]:
    """The 8 motion classes ordered by class id: sorted, as the fine-tuning tool orders class folders."""
    return sorted(MOTION_CLASSES)


LABEL_SETS = {"kinetics400": kinetics400, "motion8": motion8}


def label_set(name: str) -> list[str]:
    """The named built-in label set."""
    try:
        return LABEL_SETS[name]()
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(sorted(LABEL_SETS))}") from None


def read_labels(path: str | Path) -> list[str]:
    """Reads class names, ordered by class id, from one of these formats:

    - a JSON list of names (``labels.json`` as written by :func:`save_labels`);
    - a JSON object name -> id, as PyTorchVideo's ``kinetics_classnames.json`` (whose multi-word names are
      wrapped in literal double quotes, which are stripped);
    - a JSON object id -> name, as TorchServe's ``index_to_name.json`` (values may be ``[wnid, name]`` lists);
    - plain text, one name per line (MMAction2's ``label_map_k400.txt``).

    Raises ``ValueError`` if ids are not exactly ``0..N-1`` or a name is empty or repeated.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            by_id = dict(enumerate(data))
        elif isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
            by_id = {v: k.replace('"', "") for k, v in data.items()}
        elif isinstance(data, dict):
            by_id = {int(k): v[-1] if isinstance(v, list) else v for k, v in data.items()}
        else:
            raise ValueError(f"{path}: expected a JSON list or object of labels, got {type(data).__name__}")
    else:
        by_id = dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
    return _ordered(by_id, path)


def save_labels(labels: list[str], path: str | Path) -> Path:
    """Writes ``labels`` as a JSON list (index = class id)."""
    path = Path(path)
    path.write_text(json.dumps(list(labels), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _ordered(by_id: dict[int, str], source: Path) -> list[str]:
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{source}: class ids must be exactly 0..{len(by_id) - 1}")
    labels = [str(by_id[i]).strip() for i in range(len(by_id))]
    if not labels or any(not name for name in labels):
        raise ValueError(f"{source}: labels must be non-empty names")
    if len(set(labels)) != len(labels):
        duplicates = sorted({name for name in labels if labels.count(name) > 1})
        raise ValueError(f"{source}: repeated label names: {duplicates[:5]}")
    return labels
