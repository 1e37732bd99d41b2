"""Lay out built archives the way KServe's TorchServe runtime reads a ``storageUri``::

    <output>/
    ├── config/config.properties     TorchServe's config: this repository's, with the in-cluster changes below
    └── model-store/<name>.mar       the archives, as slowfast-serve archive wrote them

Upload the directory (``gsutil cp -r``, ``aws s3 cp --recursive``, a PVC) and point the InferenceService's
``storageUri`` at it (deploy/kserve/, docs/deployment.md). KServe mounts it at ``/mnt/models``.

In-cluster changes to config.properties (everything else, such as request size limits and metrics, is kept):
- listeners: TorchServe's inference API on the pod's loopback (``127.0.0.1:8085``): the pod's port 8080,
  which KServe routes to and probes, is ``slowfast-serve gateway``'s (deploy/kserve/runtime.yaml), which holds
  TorchServe's tokens; metrics on ``0.0.0.0:8082`` (Prometheus scrape); management and gRPC on the loopback.
- token authorization stays on (``disable_token_authorization=false``), with keys that last
  ``token_expiration_min`` (a week; the gateway renews them before they expire): TorchServe's keys are random
  per process, so only the gateway beside it can use them (KServe's stock runtime fails on them: pytorch/serve
  issue 3301); callers authenticate to the gateway with a token all replicas share.
- ``model_store=/mnt/models/model-store`` and ``model_snapshot``: the models, their versions and TorchServe
  batching/workers from each archive's build record.
- ``enable_envvars_config=false``: the stock runtime sets ``TS_SERVICE_ENVELOPE``, but this handler reads
  KServe v1 bodies itself (``{"instances": [...]}``), and TorchServe's envelope would drop its batching.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from slowfast_serve.server.archive import DEFAULT_STORE, BuildRecord
from slowfast_serve.server.torchserve import DEFAULT_CONFIG, read_properties, write_properties
from slowfast_serve.web.gateway import DEFAULT_LAYOUT

MOUNT = DEFAULT_LAYOUT  # where KServe's storage initializer puts the storageUri's contents
#: TorchServe's inference API inside the pod; the pod's port 8080 is the gateway's.
TORCHSERVE_INFERENCE = "http://127.0.0.1:8085"
#: How long TorchServe's keys last in a pod: the gateway renews a key a minute before it expires, and a
#: renewal fails an upload that is under way at that moment, so keys live long (a week).
TOKEN_MINUTES = 7 * 24 * 60


def kserve_properties(records: list[BuildRecord], base_config: Path = DEFAULT_CONFIG) -> dict[str, str]:
    """``base_config``'s properties with the in-cluster changes (see the module docstring) for ``records``."""
    properties = read_properties(base_config)
    store = MOUNT / "model-store"
    models = {
        record.name: {
            record.version: {
                "defaultVersion": True,
                "marName": f"{record.name}.mar",
                "minWorkers": record.serving["minWorkers"],
                "maxWorkers": record.serving["maxWorkers"],
                "batchSize": record.serving["batchSize"],
                "maxBatchDelay": record.serving["maxBatchDelay"],
                "responseTimeout": record.serving["responseTimeout"],
            }
        }
        for record in records
    }
    properties.update(
        {
            "inference_address": TORCHSERVE_INFERENCE,
            "management_address": "http://127.0.0.1:8081",
            "metrics_address": "http://0.0.0.0:8082",
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": "7070",
            "grpc_management_port": "7071",
            "model_store": str(store),
            "model_snapshot": json.dumps({"name": "startup.cfg", "modelCount": len(models), "models": models}),
            "disable_token_authorization": "false",
            "token_expiration_min": str(TOKEN_MINUTES),
            "enable_envvars_config": "false",
            # A regex in a properties file: backslashes written twice.
            "allowed_urls": f"file://{store}/[^/]+[.]mar".replace("\\", "\\\\"),
        }
    )
    return properties


def make_layout(names: list[str], model_store: Path, output: Path) -> Path:
    """Writes ``output/config/config.properties`` and copies each ``<name>.mar`` to ``output/model-store/``.

    Raises:
        ValueError: an archive or its build record is missing (build it first: make archive).
    """
    records = []
    for name in names:
        record = BuildRecord.load(name, model_store)
        if record is None or not (model_store / f"{name}.mar").exists():
            raise ValueError(f"no archive {name}.mar with its build record in {model_store}; run make archive first")
        records.append(record)
    (output / "config").mkdir(parents=True, exist_ok=True)
    (output / "model-store").mkdir(exist_ok=True)
    for name in names:
        shutil.copy2(model_store / f"{name}.mar", output / "model-store" / f"{name}.mar")
    write_properties(kserve_properties(records), output / "config" / "config.properties")
    return output


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", help="archive names in the model store (e.g. slowfast_r50)")
    parser.add_argument("--model-store", type=Path, default=DEFAULT_STORE, help="default: %(default)s")
    parser.add_argument("--output", type=Path, required=True, help="the directory to upload as the storageUri")


def run(args: argparse.Namespace) -> int:
    try:
        print(make_layout(args.names, args.model_store, args.output))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
