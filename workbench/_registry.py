"""String-keyed registries: encoders, datasets, methods and metric variants are *data*.

Adding a variant adds an entry, not a branch in five places (see ``../shared/STYLE.md`` §3).
A name may carry arguments after a colon (``"open_clip:ViT-B-32:laion2b_s34b_b79k"``): when the
full string is not registered, the part before the first ``:`` is looked up and the rest is
passed to the factory as ``spec``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Lazy:
    """An entry named by ``"package.module:attribute"``, imported on first use.

    Lets a low floor register an entry implemented on a higher one (``"run:"`` encoders are
    rebuilt by ``workbench.train.checkpoint``) without importing upwards.
    """

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"lazy registry target must be 'module:attribute', got {target!r}")
        self.target = target
        self._module, self._attr = module, attr

    def load(self) -> Any:
        return getattr(importlib.import_module(self._module), self._attr)


class Registry(Generic[T]):
    """A name → factory table with aliases, prefix arguments and helpful misses.

    Args:
        kind: What the entries are ("encoder", "dataset", "method", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._takes_spec: set[str] = set()

    def register(
        self, name: str, *, aliases: tuple[str, ...] = (), takes_spec: bool = False
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (and ``aliases``).

        ``takes_spec=True`` marks a factory that accepts ``spec=<text after the first ':'>``.
        """

        def deco(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[name] = obj
            for alias in aliases:
                self._aliases[alias] = name
            if takes_spec:
                self._takes_spec.add(name)
            return obj

        return deco

    def register_lazy(self, name: str, target: str, *, takes_spec: bool = False) -> None:
        """Register ``name`` as ``"package.module:attribute"``, imported when first resolved."""
        self.register(name, takes_spec=takes_spec)(_Lazy(target))  # type: ignore[arg-type]

    def _load(self, key: str) -> T:
        entry = self._entries[key]
        if isinstance(entry, _Lazy):
            entry = self._entries[key] = entry.load()
        return entry

    def names(self) -> list[str]:
        """Canonical registered names, sorted (aliases not included)."""
        return sorted(self._entries)

    def canonical(self, name: str) -> tuple[str, str | None]:
        """``(canonical_name, spec)`` for ``name`` without importing a lazy entry; ``KeyError``
        with suggestions when it is not registered (what configs check before any work)."""
        if not isinstance(name, str) or not name:
            raise KeyError(f"{self.kind} name must be a non-empty string, got {name!r}")
        key = self._aliases.get(name, name)
        if key in self._entries:
            return key, None
        head, sep, rest = name.partition(":")
        head = self._aliases.get(head, head)
        if sep and head in self._takes_spec:
            return head, rest
        known = self.names() + sorted(self._aliases)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}.")

    def resolve(self, name: str) -> tuple[str, T, str | None]:
        """Return ``(canonical_name, entry, spec)`` for ``name``; raise ``KeyError`` with suggestions."""
        key, spec = self.canonical(name)
        return key, self._load(key), spec

    def get(self, name: str) -> T:
        """The registered entry for ``name`` (without applying any spec)."""
        return self.resolve(name)[1]

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(name)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True
