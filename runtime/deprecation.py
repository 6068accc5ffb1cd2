"""Public names that moved or were renamed keep working for one minor version, with a warning.

Every alias lives here or is made by the helpers here, and each one is listed under "Deprecated"
in CHANGELOG.md with the version that removes it. A warning names the new place, so a user's code
says what to change the first time it runs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

REMOVED_IN = "0.3.0"  # the release that drops the aliases deprecated in 0.2.0

# Modules of the flat `runtime/` of gapcam 0.1 and where each lives now (runtime/ by concern).
MOVED_MODULES = {
    "runtime.session": "runtime.inference.session",
    "runtime.providers": "runtime.inference.providers",
    "runtime.compat": "runtime.inference.compat",
    "runtime.image": "runtime.inputs.image",
    "runtime.cam": "runtime.maps.cam",
    "runtime.boxes": "runtime.maps.boxes",
    "runtime.results": "runtime.maps.results",
    "runtime.localization": "runtime.evaluation.localization",
    "runtime.shapes": "runtime.evaluation.shapes",
    "runtime.compare": "runtime.evaluation.compare",
    "runtime.overlay": "runtime.reports.overlay",
    "runtime.report": "runtime.reports.report",
    "runtime.plot": "runtime.reports.plot",
    "runtime.onnx_model": "runtime.formats.onnx_model",
    "runtime.metadata": "runtime.formats.onnx_model",  # the name before 0.1's onnx_model
    "runtime.package": "runtime.formats.package",
    "runtime.store": "runtime.formats.store",
    "runtime.files": "runtime.formats.files",
}


def warn_deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """One DeprecationWarning: `old` is now `new`, and goes in REMOVED_IN."""
    warnings.warn(
        f"{old} is deprecated; use {new} ({old} will be removed in gapcam {REMOVED_IN})", DeprecationWarning, stacklevel=stacklevel
    )


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's old name as its new module (the same object, not a copy)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warn_deprecated(spec.name, MOVED_MODULES[spec.name])
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module is already executed under its new name."""


def install_moved_module_finder() -> None:
    """Make `import runtime.<old name>` work (once per process)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


def moved_names(
    module: str, names: dict[str, str], *, advice: dict[str, str] | None = None, convert: dict[str, Callable[[Any], Any]] | None = None
) -> Callable[[str], Any]:
    """A module `__getattr__` for names that moved out of `module`: {name: the module it is in now}.

    The new module is imported when the name is read, so a moved name never makes an import cycle.
    `advice` replaces the warning's "use MODULE.NAME" where the name itself is not the way forward;
    `convert` turns the new value into the old one where its type changed.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_deprecated(f"{module}.{name}", (advice or {}).get(name, f"{names[name]}.{name}"))
        value = getattr(importlib.import_module(names[name]), name)
        return (convert or {}).get(name, lambda same: same)(value)

    return __getattr__


def renamed(old: str, new: Callable[..., Any], new_name: str) -> Callable[..., Any]:
    """A function or method `old` that warns and calls `new` (its new name is `new_name`)."""

    def alias(*args: Any, **kwargs: Any) -> Any:
        warn_deprecated(old, new_name)
        return new(*args, **kwargs)

    alias.__name__ = old.rsplit(".", 1)[-1]
    alias.__doc__ = f"Deprecated alias of `{new_name}` (removed in gapcam {REMOVED_IN})."
    return alias
