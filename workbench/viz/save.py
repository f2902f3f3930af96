"""Save plotly figures as interactive HTML and static PNG, and numbers as ``summary.json``.

PNG export goes through kaleido ≥ 1, which drives a system Chromium. We look for it in
``$BROWSER_PATH``, then ``/usr/bin/chromium`` (Debian's ``chromium`` package), start kaleido's
server once per process with MathJax off (no CDN fetch), and embed plotly.js from the installed
plotly package. Where no browser exists, HTML is still written and :func:`save_figure` reports
that the PNG was skipped — it never fails a notebook for want of a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["browser_path", "save_figure", "to_jsonable", "write_summary"]

_KALEIDO_STARTED = False
_PNG_DISABLED_REASON: str | None = None


def browser_path() -> str | None:
    """Path of the Chromium kaleido should drive: ``$BROWSER_PATH``, else Debian's, else ``None``."""
    for candidate in (
        os.environ.get("BROWSER_PATH"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _ensure_kaleido() -> str | None:
    """Start kaleido's sync server once; return ``None`` when ready, else the reason PNGs are skipped."""
    global _KALEIDO_STARTED, _PNG_DISABLED_REASON
    if _KALEIDO_STARTED or _PNG_DISABLED_REASON:
        return _PNG_DISABLED_REASON
    path = browser_path()
    if path is None:
        _PNG_DISABLED_REASON = (
            "no Chromium found (install Debian's `chromium` or set BROWSER_PATH); "
            "PNG export skipped, interactive HTML written"
        )
        return _PNG_DISABLED_REASON
    os.environ["BROWSER_PATH"] = path
    try:
        import kaleido

        kaleido.start_sync_server(mathjax=False, silence_warnings=True)
        _KALEIDO_STARTED = True
    except Exception as exc:  # kaleido/choreographer raise many types on a broken browser
        _PNG_DISABLED_REASON = f"kaleido could not start Chromium at {path}: {exc}"
    return _PNG_DISABLED_REASON


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(
    fig: Any,
    out_dir: str | Path,
    name: str,
    *,
    png: bool = True,
    width: int = 900,
    height: int = 560,
    scale: float = 2.0,
) -> dict[str, Path]:
    """Write ``fig`` as ``<out_dir>/<name>.html`` (self-contained) and, when possible, ``<name>.png``.

    Args:
        fig: A plotly ``go.Figure`` or ``go.FigureWidget``.
        out_dir: Folder, created when missing (conventionally ``figures/<notebook>/``).
        name: File stem; letters, digits, ``-``, ``_`` and ``.``.
        png: Also export a static PNG through kaleido (skipped, with a warning, without a browser).

    Returns:
        ``{"html": path, "png": path}`` for what was actually written (``"png"`` absent when skipped).
    """
    import plotly.graph_objects as go

    if not isinstance(fig, go.Figure):
        raise TypeError(f"save_figure expects a plotly Figure, got {type(fig).__name__}")
    if not name or any(not (c.isalnum() or c in "-_.") for c in name):
        raise ValueError(f"figure name {name!r} must be non-empty letters, digits, '-', '_' or '.'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    html = out / f"{name}.html"
    _atomic_write_bytes(html, fig.to_html(include_plotlyjs=True, full_html=True).encode())
    written["html"] = html
    if png:
        reason = _ensure_kaleido()
        if reason is None:
            try:
                with warnings.catch_warnings():  # plotly warns that kaleido's server ignores kopts
                    warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                    data = fig.to_image(format="png", width=width, height=height, scale=scale)
                _atomic_write_bytes(out / f"{name}.png", data)
                written["png"] = out / f"{name}.png"
            except Exception as exc:
                warnings.warn(f"PNG export of {name!r} failed ({exc}); HTML written", stacklevel=2)
        else:
            warnings.warn(reason, stacklevel=2)
    return written


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays, Paths, dataclasses and tuples into JSON types."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())  # np.float64(nan) must become null too
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "to_dict") and callable(obj.to_dict):  # pandas objects
        return to_jsonable(obj.to_dict())
    return obj


def write_summary(out_dir: str | Path, numbers: dict[str, Any], *, merge: bool = True) -> Path:
    """Write ``numbers`` to ``<out_dir>/summary.json`` atomically, merging into an existing file.

    Top-level keys of ``numbers`` replace the same keys already in the file; others are kept, so
    several cells can each record their part.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    current: dict[str, Any] = {}
    if merge and path.exists():
        try:
            current = json.loads(path.read_text())
        except json.JSONDecodeError:
            warnings.warn(f"{path} was not valid JSON; starting it afresh", stacklevel=2)
    current.update(to_jsonable(numbers))
    text = json.dumps(current, indent=2, sort_keys=True, allow_nan=False)  # never a bare NaN
    _atomic_write_bytes(path, text.encode())
    return path
