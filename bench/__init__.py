"""Benchmarks: each writes a committed report under docs/ (make bench-*)."""

from slowfast_serve.checkout import checkout

#: The repository: benchmarks read its tests' fixtures, write reports into its docs/ and run from it.
REPO = checkout()
