"""A real TorchServe for tests: free loopback ports, the repository's config, an isolated runtime directory."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests

from slowfast_serve.server.torchserve import TorchServe, free_port_overrides

#: The installed command line (scripts/install.sh puts it beside the interpreter running the tests).
CLI = str(Path(sys.executable).with_name("slowfast-serve"))


@contextlib.contextmanager
def running_torchserve(
    mar: Path | Sequence[Path], directory: Path, overrides: dict[str, str] | None = None
) -> Iterator[TorchServe]:
    """A real TorchServe with the repository's config.properties on free loopback ports, serving ``mar`` (one
    archive, or several from the same model store; each under its file name's stem).

    ``directory`` holds the instance's runtime files; keep its path short (the worker's Unix socket lives there).
    ``overrides`` replace config properties (e.g. ``{"enable_model_api": "true"}``).
    """
    mars = [mar] if isinstance(mar, Path) else list(mar)
    instance = TorchServe(directory, mars[0].parent)
    instance.start({m.stem: m.name for m in mars}, overrides={**free_port_overrides(), **(overrides or {})})
    try:
        for m in mars:
            instance.wait_ready(m.stem, timeout=300)
        yield instance
    finally:
        instance.stop()


def copy_archive(mar: Path, store: Path, name: str | None = None) -> Path:
    """Copies ``mar`` into the model store ``store`` as ``<name>.mar`` (default: its own name), with its build
    record when the name is kept (the record names the model); returns the copy."""
    store.mkdir(parents=True, exist_ok=True)
    name = name or mar.stem
    copy = Path(shutil.copy(mar, store / f"{name}.mar"))
    record = mar.with_name(f"{mar.stem}.build.json")
    if name == mar.stem and record.is_file():
        shutil.copy(record, store / record.name)
    return copy


def post_video(server: TorchServe, model: str, token: str | None = "auto", **kwargs) -> requests.Response:
    """``POST /predictions/{model}`` with the instance's inference token (``token=None``: none; or a given one).

    ``kwargs`` go to :func:`requests.post` (``files=``, ``data=``, ``headers=`` ...).
    """
    headers = dict(kwargs.pop("headers", {}))
    kwargs.setdefault("timeout", 300)
    if token == "auto":
        token = server.token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(f"{server.inference_url}/predictions/{model}", headers=headers, **kwargs)


def worker_pids(server: TorchServe, model: str) -> list[int]:
    """Process ids of ``model``'s READY workers, from the management API (waits for one to be ready)."""
    description = server.wait_ready(model)
    return sorted(int(w["pid"]) for w in description["workers"] if w.get("status") == "READY")
