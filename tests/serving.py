"""A real TorchServe for tests: free loopback ports, the repository's config, an isolated runtime directory."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from torchserve_ctl import TorchServe


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def running_torchserve(mar: Path, directory: Path) -> Iterator[TorchServe]:
    """A real TorchServe with the repository's config.properties on free loopback ports, serving ``mar``.

    ``directory`` holds the instance's runtime files; keep its path short (the worker's Unix socket lives there).
    """
    instance = TorchServe(directory, mar.parent)
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    name = mar.stem
    instance.start(
        {name: mar.name},
        overrides={
            "inference_address": f"http://127.0.0.1:{inference}",
            "management_address": f"http://127.0.0.1:{management}",
            "metrics_address": f"http://127.0.0.1:{metrics}",
            "grpc_inference_port": str(grpc_inference),
            "grpc_management_port": str(grpc_management),
        },
    )
    try:
        instance.wait_ready(name, timeout=300)
        yield instance
    finally:
        instance.stop()
