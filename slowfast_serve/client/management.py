"""TorchServe's management API: describe models, scale workers, register and unregister archives.

Talks to the management address (default ``http://127.0.0.1:8081``, as ``make serve`` configures it) with the
``management`` key of TorchServe's ``key_file.json`` (found as ``slowfast-serve classify`` finds it). Registering
and unregistering need the model API, which this project's config turns off (``enable_model_api=false``, see
SECURITY.md); start with ``slowfast-serve serve --enable-model-api`` (``make serve MODEL_API=1``) to use them.
Archives are registered by file name from the instance's model store (``allowed_urls`` admits nothing else).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from slowfast_serve.client.errors import ServiceError, ServiceUnreachableError
from slowfast_serve.client.inference import engine_text
from slowfast_serve.client.keys import find_key_file, read_token
from slowfast_serve.client.options import KEY_FILE_HELP

DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:8081"


class Management:
    """TorchServe's REST management API with a management token.

    Args:
        url: the management address.
        token: the ``management`` key, or ``None`` when token authorization is off.
        timeout: seconds per call (scaling and registering wait for workers to load).

    Raises (every call): ServiceError with TorchServe's status and message.
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
            raise ServiceUnreachableError(self.url, type(e).__name__) from e
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        if not response.ok:
            error = ServiceError.from_body(response.status_code, body)
            if response.status_code == 405 and method in ("POST", "DELETE"):  # TorchServe's answer with it off
                error.message += "; start TorchServe with the model API on: slowfast-serve serve --enable-model-api"
                error.args = (f"HTTP 405 {error.type}: {error.message}",)
            raise error
        return body

    def names(self) -> list[str]:
        """Names of every registered model."""
        return [model["modelName"] for model in self._call("GET", "/models", limit=1000)["models"]]

    def describe(self, model: str, customized: bool = False) -> list[dict[str, Any]]:
        """The description of every version of ``model`` (workers, batch size, delay, ...); with ``customized``,
        a worker's own description too (``customizedMetadata``: the weights and the engine it runs)."""
        if customized:
            return self._call("GET", f"/models/{model}", customized="true")
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
    table.add_column("model", no_wrap=True)  # the name a user types: never folded
    for column in ("version", "engine", "workers ready / min / max", "batch size", "batch delay (ms)", "on GPU"):
        table.add_column(column)
    for d in descriptions:
        ready = sum(1 for w in d.get("workers", []) if w.get("status") == "READY")
        gpus = {str(w.get("gpu")) for w in d.get("workers", [])}
        table.add_row(
            d["modelName"],
            str(d.get("modelVersion")),
            engine_text(worker_metadata(d).get("engine")),
            f"{ready} / {d.get('minWorkers')} / {d.get('maxWorkers')}",
            str(d.get("batchSize")),
            str(d.get("maxBatchDelay")),
            ", ".join(sorted(gpus)) or "-",
        )
    console.print(table)


def worker_metadata(description: dict[str, Any]) -> dict[str, Any]:
    """A description's ``customizedMetadata`` (what the handler's ``describe`` returned), as a dict: TorchServe
    gives it parsed when it is JSON, as text otherwise; ``{}`` without one."""
    metadata = description.get("customizedMetadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return {}
    return metadata if isinstance(metadata, dict) else {}


def configure(parser: argparse.ArgumentParser) -> None:
    """The options every management subcommand shares."""
    parser.add_argument("--url", default=DEFAULT_MANAGEMENT_URL, help="management address (default: %(default)s)")
    parser.add_argument("--key-file", type=Path, help=KEY_FILE_HELP)
    parser.add_argument("--json", action="store_true", help="print TorchServe's JSON")


def configure_models(parser: argparse.ArgumentParser) -> None:
    configure(parser)
    parser.add_argument("model", nargs="?", help="one model (default: all)")


def configure_scale(parser: argparse.ArgumentParser) -> None:
    configure(parser)
    parser.add_argument("model")
    parser.add_argument("--workers", type=int, required=True, help="minimum workers (and maximum unless --max)")
    parser.add_argument("--max", type=int, help="maximum workers (default: --workers)")


def configure_register(parser: argparse.ArgumentParser) -> None:
    configure(parser)
    parser.add_argument("archive", help="file name in the model store, e.g. motion_demo.mar")
    parser.add_argument("--name", help="served model name (default: the archive's)")
    parser.add_argument("--workers", type=int, default=1, help="initial workers (default: %(default)s)")


def configure_unregister(parser: argparse.ArgumentParser) -> None:
    configure(parser)
    parser.add_argument("model")


def _api(args: argparse.Namespace) -> Management:
    key_file = find_key_file(args.key_file)
    return Management(args.url, read_token(key_file, "management") if key_file else None)


def _show(args: argparse.Namespace, result: Any) -> int:
    if args.json:
        print(json.dumps(result))
    else:
        Console().print(result.get("status", result) if isinstance(result, dict) else result)
    return 0


def run_models(args: argparse.Namespace) -> int:
    api = _api(args)
    names = [args.model] if args.model else api.names()
    descriptions = [d for name in names for d in api.describe(name, customized=True)]
    if args.json:
        print(json.dumps(descriptions))
    else:
        render(Console(), descriptions)
    return 0


def run_scale(args: argparse.Namespace) -> int:
    return _show(args, _api(args).scale(args.model, args.workers, args.max))


def run_register(args: argparse.Namespace) -> int:
    return _show(args, _api(args).register(args.archive, args.workers, args.name))


def run_unregister(args: argparse.Namespace) -> int:
    return _show(args, _api(args).unregister(args.model))
