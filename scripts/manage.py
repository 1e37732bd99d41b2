#!/usr/bin/env python3
"""Manage a running TorchServe through its management API: describe models, scale workers, register and
unregister archives.

Talks to the management address (default ``http://127.0.0.1:8081``, as ``make serve`` configures it) with the
``management`` key of TorchServe's ``key_file.json`` (found as ``scripts/classify.py`` finds it). Registering
and unregistering need the model API, which this project's config turns off (``enable_model_api=false``, see
SECURITY.md); start with ``scripts/serve.py start --enable-model-api`` (``make serve MODEL_API=1``) to use them.
Archives are registered by file name from the instance's model store (``allowed_urls`` admits nothing else).

Examples:
    scripts/manage.py describe                          # every model: versions, workers, batching
    scripts/manage.py describe slowfast_r50 --json
    scripts/manage.py scale slowfast_r50 --workers 2    # min = max = 2, waits until they are up
    scripts/manage.py register motion_demo.mar --name demo2 --workers 1   # a second copy, served as demo2
    scripts/manage.py unregister motion_demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import requests
from classify import find_key_file
from rich.console import Console
from rich.table import Table
from torchserve_ctl import ServeError, read_token

DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:8081"


class ManagementError(Exception):
    """The management API refused or failed a call (status and TorchServe's message)."""


class Management:
    """TorchServe's REST management API with a management token.

    Args:
        url: the management address.
        token: the ``management`` key, or ``None`` when token authorization is off.
        timeout: seconds per call (scaling and registering wait for workers to load).
    """

    def __init__(self, url: str = DEFAULT_MANAGEMENT_URL, token: str | None = None, timeout: float = 600) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    def _call(self, method: str, path: str, **params: Any) -> Any:
        try:
            response = requests.request(
                method, f"{self.url}{path}", params=params, headers=self.headers, timeout=self.timeout
            )
        except requests.ConnectionError as e:
            raise ManagementError(f"cannot reach the management API at {self.url}; is TorchServe running?") from e
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        if not response.ok:
            message = body.get("message", body) if isinstance(body, dict) else body
            hint = ""
            if response.status_code == 405 and method in ("POST", "DELETE"):  # TorchServe's answer with it off
                hint = "; start TorchServe with the model API on: scripts/serve.py start --enable-model-api"
            raise ManagementError(f"HTTP {response.status_code}: {message}{hint}")
        return body

    def names(self) -> list[str]:
        """Names of every registered model."""
        return [model["modelName"] for model in self._call("GET", "/models", limit=1000)["models"]]

    def describe(self, model: str) -> list[dict[str, Any]]:
        """The description of every version of ``model`` (workers, batch size, delay, ...)."""
        return self._call("GET", f"/models/{model}")

    def scale(self, model: str, min_workers: int, max_workers: int | None = None) -> dict[str, Any]:
        """Sets ``model``'s worker bounds and waits until the workers are up (or gone)."""
        upper = max_workers if max_workers is not None else min_workers
        return self._call("PUT", f"/models/{model}", min_worker=min_workers, max_worker=upper, synchronous="true")

    def register(self, archive: str, workers: int = 1, name: str | None = None) -> dict[str, Any]:
        """Registers ``archive`` (a ``.mar`` file name in the model store) and waits for ``workers`` workers."""
        params: dict[str, Any] = {"url": archive, "initial_workers": workers, "synchronous": "true"}
        if name:
            params["model_name"] = name
        return self._call("POST", "/models", **params)

    def unregister(self, model: str) -> dict[str, Any]:
        return self._call("DELETE", f"/models/{model}")


def render(console: Console, descriptions: list[dict[str, Any]]) -> None:
    table = Table()
    for column in ("model", "version", "workers (ready / min / max)", "batch size", "max batch delay (ms)", "on GPU"):
        table.add_column(column)
    for d in descriptions:
        ready = sum(1 for w in d.get("workers", []) if w.get("status") == "READY")
        gpus = {str(w.get("gpu")) for w in d.get("workers", [])}
        table.add_row(
            d["modelName"],
            str(d.get("modelVersion")),
            f"{ready} / {d.get('minWorkers')} / {d.get('maxWorkers')}",
            str(d.get("batchSize")),
            str(d.get("maxBatchDelay")),
            ", ".join(sorted(gpus)) or "-",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_MANAGEMENT_URL, help="management address (default: %(default)s)")
    parser.add_argument("--key-file", type=Path, help="TorchServe key_file.json (default: as classify.py)")
    parser.add_argument("--json", action="store_true", help="print TorchServe's JSON")
    commands = parser.add_subparsers(dest="command", required=True)
    describe = commands.add_parser("describe", help="describe one model, or all")
    describe.add_argument("model", nargs="?")
    scale = commands.add_parser("scale", help="set a model's worker count")
    scale.add_argument("model")
    scale.add_argument("--workers", type=int, required=True, help="minimum workers (and maximum unless --max)")
    scale.add_argument("--max", type=int, help="maximum workers (default: --workers)")
    register = commands.add_parser("register", help="register an archive of the model store (model API on)")
    register.add_argument("archive", help="file name in the model store, e.g. motion_demo.mar")
    register.add_argument("--name", help="served model name (default: the archive's)")
    register.add_argument("--workers", type=int, default=1, help="initial workers (default: %(default)s)")
    unregister = commands.add_parser("unregister", help="unregister a model (model API on)")
    unregister.add_argument("model")
    args = parser.parse_args(argv)

    console, errors = Console(), Console(stderr=True)
    try:
        key_file = find_key_file(args.key_file)
        api = Management(args.url, read_token(key_file, "management") if key_file else None)
        if args.command == "describe":
            names = [args.model] if args.model else api.names()
            result: Any = [d for name in names for d in api.describe(name)]
        elif args.command == "scale":
            result = api.scale(args.model, args.workers, args.max)
        elif args.command == "register":
            result = api.register(args.archive, args.workers, args.name)
        else:
            result = api.unregister(args.model)
    except (ManagementError, ServeError) as e:
        errors.print(f"error: {e}")
        return 1
    if args.json:
        print(json.dumps(result))
    elif args.command == "describe":
        render(console, result)
    else:
        console.print(result.get("status", result) if isinstance(result, dict) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
