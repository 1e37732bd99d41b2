"""The manifests of deploy/kserve/ against KServe's own CRD schemas, strictly.

The schemas are the ``openAPIV3Schema`` of KServe's ``InferenceService`` and ``ServingRuntime`` CRDs as released
(deploy/kserve/crds/: version, source and checksums in its README). The API server prunes fields a CRD does
not declare, silently; here, as ``kubeconform -strict`` does, an undeclared field is an error: every object
schema that lists ``properties`` and does not preserve unknown fields gets ``additionalProperties: false``.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests import REPO

DEPLOY = REPO / "deploy" / "kserve"
CRDS = DEPLOY / "crds"
KSERVE_VERSION = "v0.20.0"
#: Kind -> the CRD file of the pinned release.
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml.gz",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml.gz",
}
#: What metadata may hold in these manifests (the CRDs leave ObjectMeta to the API server).
METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")


def strict(schema: dict[str, Any], inside_junctor: bool = False) -> dict[str, Any]:
    """``schema`` with unknown fields refused wherever it declares its fields (a structural schema's junctors,
    ``anyOf`` and friends, only add constraints to the fields declared beside them, so they stay open)."""
    out = dict(schema)
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and not inside_junctor
    ):
        out["additionalProperties"] = False
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in _JUNCTORS:
        if isinstance(out.get(key), list):
            out[key] = [strict(sub, inside_junctor=True) for sub in out[key]]
        elif isinstance(out.get(key), dict):
            out[key] = strict(out[key], inside_junctor=True)
    return out


@functools.cache
def _crd(kind: str) -> dict[str, Any]:
    return yaml.safe_load(gzip.decompress((CRDS / KSERVE_VERSION / CRD_FILES[kind]).read_bytes()))


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    """The strict validator of ``kind`` at ``api_version`` (``serving.kserve.io/v1beta1``) in the pinned CRDs."""
    crd = _crd(kind)
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group, f"{kind} is in {crd['spec']['group']}, not {group}"
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"KServe {KSERVE_VERSION} serves {kind} as {sorted(served)}, not {version}"
    schema = dict(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"] = dict(schema["properties"])
    schema["properties"]["metadata"] = METADATA
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    schema["properties"]["apiVersion"] = {"enum": [api_version]}
    schema["properties"]["kind"] = {"enum": [kind]}
    return jsonschema.Draft4Validator(strict(schema))


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def errors(document: dict[str, Any]) -> list[str]:
    found = validator(document["apiVersion"], document["kind"]).iter_errors(document)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in found]


def test_the_stored_crds_are_the_released_ones() -> None:
    readme = (CRDS / "README.md").read_text()
    assert KSERVE_VERSION in readme
    for name in CRD_FILES.values():
        text = gzip.decompress((CRDS / KSERVE_VERSION / name).read_bytes())
        digest = hashlib.sha256(text).hexdigest()
        assert re.search(rf"`{re.escape(name.removesuffix('.gz'))}`.*`{digest}`", readme), f"{name}: {digest}"


@pytest.mark.slow
@pytest.mark.parametrize(("path", "document"), list(manifests()), ids=lambda v: getattr(v, "name", ""))
def test_every_manifest_passes_the_kserve_schema_strictly(path: Path, document: dict[str, Any]) -> None:
    assert document["kind"] in CRD_FILES, f"{path.name}: no schema stored for {document['kind']}"
    assert errors(document) == []


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        ("InferenceService", lambda d: d["spec"]["predictor"].update(minReplica=1), "'minReplica' was unexpected"),
        ("InferenceService", lambda d: d["spec"]["predictor"].update(maxReplicas="8"), "'8' is not of type 'integer'"),
        ("InferenceService", lambda d: d["spec"]["predictor"]["model"].update(storageURI="gs://x"), "'storageURI'"),
        ("ServingRuntime", lambda d: d["spec"]["containers"][0].update(command2=["x"]), "'command2' was unexpected"),
        (
            "ServingRuntime",
            lambda d: d["spec"]["containers"][0]["resources"]["limits"].update(memory="24 gigs"),
            "'24 gigs' does not match",
        ),
        ("ServingRuntime", lambda d: d["metadata"].update(Name="x"), "'Name' was unexpected"),
    ],
    ids=["misspelt field", "wrong type", "misspelt nested field", "unknown container field", "quantity", "metadata"],
)
def test_a_broken_manifest_is_refused(kind: str, change: Any, expected: str) -> None:
    """The check is strict enough to catch what the API server would prune or refuse."""
    (document,) = (copy.deepcopy(d) for _, d in manifests() if d["kind"] == kind)
    change(document)
    found = errors(document)
    assert any(expected in error for error in found), found


def test_the_runtime_runs_the_image_the_docs_build_and_the_service_uses_it() -> None:
    documents = {d["kind"]: d for _, d in manifests()}
    runtime, service = documents["ServingRuntime"], documents["InferenceService"]
    (container,) = runtime["spec"]["containers"]
    deployment = (REPO / "docs" / "deployment.md").read_text()
    assert f"docker build -t {container['image']} ." in deployment
    assert f"docker push {container['image']}" in deployment
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert KSERVE_VERSION in deployment


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386: ``kubectl patch --type merge``) applied to a copy of ``target``."""
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_the_documented_patches_keep_the_service_valid() -> None:
    """docs/deployment.md's rollout and scaling patches, applied to inference-service.yaml, pass the schema."""
    (service,) = (d for _, d in manifests() if d["kind"] == "InferenceService")
    deployment = (REPO / "docs" / "deployment.md").read_text()
    patches = re.findall(r"kubectl patch inferenceservice (\S+) --type merge -p\s+'([^']+)'", deployment)
    assert len(patches) >= 3, patches
    for name, patch in patches:
        assert name == service["metadata"]["name"]
        patched = _merge(service, json.loads(patch))
        assert errors(patched) == [], patch
    canary = [json.loads(p) for _, p in patches if "storageUri" in p]
    assert canary[0]["spec"]["predictor"]["canaryTrafficPercent"] == 10
