#!/usr/bin/env python3
"""Generate TorchServe's gRPC Python stubs from the ``.proto`` files of the installed TorchServe.

The protos ship inside ``ts/frontend/model-server.jar`` (``proto/inference.proto`` and
``proto/management.proto``), so the stubs always match the server the client talks to. They import
``google/protobuf/empty.proto`` (bundled with grpcio-tools) and ``google/rpc/status.proto`` (from
googleapis-common-protos). Output: ``inference_pb2.py``, ``inference_pb2_grpc.py``, ``management_pb2.py``,
``management_pb2_grpc.py`` in ``--out`` (default ``build/grpc``, ignored by git). ``scripts/install.sh`` runs
this after installing the requirements; ``scripts/ts_grpc.py`` runs it when the stubs are missing or were
generated from another TorchServe.

Example:
    .venv/bin/python scripts/grpc_stubs.py --out build/grpc
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "build" / "grpc"
PROTOS = ("inference.proto", "management.proto")
STAMP = "stubs.version"


def server_jar() -> Path:
    """The installed TorchServe's frontend jar (raises ``FileNotFoundError`` when TorchServe is not installed)."""
    try:
        files = metadata.files("torchserve") or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("TorchServe is not installed here: run `make setup`") from None
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        print(generate(args.out))
    except (FileNotFoundError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
