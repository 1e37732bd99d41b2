"""The web page's own server: the page's files, and a thin proxy to TorchServe that holds the tokens.

The browser only ever talks to this server (same origin). Its two API routes forward to TorchServe through
:class:`slowfast_serve.web.upstream.Upstream`, which adds TorchServe's ``inference`` / ``management`` key
(renewed before it expires), so no key ever reaches the browser:

- ``GET /api/models``: every registered model with its workers, batching and the worker's own description
  (kind, clip, classes, weights, engine, detector: :meth:`handler.pipeline.ServedModel.describe`);
- ``POST /api/predictions/{model}``: the upload streamed through as it arrives (never held whole in memory),
  with its ``Content-Type`` and ``X-`` option headers, answered with TorchServe's status and JSON.

Errors of the proxy itself are upstream.py's (``502 ServiceUnreachable``, ``504 ServiceTimeout``, ``500
KeyFile``). Because any web site the user visits could otherwise post to a loopback port, API calls must carry
``X-Requested-With: slowfast-web`` (a header a cross-site form cannot send without a CORS preflight, which this
server never grants) and the ``Host`` must be one the server was started for (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slowfast_serve.client.errors import KeyFileError
from slowfast_serve.web.upstream import Upstream, UpstreamSettings, error, error_text, relay

STATIC = Path(__file__).resolve().parent / "static"
#: The header every API call must carry (see the module docstring).
API_HEADER = ("x-requested-with", "slowfast-web")
#: Everything the page loads comes from this server; media and images may also be the page's own blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@dataclass(frozen=True)
class WebSettings(UpstreamSettings):
    """Where TorchServe is (:class:`UpstreamSettings`), and which ``Host`` values are served (``*`` for any;
    only with a non-loopback listener)."""

    allowed_hosts: tuple[str, ...] = field(default=("127.0.0.1", "localhost", "[::1]", "::1"))
    unreachable_remedy: str = (
        "start it with `make serve`, or give `slowfast-serve web` its addresses (--inference-url, --management-url)"
    )
    timeout_remedy: str = "try a shorter video, a larger stride, or start the page with a longer --timeout"


class Proxy:
    """The API routes, over one :class:`Upstream`."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.upstream = Upstream(settings)

    async def models(self, request: Request) -> Response:
        """Every registered model: name, version, workers (ready / all), batch size and delay, and the worker's
        own description (``description``; ``null`` with ``description_error`` when no worker could answer)."""
        url = self.settings.management_url.rstrip("/")
        client = self.upstream.client
        assert client is not None
        try:
            headers = await self.upstream.auth("management")
            listed = await client.get(f"{url}/models", params={"limit": 1000}, headers=headers)
            if not listed.is_success:
                return relay(listed)
            names = [model["modelName"] for model in listed.json().get("models", [])]
            described = await asyncio.gather(*(self._describe(url, name, headers) for name in names))
        except KeyFileError as e:
            return error(500, "KeyFile", e.message)
        except httpx.HTTPError as e:
            return self.upstream.unreachable(url, e)
        return JSONResponse({"models": described})

    async def _describe(self, url: str, name: str, headers: dict[str, str]) -> dict[str, Any]:
        assert self.upstream.client is not None
        answer = await self.upstream.client.get(f"{url}/models/{name}", params={"customized": "true"}, headers=headers)
        entry: dict[str, Any] = {"name": name, "description": None}
        if not answer.is_success:
            entry["description_error"] = error_text(answer)
            return entry
        version = answer.json()[0]
        workers = version.get("workers", [])
        entry.update(
            version=version.get("modelVersion"),
            workers={"ready": sum(w.get("status") == "READY" for w in workers), "all": len(workers)},
            batch_size=version.get("batchSize"),
            max_batch_delay_ms=version.get("maxBatchDelay"),
        )
        described = version.get("customizedMetadata")
        with contextlib.suppress(TypeError, ValueError):  # TorchServe passes the worker's JSON on as it parses
            described = json.loads(described) if isinstance(described, str) else described
        if isinstance(described, dict):
            entry["description"] = described
        else:
            entry["description_error"] = "no worker described the model (none is ready yet?)"
        return entry

    async def predict(self, request: Request) -> Response:
        """Streams the upload to ``POST /predictions/{model}`` and relays TorchServe's answer."""
        return await self.upstream.post(request, f"/predictions/{request.path_params['model']}")


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(settings: WebSettings) -> Starlette:
    """The page's ASGI application: ``/`` (the page), ``/static/`` (its JS and CSS), ``/healthz`` and the proxy
    routes under ``/api/``."""
    proxy = Proxy(settings)

    async def guarded(request: Request) -> Response:
        if request.headers.get(API_HEADER[0]) != API_HEADER[1]:
            return error(403, "Forbidden", f"API calls come from the page itself (header {API_HEADER[0]} missing)")
        return await (proxy.predict if request.method == "POST" else proxy.models)(request)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await proxy.upstream.start()
        yield
        await proxy.upstream.close()

    return Starlette(
        routes=[
            Route("/", _page),
            Route("/healthz", _health),
            Route("/api/models", guarded),
            Route("/api/predictions/{model}", guarded, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts)),
            Middleware(SecurityHeaders),
        ],
        lifespan=lifespan,
    )


class SecurityHeaders:
    """Adds the content security policy (nothing from another origin, no framing) and no-sniff, no-referrer and
    no-store headers to every answer. Pure ASGI, so that request and response bodies stream through untouched."""

    HEADERS = (
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
