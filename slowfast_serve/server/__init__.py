"""Operating the service: archives, the local TorchServe, weights, conversion, export, KServe.

Everything here works from an installed wheel as from a checkout: the files the commands read come with the
package, found through :mod:`importlib.resources` (the handler package an archive carries, TorchServe's base
configuration, the bundled demo model); what they write goes under :data:`~slowfast_serve.checkout.WORKSPACE`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _directory(package: str) -> Path:
    """The directory of an installed package (a wheel unpacked on disk, or the checkout's sources)."""
    found = files(package)
    if not isinstance(found, Path):
        raise RuntimeError(f"the {package} package must be installed as files on disk (found {found!r})")
    return found


HANDLER: Path = _directory("handler")
"""The handler package: its ``*.py`` files go into every archive, ``ts_handler.py`` is TorchServe's entry point."""

PACKAGE_DATA: Path = _directory("slowfast_serve.data")
"""``config.properties`` (TorchServe's base configuration) and ``models/`` (the bundled checkpoints: a spec's
``bundled_checkpoint`` is a path in here)."""
