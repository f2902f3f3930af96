"""Input checks shared by every public entry point: one place that names what is wrong.

Every public probe accepts numpy arrays, torch tensors on any device (fp16/bf16 are upcast,
``requires_grad`` tensors are detached), memory-mapped arrays, and array-likes (lists). Errors
are ``ValueError`` (a bad value) or ``TypeError`` (a value of the wrong kind) whose message says
*which* argument is bad, *what* is wrong and, where it helps, *where* (first offending row) and
how to fix it. The checks, by kind of argument:

==================  ==========================================================================
arrays              :func:`as_matrix` (n, d), :func:`as_vector` (d,), :func:`as_array` (any
                    fixed rank): real floats, finite, non-empty, magnitudes inside float64's
                    square range (:data:`MAX_ABS`)
label vectors       :func:`as_labels`: integer (or string) class ids, one per row
index vectors       :func:`as_indices`: integer positions in ``[0, n)`` (``-1`` padding opt-in)
scalars             :func:`as_int`, :func:`as_float`, :func:`as_bool`, :func:`as_choice`
names / sequences   :func:`as_names` (a bare string is refused, never split into characters),
                    :func:`as_int_tuple`
degenerate spectra  :func:`roundoff` and :func:`spectral_floor`: the one scale-relative
                    tolerance below which a norm, variance or singular value is round-off
==================  ==========================================================================

Methods check their hyper-parameters with :func:`require` in ``__init__``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

try:  # torch is a hard dependency of the package, but keep probes importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

#: Largest absolute entry an array may hold: squares (1e300) and sums of up to 1e8 of them stay
#: finite in float64 [our reading of "float64's square range"]; the same bound, inverted, is the
#: smallest non-zero magnitude whose squares do not underflow to zero.
MAX_ABS = 1e150


def require(ok: bool, owner: str, name: str, value: Any, want: str) -> None:
    """Raise ``ValueError("<owner>: <name> must be <want>, got <value!r>")`` unless ``ok``.

    >>> require(0.1 > 0, "sde", "alpha0", 0.1, ">= 0")
    >>> require(-1 >= 0, "sde", "alpha0", -1, ">= 0")
    Traceback (most recent call last):
    ...
    ValueError: sde: alpha0 must be >= 0, got -1
    """
    if not ok:
        raise ValueError(f"{owner}: {name} must be {want}, got {value!r}")


# -- arrays ------------------------------------------------------------------------------------
def to_numpy(X: Any, name: str = "X") -> np.ndarray:
    """Convert ``X`` (ndarray, memmap, torch tensor on any device, array-like) to a numpy array.

    No copy is made for numpy input (memmaps stay memmaps). Torch tensors are detached, moved to
    CPU and upcast from fp16/bf16 to float32 (numpy has no bfloat16).

    Raises:
        TypeError: ``X`` is ``None``.
        ValueError: ``X`` is ragged (rows of different lengths) or otherwise not an array.
    """
    if X is None:
        raise TypeError(f"{name} is None; pass an array")
    if torch is not None and isinstance(X, torch.Tensor):
        t = X.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return t.cpu().resolve_conj().resolve_neg().numpy()
    if isinstance(X, np.ndarray):
        return X
    try:
        return np.asarray(X)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name} cannot be read as an array ({err}); pass a rectangular array"
        ) from None


def check_finite_rows(X: np.ndarray, name: str, row_offset: int = 0) -> None:
    """Raise ``ValueError`` naming the first row of ``X`` (n, ...) holding NaN or Inf."""
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.reshape(len(X), -1).all(axis=1))
        row = int(bad_rows[0]) + row_offset
        kind = "NaN" if np.isnan(X[bad_rows[0]]).any() else "Inf"
        raise ValueError(
            f"{name} contains {kind} values (first at row {row}, {len(bad_rows)} bad row(s) "
            f"in this block); drop or impute those rows before computing the probe"
        )


def check_magnitude(A: np.ndarray, name: str) -> None:
    """Refuse entries beyond :data:`MAX_ABS` (or a non-zero array entirely below its inverse).

    Probes square and multiply entries; beyond this range they overflow to Inf (or underflow to
    zero) and the result is silently wrong. Rescaling does not change any cosine-based result.
    """
    if A.size == 0:
        return
    amax = float(np.max(np.abs(A)))
    if amax > MAX_ABS or 0 < amax < 1 / MAX_ABS:
        raise ValueError(
            f"{name} has entries of magnitude up to {amax:.3g}, outside float64's square range "
            f"[{1 / MAX_ABS:g}, {MAX_ABS:g}] (products would overflow or underflow); rescale "
            f"{name}, e.g. divide it by its largest absolute value"
        )


def _check_dtype(A: np.ndarray, name: str) -> None:
    if A.dtype == np.bool_ or np.issubdtype(A.dtype, np.integer):
        raise ValueError(
            f"{name} has dtype {A.dtype}; probes expect real-valued embeddings. "
            f"Cast explicitly (e.g. {name}.astype(np.float32)) if these really are features"
        )
    if np.issubdtype(A.dtype, np.complexfloating):
        raise ValueError(f"{name} has complex dtype {A.dtype}; pass real-valued embeddings")
    if not np.issubdtype(A.dtype, np.floating):
        raise ValueError(f"{name} has non-float dtype {A.dtype}; pass a float array")


def as_array(
    X: Any,
    name: str,
    ndim: int,
    *,
    shape_doc: str | None = None,
    min_rows: int = 1,
    dtype: type = np.float64,
    check_finite: bool = True,
) -> np.ndarray:
    """Validate ``X`` as a real float array of rank ``ndim`` and return it as ``dtype``.

    Args:
        X: array-like, memmap or torch tensor.
        name: the argument's name, used in every message.
        ndim: the rank required.
        shape_doc: the expected shape in words (``"(n_pairs, 2, 2)"``) for the messages.
        min_rows: minimum length of the first axis.
        dtype: returned dtype.
        check_finite: refuse NaN/Inf (naming the first bad row) and magnitudes outside
            :data:`MAX_ABS`.

    Raises:
        ValueError: wrong rank, empty, too few rows, integer/bool/complex/object dtype, NaN/Inf.
        TypeError: ``X`` is ``None``.
    """
    A = to_numpy(X, name)
    _check_dtype(A, name)
    want = shape_doc or f"{ndim}-D"
    if A.ndim != ndim:
        hint = " (reshape a single vector with x[None, :])" if ndim == 2 and A.ndim == 1 else ""
        raise ValueError(f"{name} must be {want}, got shape {A.shape}{hint}")
    if A.size == 0:
        raise ValueError(f"{name} is empty (shape {A.shape}); nothing to measure")
    if A.shape[0] < min_rows:
        raise ValueError(f"{name} has {A.shape[0]} row(s); this probe needs at least {min_rows}")
    A = np.asarray(A, dtype=dtype)
    if check_finite:
        check_finite_rows(A, name)
        check_magnitude(A, name)
    return A


def as_matrix(
    X: Any,
    name: str = "X",
    *,
    min_rows: int = 2,
    dtype: type = np.float64,
    check_finite: bool = True,
) -> np.ndarray:
    """Validate ``X`` as an (n, d) real matrix and return it as ``dtype`` (default float64).

    Raises:
        ValueError: empty, not 2-D, fewer than ``min_rows`` rows, zero columns, integer/bool
            dtype (embeddings are real-valued; cast explicitly if you mean it), NaN/Inf (with the
            first offending row), magnitudes outside :data:`MAX_ABS`.
        TypeError: ``X`` is ``None``.
    """
    shape = "2-D (n_samples, n_features)"
    return as_array(
        X, name, 2, shape_doc=shape, min_rows=min_rows, dtype=dtype, check_finite=check_finite
    )


def as_vector(X: Any, name: str, *, length: int | None = None, min_len: int = 1) -> np.ndarray:
    """Validate ``X`` as a finite real 1-D float64 vector (of ``length`` entries if given)."""
    A = to_numpy(X, name)
    if A.dtype != np.bool_ and np.issubdtype(A.dtype, np.integer):
        A = A.astype(np.float64)  # integer vectors (counts, grid points) are fine as numbers
    v = as_array(A, name, 1, shape_doc="1-D", min_rows=min_len)
    if length is not None and v.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries, got {v.shape[0]}")
    return v


def check_same_dim(
    A: np.ndarray, B: np.ndarray, names: tuple[str, str] = ("image", "text")
) -> None:
    """Raise ``ValueError`` when two modalities' embeddings have different widths."""
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(
            f"{names[0]} embeddings have dimension {A.shape[-1]} but {names[1]} embeddings have "
            f"{B.shape[-1]}; both modalities must live in the same space (project them first)"
        )


def check_paired(A: np.ndarray, B: np.ndarray, names: tuple[str, str] = ("image", "text")) -> None:
    """Raise ``ValueError`` unless ``A`` and ``B`` have the same shape (row i of A pairs row i of B)."""
    check_same_dim(A, B, names)
    if A.shape[0] != B.shape[0]:
        raise ValueError(
            f"{names[0]} has {A.shape[0]} rows but {names[1]} has {B.shape[0]}; paired probes "
            f"need row i of one to match row i of the other"
        )


def row_norms(X: np.ndarray) -> np.ndarray:
    """(n,) L2 norms of the rows of ``X`` (n, d), exact for any finite magnitude.

    Each row is divided by its largest absolute entry first, so rows beyond ~1e154 (whose
    squares overflow) and below ~1e-154 (whose squares underflow) keep their true norm.
    """
    scale = np.max(np.abs(X), axis=1)  # (n,)
    safe = np.where(scale > 0, scale, 1.0)
    with np.errstate(over="ignore"):
        return scale * np.linalg.norm(X / safe[:, None], axis=1)


def l2_normalize(X: np.ndarray, name: str = "X", eps: float = 0.0) -> np.ndarray:
    """Row-normalise ``X`` (n, d) to unit L2 norm; raise on zero rows (they have no direction).

    Rows are rescaled by their largest entry before the norm is taken, so any finite magnitude
    normalises exactly (a row of 1e200s is a direction, not a zero row).
    """
    scale = np.max(np.abs(X), axis=1, keepdims=True)  # (n, 1)
    zero = np.flatnonzero(scale[:, 0] <= eps)
    if zero.size:
        raise ValueError(
            f"{name} has {zero.size} zero-norm row(s) (first at row {int(zero[0])}); "
            f"they cannot be L2-normalised — drop them"
        )
    U = X / scale
    return U / np.linalg.norm(U, axis=1, keepdims=True)


# -- degenerate spectra: one tolerance -----------------------------------------------------------
def roundoff(scale: float, n_terms: int, eps: float = float(np.finfo(np.float64).eps)) -> float:
    """Largest size that computing a norm of data of size ``scale`` can produce from round-off.

    ``4·√n_terms·ε·scale``: a sum of ``n_terms`` rounded terms, each off by a few ε of
    ``scale``, errs by about ``√n_terms`` of them (centring identical rows leaves exactly such a
    residue). Norms, standard deviations and singular values at or below it are zero [our
    reading: the factor 4 covers pairwise summation's log-depth growth for the sizes used here].
    """
    return 4.0 * math.sqrt(max(1, int(n_terms))) * eps * float(scale)


def spectral_floor(sigma_max: float, fro_norm: float, shape: tuple[int, int], eps: float) -> float:
    """Singular values at or below this are round-off, for a matrix of ``shape`` (m, d).

    The larger of numpy's ``matrix_rank`` default ``σ₁·max(m, d)·ε`` (the SVD's own error) and
    :func:`roundoff` of the raw data's Frobenius norm (what centring leaves of identical rows).
    ``eps`` is the resolution of the data's dtype. Every probe decides "this spectrum is
    all zero" with it, so the in-memory and the Gram route agree.
    """
    m = max(shape)
    return max(float(sigma_max) * m * eps, roundoff(fro_norm, m, eps))


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
