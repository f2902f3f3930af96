"""Lazy re-export of submodule names, so ``import workbench`` stays cheap (no torch until needed)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType


def lazy_exports(package: str, submodules: tuple[str, ...]) -> tuple[Callable, Callable]:
    """Build ``__getattr__``/``__dir__`` for ``package`` exposing each submodule's ``__all__``.

    A name is looked up in the submodules in the order given; the first that lists it in
    ``__all__`` provides it. Submodules are imported only when one of their names is used.
    """

    def _load(mod: str) -> ModuleType | None:
        try:
            return importlib.import_module(f"{package}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{package}.{mod}":  # that submodule is not part of this install
                return None
            raise

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        for mod in submodules:
            module = _load(mod)
            if module is not None and name in getattr(module, "__all__", ()):
                return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        names: set[str] = set(submodules)
        for mod in submodules:
            names.update(getattr(_load(mod), "__all__", ()))
        return sorted(names)

    return __getattr__, __dir__
