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


# AVA v2.2's 80 atomic actions, AVA id = position + 1 (ava_action_list_v2.2.pbtxt; the same list and order as
# PySlowFast's demo/AVA/ava.names). Detection models score all 80; column i of their output is AVA id i + 1.
AVA_ACTIONS = (
    "bend/bow (at the waist)", "crawl", "crouch/kneel", "dance", "fall down", "get up", "jump/leap", "lie/sleep",
    "martial art", "run/jog", "sit", "stand", "swim", "walk", "answer phone", "brush teeth",
    "carry/hold (an object)", "catch (an object)", "chop", "climb (e.g., a mountain)", "clink glass",
    "close (e.g., a door, a box)", "cook", "cut", "dig", "dress/put on clothing", "drink",
    "drive (e.g., a car, a truck)", "eat", "enter", "exit", "extract", "fishing", "hit (an object)",
    "kick (an object)", "lift/pick up", "listen (e.g., to music)", "open (e.g., a window, a car door)", "paint",
    "play board game", "play musical instrument", "play with pets", "point to (an object)", "press",
    "pull (an object)", "push (an object)", "put down", "read", "ride (e.g., a bike, a car, a horse)", "row boat",
    "sail boat", "shoot", "shovel", "smoke", "stir", "take a photo", "text on/look at a cellphone", "throw",
    "touch (an object)", "turn (e.g., a screwdriver)", "watch (e.g., TV)", "work on a computer", "write",
    "fight/hit (a person)", "give/serve (an object) to (a person)", "grab (a person)", "hand clap", "hand shake",
    "hand wave", "hug (a person)", "kick (a person)", "kiss (a person)", "lift (a person)", "listen to (a person)",
    "play with kids", "push (another person)", "sing to (e.g., self, a person, a group)",
    "take (an object) from (a person)", "talk to (e.g., self, a person, a group)", "watch (a person)",
)  # fmt: skip
# The 60 actions AVA's evaluation counts (ava_action_list_v2.2_for_activitynet_2019.pbtxt, PySlowFast's default
# AVA.LABEL_MAP_FILE; MMAction2's demo/label_map_ava.txt lists the same ids); the other 20 are left out of it.
_AVA_NOT_EVALUATED = {2, 16, 18, 19, 21, 23, 25, 31, 32, 33, 35, 39, 40, 42, 44, 50, 53, 55, 71, 75}
AVA_EVALUATED_IDS = frozenset(range(1, 81)) - _AVA_NOT_EVALUATED


def ava_actions() -> list[str]:
    """AVA v2.2's 80 action names, ordered by AVA id (id = index + 1)."""
    return list(AVA_ACTIONS)


LABEL_SETS = {"kinetics400": kinetics400, "motion8": motion8, "ava_v2.2": ava_actions}


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
