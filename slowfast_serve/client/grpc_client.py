"""TorchServe gRPC client: inference (``Ping``, ``Predictions``, ``StreamPredictions``) and management.

The stubs come from the installed TorchServe's own ``.proto`` files (:mod:`slowfast_serve.client.grpc_stubs`;
generated on first use when ``make setup`` has not). Tokens travel as ``authorization: Bearer <key>`` metadata: the
``inference`` key for the inference service, the ``management`` key for the management service
(``key_file.json``).

gRPC has one status per call and TorchServe sends the handler's per-request status only over HTTP, so a
request that failed inside a batch arrives as an OK call whose payload is the handler's JSON error; the client
checks every payload and raises :class:`PredictionError` for those.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import empty_pb2

from slowfast_serve.client.errors import ServiceError
from slowfast_serve.client.grpc_stubs import DEFAULT_OUT, generate, up_to_date

DEFAULT_INFERENCE = "127.0.0.1:7070"
DEFAULT_MANAGEMENT = "127.0.0.1:7071"
# Uploads are large: allow messages up to TorchServe's max_request_size of this project (100 MiB).
_MESSAGE_LIMIT = 100 * 2**20
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
]


class PredictionError(ServiceError):
    """The handler answered a request with an error (status, type and message of its JSON body)."""

    def __init__(self, body: dict[str, Any]) -> None:
        status, kind, message = (
            int(body.get("code", 500)),
            str(body.get("type", "Error")),
            str(body.get("message", body)),
        )
        super().__init__(status, kind, message, body)


def stubs() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """``(inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc)``, generated if needed."""
    if not up_to_date(DEFAULT_OUT):
        generate(DEFAULT_OUT)
    names = ("inference_pb2", "inference_pb2_grpc", "management_pb2", "management_pb2_grpc")
    return tuple(_load(name) for name in names)  # type: ignore[return-value]


def _load(name: str) -> ModuleType:
    """The generated module ``name`` from :data:`DEFAULT_OUT`, registered under its top-level name: protoc's
    ``*_pb2_grpc`` modules import their ``*_pb2`` by that name, and load in the order above finds it there."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEFAULT_OUT / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"no generated module {name} in {DEFAULT_OUT}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _result(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except ValueError:
        raise PredictionError({"code": 500, "type": "InvalidResponse", "message": payload[:200]}) from None
    if isinstance(body, dict) and "predictions" not in body and {"code", "type", "message"} <= body.keys():
        raise PredictionError(body)
    return body


@dataclass
class GrpcClient:
    """A connection to TorchServe's gRPC inference and management services.

    Attributes:
        inference: ``host:port`` of the inference service.
        management: ``host:port`` of the management service.
        token: the inference key (``None`` when token authorization is off).
        management_token: the management key.
        timeout: seconds per call.
    """

    inference: str = DEFAULT_INFERENCE
    management: str = DEFAULT_MANAGEMENT
    token: str | None = None
    management_token: str | None = None
    timeout: float = 300

    def __post_init__(self) -> None:
        self._inference_pb2, inference_grpc, self._management_pb2, management_grpc = stubs()
        self._inference_channel = grpc.insecure_channel(self.inference, options=_CHANNEL_OPTIONS)
        self._management_channel = grpc.insecure_channel(self.management, options=_CHANNEL_OPTIONS)
        self._inference_stub = inference_grpc.InferenceAPIsServiceStub(self._inference_channel)
        self._management_stub = management_grpc.ManagementAPIsServiceStub(self._management_channel)

    def close(self) -> None:
        self._inference_channel.close()
        self._management_channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _metadata(token: str | None) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")] if token else []

    def ping(self) -> str:
        """TorchServe's health (``"Healthy"``)."""
        response = self._inference_stub.Ping(empty_pb2.Empty(), metadata=self._metadata(self.token), timeout=10)
        return json.loads(response.health)["status"]

    def _request(self, model: str, video: bytes, options: dict[str, Any]) -> Any:
        fields = {"data": video, **{k: str(v).encode() for k, v in options.items() if v is not None}}
        return self._inference_pb2.PredictionsRequest(model_name=model, input=fields)

    def predict(self, model: str, video: bytes, **options: Any) -> dict[str, Any]:
        """Classifies ``video`` (the file's bytes); ``options`` are request fields (``top_k``, ``start_sec``).

        Raises:
            PredictionError: the handler rejected the request (bad video, bad option, ...).
            grpc.RpcError: the call itself failed (unknown model, no token, server down, ...).
        """
        response = self._inference_stub.Predictions(
            self._request(model, video, options), metadata=self._metadata(self.token), timeout=self.timeout
        )
        return _result(response.prediction)

    def stream_predict(self, model: str, video: bytes, **options: Any) -> Iterator[dict[str, Any]]:
        """``StreamPredictions``: every message the handler sends for the request, parsed (one for a plain
        classification)."""
        responses = self._inference_stub.StreamPredictions(
            self._request(model, video, options), metadata=self._metadata(self.token), timeout=self.timeout
        )
        for response in responses:
            yield _result(response.prediction)

    def _manage(self, method: str, **fields: Any) -> Any:
        request = getattr(self._management_pb2, f"{method}Request")(**fields)
        call = getattr(self._management_stub, method)
        response = call(request, metadata=self._metadata(self.management_token), timeout=self.timeout)
        try:
            return json.loads(response.msg)
        except ValueError:
            return response.msg

    def describe(self, model: str) -> list[dict[str, Any]]:
        """The management description of ``model`` (its versions, workers, batch settings)."""
        return self._manage("DescribeModel", model_name=model)

    def list_models(self) -> dict[str, Any]:
        return self._manage("ListModels")

    def scale(self, model: str, min_worker: int, max_worker: int | None = None) -> Any:
        """Sets ``model``'s worker count and waits until the workers are up."""
        max_worker = max_worker if max_worker is not None else min_worker
        return self._manage(
            "ScaleWorker", model_name=model, min_worker=min_worker, max_worker=max_worker, synchronous=True
        )

    def register(self, url: str, **fields: Any) -> Any:
        """Registers an archive (``url``: a ``.mar`` in the model store); needs ``enable_model_api=true``."""
        return self._manage("RegisterModel", url=url, synchronous=True, **fields)

    def unregister(self, model: str) -> Any:
        """Unregisters ``model``; needs ``enable_model_api=true``."""
        return self._manage("UnregisterModel", model_name=model)
