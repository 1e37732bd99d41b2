"""A client of the service that needs neither torch nor PyAV nor TorchServe (``pip install ".[client]"``).

    from slowfast_serve.client import Client, ServiceError

    client = Client.from_key_file("http://127.0.0.1:8080", model="motion_demo")
    try:
        result = client.classify("clip.mp4", top_k=3)
    except ServiceError as e:
        print(e.status, e.type, e.message)

:class:`Management` scales workers and registers archives; :mod:`slowfast_serve.client.grpc_client` speaks
gRPC (stubs generated from the installed TorchServe's protos, so it needs the server stack).
"""

from slowfast_serve.client.errors import KeyFileError, ServiceError, ServiceUnreachableError
from slowfast_serve.client.inference import (
    DEFAULT_URL,
    Classification,
    Client,
    Detection,
    Detections,
    Interval,
    Keyframe,
    Prediction,
    Segment,
    Timeline,
)
from slowfast_serve.client.keys import find_key_file, read_token
from slowfast_serve.client.management import DEFAULT_MANAGEMENT_URL, Management

__all__ = [
    "DEFAULT_MANAGEMENT_URL",
    "DEFAULT_URL",
    "Classification",
    "Client",
    "Detection",
    "Detections",
    "Interval",
    "Keyframe",
    "KeyFileError",
    "Management",
    "Prediction",
    "Segment",
    "ServiceError",
    "ServiceUnreachableError",
    "Timeline",
    "find_key_file",
    "read_token",
]
