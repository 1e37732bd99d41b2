"""The one error type for problems with a single request.

A :class:`RequestError` carries the HTTP status the client should get, a short machine-readable type and a
message that says what was wrong and how to fix it. The pipeline raises it for anything the client can change
(bad bytes, bad options, a clip outside the video); the TorchServe adapter turns it into that request's own
status and JSON body while the other requests of the batch go on. Anything else is a bug and is allowed to
fail the batch loudly.
"""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A client-side problem with one request.

    Args:
        status: HTTP status code for the response (4xx).
        type: short CamelCase name of the problem, stable for clients to match on (e.g. ``"InvalidVideo"``).
        message: what was received, what is allowed, and how to fix it.
        limit: for a 413, the service limit that was exceeded, ``(name, value)`` (e.g. ``("max_timeline_windows",
            120)``), so that a client can size what it sends next without parsing the message.
    """

    def __init__(self, status: int, type: str, message: str, limit: tuple[str, float] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.limit = limit

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"code": 400, "type": "...", "message": "..."}``, plus ``"limit": {"name",
        "value"}`` when a limit was exceeded."""
        body: dict[str, Any] = {"code": self.status, "type": self.type, "message": self.message}
        if self.limit is not None:
            body["limit"] = {"name": self.limit[0], "value": self.limit[1]}
        return body

    def __repr__(self) -> str:
        return f"RequestError({self.status}, {self.type!r}, {self.message!r})"


def bad_request(type: str, message: str) -> RequestError:
    """A 400 with the given type and message."""
    return RequestError(400, type, message)
