"""Import-only stand-ins for modules that a toolbox imports at import time but never uses on the SlowFast path.

* ``mmaction.models.localizers.drn``: the mmaction2 1.2.0 wheel lacks this package (open-mmlab/mmaction2 issue
  #2714) while ``mmaction/models/localizers/__init__.py`` imports ``from .drn.drn import DRN``.
* ``paddle.fluid``: Paddle 3 removed it; ppvideo 2.3.1 imports it at module level in
  ``modeling/backbones/resnext101.py`` and ``modeling/heads/ops.py`` (neither is used by SlowFast).
* ``detectron2``: slowfast 1.0 imports ``detectron2.layers.ROIAlign`` at module level in ``models/head_helper.py``;
  only the AVA RoI head uses it, and detectron2 is not on PyPI.

:func:`install` (called by the runners, which run inside the reference environments) appends a finder at the END of
``sys.meta_path``: a stub is made only when the real import machinery cannot find the module, so a toolbox release
that ships the real module wins, and nothing inside site-packages is ever changed. A stub is an empty package whose
submodules are stubs too; every name looked up on it is a function that raises ``RuntimeError`` when called.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType


def _unavailable(module: str) -> Callable[[str], Callable[..., None]]:
    def getattr_(name: str) -> Callable[..., None]:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs) -> None:
            raise RuntimeError(
                f"{module}.{name} is an import-only stub (tests/toolboxes/stubs.py); it must not be used"
            )

        return unavailable

    return getattr_


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__path__ = []  # a package, so that its submodules resolve (to stubs) too
        module.__getattr__ = _unavailable(module.__name__)  # PEP 562: names not in the module's namespace


class _StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self, toolbox: str, prefixes: tuple[str, ...]) -> None:
        self.toolbox = toolbox
        self.prefixes = prefixes

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if not any(fullname == p or fullname.startswith(p + ".") for p in self.prefixes):
            return None
        return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)


def install(toolbox: str, prefixes: list[str]) -> None:
    """Stub the modules under ``prefixes`` (for ``toolbox``'s runner) when nothing else provides them."""
    if not any(isinstance(f, _StubFinder) and f.toolbox == toolbox for f in sys.meta_path):
        sys.meta_path.append(_StubFinder(toolbox, tuple(prefixes)))
