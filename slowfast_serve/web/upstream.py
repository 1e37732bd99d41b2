"""TorchServe seen from a proxy in front of it: the web page's server (proxy.py) and the KServe pod's gateway
(gateway.py) both forward requests through :class:`Upstream`.

It holds TorchServe's tokens so that callers never see them: the ``inference`` / ``management`` key of
TorchServe's ``key_file.json`` is read on every call (``slowfast-serve token`` rewrites the file) and renewed
through TorchServe's token API, with the ``API`` key, when it expires within :data:`RENEW_BEFORE_S` (TorchServe's
keys last 60 minutes unless ``token_expiration_min`` says otherwise). Uploads stream through as they arrive
(never held whole in memory), and a caller that goes away drops its call to TorchServe.

What the proxy itself cannot do is answered in the service's error shape, ``{"code", "type", "message"}``:
``502 ServiceUnreachable`` when TorchServe does not answer, ``504 ServiceTimeout`` past ``timeout_s``, ``500
KeyFile`` when the key file cannot be read or a key cannot be renewed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from slowfast_serve.client.errors import KeyFileError
from slowfast_serve.client.keys import Key, read_key, renewal_request

#: A key that expires within this many seconds is renewed before it is used: long enough for a large upload to
#: reach TorchServe (which checks the key once the whole request has arrived).
RENEW_BEFORE_S = 60.0
#: The request headers passed on to TorchServe besides the ``X-`` options (never cookies or the caller's own
#: ``Authorization``: the proxy sets that).
FORWARDED = ("content-type", "content-length", "accept")
NOT_FORWARDED_X = ("x-requested-with", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip")


@dataclass(frozen=True)
class UpstreamSettings:
    """Where TorchServe is and how long to wait for it.

    Attributes:
        inference_url: TorchServe's inference address.
        management_url: its management address (listings, and renewing keys).
        key_file: its ``key_file.json``; ``None`` when token authorization is off (no token is sent).
        timeout_s: the longest a prediction may take, upload excluded (a long timeline on a CPU takes minutes).
        connect_timeout_s: how long to wait for TorchServe to accept a connection.
        unreachable_remedy: what to do when TorchServe does not answer (ends the 502's message).
        timeout_remedy: what to do when it answers too late (ends the 504's message).
    """

    inference_url: str = "http://127.0.0.1:8080"
    management_url: str = "http://127.0.0.1:8081"
    key_file: Path | None = None
    timeout_s: float = 600.0
    connect_timeout_s: float = 5.0
    unreachable_remedy: str = "is it running?"
    timeout_remedy: str = "try a shorter video or a larger stride"


def error(status: int, type_: str, message: str) -> JSONResponse:
    """An answer in the service's error shape."""
    return JSONResponse({"code": status, "type": type_, "message": message}, status_code=status)


class Upstream:
    """One pooled HTTP client to TorchServe, with its tokens. :meth:`start` and :meth:`close` belong in the ASGI
    application's lifespan."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.client: httpx.AsyncClient | None = None
        self._renewing = asyncio.Lock()

    def _timeout(self) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s, write=s.timeout_s)

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=self._timeout())

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def auth(self, kind: str) -> dict[str, str]:
        """The ``Authorization`` header with TorchServe's current ``kind`` key, renewed first when it expires
        within :data:`RENEW_BEFORE_S` (once, however many calls are waiting for it); ``{}`` without a key file.

        Raises:
            KeyFileError: the key file cannot be read, or TorchServe refused to renew the key.
            httpx.HTTPError: TorchServe's management API did not answer the renewal.
        """
        key_file = self.settings.key_file
        if key_file is None:
            return {}
        key = read_key(key_file, kind, wait=2.0)
        if _expires_soon(key.expires):
            async with self._renewing:
                key = read_key(key_file, kind, wait=2.0)  # a call before this one may have renewed it
                if _expires_soon(key.expires):
                    key = await self._renew(key_file, kind)
        return {"Authorization": f"Bearer {key.key}"}

    async def _renew(self, key_file: Path, kind: str) -> Key:
        assert self.client is not None
        answer = await self.client.get(**renewal_request(self.settings.management_url, key_file, kind))
        if not answer.is_success:
            raise KeyFileError(
                f"TorchServe refused to renew its {kind} key (HTTP {answer.status_code}: {error_text(answer)})"
            )
        return read_key(key_file, kind, wait=2.0)

    def unreachable(self, url: str, e: httpx.HTTPError) -> JSONResponse:
        """The answer for a call to ``url`` that failed with ``e``: 504 past the timeout, else 502."""
        if isinstance(e, httpx.TimeoutException) and not isinstance(e, httpx.ConnectTimeout):
            return error(
                504,
                "ServiceTimeout",
                f"TorchServe at {url} did not answer within {self.settings.timeout_s:.0f} s; a long video or a "
                f"timeline takes longer on a CPU: {self.settings.timeout_remedy}",
            )
        return error(
            502,
            "ServiceUnreachable",
            f"TorchServe is not answering at {url} ({type(e).__name__}); {self.settings.unreachable_remedy}",
        )

    async def get(self, path: str, kind: str = "inference") -> Response:
        """``GET`` ``path`` of the inference API (``kind`` ``management``: of the management API), relayed."""
        url = (self.settings.management_url if kind == "management" else self.settings.inference_url).rstrip("/")
        assert self.client is not None
        try:
            answer = await self.client.get(f"{url}{path}", headers=await self.auth(kind))
        except KeyFileError as e:
            return error(500, "KeyFile", e.message)
        except httpx.HTTPError as e:
            return self.unreachable(url, e)
        return relay(answer)

    async def post(self, request: Request, path: str) -> Response:
        """Streams ``request``'s body, its ``Content-Type`` and ``X-`` option headers to ``POST path`` of the
        inference API and relays TorchServe's answer. If the caller goes away (cancelled, or its upload broke
        off), the call to TorchServe is dropped too and the answer is 499."""
        url = f"{self.settings.inference_url.rstrip('/')}{path}"
        assert self.client is not None
        try:
            headers = forwarded_headers(request) | await self.auth("inference")
        except KeyFileError as e:
            return error(500, "KeyFile", e.message)
        except httpx.HTTPError as e:
            return self.unreachable(self.settings.management_url, e)
        uploaded = asyncio.Event()
        call = asyncio.ensure_future(
            self.client.post(url, content=_body(request, uploaded), headers=headers, timeout=self._timeout())
        )
        gone = asyncio.ensure_future(_disconnected(request, uploaded))
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not call.done():  # the caller left while TorchServe was working
            call.cancel()
            return Response(status_code=499)
        try:
            answer = call.result()
        except ClientDisconnect:  # the caller aborted the upload
            return Response(status_code=499)
        except httpx.HTTPError as e:
            return self.unreachable(self.settings.inference_url, e)
        return relay(answer)


def _expires_soon(expires: datetime | None) -> bool:
    return expires is not None and expires - datetime.now(UTC) < timedelta(seconds=RENEW_BEFORE_S)


async def _body(request: Request, uploaded: asyncio.Event) -> AsyncIterator[bytes]:
    """The request body chunk by chunk as the caller sends it; sets ``uploaded`` at its end."""
    async for chunk in request.stream():
        if chunk:
            yield chunk
    uploaded.set()


async def _disconnected(request: Request, uploaded: asyncio.Event) -> None:
    """Returns when the caller disconnects after its upload (reading the ASGI channel before the body has been
    read whole would take the body's own messages)."""
    await uploaded.wait()
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)


def forwarded_headers(request: Request) -> dict[str, str]:
    """The headers of ``request`` that TorchServe gets: :data:`FORWARDED` and the ``X-`` options."""
    return {
        name: value
        for name, value in request.headers.items()
        if name in FORWARDED or (name.startswith("x-") and name not in NOT_FORWARDED_X)
    }


def relay(answer: httpx.Response) -> Response:
    """TorchServe's answer as it came when it is JSON; otherwise (TorchServe's own empty 413, a proxy's HTML page)
    the same status in the service's error shape."""
    try:
        body = answer.json()
    except ValueError:
        return error(answer.status_code, _STATUS_TYPES.get(answer.status_code, "Error"), error_text(answer))
    return JSONResponse(body, status_code=answer.status_code)


_STATUS_TYPES = {413: "RequestEntityTooLarge", 404: "NotFound", 503: "ServiceUnavailable"}


def error_text(answer: httpx.Response) -> str:
    """The message of a non-success answer: its JSON ``message``, else its text."""
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
