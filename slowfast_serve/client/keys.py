"""TorchServe's tokens: finding and reading the ``key_file.json`` it writes when it starts.

TorchServe writes the file while it starts and rewrites it when a token is renewed, so a reader can meet an
empty or half-written file: :func:`read_token` retries until the file parses (within ``wait`` seconds).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from slowfast_serve.checkout import CHECKOUT
from slowfast_serve.client.errors import KeyFileError

KINDS = ("inference", "management", "API")


def find_key_file(explicit: Path | None = None) -> Path | None:
    """The first existing key file among ``explicit``, ``$TS_KEY_FILE``, ``run/key_file.json`` of the checkout
    (where ``make serve`` starts TorchServe), ``./run/key_file.json`` and ``./key_file.json``; ``None`` if none."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("TS_KEY_FILE"):
        candidates.append(Path(os.environ["TS_KEY_FILE"]))
    if CHECKOUT is not None:
        candidates.append(CHECKOUT / "run" / "key_file.json")
    candidates += [Path("run") / "key_file.json", Path("key_file.json")]
    return next((path for path in candidates if path.is_file()), None)


@dataclass(frozen=True)
class Key:
    """One key of ``key_file.json``: the token, and when TorchServe stops accepting it (``None`` for the ``API``
    key, which does not expire; timezone-aware, UTC)."""

    key: str
    expires: datetime | None


def read_key(key_file: Path, kind: str = "inference", wait: float = 10.0) -> Key:
    """The ``kind`` key (``inference``, ``management`` or ``API``) of a TorchServe ``key_file.json``, with its
    expiry.

    Args:
        key_file: the file.
        kind: which key.
        wait: seconds to keep retrying while the file is empty or does not parse (TorchServe writing it).

    Raises:
        KeyFileError: the file does not exist, or still has no such key after ``wait`` seconds.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    deadline = time.monotonic() + wait
    while True:
        try:
            entry = json.loads(Path(key_file).read_text())[kind]
            expires = entry.get("expiration time")
            return Key(str(entry["key"]), datetime.fromisoformat(expires) if expires else None)
        except FileNotFoundError:
            raise KeyFileError(f"no token file at {key_file}; is TorchServe running (make serve)?") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if time.monotonic() >= deadline:
                raise KeyFileError(f"{key_file} has no {kind!r} key ({e})") from None
        time.sleep(0.1)


def read_token(key_file: Path, kind: str = "inference", wait: float = 10.0) -> str:
    """The ``kind`` key's token (see :func:`read_key`)."""
    return read_key(key_file, kind, wait).key


def renewal_request(management_url: str, key_file: Path, kind: str = "inference") -> dict[str, object]:
    """The ``GET`` (as keyword arguments of ``requests``/``httpx``) that makes TorchServe issue a new ``kind`` key
    and rewrite ``key_file`` (its token API, authorized by the ``API`` key; the old key stops working at once)."""
    return {
        "url": f"{management_url.rstrip('/')}/token",
        "params": {"type": kind},
        "headers": {"Authorization": f"Bearer {read_token(key_file, 'API')}"},
    }
