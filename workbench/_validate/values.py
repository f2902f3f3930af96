"""Non-array arguments: label and index vectors, scalars, flags, choices and name sequences.

Scalars refuse bools and strings where numbers are meant (``"False"`` is truthy); sequences
refuse a bare string instead of splitting it into characters.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from workbench._validate.arrays import to_numpy

try:  # torch is a hard dependency of the package, but keep probes importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


# -- labels and indices --------------------------------------------------------------------------
def as_labels(
    labels: Any,
    name: str = "labels",
    *,
    n: int | None = None,
    rows_of: str = "X",
    strings: bool = True,
    negative: bool = True,
    min_classes: int = 1,
) -> np.ndarray:
    """Validate class labels (n,): integer ids (int64) or, if ``strings``, string ids.

    Integral floats (``0.0, 1.0``) are accepted as ints; bools, fractions, NaN, complex and mixed
    objects are refused. ``negative=False`` refuses ``-1`` ("no label" in ``Embeddings``) with
    the fix. ``min_classes``: the fewest distinct labels needed.
    """
    if labels is None:
        raise TypeError(f"{name} is None; pass one class label per row")
    y = to_numpy(labels, name)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {y.shape}")
    if n is not None and y.shape[0] != n:
        raise ValueError(
            f"{name} has {y.shape[0]} entries but {rows_of} has {n} rows; pass one entry per row"
        )
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype == object:
        if all(isinstance(v, str) for v in y):
            y = y.astype(str)
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in y):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{name} mixes value types; pass all-integer or all-string labels")
    if y.dtype == np.bool_:
        raise ValueError(f"{name} has dtype bool; pass integer class ids, e.g. {name}.astype(int)")
    if y.dtype.kind in "US":
        if not strings:
            raise ValueError(
                f"{name} holds strings; this probe needs integer class ids (indices of the "
                f"classes), e.g. np.unique({name}, return_inverse=True)[1]"
            )
    elif np.issubdtype(y.dtype, np.integer):
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN/Inf; every row needs a class label")
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{name} must hold integer class ids, got fractional values")
        y = y.astype(np.int64)
    else:
        raise ValueError(f"{name} must hold integer (or string) class labels, got dtype {y.dtype}")
    if not negative and y.dtype.kind == "i" and (y < 0).any():
        raise ValueError(
            f"{name} contains {int((y < 0).sum())} negative entries (-1 marks 'no label' in "
            "Embeddings); drop unlabelled rows first, e.g. emb.subset(np.flatnonzero(emb.labels >= 0))"
        )
    n_classes = np.unique(y).size
    if n_classes < min_classes:
        raise ValueError(
            f"{name} must hold at least {min_classes} distinct classes, got {n_classes}"
        )
    return y


def as_class_ids(
    labels: Any, n_classes: int, *, n: int, rows_of: str, classes_of: str, name: str = "labels"
) -> np.ndarray:
    """(n,) integer labels that index ``n_classes`` class rows (of class prompts ``classes_of``)."""
    y = as_labels(labels, name, n=n, rows_of=rows_of, strings=False)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"{name} must be integers in [0, {n_classes}) to index the rows of {classes_of}, "
            f"got {y.min()}..{y.max()}"
        )
    return y


def as_indices(
    values: Any,
    name: str,
    *,
    n: int,
    ndim: int = 1,
    length: int | None = None,
    padding: bool = False,
    of: str = "",
) -> np.ndarray:
    """Validate integer positions into an axis of length ``n``; return them as int64.

    Args:
        values: the indices (integral floats accepted).
        name: argument name for the messages.
        n: valid indices are ``0..n-1``.
        ndim: required rank of ``values``.
        length: required length of the first axis.
        padding: allow ``-1`` as padding.
        of: what ``n`` and ``length`` count, for the messages (e.g. ``"sim"``).
    """
    if values is None:
        raise TypeError(f"{name} is None; pass integer indices")
    v = to_numpy(values, name)
    if v.dtype == np.bool_ or not (
        np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold integer indices, got dtype {v.dtype}")
    if v.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {v.shape}")
    where = f" of {of}" if of else ""
    if length is not None and v.shape[0] != length:
        raise ValueError(
            f"{name} must have {length} entries (one per row{where}), got {v.shape[0]}"
        )
    if np.issubdtype(v.dtype, np.floating):
        if not np.isfinite(v).all() or not np.all(np.mod(v, 1) == 0):
            raise ValueError(f"{name} must hold integer indices, got non-integral values")
    v = v.astype(np.int64)
    lo = -1 if padding else 0
    if v.size and (v.min() < lo or v.max() >= n):
        pad = " (-1 = padding)" if padding else ""
        raise ValueError(
            f"{name} entries must lie in [{lo}, {n}){pad} (positions{where}), got "
            f"{v.min()}..{v.max()}"
        )
    return v


# -- scalars -----------------------------------------------------------------------------------
def _bound_text(lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '≥'} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '≤'} {hi}"
    return ""


def as_int(
    value: Any,
    name: str,
    *,
    lo: int | None = None,
    hi: int | None = None,
    none_ok: bool = False,
) -> int | None:
    """An integer argument in ``[lo, hi]`` (integral floats such as ``1e4`` are accepted).

    Raises:
        TypeError: a bool, string, sequence or other non-number (``None`` unless ``none_ok``).
        ValueError: a fraction, NaN/Inf, or a value outside the bounds.
    """
    want = f"an int{_bound_text(lo, hi, False, False)}" + (" or None" if none_ok else "")
    if value is None:
        if none_ok:
            return None
        raise TypeError(f"{name} must be {want}, got None")
    if isinstance(value, (bool, np.bool_, np.complexfloating)) or not isinstance(
        value, (numbers.Real, np.number)
    ):
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    if isinstance(value, (numbers.Integral, np.integer)):
        v = int(value)
    else:
        f = float(value)
        if not math.isfinite(f) or not f.is_integer():
            raise ValueError(f"{name} must be {want}, got {value!r}")
        v = int(f)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


def as_float(
    value: Any,
    name: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    none_ok: bool = False,
    finite: bool = True,
) -> float | None:
    """A real argument in the given (open or closed) bounds; finite unless ``finite=False``.

    Raises:
        TypeError: a bool, string, complex, sequence (``None`` unless ``none_ok``).
        ValueError: NaN, ±Inf (when ``finite``), or a value outside the bounds.
    """
    bounds = _bound_text(lo, hi, lo_open, hi_open)
    want = f"a {'finite ' if finite else ''}number{bounds}" + (" or None" if none_ok else "")
    if value is None:
        if none_ok:
            return None
        raise TypeError(f"{name} must be {want}, got None")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    if isinstance(value, (complex, np.complexfloating)):
        raise TypeError(f"{name} must be {want}, got the complex {value!r}")
    v = float(value)
    bad = math.isnan(v) or (finite and math.isinf(v))
    if lo is not None:
        bad = bad or (v <= lo if lo_open else v < lo)
    if hi is not None:
        bad = bad or (v >= hi if hi_open else v > hi)
    if bad:
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


def as_bool(value: Any, name: str) -> bool:
    """A boolean flag: ``True``/``False`` (numpy bools too); anything else is a ``TypeError``.

    A string such as ``"False"`` is truthy in Python, so accepting it would silently flip a flag.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def as_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (exact string match)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# -- sequences of names / numbers --------------------------------------------------------------
def _string_hint(name: str, value: str) -> str:
    hint = f"wrap it: ({value!r},)"
    if value.lstrip().startswith(("[", "(")):
        hint = (
            f"it looks like a list written as text (papermill's -p passes strings; use "
            f"-y '{name}: [...]' or -r for lists)"
        )
    return hint


def as_names(
    value: Any,
    name: str,
    *,
    owner: str = "",
    min_len: int = 1,
    unique: bool = False,
    none_ok: bool = False,
) -> tuple[str, ...] | None:
    """A sequence of non-empty strings as a tuple; a bare string is refused, never split.

    ``tuple("digits")`` would be six one-letter names; this raises a ``TypeError`` naming the
    argument instead (a string that looks like a list gets the papermill hint).
    """
    prefix = f"{owner}: " if owner else ""
    if value is None:
        if none_ok:
            return None
        raise TypeError(f"{prefix}{name} must be a sequence of names, got None")
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{prefix}{name} must be a sequence of names, got the string {value!r}; "
            + _string_hint(name, str(value))
        )
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Iterable):
        raise TypeError(f"{prefix}{name} must be a sequence of names, got {value!r}")
    items = tuple(value)
    bad = [v for v in items if not isinstance(v, str) or not v]
    if bad:
        raise TypeError(f"{prefix}{name} must hold non-empty strings, got {bad[0]!r} among them")
    if len(items) < min_len:
        raise ValueError(f"{prefix}{name} must hold at least {min_len} name(s), got {items}")
    if unique and len(set(items)) != len(items):
        dup = sorted({v for v in items if items.count(v) > 1})
        raise ValueError(f"{prefix}{name} must not repeat names, got {dup} more than once")
    return items


def as_int_tuple(
    value: Any,
    name: str,
    *,
    owner: str = "",
    lo: int | None = None,
    min_len: int = 1,
    unique: bool = False,
) -> tuple[int, ...]:
    """A sequence of ints as a tuple (a bare int or string is refused)."""
    prefix = f"{owner}: " if owner else ""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{prefix}{name} must be a sequence of ints, got {value!r}")
    out = tuple(as_int(v, f"{prefix}{name}[{i}]", lo=lo) for i, v in enumerate(value))
    if len(out) < min_len:
        raise ValueError(f"{prefix}{name} must hold at least {min_len} int(s), got {out}")
    if unique and len(set(out)) != len(out):
        raise ValueError(f"{prefix}{name} must be distinct, got {out}")
    return out


def as_float_tuple(
    value: Any,
    name: str,
    *,
    owner: str = "",
    lo: float | None = None,
    min_len: int = 1,
) -> tuple[float, ...]:
    """A sequence of finite numbers as a tuple of floats (a bare number or string is refused)."""
    prefix = f"{owner}: " if owner else ""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{prefix}{name} must be a sequence of numbers, got {value!r}")
    out = tuple(as_float(v, f"{prefix}{name}[{i}]", lo=lo) for i, v in enumerate(value))
    if len(out) < min_len:
        raise ValueError(f"{prefix}{name} must hold at least {min_len} number(s), got {out}")
    return out
