"""Where this project's files are when the package runs from a checkout (``scripts/install.sh`` installs it
editable): the TorchServe config, the model store, the runtime directory of ``make serve``, bundled weights."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

#: The repository root, or ``None`` when the package was installed without the repository (the client alone).
CHECKOUT: Path | None = _ROOT if (_ROOT / "config.properties").is_file() and (_ROOT / "handler").is_dir() else None


def checkout() -> Path:
    """The repository root; raises ``RuntimeError`` when the package is not running from a checkout."""
    if CHECKOUT is None:
        raise RuntimeError(
            "this command operates the server from a checkout of the repository: clone it and run "
            "scripts/install.sh --venv .venv (the client alone cannot build archives or start TorchServe)"
        )
    return CHECKOUT
