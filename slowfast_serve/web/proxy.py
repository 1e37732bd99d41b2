"""The web page's own server: the page's files, and a thin proxy to TorchServe that holds the tokens.

The browser only ever talks to this server (same origin). Its two API routes forward to TorchServe with the
``inference`` / ``management`` key of TorchServe's ``key_file.json``, read on every call (``slowfast-serve
token`` rewrites the file), so no key ever reaches the browser:

- ``GET /api/models``: every registered model with its workers, batching and the worker's own description
  (kind, clip, classes, weights, engine, detector: :meth:`handler.pipeline.ServedModel.describe`);
- ``POST /api/predictions/{model}``: the upload streamed through as it arrives (never held whole in memory),
  with its ``Content-Type`` and ``X-`` option headers, answered with TorchServe's status and JSON.

Anything the proxy itself cannot do is answered in the service's error shape, ``{"code", "type", "message"}``:
``502 ServiceUnreachable`` when TorchServe does not answer, ``504 ServiceTimeout`` past ``timeout_s``, ``500
KeyFile`` when the key file cannot be read. Because any web site the user visits could otherwise post to a
loopback port, API calls must carry ``X-Requested-With: slowfast-web`` (a header a cross-site form cannot
send without a CORS preflight, which this server never grants) and the ``Host`` must be one the server was
started for (DNS rebinding).
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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slowfast_serve.client.errors import KeyFileError
from slowfast_serve.client.keys import read_token

STATIC = Path(__file__).resolve().parent / "static"
#: The header every API call must carry (see the module docstring).
API_HEADER = ("x-requested-with", "slowfast-web")
#: Everything the page loads comes from this server; media and images may also be the page's own blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
#: The request headers passed on to TorchServe besides the ``X-`` options (never cookies or the browser's own
#: ``Authorization``: the proxy sets that).
FORWARDED = ("content-type", "content-length", "accept")
NOT_FORWARDED_X = ("x-requested-with", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip")


@dataclass(frozen=True)
class WebSettings:
    """Where TorchServe is and how long to wait for it.

    Attributes:
        inference_url: TorchServe's inference address.
        management_url: its management address.
        key_file: its ``key_file.json``; ``None`` when token authorization is off (no token is sent).
        timeout_s: the longest a prediction may take, upload excluded (a long timeline on a CPU takes minutes).
        connect_timeout_s: how long to wait for TorchServe to accept a connection.
        allowed_hosts: ``Host`` header values served (``*`` for any; only with a non-loopback listener).
    """

    inference_url: str = "http://127.0.0.1:8080"
    management_url: str = "http://127.0.0.1:8081"
    key_file: Path | None = None
    timeout_s: float = 600.0
    connect_timeout_s: float = 5.0
    allowed_hosts: tuple[str, ...] = field(default=("127.0.0.1", "localhost", "[::1]", "::1"))


def error(status: int, type_: str, message: str) -> JSONResponse:
    """An answer in the service's error shape."""
    return JSONResponse({"code": status, "type": type_, "message": message}, status_code=status)


class Proxy:
    """The API routes, over one pooled HTTP client to TorchServe."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.client: httpx.AsyncClient | None = None

    def _timeout(self) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s, write=s.timeout_s)

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=self._timeout())

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def _auth(self, kind: str) -> dict[str, str]:
        if self.settings.key_file is None:
            return {}
        return {"Authorization": f"Bearer {read_token(self.settings.key_file, kind, wait=2.0)}"}

    def _unreachable(self, url: str, e: httpx.HTTPError) -> JSONResponse:
        if isinstance(e, httpx.TimeoutException) and not isinstance(e, httpx.ConnectTimeout):
            return error(
                504,
                "ServiceTimeout",
                f"TorchServe at {url} did not answer within {self.settings.timeout_s:.0f} s; a long video or a "
                "timeline takes longer on a CPU: try a shorter video, a larger stride, or start the page with a "
                "longer --timeout",
            )
        return error(
            502,
            "ServiceUnreachable",
            f"TorchServe is not answering at {url} ({type(e).__name__}); start it with `make serve`, or give "
            "`slowfast-serve web` its addresses (--inference-url, --management-url)",
        )

    async def models(self, request: Request) -> Response:
        """Every registered model: name, version, workers (ready / all), batch size and delay, and the worker's
        own description (``description``; ``null`` with ``description_error`` when no worker could answer)."""
        url = self.settings.management_url.rstrip("/")
        assert self.client is not None
        try:
            headers = self._auth("management")
            listed = await self.client.get(f"{url}/models", params={"limit": 1000}, headers=headers)
            if not listed.is_success:
                return _relay(listed)
            names = [model["modelName"] for model in listed.json().get("models", [])]
            described = await asyncio.gather(*(self._describe(url, name, headers) for name in names))
        except KeyFileError as e:
            return error(500, "KeyFile", e.message)
        except httpx.HTTPError as e:
            return self._unreachable(url, e)
        return JSONResponse({"models": described})

    async def _describe(self, url: str, name: str, headers: dict[str, str]) -> dict[str, Any]:
        assert self.client is not None
        answer = await self.client.get(f"{url}/models/{name}", params={"customized": "true"}, headers=headers)
        entry: dict[str, Any] = {"name": name, "description": None}
        if not answer.is_success:
            entry["description_error"] = _error_text(answer)
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
        """Streams the upload to ``POST /predictions/{model}`` and relays TorchServe's answer. If the browser goes
        away (the user cancelled), the call to TorchServe is dropped too."""
        url = f"{self.settings.inference_url.rstrip('/')}/predictions/{request.path_params['model']}"
        assert self.client is not None
        try:
            headers = _forwarded_headers(request) | self._auth("inference")
        except KeyFileError as e:
            return error(500, "KeyFile", e.message)
        uploaded = asyncio.Event()
        call = asyncio.ensure_future(
            self.client.post(url, content=_body(request, uploaded), headers=headers, timeout=self._timeout())
        )
        gone = asyncio.ensure_future(_disconnected(request, uploaded))
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not call.done():  # the browser left while TorchServe was working
            call.cancel()
            return Response(status_code=499)
        try:
            answer = call.result()
        except ClientDisconnect:  # the browser aborted the upload
            return Response(status_code=499)
        except httpx.HTTPError as e:
            return self._unreachable(self.settings.inference_url, e)
        return _relay(answer)


async def _body(request: Request, uploaded: asyncio.Event) -> AsyncIterator[bytes]:
    """The request body chunk by chunk as the browser sends it; sets ``uploaded`` at its end."""
    async for chunk in request.stream():
        if chunk:
            yield chunk
    uploaded.set()


async def _disconnected(request: Request, uploaded: asyncio.Event) -> None:
    """Returns when the browser disconnects after its upload (reading the ASGI channel before the body has been
    read whole would take the body's own messages)."""
    await uploaded.wait()
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)


def _forwarded_headers(request: Request) -> dict[str, str]:
    return {
        name: value
        for name, value in request.headers.items()
        if name in FORWARDED or (name.startswith("x-") and name not in NOT_FORWARDED_X)
    }


def _relay(answer: httpx.Response) -> Response:
    """TorchServe's answer as it came when it is JSON; otherwise (TorchServe's own empty 413, a proxy's HTML page)
    the same status in the service's error shape."""
    try:
        body = answer.json()
    except ValueError:
        return error(answer.status_code, _STATUS_TYPES.get(answer.status_code, "Error"), _error_text(answer))
    return JSONResponse(body, status_code=answer.status_code)


_STATUS_TYPES = {413: "RequestEntityTooLarge", 404: "NotFound", 503: "ServiceUnavailable"}


def _error_text(answer: httpx.Response) -> str:
    if answer.status_code == 413 and not answer.content:
        return (
            "TorchServe refused the upload: it is larger than its max_request_size (100 MiB in this project's "
            "config.properties); send a shorter or more compressed video"
        )
    try:
        body = answer.json()
        return str(body.get("message", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return answer.text[:500] or f"HTTP {answer.status_code} {answer.reason_phrase}"


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
        await proxy.start()
        yield
        await proxy.close()

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
