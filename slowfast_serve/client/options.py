"""The options every calling subcommand shares (``classify``, ``timeline``, ``stream``): which server, which
model, which token, how long to wait; and the :class:`Client` they describe. Those of a long video's timeline
sent in parts (``timeline``, ``detect --every``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from slowfast_serve.client.inference import DEFAULT_MODEL, DEFAULT_URL, Client
from slowfast_serve.client.keys import find_key_file, read_token
from slowfast_serve.client.part_limits import PartSettings

#: An environment variable holding the token itself, for services whose token is not in a key file (a KServe
#: deployment's gateway, docs/deployment.md).
TOKEN_VARIABLE = "SLOWFAST_SERVE_TOKEN"
KEY_FILE_HELP = (
    "TorchServe key_file.json (default: $TS_KEY_FILE, else run/key_file.json of the checkout, else "
    "./run/key_file.json, else ./key_file.json; none: no token)"
)


def add_service_arguments(parser: argparse.ArgumentParser, timeout: float) -> None:
    """``--model``, ``--url``, ``--key-file`` and ``--timeout`` (seconds per request, default ``timeout``)."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name (default: %(default)s)")
    parser.add_argument("--url", default=DEFAULT_URL, help="TorchServe inference address (default: %(default)s)")
    parser.add_argument(
        "--key-file",
        type=Path,
        help=f"{KEY_FILE_HELP}. Without --key-file, a token in ${TOKEN_VARIABLE} is sent instead of a key file's",
    )
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per request (default: %(default)s)")


def token_from_args(args: argparse.Namespace) -> str | None:
    """The ``inference`` key of the key file ``--key-file`` names; else ``$SLOWFAST_SERVE_TOKEN``; else the key of
    an implied key file (:func:`find_key_file`); ``None`` when there is none."""
    if args.key_file is None and os.environ.get(TOKEN_VARIABLE, "").strip():
        return os.environ[TOKEN_VARIABLE].strip()
    key_file = find_key_file(args.key_file)
    return read_token(key_file) if key_file else None


def client_from_args(args: argparse.Namespace) -> Client:
    return Client(args.url, token_from_args(args), model=args.model, timeout=args.timeout)


def add_part_arguments(parser: argparse.ArgumentParser, formats: str) -> None:
    """``--output``, ``--concurrency``, ``--retries`` and ``--part-mb``: how a long video's timeline is sent in
    parts (:mod:`slowfast_serve.client.parts`); ``formats`` names the ``--output`` suffixes in the help."""
    default = PartSettings()
    parser.add_argument(
        "--output",
        type=Path,
        help=f"write the windows here as they come ({formats}); run again to resume an interrupted timeline",
    )
    parser.add_argument(
        "--concurrency",
        type=_number(int, 1),
        default=default.concurrency,
        help="parts in flight at once (default: %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=_number(int, 0),
        default=default.retries,
        help="resends of a part that fails (default: %(default)s)",
    )
    parser.add_argument(
        "--part-mb",
        type=_number(float, 0.001),
        default=default.part_mb,
        help="largest upload in MiB; longer videos are cut into parts at key frames (default: %(default)s)",
    )


def part_settings_from_args(args: argparse.Namespace) -> PartSettings:
    """The :class:`PartSettings` of :func:`add_part_arguments`' options."""
    return PartSettings(args.concurrency, args.retries, args.part_mb)


def _number(kind: type[int] | type[float], least: float) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` no smaller than ``least``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= least:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} >= {least:g}")
        return value

    return parse
