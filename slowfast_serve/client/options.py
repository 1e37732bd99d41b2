"""The options every calling subcommand shares (``classify``, ``timeline``, ``stream``): which server, which
model, which token, how long to wait; and the :class:`Client` they describe."""

from __future__ import annotations

import argparse
from pathlib import Path

from slowfast_serve.client.inference import DEFAULT_MODEL, DEFAULT_URL, Client
from slowfast_serve.client.keys import find_key_file, read_token

KEY_FILE_HELP = (
    "TorchServe key_file.json (default: $TS_KEY_FILE, else run/key_file.json of the checkout, else "
    "./run/key_file.json, else ./key_file.json; none: no token)"
)


def add_service_arguments(parser: argparse.ArgumentParser, timeout: float) -> None:
    """``--model``, ``--url``, ``--key-file`` and ``--timeout`` (seconds per request, default ``timeout``)."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name (default: %(default)s)")
    parser.add_argument("--url", default=DEFAULT_URL, help="TorchServe inference address (default: %(default)s)")
    parser.add_argument("--key-file", type=Path, help=KEY_FILE_HELP)
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per request (default: %(default)s)")


def token_from_args(args: argparse.Namespace) -> str | None:
    """The ``inference`` key of the key file the options name or imply, or ``None`` when there is none."""
    key_file = find_key_file(args.key_file)
    return read_token(key_file) if key_file else None


def client_from_args(args: argparse.Namespace) -> Client:
    return Client(args.url, token_from_args(args), model=args.model, timeout=args.timeout)
