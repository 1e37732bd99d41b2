"""The project's own set-up: what each make target installs, the scripts' --help, and modules that import one
way (no first-party module imports one that imports it back, at module level or inside a function)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

PACKAGES = ("handler", "slowfast_serve", "bench", "tests")
SCRIPTS = ("scripts/install.sh", "bench/gpu_check.sh", "bench/gpu_wheels.sh")
SERVING_TARGETS = ("serve", "stop", "status", "models", "scale", "archive", "download", "train-demo")


def _planned(target: str) -> list[str]:
    """The commands ``make TARGET`` would run from scratch (every prerequisite out of date)."""
    result = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_serving_targets_install_the_runtime_stack_only(target: str) -> None:
    installs = [line for line in _planned(target) if "scripts/install.sh" in line]
    assert installs == ["scripts/install.sh --venv .venv"]


def test_the_tests_add_the_test_stack() -> None:
    installs = [line for line in _planned("test") if "scripts/install.sh" in line]
    assert installs == ["scripts/install.sh --venv .venv", "scripts/install.sh --venv .venv --dev"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0_and_a_wrong_argument_2(script: str) -> None:
    shown = subprocess.run(["bash", script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert script.rsplit("/", 1)[1] in shown.stdout or "bash " + script in shown.stdout
    if script != "bench/gpu_check.sh":  # that one takes no arguments of its own: it runs its steps
        wrong = subprocess.run(["bash", script, "--no-such-option"], cwd=REPO, capture_output=True, timeout=30)
        assert wrong.returncode == 2


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The first-party modules ``path`` imports anywhere in it (``from package import module`` counts as the
    module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_cycles() -> list[list[str]]:
    """Every strongly connected group of two or more first-party modules (Tarjan's algorithm)."""
    paths = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    modules = set(paths)
    graph = {name: _imports(path, name, modules) for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    assert import_cycles() == []


def test_an_import_cycle_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check sees imports inside functions, and relative ones."""
    package = tmp_path / "handler"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from handler import b\n")
    (package / "b.py").write_text("from .a import f\n")
    (package / "c.py").write_text("import handler.a\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("handler",))
    assert import_cycles() == [["handler.a", "handler.b"]]
