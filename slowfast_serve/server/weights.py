"""Download a registry model's official checkpoint into the local cache, once (or print the bundled one's path).

The cache is torch.hub's (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``):
the same place ``torch.hub.load(..., pretrained=True)`` stores these files, so a checkpoint fetched by the
PyTorchVideo tutorial is found and not downloaded again.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

import torch

from handler.detection import SERVED_MODELS, DetectionSpec, any_spec
from handler.models import ModelSpec
from handler.persons import torchvision_weights_url
from slowfast_serve.server import PACKAGE_DATA


class DownloadError(RuntimeError):
    """The checkpoint could not be fetched; the message says how to proceed without a network."""


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_checkpoint(spec: ModelSpec | DetectionSpec) -> Path | None:
    """The cached official checkpoint of ``spec``, if it was downloaded before."""
    if spec.checkpoint_filename is None:
        return None
    path = cache_dir() / spec.checkpoint_filename
    return path if path.is_file() else None


def bundled_checkpoint(spec: ModelSpec | DetectionSpec) -> Path | None:
    """The checkpoint committed to this repository for ``spec`` (the offline demo model), if any."""
    if spec.bundled_checkpoint is None:
        return None
    path = (PACKAGE_DATA / spec.bundled_checkpoint).resolve()  # in a checkout: the repository's models/
    return path if path.is_file() else None


def find_checkpoint(spec: ModelSpec | DetectionSpec, *, timeout: float = 15.0) -> Path:
    """``spec``'s weights: the bundled checkpoint, else the cached official one, else a download of it."""
    return bundled_checkpoint(spec) or download_checkpoint(spec, timeout=timeout)


def model_checkpoint(model: str, given: Path | None = None, *, timeout: float = 15.0) -> Path:
    """The weights to serve registry ``model`` with: ``given``, else :func:`find_checkpoint`'s."""
    return given or find_checkpoint(any_spec(model), timeout=timeout)


def download_checkpoint(spec: ModelSpec | DetectionSpec, *, timeout: float = 15.0) -> Path:
    """Returns the cached checkpoint of ``spec``, downloading it first if needed.

    Raises:
        DownloadError: when the model has no official checkpoint or the server cannot be reached in
            ``timeout`` seconds; the message lists the offline alternatives.
    """
    cached = cached_checkpoint(spec)
    if cached is not None:
        return cached
    if spec.checkpoint_url is None:
        raise DownloadError(f"{spec.name} has no official checkpoint; pass CHECKPOINT=path/to/checkpoint.pyth")
    target = cache_dir() / spec.checkpoint_filename
    try:
        _download(spec.checkpoint_url, target, timeout)
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(offline_help(spec, f"{type(e).__name__}: {e}")) from e
    return target


def _download(url: str, target: Path, timeout: float) -> None:
    # Probe first with a short timeout: torch.hub's downloader has none and would hang offline.
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(target), progress=True)


def find_person_detector(name: str, *, timeout: float = 15.0) -> Path:
    """torchvision's COCO weights of the person detector ``name`` (:data:`handler.persons.TORCHVISION_DETECTORS`):
    from torch.hub's cache, where torchvision itself keeps them, else downloaded there.

    Raises:
        DownloadError: offline without a cached copy; the message says how to proceed.
    """
    url = torchvision_weights_url(name)
    target = cache_dir() / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    try:
        _download(url, target, timeout)
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(
            f"cannot download the {name} person detector's weights from {url} ({type(e).__name__}: {e}).\n"
            "To proceed without network access, either:\n"
            f"  - copy {target.name} (downloaded elsewhere from the URL above) to {cache_dir()}/, or\n"
            "  - pass it explicitly: DETECTOR_CHECKPOINT=/path/to/it (slowfast-serve: --detector-checkpoint), or\n"
            "  - use OpenCV's built-in people detector, which needs no weights: DETECTOR=hog"
        ) from e
    return target


def offline_help(spec: ModelSpec | DetectionSpec, reason: str) -> str:
    """What to do when the official checkpoint cannot be downloaded."""
    return (
        f"cannot download the {spec.name} checkpoint from {spec.checkpoint_url} ({reason}).\n"
        "To proceed without network access, either:\n"
        f"  - copy {spec.checkpoint_filename} (downloaded elsewhere from the URL above) to {cache_dir()}/, or\n"
        f"  - pass it explicitly: make serve MODEL={spec.name} CHECKPOINT=/path/to/{spec.checkpoint_filename}\n"
        f"To try the plumbing with random weights (predictions are meaningless and say 'random-init'):\n"
        f"  make serve MODEL={spec.name} RANDOM_INIT=1\n"
        "Or serve the bundled offline demo model (8 synthetic motion classes): make serve MODEL=motion_demo"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=SERVED_MODELS, help="registry model name")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the server (default: 15)")


def run(args: argparse.Namespace) -> int:
    try:
        print(model_checkpoint(args.model, timeout=args.timeout))
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
