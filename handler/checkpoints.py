"""Checkpoint files: what a file is, read without running code from it, converted to this project's layout.

Every registry network (:func:`handler.models.build_model`) has PyTorchVideo's parameter names. The SlowFast
checkpoints that MMAction2, PaddleVideo and PySlowFast publish hold the same tensors under their own names and,
for two of them, in their own layouts (``ModelSpec.checkpoint_layout`` names whose file an entry serves). This
module

- recognises a file's format from its bytes, never from its name: a torch zip (``torch.save``), a legacy torch
  file (``_use_new_zipfile_serialization=False``) or a plain pickle (PaddleVideo's ``.pdparams``, PySlowFast's
  Caffe2 ``.pkl``);
- reads it without executing anything from it: torch files through ``torch.load(weights_only=True)``, which
  admits numpy's array, scalar and dtype reconstruction on top of its own (MMAction2's ``meta`` holds numpy
  scalars), and plain pickles through :class:`DataUnpickler`, which admits numpy arrays and plain containers
  only; any other object in a file refuses the whole file;
- recognises whose file it is from its keys (:attr:`Checkpoint.naming`) and, once converted, the architecture
  from its tensors (:class:`Architecture`), so that a file is matched to the registry entries it fits;
- converts it to PyTorchVideo's names and layouts by the rules below (:func:`to_pytorchvideo`) and checks it key
  for key, shape for shape, against the entry's network built with the file's head size.

Tensor layouts, PyTorch's everywhere after conversion: convolution weights ``(out, in, t, h, w)``, linear weights
``(out, in)``, batch-norm ``weight``/``bias``/``running_mean``/``running_var`` ``(channels,)`` float32 and
``num_batches_tracked`` ``()`` int64. What differs in the toolboxes' files (``../shared/notes/ecosystems.md``):

- MMAction2 (``{"meta", "state_dict"}`` or a bare state dict, ``backbone.slow_path...``, ``cls_head.fc_cls...``):
  its head concatenates the pooled fast features first, so ``fc_cls.weight`` is ``(classes, fast + slow)``;
  PyTorchVideo's is ``(classes, slow + fast)``: the columns are swapped.
- PaddleVideo (a pickle of ``{structured name: numpy array}`` plus a name table): batch-norm statistics are named
  ``_mean``/``_variance``, there is no ``num_batches_tracked``, and the linear weight is ``(in, out)``.
- PySlowFast ``.pyth`` (``{"model_state", "cfg", "epoch", ...}``): PySlowFast's names, PyTorch's layouts.
- PySlowFast Caffe2 ``.pkl`` (``{"blobs": {blob name: numpy array}}``): Caffe2 blob names (mapped as PySlowFast's
  ``c2_model_loading.get_name_convert_func`` does), optimizer blobs beside the weights, no ``num_batches_tracked``.

A file converted by this project (:func:`convert_checkpoint`) is ``{"model_state": state_dict, "source": {"file",
"sha256", "layout", "format"}}``: a plain ``weights_only`` torch file whose responses still name the original.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import hashlib
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from handler.models import RANDOM_INIT, REGISTRY, ModelSpec, Weights, build_model

try:  # numpy 2 moved these modules to numpy._core; pickles written under numpy 1 name numpy.core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

Layout = Literal["pytorchvideo", "mmaction2", "paddlevideo", "pyslowfast"]
# How a file names its tensors: a layout's own names, or PySlowFast's Caffe2 blob names.
Naming = Literal["pytorchvideo", "mmaction2", "paddlevideo", "pyslowfast", "caffe2"]

TOOLBOXES: dict[str, str] = {
    "pytorchvideo": "PyTorchVideo",
    "mmaction2": "MMAction2",
    "paddlevideo": "PaddleVideo",
    "pyslowfast": "PySlowFast",
}
# The "format" of a source record: which toolbox file a converted checkpoint was made from.
FORMATS: dict[str, str] = {
    "pytorchvideo": "pytorchvideo-pyth",
    "mmaction2": "mmaction2-pth",
    "paddlevideo": "paddle-pdparams",
    "pyslowfast": "pyslowfast-pyth",
    "caffe2": "caffe2-pkl",
}
HEAD_WEIGHT = "blocks.6.proj.weight"  # create_slowfast's blocks: stem, res2..res5, pathway pool, head
PADDLE_NAME_TABLE = "StructuredToParameterName@@"
PADDLE_SPLIT_ARRAYS = "UnpackBigParamInfor@@"
_SHOWN = 3  # problems listed per kind in a message


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
    def layout(self) -> Layout:
        """Whose checkpoint this is: the toolbox of its names, or for PyTorchVideo names the toolbox of the file
        this project converted it from, or of the registry entry it was written for."""
        if self.naming == "caffe2":
            return "pyslowfast"
        if self.naming != "pytorchvideo":
            return self.naming
        if self.source is not None:
            return self.source["layout"]  # type: ignore[return-value]
        if self.model in REGISTRY:
            return REGISTRY[self.model].checkpoint_layout
        return "pytorchvideo"

    @property
    def official(self) -> bool:
        """Already this project's format: a torch file of ``{"model_state": PyTorchVideo-named state dict}``."""
        return (
            self.naming == "pytorchvideo" and self.container == "model_state" and self.file_format.startswith("torch")
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
        return self.random_init or self.layout == wanted or (wanted == "pyslowfast" and self.layout == "pytorchvideo")


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
    naming = _naming(state, container)
    skipped = tuple(k for k in state if _skip(k, naming))
    tensors = {k: _as_tensor(path, k, v) for k, v in state.items() if k not in skipped}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors ({container} is empty)")
    return {"container": container, "naming": naming, "tensors": tensors, "skipped": skipped, **extra}


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
        or record["layout"] not in TOOLBOXES
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


def _naming(state: Mapping[str, Any], container: str) -> Naming:
    """How the keys name the tensors; PyTorchVideo's for any state dict no toolbox rule recognises."""
    keys = [k for k in state if isinstance(k, str)]
    if container == "blobs":
        return "caffe2"
    if any(k.startswith(("backbone.slow_path.", "backbone.fast_path.", "cls_head.")) for k in keys):
        return "mmaction2"
    if PADDLE_NAME_TABLE in state or any(re.match(r"backbone\.s\d|.*\._(mean|variance)$", k) for k in keys):
        return "paddlevideo"
    if any(re.match(r"s\d(_fuse)?\.|head\.projection\.", k) for k in keys):
        return "pyslowfast"
    return "pytorchvideo"


# Caffe2 training state beside the weights, skipped as PySlowFast's loader skips it (checkpoint.py).
_CAFFE2_TRAINING = re.compile(r"momentum|lr|model_iter")


def _skip(key: str, naming: Naming) -> bool:
    if key in (PADDLE_NAME_TABLE, PADDLE_SPLIT_ARRAYS):
        return True
    if naming == "mmaction2" and key.startswith("data_preprocessor."):
        return True  # MMAction2 1.x's normalisation constants (its publish_model.py deletes them too)
    return naming == "caffe2" and _caffe2_to_pyslowfast(key) is None and bool(_CAFFE2_TRAINING.search(key))


def _as_tensor(path: Path, key: Any, value: Any) -> torch.Tensor:
    value = _unnamed(value)
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(key, str) or not isinstance(value, np.ndarray):
        raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor or array")
    if value.dtype.kind not in "biuf":
        raise CheckpointError(f"{path}: entry {key!r} holds {value.dtype} data, not numbers")
    return torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("="), copy=True))


# --------------------------------------------------------------------------------------------------------------
# Conversion rules: a toolbox's key -> this project's (PyTorchVideo's) key, first matching rule wins.

Rule = tuple[re.Pattern[str], Callable[..., str]]
_PATHWAY = {"slow": 0, "fast": 1}
_MM_CONV = {"1": "a", "2": "b", "3": "c"}  # Bottleneck3d conv1..conv3 = PyTorchVideo's conv_a..conv_c


def _rules(*pairs: tuple[str, Callable[..., str]]) -> list[Rule]:
    return [(re.compile(pattern), build) for pattern, build in pairs]


def _rename(key: str, rules: list[Rule]) -> str | None:
    for pattern, build in rules:
        match = pattern.fullmatch(key)
        if match:
            return build(*match.groups())
    return None


# MMAction2's ResNet3dSlowFast (after ``backbone.``) and SlowFastHead. Stage i of ``layer{i}`` is block i; the
# lateral after the stem (``conv1_lateral``) and after layer i fuse into blocks 0 and i.
_MMACTION2 = _rules(
    (r"(slow|fast)_path\.conv1\.conv\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{_PATHWAY[p]}.conv.{n}"),
    (r"(slow|fast)_path\.conv1\.bn\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{_PATHWAY[p]}.norm.{n}"),
    (r"slow_path\.conv1_lateral\.conv\.(\w+)", lambda n: f"blocks.0.multipathway_fusion.conv_fast_to_slow.{n}"),
    (r"slow_path\.conv1_lateral\.bn\.(\w+)", lambda n: f"blocks.0.multipathway_fusion.norm.{n}"),
    (
        r"slow_path\.layer(\d)_lateral\.conv\.(\w+)",
        lambda i, n: f"blocks.{i}.multipathway_fusion.conv_fast_to_slow.{n}",
    ),
    (r"slow_path\.layer(\d)_lateral\.bn\.(\w+)", lambda i, n: f"blocks.{i}.multipathway_fusion.norm.{n}"),
    (
        r"(slow|fast)_path\.layer(\d)\.(\d+)\.conv([123])\.(conv|bn)\.(\w+)",
        lambda p, i, j, c, kind, n: (
            f"blocks.{i}.multipathway_blocks.{_PATHWAY[p]}.res_blocks.{j}.branch2."
            f"{'conv' if kind == 'conv' else 'norm'}_{_MM_CONV[c]}.{n}"
        ),
    ),
    (
        r"(slow|fast)_path\.layer(\d)\.(\d+)\.downsample\.(conv|bn)\.(\w+)",
        lambda p, i, j, kind, n: (
            f"blocks.{i}.multipathway_blocks.{_PATHWAY[p]}.res_blocks.{j}."
            f"branch1_{'conv' if kind == 'conv' else 'norm'}.{n}"
        ),
    ),
    (r"cls_head\.fc_cls\.(\w+)", lambda n: f"blocks.6.proj.{n}"),
)

# PySlowFast's SlowFast (PaddleVideo's is a line-by-line port: the same names once normalised). Stage k of
# ``s{k}`` (k = 2..5) is block k - 1; ``s{k}_fuse`` (k = 1..4) fuses after it, into block k - 1.
_PYSLOWFAST = _rules(
    (r"s1\.pathway(\d)_stem\.conv\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{p}.conv.{n}"),
    (r"s1\.pathway(\d)_stem\.bn\.(\w+)", lambda p, n: f"blocks.0.multipathway_blocks.{p}.norm.{n}"),
    (r"s(\d)_fuse\.conv_f2s\.(\w+)", lambda k, n: f"blocks.{int(k) - 1}.multipathway_fusion.conv_fast_to_slow.{n}"),
    (r"s(\d)_fuse\.bn\.(\w+)", lambda k, n: f"blocks.{int(k) - 1}.multipathway_fusion.norm.{n}"),
    (
        r"s(\d)\.pathway(\d)_res(\d+)\.branch1(_bn)?\.(\w+)",
        lambda k, p, j, bn, n: (
            f"blocks.{int(k) - 1}.multipathway_blocks.{p}.res_blocks.{j}.branch1_{'norm' if bn else 'conv'}.{n}"
        ),
    ),
    (
        r"s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])(_bn)?\.(\w+)",
        lambda k, p, j, x, bn, n: (
            f"blocks.{int(k) - 1}.multipathway_blocks.{p}.res_blocks.{j}.branch2.{'norm' if bn else 'conv'}_{x}.{n}"
        ),
    ),
    (r"head\.projection\.(\w+)", lambda n: f"blocks.6.proj.{n}"),
)

# Caffe2 blob names -> PySlowFast names, following c2_model_loading.get_name_convert_func for SlowFast's blobs:
# ``t_`` marks the fast pathway; the lateral after res{k} is named after the fast pathway's last block of that
# stage (``t_res2_2_branch2c_bn_subsample``), the one after the stem ``t_pool1_subsample``.
_C2_PARAMS = {"w": "weight", "b": "bias", "s": "weight", "rm": "running_mean", "riv": "running_var"}
_C2_BN = r"bn_(s|b|rm|riv)"
_CAFFE2 = _rules(
    (r"(t_)?conv1_(w)", lambda t, q: f"s1.pathway{int(bool(t))}_stem.conv.{_C2_PARAMS[q]}"),
    (rf"(t_)?res_conv1_{_C2_BN}", lambda t, q: f"s1.pathway{int(bool(t))}_stem.bn.{_C2_PARAMS[q]}"),
    (r"t_pool1_subsample_(w)", lambda q: f"s1_fuse.conv_f2s.{_C2_PARAMS[q]}"),
    (rf"t_pool1_subsample_{_C2_BN}", lambda q: f"s1_fuse.bn.{_C2_PARAMS[q]}"),
    (r"t_res(\d)_\d+_branch2c_bn_subsample_(w)", lambda k, q: f"s{k}_fuse.conv_f2s.{_C2_PARAMS[q]}"),
    (rf"t_res(\d)_\d+_branch2c_bn_subsample_{_C2_BN}", lambda k, q: f"s{k}_fuse.bn.{_C2_PARAMS[q]}"),
    (
        rf"(t_)?res(\d)_(\d+)_branch(1|2[abc])_(?:(w)|{_C2_BN})",
        lambda t, k, j, branch, w, bn: (
            f"s{k}.pathway{int(bool(t))}_res{j}."
            + ("branch1" if branch == "1" else f"branch2.{branch[1]}")
            + ("." if w else "_bn.")
            + _C2_PARAMS[w or bn]
        ),
    ),
    (r"pred_(w|b)", lambda q: f"head.projection.{_C2_PARAMS[q]}"),
)


def _caffe2_to_pyslowfast(blob: str) -> str | None:
    return _rename(blob, _CAFFE2)


def _paddle_to_pyslowfast(key: str) -> str:
    """PaddleVideo's names are PySlowFast's with ``backbone.``, ``_conv``/``_bn``/``_conv_f2s`` module names and
    ``_mean``/``_variance`` batch-norm statistics."""
    key = key.removeprefix("backbone.")
    key = re.sub(r"(?<=\.)_(conv_f2s|conv|bn)(?=\.)", r"\1", key)
    return re.sub(r"\._mean$", ".running_mean", re.sub(r"\._variance$", ".running_var", key))


def _pytorchvideo_name(key: str, naming: Naming) -> str | None:
    """This project's name for a toolbox's key; ``None`` when no rule covers it."""
    if naming == "pytorchvideo":
        return key
    if naming == "mmaction2":
        return _rename(key.removeprefix("backbone."), _MMACTION2)
    if naming == "paddlevideo":
        return _rename(_paddle_to_pyslowfast(key), _PYSLOWFAST)
    pyslowfast = _caffe2_to_pyslowfast(key) if naming == "caffe2" else key
    return None if pyslowfast is None else _rename(pyslowfast, _PYSLOWFAST)


def to_pytorchvideo(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """``checkpoint``'s tensors under this project's names and in PyTorch's layouts.

    Renames by the toolbox's rules, then: MMAction2's classifier columns reordered fast-first -> slow-first;
    PaddleVideo's ``(in, out)`` linear weight transposed; a zero ``num_batches_tracked`` beside every batch norm
    without one (Paddle and Caffe2 keep no such counter). Keys no rule covers keep their name, so that the
    architecture check reports them. (Caffe2 blobs are reshaped once the target network is known: :func:`fit`.)

    Returns:
        name -> tensor; convolution weights ``(out, in, t, h, w)``, the linear weight ``(classes, features)`` with
        the slow pathway's features first.
    """
    state = {_pytorchvideo_name(k, checkpoint.naming) or k: v for k, v in checkpoint.tensors.items()}
    if checkpoint.naming == "mmaction2":
        _swap_head_columns(state)
    if checkpoint.naming == "paddlevideo" and state.get(HEAD_WEIGHT) is not None:
        state[HEAD_WEIGHT] = state[HEAD_WEIGHT].t().contiguous()  # paddle.nn.Linear stores (in, out)
    if checkpoint.naming != "pytorchvideo":
        _fill_batch_counters(state)
    return state


def _caffe2_reshaped(blob: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``blob`` with the parameter's shape when the two differ only by trailing singleton dimensions (PySlowFast's
    Caffe2 loader appends them to a blob with fewer dimensions than the parameter), else unchanged."""

    def trimmed(dims: tuple[int, ...]) -> tuple[int, ...]:
        while dims and dims[-1] == 1:
            dims = dims[:-1]
        return dims

    differs = tuple(blob.shape) != shape and trimmed(tuple(blob.shape)) == trimmed(shape)
    return blob.reshape(shape) if differs else blob


def _swap_head_columns(state: dict[str, torch.Tensor]) -> None:
    """MMAction2's head: ``cat([fast, slow])`` features; PyTorchVideo's: ``cat([slow, fast])``.

    The fast width is the fast pathway's output channels in this very file (its last res stage's ``conv_c``
    rows: 256 for every MMAction2 SlowFast), so ``(classes, fast + slow)`` becomes ``(classes, slow + fast)``.
    """
    weight = state.get(HEAD_WEIGHT)
    fast = fast_width(state)
    if weight is None or weight.dim() != 2 or fast is None or not 0 < fast < weight.shape[1]:
        return  # no head or no fast pathway: the architecture check names what is missing
    state[HEAD_WEIGHT] = torch.cat([weight[:, fast:], weight[:, :fast]], dim=1)


def fast_width(state: Mapping[str, torch.Tensor]) -> int | None:
    """Output channels of the fast pathway (its last res stage's last ``conv_c``), ``None`` without one."""
    found = [
        ((int(m[1]), int(m[2])), tensor)
        for key, tensor in state.items()
        if (m := re.fullmatch(r"blocks\.(\d)\.multipathway_blocks\.1\.res_blocks\.(\d+)\.branch2\.conv_c\.weight", key))
    ]
    return int(max(found, key=lambda item: item[0])[1].shape[0]) if found else None


def _fill_batch_counters(state: dict[str, torch.Tensor]) -> None:
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0, dtype=torch.long))


# --------------------------------------------------------------------------------------------------------------
# Architecture: what a converted state dict is, and which registry entries it fits

_DEPTHS = {(3, 4, 6, 3): "R50", (3, 4, 23, 3): "R101", (3, 8, 36, 3): "R152", (2, 2, 2, 2): "R18"}


@dataclass(frozen=True)
class Architecture:
    """What a PyTorchVideo-named state dict's tensors say about its network.

    Attributes:
        blocks: res blocks per stage (res2..res5) of each pathway, ``(slow, fast)``; empty for one-pathway networks.
        fusion_kernel: temporal kernel of the fast-to-slow lateral convolutions (their weight's dim 2).
        lateral_norm: batch norm after the laterals (PyTorchVideo, PaddleVideo, PySlowFast; not MMAction2's).
        num_classes: rows of the classifier.
    """

    blocks: tuple[tuple[int, ...], ...]
    fusion_kernel: int | None
    lateral_norm: bool
    num_classes: int | None

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> Architecture:
        counts: dict[tuple[int, int], int] = {}
        for key in state:
            m = re.match(r"blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.", key)
            if m:
                stage = (int(m[2]), int(m[1]))
                counts[stage] = max(counts.get(stage, 0), int(m[3]) + 1)
        pathways = sorted({p for p, _ in counts})
        blocks = tuple(tuple(counts[(p, s)] for s in sorted(s for q, s in counts if q == p)) for p in pathways)
        lateral = state.get("blocks.0.multipathway_fusion.conv_fast_to_slow.weight")
        head = state.get(HEAD_WEIGHT)
        return cls(
            blocks=blocks,
            fusion_kernel=int(lateral.shape[2]) if lateral is not None and lateral.dim() == 5 else None,
            lateral_norm="blocks.0.multipathway_fusion.norm.weight" in state,
            num_classes=int(head.shape[0]) if head is not None and head.dim() == 2 else None,
        )

    @property
    def slowfast(self) -> bool:
        return len(self.blocks) == 2

    @property
    def name(self) -> str:
        """``"SlowFast R50"``, ``"SlowFast R152-R50"`` (slow-fast depths), or ``""`` for other networks."""
        if not self.slowfast:
            return ""
        slow, fast = (_DEPTHS.get(b, f"ResNet{list(b)}") for b in self.blocks)
        return f"SlowFast {slow}" if slow == fast else f"SlowFast {slow}-{fast}"

    @property
    def details(self) -> str:
        parts = []
        if self.slowfast and self.fusion_kernel is not None:
            norm = "with" if self.lateral_norm else "without"
            parts.append(f"fusion kernel {self.fusion_kernel}, laterals {norm} batch norm")
        if self.num_classes is not None:
            parts.append(f"{self.num_classes} classes")
        return ", ".join(parts)


_SHAPES: dict[tuple[str, ...], dict[str, tuple[int, ...]]] = {}


def network_shapes(spec: ModelSpec, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """``spec``'s state-dict shapes with a ``num_classes`` head, in the network's key order (cached).

    The network is built on the meta device (no memory, no initialisation cost) where its builder allows.
    """
    classes = num_classes or spec.num_classes
    key = (spec.name, spec.builder, repr(spec.builder_kwargs), spec.num_classes_arg, str(classes))
    if key not in _SHAPES:
        try:
            with torch.device("meta"):
                model = build_model(spec, num_classes=classes)
        except RuntimeError:  # MViT's builder reads tensor values (.item()), which meta tensors do not have
            model = build_model(spec, num_classes=classes)
        _SHAPES[key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SHAPES[key]


def head_rows(state: Mapping[str, torch.Tensor], path: str | Path) -> int:
    """Classes of the classifier: rows of SlowFast's head, else of the last 2-D ``*.weight`` in the state dict."""
    head = state.get(HEAD_WEIGHT)
    matrices = [head] if head is not None and head.dim() >= 2 else []  # a Caffe2 blob may have trailing 1s
    matrices = matrices or [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
    if not matrices:
        raise CheckpointError(f"{path} has no linear classifier weight; is it a video classification checkpoint?")
    return int(matrices[-1].shape[0])


def fit_problems(state: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` against a network's ``shapes`` (the first few each)."""
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    misshaped = [
        f"{k} {tuple(v.shape)} (network: {shapes[k]})" for k, v in state.items() if k in shapes and v.shape != shapes[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_SHOWN])}{more}")
    return problems


def fit(checkpoint: Checkpoint, spec: ModelSpec) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """``checkpoint`` converted for ``spec``'s network built with the file's head size.

    Returns:
        The state dict (in the network's key order when it fits), what does not fit (:func:`fit_problems`;
        empty when it fits) and the head size.
    """
    state = to_pytorchvideo(checkpoint)
    num_classes = head_rows(state, checkpoint.path)
    shapes = network_shapes(spec, num_classes)
    if checkpoint.naming == "caffe2":
        state = {k: _caffe2_reshaped(v, shapes[k]) if k in shapes else v for k, v in state.items()}
    problems = fit_problems(state, shapes)
    return (state if problems else {k: state[k] for k in shapes}), problems, num_classes


def fitting_models(checkpoint: Checkpoint) -> list[str]:
    """The registry entries that serve this toolbox's files and whose network the file fits exactly."""
    pathways = len(Architecture.of(to_pytorchvideo(checkpoint)).blocks) or 1
    found = []
    for spec in REGISTRY.values():
        if checkpoint.accepted_by(spec) and spec.clip.pathways == pathways:
            with contextlib.suppress(CheckpointError):  # no classifier: fits nothing
                if not fit(checkpoint, spec)[1]:
                    found.append(spec.name)
    return found


def what_it_is(checkpoint: Checkpoint) -> str:
    """What a file is, for messages: ``"an MMAction2 SlowFast R101 checkpoint (torch zip, meta + state_dict, 1254
    tensors; fusion kernel 7, laterals without batch norm, 400 classes)"``."""
    architecture = Architecture.of(to_pytorchvideo(checkpoint))
    toolbox = TOOLBOXES[checkpoint.layout] + (" Caffe2" if checkpoint.naming == "caffe2" else "")
    name = " ".join(part for part in (toolbox, architecture.name, "checkpoint") if part)
    article = "a random-init" if checkpoint.random_init else "an" if name[0] in "AEIOUM" else "a"
    contents = f"{checkpoint.file_format}, {checkpoint.container}, {len(checkpoint.tensors)} tensors"
    details = f"; {architecture.details}" if architecture.details else ""
    origin = ""
    if checkpoint.source is not None:
        origin = f", converted by this project from {checkpoint.source['file']}"
    elif checkpoint.model is not None:
        origin = f", written by this project for {checkpoint.model}"
    return f"{article} {name}{origin} ({contents}{details})"


def _serve_hint(fits: list[str]) -> str:
    if not fits:
        return "no registry entry fits it"
    return "serve it with " + " or ".join(f"MODEL={name}" for name in fits)


# --------------------------------------------------------------------------------------------------------------
# Public entry points


def load_checkpoint(path: str | Path) -> Weights:
    """Any checkpoint this module reads, converted to PyTorchVideo's names and layouts; no architecture check.

    Raises:
        CheckpointError: the file is not a (safe, readable) checkpoint.
    """
    checkpoint = read_checkpoint(path)
    state = to_pytorchvideo(checkpoint)
    return Weights(state_dict=state, description=checkpoint.description, num_classes=head_rows(state, path))


def load_weights(path: str | Path, spec: ModelSpec) -> Weights:
    """``path`` read, recognised, converted from ``spec.checkpoint_layout`` and checked against ``spec``'s network.

    Returns:
        The state dict in the network's key order (built with the file's head size, which may differ from the
        entry's after fine-tuning), its description (``random-init``, or the original file's name and hash) and
        the head size.

    Raises:
        CheckpointError: the file is unreadable or unsafe; another toolbox's file (the message names what it is
            and the ``MODEL=`` it fits); or it does not fit the network key for key, shape for shape.
    """
    return _weights_for(read_checkpoint(path), spec)


def _weights_for(checkpoint: Checkpoint, spec: ModelSpec) -> Weights:
    path = checkpoint.path
    if not checkpoint.accepted_by(spec):
        raise CheckpointError(
            f"{path} is {what_it_is(checkpoint)}; {spec.name} serves {TOOLBOXES[spec.checkpoint_layout]} "
            f"checkpoints: {_serve_hint(fitting_models(checkpoint))}"
        )
    state, problems, num_classes = fit(checkpoint, spec)
    if problems:
        raise CheckpointError(
            f"{path} does not fit the {spec.name} architecture: it is {what_it_is(checkpoint)}; "
            f"{'; '.join(problems)}; {_serve_hint(fitting_models(checkpoint))}"
        )
    return Weights(state_dict=state, description=checkpoint.description, num_classes=num_classes)


def describe_checkpoint(path: str | Path) -> str:
    """One paragraph: what ``path`` is and which registry entries serve it.

    Raises:
        CheckpointError: the file is not a (safe, readable) checkpoint.
    """
    checkpoint = read_checkpoint(path)
    fits = fitting_models(checkpoint)
    lines = [f"{checkpoint.path.name}: {what_it_is(checkpoint)}", f"weights: {checkpoint.description}"]
    if checkpoint.skipped:
        more = f", ... ({len(checkpoint.skipped) - _SHOWN} more)" if len(checkpoint.skipped) > _SHOWN else ""
        lines.append(f"not converted: {', '.join(checkpoint.skipped[:_SHOWN])}{more}")
    lines.append(f"fits: {', '.join(fits)}" if fits else "fits: no registry entry")
    return "\n".join(lines)


@dataclass(frozen=True)
class Conversion:
    """A checkpoint written in this project's format by :func:`convert_checkpoint`.

    Attributes:
        path: the written file, ``{"model_state": state_dict, "source": source}``.
        source: the original file's name, sha256, layout and format.
        weights: what was written (the description names the original file).
        input: what the original file is (:func:`what_it_is`).
    """

    path: Path
    source: dict[str, str]
    weights: Weights
    input: str


def convert_checkpoint(path: str | Path, spec: ModelSpec, out: str | Path) -> Conversion:
    """Converts ``path`` for ``spec`` (as :func:`load_weights` does) and writes it to ``out`` in this project's
    format, ``{"model_state": state_dict, "source": {"file", "sha256", "layout", "format"}}``, which loads with a
    plain ``torch.load(weights_only=True)``. A file converted before keeps its original ``source``.
    """
    checkpoint = read_checkpoint(path)
    weights = _weights_for(checkpoint, spec)
    source = checkpoint.source or {
        "file": checkpoint.path.name,
        "sha256": checkpoint.sha256,
        "layout": checkpoint.layout,
        "format": FORMATS[checkpoint.naming],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {"model_state": weights.state_dict, "source": source}
    if checkpoint.random_init:
        content["random_init"] = True  # random weights stay marked as such
    torch.save(content, out)
    return Conversion(path=out, source=source, weights=weights, input=what_it_is(checkpoint))


def archive_checkpoint(path: str | Path, spec: ModelSpec, directory: str | Path) -> tuple[Path, Conversion | None]:
    """The file an archive of ``spec`` should ship for ``path``: ``path`` itself when it is already in this
    project's format (a PyTorchVideo-named ``model_state`` torch file, or an entry that takes no conversion),
    else its conversion written into ``directory`` as ``<spec.name>.pyth``."""
    if spec.checkpoint_layout == "pytorchvideo" or read_checkpoint(path).official:
        return Path(path), None
    conversion = convert_checkpoint(path, spec, Path(directory) / f"{spec.name}.pyth")
    return conversion.path, conversion


def load_model(spec: ModelSpec, checkpoint: str | Path) -> tuple[nn.Module, Weights]:
    """Builds ``spec``'s network and loads ``checkpoint`` into it strictly (every key, every shape), converting a
    toolbox's file of ``spec.checkpoint_layout`` first (:func:`load_weights`)."""
    weights = load_weights(checkpoint, spec)
    model = build_model(spec, num_classes=weights.num_classes)
    try:
        model.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint} does not fit the {spec.name} architecture: {e}") from e
    return model.eval(), weights
