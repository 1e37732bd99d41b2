"""The worker's memory after a burst: glibc settings that let freed frames and clips go back to the OS.

Measured with ``make bench-memory`` (docs/bench-memory.md): decoded frames (a few MB each) and clip tensors
(tens of MB) are allocated and freed by the thousand. glibc serves a block of at least its mmap threshold with
its own mapping, returned at ``free``; but after the first such block is freed it raises the threshold (up to
32 MB), so later frames come from its heaps, one per decoding thread, and a burst leaves them holding gigabytes
that ``free`` never returns. A fixed threshold keeps every large block mapped on its own; a trim after a batch
returns what the heaps still hold. Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20  # a 256x256 RGB frame is 192 KB: smaller blocks stay on the heaps
MAX_ARENAS = 4


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc's own functions: absent elsewhere)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def configure_allocator() -> bool:
    """Fixes glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` and its heaps at :data:`MAX_ARENAS`, for the
    rest of the process. Returns whether it applied (glibc only)."""
    if _LIBC is None:
        return False
    applied = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        _LIBC.mallopt(_M_ARENA_MAX, MAX_ARENAS)
    )
    logger.info(
        "glibc allocator: mmap threshold %d B, at most %d arenas (%s)",
        MMAP_THRESHOLD_BYTES,
        MAX_ARENAS,
        "applied" if applied else "refused",
    )
    return applied


def release_memory() -> None:
    """Returns the free memory of glibc's heaps to the OS (``malloc_trim(0)``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
