"""Checkpoint files: what a file is, read without running code from it.

This module

- recognises a file's format from its bytes, never from its name: a torch zip (``torch.save``), a legacy torch
  file (``_use_new_zipfile_serialization=False``) or a plain pickle (PaddleVideo's ``.pdparams``, PySlowFast's
  Caffe2 ``.pkl``);
- reads it without executing anything from it: torch files through ``torch.load(weights_only=True)``, which
  admits numpy's array, scalar and dtype reconstruction on top of its own (MMAction2's ``meta`` holds numpy
  scalars), and plain pickles through :class:`DataUnpickler`, which admits numpy arrays and plain containers
  only; any other object in a file refuses the whole file;
- unwraps the container and recognises whose names its tensors have (:attr:`Checkpoint.naming`,
  :mod:`handler.checkpoint_names`), keeping the file's names and layouts.

A file converted by this project (:func:`handler.checkpoints.convert_checkpoint`) is ``{"model_state":
state_dict, "source": {"file", "sha256", "layout", "format"}}``: a plain ``weights_only`` torch file whose responses
still name the original.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import hashlib
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from handler.checkpoint_names import CAFFE2, PADDLE_NAME_TABLE, PADDLE_SPLIT_ARRAYS, Naming, naming_of, skipped
from handler.models import RANDOM_INIT, REGISTRY, ModelSpec
from handler.recipes import Toolbox

try:  # numpy 2 moved these modules to numpy._core; pickles written under numpy 1 name numpy.core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


# The "format" of a source record: which toolbox file a converted checkpoint was made from.
FORMATS: dict[Naming, str] = {
    Toolbox.PYTORCHVIDEO: "pytorchvideo-pyth",
    Toolbox.MMACTION2: "mmaction2-pth",
    Toolbox.PADDLEVIDEO: "paddle-pdparams",
    Toolbox.PYSLOWFAST: "pyslowfast-pyth",
    CAFFE2: "caffe2-pkl",
}
SHOWN = 3  # problems listed per kind in a message


class CheckpointError(ValueError):
    """A checkpoint file that cannot be served as asked; the message says what the file is and what to do."""


# --------------------------------------------------------------------------------------------------------------
# Reading bytes safely


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for ``bytes`` (numpy's raw array data): latin-1 only."""
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is refused")
    return text.encode("latin1")


def _numpy_functions() -> dict[str, Any]:
    """numpy's array and scalar reconstruction functions, under each name a pickle may give them (numpy 1 pickles
    say ``numpy.core``, numpy 2 pickles ``numpy._core``; ``_frombuffer`` rebuilds protocol-5 arrays)."""
    functions: dict[str, Any] = {}
    for module in ("numpy.core", "numpy._core"):
        functions[f"{module}.multiarray._reconstruct"] = _multiarray._reconstruct
        functions[f"{module}.multiarray.scalar"] = _multiarray.scalar
        functions[f"{module}.numeric._frombuffer"] = _numeric._frombuffer
    return functions


_NUMPY_FUNCTIONS = _numpy_functions()
# What DataUnpickler resolves, by the name a pickle gives it.
_PICKLE_GLOBALS: dict[str, Any] = {
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    **_NUMPY_FUNCTIONS,
    "collections.OrderedDict": OrderedDict,
    "_codecs.encode": _latin1_bytes,
    # Plain containers; Paddle 2.1 pickles a tensor as ``(tuple, ((name, array),))``.
    **{f"builtins.{t.__name__}": t for t in (tuple, list, dict, set, frozenset, complex, bytearray)},
}
# numpy >= 1.25 rebuilds a dtype in a torch file through its class (numpy.dtypes.Float32DType, ...).
_DTYPE_CLASSES = sorted({type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGSU"}, key=lambda t: t.__name__)
# torch's weights_only unpickler matches a global by "module.name": the functions once per spelling.
_TORCH_NUMPY_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    *_DTYPE_CLASSES,
    *((f, n) for n, f in _NUMPY_FUNCTIONS.items()),
]
_ADMITTED = set(_PICKLE_GLOBALS) | {f"{t.__module__}.{t.__qualname__}" for t in _DTYPE_CLASSES}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class DataUnpickler(pickle.Unpickler):
    """A pickle reader that builds numpy arrays, numpy scalars and plain containers, and nothing else.

    ``find_class`` is the only way a pickle reaches code; every name outside :data:`_PICKLE_GLOBALS` raises
    before anything is called, so a hostile pickle (``os.system`` in a ``__reduce__``) is refused, not run.
    Strings are decoded as latin-1, as Paddle and PySlowFast read their pickles (Python 2's ``str`` array data).
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str) -> Any:
        # Python 2's names (``__builtin__.tuple``...), mapped as pickle's own find_class maps them for old protocols.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _PICKLE_GLOBALS[f"{module}.{name}"]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids (torch storages) appear only in torch files")


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER: a legacy file's first pickle
_MEDIA = (
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"GIF8", "a GIF image"),
    (4, b"ftyp", "an MP4/QuickTime video"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (8, b"AVI ", "an AVI video"),
)
_EXPECTED = (
    "Expected a checkpoint: a torch.save file (.pyth/.pth: PyTorchVideo, PySlowFast, MMAction2), a PaddleVideo "
    ".pdparams or a PySlowFast Caffe2 .pkl."
)


def _not_loadable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a loadable PyTorch checkpoint ({reason}). {_EXPECTED}")


def _refused(path: Path, names: list[str], kind: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a loadable PyTorch checkpoint: it is {kind} referring to {', '.join(sorted(set(names)))}, "
        "which is refused (only tensors, numpy arrays and plain containers are read from a file: unpickling "
        "anything else could run code). Nothing in it was run; re-save the weights alone (a state dict) to use them."
    )


def _first_line(error: BaseException) -> str:
    """The error's type and first sentence (torch's messages go on with advice that does not apply here)."""
    lines = str(error).strip().splitlines()
    sentence = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(error).__name__}: {sentence}"[:300]


@dataclass(frozen=True)
class _Loaded:
    file_format: str  # "torch zip", "torch legacy", "pickle protocol N"
    content: Any


def _load_file(path: Path) -> _Loaded:
    """The file's content, read as its first bytes say; a :class:`CheckpointError` for anything else."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not head:
        raise _not_loadable(path, "the file is empty")
    for offset, magic, what in _MEDIA:
        if head[offset : offset + len(magic)] == magic:
            raise _not_loadable(path, f"it is {what}")
    if head.startswith(b"PK\x03\x04"):
        return _Loaded("torch zip", _torch_load(path, zipped=True))
    first = _unpickle(path, head)
    if isinstance(first, int) and first == _TORCH_LEGACY_MAGIC:
        return _Loaded("torch legacy", _torch_load(path, zipped=False))
    protocol = head[1] if head[0] == 0x80 else 0
    return _Loaded(f"pickle protocol {protocol}", first)


def _unpickle(path: Path, head: bytes) -> Any:
    """The first pickle in the file, through :class:`DataUnpickler`."""
    try:
        with path.open("rb") as f:
            return DataUnpickler(f).load()
    except _RefusedGlobal as e:
        raise _refused(path, [e.name], "a pickle") from None
    except Exception as e:  # any failure of a plain pickle reader means the same: not such a file
        if isinstance(e, EOFError) or "truncated" in str(e):
            reason = "truncated"
        elif head[0] == 0x80:
            reason = "a damaged pickle"
        else:
            reason = "neither a torch file nor a pickle"
        raise _not_loadable(path, f"{reason}; {_first_line(e)}") from None


def _torch_load(path: Path, zipped: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_TORCH_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = _refused_torch_globals(path, e, zipped)
        if names:
            raise _refused(path, names, "a torch file") from None
        raise _not_loadable(path, f"corrupt torch file; {_first_line(e)}") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ValueError... for broken files
        kind = "torch zip" if zipped else "legacy torch file"
        raise _not_loadable(path, f"truncated or corrupt {kind}; {_first_line(e)}") from None


_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>")


def _refused_torch_globals(path: Path, error: Exception, zipped: bool) -> list[str]:
    """The globals a torch file pickles that ``weights_only`` refuses: all of them for a zip file, else the one
    torch's error names."""
    if zipped:
        with contextlib.suppress(Exception):  # a damaged archive: the error message still names one
            names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in _ADMITTED]
            if names:
                return names
    return [a or b for a, b in _GLOBAL_IN_ERROR.findall(str(error))]


# --------------------------------------------------------------------------------------------------------------
# What a file is


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file as read: its tensors under the file's own names and layouts, and what holds them.

    Attributes:
        path: the file.
        sha256: hex digest of the whole file.
        file_format: ``"torch zip"``, ``"torch legacy"`` or ``"pickle protocol N"``.
        container: what held the tensors, for messages (``"meta + state_dict"``, ``"model_state"``, ``"blobs"``...).
        naming: how the tensors are named (:data:`Naming`), read from the keys.
        tensors: name -> tensor exactly as stored (numpy arrays become tensors of the same dtype and shape).
        skipped: entries not converted on purpose (training blobs, Paddle's name table, MMAction2's
            ``data_preprocessor`` statistics).
        source: the record of a file this project converted (:func:`convert_checkpoint`), else ``None``.
        model: the registry entry a file of this project was written for (``save_random_checkpoint``,
            ``slowfast-serve finetune``), else ``None``.
        random_init: written by ``save_random_checkpoint``.
    """

    path: Path
    sha256: str
    file_format: str
    container: str
    naming: Naming
    tensors: dict[str, torch.Tensor]
    skipped: tuple[str, ...] = ()
    source: dict[str, str] | None = None
    model: str | None = None
    random_init: bool = False

    @property
    def layout(self) -> Toolbox:
        """Whose checkpoint this is: the toolbox of its names, or for PyTorchVideo names the toolbox of the file
        this project converted it from, or of the registry entry it was written for."""
        if self.naming == CAFFE2:
            return Toolbox.PYSLOWFAST
        if self.naming != Toolbox.PYTORCHVIDEO:
            return self.naming
        if self.source is not None:
            return Toolbox(self.source["layout"])
        if self.model in REGISTRY:
            return REGISTRY[self.model].checkpoint_layout
        return Toolbox.PYTORCHVIDEO

    @property
    def official(self) -> bool:
        """Already this project's format: a torch file of ``{"model_state": PyTorchVideo-named state dict}``."""
        return (
            self.naming == Toolbox.PYTORCHVIDEO
            and self.container == "model_state"
            and self.file_format.startswith("torch")
        )

    @property
    def description(self) -> str:
        """What responses report as ``"weights"``: ``random-init``, or the original file's name and hash."""
        if self.random_init:
            return RANDOM_INIT
        if self.source is not None:
            return f"{self.source['file']} sha256:{self.source['sha256'][:12]}"
        return f"{self.path.name} sha256:{self.sha256[:12]}"

    def accepted_by(self, spec: ModelSpec) -> bool:
        """Whether ``spec`` serves this toolbox's checkpoints (a PySlowFast entry also PyTorchVideo's: PySlowFast's
        zoo ships some of its models as PyTorchVideo files). This project's random-init files fit any entry."""
        wanted = spec.checkpoint_layout
        pyslowfast_as_pytorchvideo = wanted == Toolbox.PYSLOWFAST and self.layout == Toolbox.PYTORCHVIDEO
        return self.random_init or self.layout == wanted or pyslowfast_as_pytorchvideo


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Reads and recognises ``path`` (any format this module knows); tensors keep the file's names and layouts.

    Raises:
        CheckpointError: the file is no checkpoint, is truncated, or pickles objects other than tensors, numpy
            arrays and plain containers (then nothing in it was run).
    """
    path = Path(path)
    loaded = _load_file(path)
    digest = _sha256(path)
    content = loaded.content
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a checkpoint (a dict of tensors)")
    fields = _unwrap(path, content, loaded.file_format)
    return Checkpoint(path=path, sha256=digest, file_format=loaded.file_format, **fields)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unwrap(path: Path, content: Mapping, file_format: str) -> dict[str, Any]:
    """The fields of :class:`Checkpoint` read from the loaded top-level mapping."""
    extra: dict[str, Any] = {}
    if isinstance(content.get("blobs"), Mapping):
        state, container = content["blobs"], "blobs"
    elif isinstance(content.get("model_state"), Mapping):
        state, container = content["model_state"], "model_state"
        extra = {
            "source": _source_record(path, content.get("source")),
            "model": content.get("model") if isinstance(content.get("model"), str) else None,
            "random_init": content.get("random_init") is True,
        }
    elif isinstance(content.get("state_dict"), Mapping):
        state, container = content["state_dict"], "meta + state_dict" if "meta" in content else "state_dict"
    elif content and all(_is_array_entry(k, v) for k, v in content.items()):
        state, container = content, "state dict" if file_format.startswith("torch") else "arrays"
    else:
        keys = list(content)[:8]
        raise CheckpointError(f"{path} holds no 'model_state' entry and is not a state dict (found: {keys})")
    state = dict(state)
    if PADDLE_SPLIT_ARRAYS in state:
        _join_split_arrays(path, state)
        container += " (split arrays)"
    if PADDLE_NAME_TABLE in state:
        container += " + name table"
    state = _strip_prefix(state, "module.")
    naming = naming_of(state, container)
    left_out = tuple(k for k in state if skipped(k, naming))
    tensors = {k: _as_tensor(path, k, v) for k, v in state.items() if k not in left_out}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors ({container} is empty)")
    return {"container": container, "naming": naming, "tensors": tensors, "skipped": left_out, **extra}


def _unnamed(value: Any) -> Any:
    """The array of Paddle 2.1's ``(parameter name, array)`` form of a tensor; anything else as it is."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return value[1]
    return value


def _is_array_entry(key: Any, value: Any) -> bool:
    """A state-dict entry: a tensor or array (possibly Paddle 2.1's named form), or Paddle's bookkeeping."""
    if key in (PADDLE_NAME_TABLE, PADDLE_SPLIT_ARRAYS):
        return True
    return isinstance(key, str) and isinstance(_unnamed(value), torch.Tensor | np.ndarray)


def _source_record(path: Path, record: Any) -> dict[str, str] | None:
    if record is None:
        return None
    wanted = {"file", "sha256", "layout", "format"}
    if (
        not isinstance(record, Mapping)
        or not wanted <= set(record)
        or not all(isinstance(record[k], str) for k in wanted)
        or record["layout"] not in set(Toolbox)
        or not re.fullmatch(r"[0-9a-f]{64}", record["sha256"])
    ):
        raise CheckpointError(f"{path} has a malformed 'source' record (expected string fields {sorted(wanted)})")
    return {k: record[k] for k in sorted(wanted)}


def _join_split_arrays(path: Path, state: dict[str, Any]) -> None:
    """Paddle's ``_unpack_saved_dict`` form: arrays over 2^30 bytes stored flat in ``name@@.i`` slices."""
    info = state.pop(PADDLE_SPLIT_ARRAYS)
    try:
        for key, value in info.items():
            parts = [state.pop(part) for part in value["slices"]]
            state[key] = np.concatenate(parts).reshape(value["OriginShape"])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has a malformed {PADDLE_SPLIT_ARRAYS} table ({_first_line(e)})") from None


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Keys without ``prefix`` when every key has it (``module.`` of a DataParallel-wrapped model)."""
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _as_tensor(path: Path, key: Any, value: Any) -> torch.Tensor:
    value = _unnamed(value)
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(key, str) or not isinstance(value, np.ndarray):
        raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor or array")
    if value.dtype.kind not in "biuf":
        raise CheckpointError(f"{path}: entry {key!r} holds {value.dtype} data, not numbers")
    return torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("="), copy=True))
