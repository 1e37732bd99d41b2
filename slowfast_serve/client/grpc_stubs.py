"""Generate TorchServe's gRPC Python stubs from the ``.proto`` files of the installed TorchServe.

The protos ship inside ``ts/frontend/model-server.jar`` (``proto/inference.proto`` and
``proto/management.proto``), so the stubs always match the server the client talks to. They import
``google/protobuf/empty.proto`` (bundled with grpcio-tools) and ``google/rpc/status.proto`` (from
googleapis-common-protos). Output: ``inference_pb2.py``, ``inference_pb2_grpc.py``, ``management_pb2.py``,
``management_pb2_grpc.py`` in :data:`DEFAULT_OUT` (``build/grpc`` of the checkout, ignored by git; outside a
checkout a per-user cache folder). ``scripts/install.sh`` generates them after installing the requirements;
:mod:`slowfast_serve.client.grpc_client` does when they are missing or were generated from another TorchServe.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from slowfast_serve.checkout import CHECKOUT

DEFAULT_OUT = (CHECKOUT / "build" if CHECKOUT else Path.home() / ".cache" / "slowfast-serve") / "grpc"
PROTOS = ("inference.proto", "management.proto")
STAMP = "stubs.version"


def server_jar() -> Path:
    """The installed TorchServe's frontend jar (raises ``FileNotFoundError`` when TorchServe is not installed)."""
    try:
        files = metadata.files("torchserve") or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the gRPC stubs are generated from the installed TorchServe's protos, and TorchServe is not installed "
            "here: use the HTTP client, or the checkout's environment (scripts/install.sh)"
        ) from None
    for file in files:
        if file.name == "model-server.jar":
            return Path(file.locate())
    raise FileNotFoundError("model-server.jar not found in the torchserve package")


def _fingerprint(jar: Path) -> str:
    with zipfile.ZipFile(jar) as archive:
        digest = hashlib.sha256(b"".join(archive.read(f"proto/{name}") for name in PROTOS)).hexdigest()[:16]
    return f"torchserve {metadata.version('torchserve')} protos {digest}"


def up_to_date(out: Path = DEFAULT_OUT) -> bool:
    """Whether ``out`` holds stubs generated from the installed TorchServe's protos."""
    stamp = out / STAMP
    return stamp.is_file() and stamp.read_text().strip() == _fingerprint(server_jar())


def generate(out: Path = DEFAULT_OUT) -> Path:
    """Extracts the protos from the jar and compiles them into ``out``; returns ``out``.

    Raises:
        RuntimeError: protoc failed (its message attached).
    """
    import google.rpc.status_pb2  # noqa: F401 (fails early if googleapis-common-protos is missing)
    import grpc_tools
    from grpc_tools import protoc

    jar = server_jar()
    out.mkdir(parents=True, exist_ok=True)
    googleapis = Path(google.rpc.status_pb2.__file__).parents[2]  # site-packages: google/rpc/status.proto
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(jar) as archive:
        for name in PROTOS:
            (Path(tmp) / name).write_bytes(archive.read(f"proto/{name}"))
        command = [
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
            f"-I{googleapis}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *PROTOS,
        ]
        if protoc.main(command) != 0:
            raise RuntimeError(f"protoc failed on TorchServe's protos from {jar}")
    (out / STAMP).write_text(_fingerprint(jar) + "\n")
    return out
