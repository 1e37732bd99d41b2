"""The one exception type of the client: :class:`ServiceError`, carrying the server's JSON error."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """The service did not answer a call with success.

    Attributes:
        status: the HTTP status (or, over gRPC, the handler's own status); ``None`` when no answer came.
        type: the error type the service names (``InvalidVideo``, ``ClipOutOfRange``, ``InvalidKeyException`` ...,
            docs/api.md), or the client's own (``Unreachable``, ``KeyFile``).
        message: the service's actionable message.
        body: the server's JSON error as received (``{}`` when there was none).
    """

    def __init__(self, status: int | None, type: str, message: str, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.type = type
        self.message = message
        self.body = body or {}
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"{where}{type}: {message}")

    @classmethod
    def from_body(cls, status: int, body: Any) -> ServiceError:
        """From a non-success answer: TorchServe's and the handler's errors are ``{"code", "type", "message"}``."""
        if isinstance(body, dict):
            return cls(status, str(body.get("type", "Error")), str(body.get("message", body)), body)
        return cls(status, "Error", str(body)[:500])


class ServiceUnreachableError(ServiceError):
    """Nothing answered at the address (the server is not running, or the address is wrong)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(None, "Unreachable", f"cannot reach TorchServe at {address}; is it running? ({reason})")


class KeyFileError(ServiceError):
    """TorchServe's ``key_file.json`` is missing, unreadable, or lacks the key asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "KeyFile", message)
