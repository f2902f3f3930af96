"""Plumbing shared by the explorers: static-vs-widget detection, debouncing, a keyed cache, progress.

Nothing here knows about spectra or gaps; the explorers' controllers stay pure python and these
helpers connect them to ipywidgets.

How an explorer decides between widgets and static figures (:func:`wants_widgets`):

1. ``static=True/False`` passed to the explorer (or to ``show``) wins;
2. else the environment variable ``WORKBENCH_STATIC`` (``1``/``true``/``yes`` → static,
   ``0``/``false``/``no`` → widgets);
3. else widgets only inside an IPython *kernel* whose current request allows stdin. JupyterLab,
   Notebook 7 and VS Code send ``allow_stdin=True`` for cells a person runs; papermill, nbclient and
   ``nbconvert --execute`` send ``allow_stdin=False`` (nobody is there to answer ``input()`` — nor
   to move a slider). Plain python and terminal IPython get static figures.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["STATIC_ENV", "Debouncer", "KeyedCache", "figure_widget", "wants_widgets"]

STATIC_ENV = "WORKBENCH_STATIC"

T = TypeVar("T")


def _env_static() -> bool | None:
    value = os.environ.get(STATIC_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise ValueError(f"{STATIC_ENV}={value!r}: use 1/true/yes (static) or 0/false/no (widgets)")
    return None


def wants_widgets(static: bool | None = None) -> bool:
    """True when live ipywidgets should be shown, False for static plotly figures.

    Args:
        static: explicit override; ``None`` means decide from ``WORKBENCH_STATIC`` and the kernel.
    """
    if static is not None:
        return not static
    env = _env_static()
    if env is not None:
        return not env
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:  # plain python or terminal IPython: no widget frontend
        return False
    # ipykernel records the current execute_request's allow_stdin; nbclient (papermill,
    # nbconvert) always sends False.
    return bool(getattr(kernel, "_allow_stdin", False))


class KeyedCache(Generic[T]):
    """A small least-recently-used cache: ``get(key, compute)`` runs ``compute()`` only on a miss.

    Keys are tuples of the settings a result depends on, so revisiting a control value is instant.
    """

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for ``key``, computing and storing it on a miss."""
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = compute()
        self._items[key] = value
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


class Debouncer:
    """Call ``fn`` once, ``wait`` seconds after the last of a burst of calls.

    Inside a running kernel the call is scheduled on the kernel's asyncio loop, so dragging a
    slider through ten values triggers one recomputation, not ten. Without a running loop (tests,
    plain python) or with ``wait <= 0`` the call happens immediately.
    """

    def __init__(self, fn: Callable[..., Any], wait: float = 0.25) -> None:
        if wait < 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait}")
        self.fn = fn
        self.wait = wait
        self._handle: asyncio.TimerHandle | None = None
        self._pending: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    @property
    def pending(self) -> bool:
        """True while a call is scheduled but has not run."""
        return self._pending is not None

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.cancel()
        self._pending = (args, kwargs)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self.wait == 0:
            self.flush()
        else:
            self._handle = loop.call_later(self.wait, self.flush)

    def flush(self) -> None:
        """Run the pending call now (no-op when nothing is pending)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._pending is None:
            return
        args, kwargs = self._pending
        self._pending = None
        self.fn(*args, **kwargs)

    def cancel(self) -> None:
        """Drop the pending call, if any."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._pending = None


# plotly's anywidget bundle keeps the wrapper of the *last initialised* model in a module-level
# variable and renders every view from it, so several FigureWidgets shown together (an HBox of
# figures, or a notebook reopened) come up blank or show another figure (plotly.py #4933,
# #4998). We patch render to wrap its own view's model; if the bundle no longer has that shape
# (fixed upstream, or re-minified) the stock class is used unchanged.
_INIT_RE = re.compile(
    r"initialize\((\w+)\)\{(\w+)=new (\w+)\(\1\.model,(\w+)\),\2\.initialize\(\)\}"
)


@functools.cache
def _figure_widget_class() -> type:
    import plotly.graph_objects as go

    esm = go.FigureWidget._esm
    source = esm.contents if hasattr(esm, "contents") else str(esm)
    if "\n" not in source:  # a path, not the bundle itself
        from pathlib import Path

        source = Path(source).read_text(encoding="utf-8")
    init = _INIT_RE.search(source)
    if init is None:
        return go.FigureWidget
    _, holder, wrapper, serializers = init.groups()
    render = re.compile(
        r"render\(\{el:(\w+)\}\)\{let (\w+)=new (\w+)\(" + re.escape(holder) + r",\1\)"
    )
    match = render.search(source)
    if match is None:
        return go.FigureWidget
    el, view, view_cls = match.groups()
    fixed = (
        f"render({{model:wbModel,el:{el}}}){{let {view}=new {view_cls}"
        f"(new {wrapper}(wbModel,{serializers}),{el})"
    )
    patched = source[: match.start()] + fixed + source[match.end() :]

    class FigureWidget(go.FigureWidget):
        """``go.FigureWidget`` whose views render their own model (see the note above)."""

        _esm = patched + "\n"  # multi-line: anywidget takes it as source, not a path

    return FigureWidget


def figure_widget(fig: Any) -> Any:
    """A plotly ``FigureWidget`` of ``fig`` that renders correctly beside other FigureWidgets."""
    return _figure_widget_class()(fig)
