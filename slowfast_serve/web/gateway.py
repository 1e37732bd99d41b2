"""``slowfast-serve gateway``: the KServe pod's main process (deploy/kserve/runtime.yaml). It starts TorchServe
from a layout written by ``slowfast-serve kserve`` with token authorization on, and serves the pod's port in
front of it, holding TorchServe's tokens.

TorchServe's keys are random per process and expire (pytorch/serve issue 3301 is KServe's stock TorchServe
runtime failing on them), so nothing outside the pod can hold them: the gateway reads ``key_file.json`` on
every call and renews a key before it expires (:class:`slowfast_serve.web.upstream.Upstream`). Callers
authenticate to the gateway instead, with one token shared by every replica: ``--token-file`` names a file
(a mounted Kubernetes Secret, re-read on every call so that a rotated Secret applies without a restart) whose
content callers send as ``Authorization: Bearer <token>``. ``--no-caller-auth`` leaves that to the ingress or
service mesh.

Routes on the pod's port (everything else is 404; the management and token APIs stay on the pod's loopback):

- ``GET /ping``: TorchServe's health, without a caller token (KServe's readiness and liveness probes);
- ``POST /v1/models/{name}:predict``: KServe v1 requests (base64 ``instances``), to TorchServe's own v1 route;
- ``POST /predictions/{name}`` and ``/predictions/{name}/{version}``: single videos, multipart or raw.

The gateway exits when TorchServe does (status 1, so that Kubernetes restarts the container), and stops
TorchServe when it is stopped itself (SIGTERM: requests in flight finish first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from slowfast_serve.server.torchserve import ServeError, TorchServe
from slowfast_serve.web.command import PageError, check_port
from slowfast_serve.web.upstream import Upstream, UpstreamSettings, error

if TYPE_CHECKING:
    import uvicorn

#: Where KServe mounts the InferenceService's storageUri (the layout of slowfast-serve kserve).
DEFAULT_LAYOUT = Path("/mnt/models")
DEFAULT_PORT = 8080  # the port KServe routes to and probes
#: How long requests in flight may take to finish once the gateway is told to stop (Kubernetes' default grace
#: period is 30 s).
SHUTDOWN_GRACE_S = 25


@dataclass(frozen=True)
class GatewaySettings(UpstreamSettings):
    """TorchServe in the same pod (:class:`UpstreamSettings`), and the callers' token.

    Attributes:
        caller_token_file: the file holding the token callers must send; ``None``: no caller authentication.
    """

    caller_token_file: Path | None = None
    unreachable_remedy: str = "TorchServe in this container is starting, or has exited (see the container's log)"
    timeout_remedy: str = (
        "try a shorter video or a larger stride, or raise the gateway's --timeout and the InferenceService's timeout"
    )


class GatewayError(RuntimeError):
    """The gateway cannot start or keep serving, with what to do."""


#: What ``slowfast-serve gateway`` reports as ``error: ...`` with exit status 1 (slowfast_serve/cli.py).
FAILURES = (GatewayError, ServeError, PageError)


def _caller_token(token_file: Path) -> str:
    """The token callers must send: the file's content without surrounding whitespace (raises ``OSError``)."""
    return token_file.read_text().strip()


def _refused_caller(request: Request, token_file: Path | None) -> Response | None:
    """The 401 (or 500) for a caller without the right token; ``None`` when it may pass."""
    if token_file is None:
        return None
    try:
        expected = _caller_token(token_file)
    except OSError as e:
        return error(500, "CallerTokenFile", f"the gateway cannot read its callers' token file {token_file} ({e})")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode()):
        return None
    answer = error(
        401,
        "Unauthorized",
        "this service needs its token: send 'Authorization: Bearer <token>' (the Secret the ServingRuntime mounts, "
        "docs/deployment.md; slowfast-serve commands read it from $SLOWFAST_SERVE_TOKEN)",
    )
    answer.headers["WWW-Authenticate"] = "Bearer"
    return answer


def create_gateway(settings: GatewaySettings) -> Starlette:
    """The gateway's ASGI application (routes in the module docstring)."""
    upstream = Upstream(settings)

    async def ping(request: Request) -> Response:
        return await upstream.get("/ping")

    async def predict(request: Request) -> Response:
        refused = _refused_caller(request, settings.caller_token_file)
        if refused is not None:
            return refused
        return await upstream.post(request, request.url.path)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return error(
            exc.status_code,
            "NotFound" if exc.status_code == 404 else "MethodNotAllowed",
            f"{request.method} {request.url.path} is not served here: POST /v1/models/<name>:predict, "
            "POST /predictions/<name>, GET /ping",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await upstream.start()
        yield
        await upstream.close()

    return Starlette(
        routes=[
            Route("/ping", ping),
            Route("/v1/models/{model}:predict", predict, methods=["POST"]),
            Route("/predictions/{model}", predict, methods=["POST"]),
            Route("/predictions/{model}/{version}", predict, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layout",
        type=Path,
        default=DEFAULT_LAYOUT,
        help="the directory slowfast-serve kserve wrote (config/ and model-store/; default: %(default)s, where "
        "KServe mounts the storageUri)",
    )
    parser.add_argument(
        "--runtime-dir",
        type=Path,
        default=Path("~/torchserve"),
        help="TorchServe's config copy, key_file.json, temp files and logs (default: %(default)s)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    callers = parser.add_mutually_exclusive_group(required=True)
    callers.add_argument(
        "--token-file",
        type=Path,
        help="file holding the token callers must send as 'Authorization: Bearer <token>' (a mounted Secret)",
    )
    callers.add_argument(
        "--no-caller-auth",
        action="store_true",
        help="serve callers without a token (authentication at the ingress or service mesh)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds a prediction may take (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    """Starts TorchServe and the gateway; returns when both have stopped. Fails with :data:`FAILURES`."""
    import uvicorn

    config, store = args.layout / "config" / "config.properties", args.layout / "model-store"
    if not config.is_file() or not store.is_dir():
        raise GatewayError(
            f"{args.layout} is not a layout of slowfast-serve kserve (config/config.properties, model-store/)"
        )
    if args.token_file is not None and not _has_token(args.token_file):
        raise GatewayError(f"no token in --token-file {args.token_file} (a missing or empty file)")
    check_port(args.host, args.port)
    server = TorchServe(args.runtime_dir.expanduser(), store, console=True)
    server.start(
        {},
        base_config=config,
        overrides={"model_store": str(server.model_store), "allowed_urls": server.allowed_urls()},
    )
    settings = GatewaySettings(
        inference_url=server.inference_url,
        management_url=server.management_url,
        key_file=server.key_file if server.token_auth() else None,
        timeout_s=args.timeout,
        caller_token_file=args.token_file,
    )
    auth = "token authorization on" if settings.key_file else "token authorization OFF in the layout's config"
    callers = f"callers' token from {args.token_file}" if args.token_file else "callers not authenticated"
    print(
        f"gateway on {args.host}:{args.port} -> TorchServe at {settings.inference_url} ({auth}; {callers})", flush=True
    )
    gateway = uvicorn.Server(
        uvicorn.Config(
            create_gateway(settings),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
    try:
        torchserve_exited = asyncio.run(_serve(gateway, server))
    finally:
        server.stop()
    if torchserve_exited:
        raise GatewayError(f"TorchServe exited; stopping the gateway.\n{server.log_tail(20)}")
    return 0


def _has_token(path: Path) -> bool:
    try:
        return bool(_caller_token(path))
    except OSError:
        return False


async def _serve(gateway: uvicorn.Server, server: TorchServe) -> bool:
    """Serves until told to stop (SIGTERM, SIGINT) or until TorchServe exits; returns whether TorchServe did."""
    exited = False

    async def watch() -> None:
        nonlocal exited
        while not gateway.should_exit:
            if server.pid() is None:
                exited = gateway.should_exit = True
            await asyncio.sleep(1.0)

    # uvicorn handles SIGTERM/SIGINT while it serves, then restores the handlers it found and raises the signal
    # again: with the default handlers that would kill this process before it stops TorchServe.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(gateway, "should_exit", True))
    watcher = asyncio.ensure_future(watch())
    try:
        await gateway.serve()
    finally:
        watcher.cancel()
    return exited
