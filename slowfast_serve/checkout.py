"""Where the commands write: the checkout when the package runs from one (``scripts/install.sh`` installs it
editable), else the current directory. What they read comes with the package (:mod:`slowfast_serve.data`)."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

#: The repository root, or ``None`` when the package was installed from a wheel or without the repository.
CHECKOUT: Path | None = _ROOT if (_ROOT / "config.properties").is_file() and (_ROOT / "handler").is_dir() else None

#: The directory ``model_store/``, ``run/`` (the local TorchServe's files) and ``build/`` live in: the checkout,
#: else the directory the command started in.
WORKSPACE: Path = CHECKOUT or Path.cwd()


def checkout() -> Path:
    """The repository root, for what only a checkout has (benchmarks, tests); raises ``RuntimeError`` outside one."""
    if CHECKOUT is None:
        raise RuntimeError(
            "this needs a checkout of the repository (benchmarks, training data, tests): clone it and run "
            "scripts/install.sh --venv .venv"
        )
    return CHECKOUT
