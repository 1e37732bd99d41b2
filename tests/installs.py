"""Fresh virtual environments with this repository installed the way users install it (not editable)."""

from __future__ import annotations

import subprocess
import sysconfig
import venv
from pathlib import Path

from tests import REPO


def fresh_venv(env: Path, *requirements: str, share_stack: bool = False) -> Path:
    """Creates a venv at ``env`` and ``pip install``\\ s ``requirements`` into it; returns ``env``.

    ``share_stack``: the pinned stack scripts/install.sh put in the test's own venv (torch, PyAV, ... 3 GB) is
    visible to the new venv through a ``.pth`` line, below its own packages, instead of downloaded again. Only that
    directory is added: its ``.pth`` files (the checkout's editable install among them) are not processed.
    ``requirements`` are then installed without their dependencies, and even where the shared directory has them
    (``--ignore-installed``: pip would count those as installed, and must never touch them).
    """
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    if share_stack:
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(purelib) / "pinned-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run(
        [*command, *(["--no-deps", "--ignore-installed"] if share_stack else []), *requirements],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return env


def pinned(*names: str) -> list[str]:
    """The ``name==version`` lines of requirements.txt for ``names``."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    found = [line.strip() for line in lines if line.split("==")[0].strip() in names]
    assert len(found) == len(names), (names, found)
    return found
