"""The test suite; it runs from a checkout (its fixtures, docs and scripts are the repository's)."""

from pathlib import Path

#: The repository root.
REPO = Path(__file__).resolve().parents[1]
