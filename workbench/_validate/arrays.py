"""Array arguments: (n, d) matrices, vectors and fixed-rank arrays, as real finite floats.

Numpy arrays, memmaps (no copy), torch tensors on any device (detached; fp16/bf16 upcast to
float32) and array-likes are accepted; errors name the argument, what is wrong and the first
offending row. Row norms never overflow: rows are scaled by their largest entry first.
"""

from __future__ import annotations

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
    check_scale: bool = True,
) -> np.ndarray:
    """Validate ``X`` as a real float array of rank ``ndim`` and return it as ``dtype``.

    Args:
        X: array-like, memmap or torch tensor.
        name: the argument's name, used in every message.
        ndim: the rank required.
        shape_doc: the expected shape in words (``"(n_pairs, 2, 2)"``) for the messages.
        min_rows: minimum length of the first axis.
        dtype: returned dtype.
        check_finite: refuse NaN/Inf (naming the first bad row) and, with ``check_scale``,
            magnitudes outside :data:`MAX_ABS`.
        check_scale: the magnitude check (off for values that are never squared together,
            e.g. singular values handled relative to the largest).

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
        if check_scale:
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


def as_vector(
    X: Any, name: str, *, length: int | None = None, min_len: int = 1, check_scale: bool = True
) -> np.ndarray:
    """Validate ``X`` as a finite real 1-D float64 vector (of ``length`` entries if given)."""
    A = to_numpy(X, name)
    if A.dtype != np.bool_ and np.issubdtype(A.dtype, np.integer):
        A = A.astype(np.float64)  # integer vectors (counts, grid points) are fine as numbers
    v = as_array(A, name, 1, shape_doc="1-D", min_rows=min_len, check_scale=check_scale)
    if length is not None and v.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries, got {v.shape[0]}")
    return v


def as_class_prompts(class_text: Any, name: str) -> np.ndarray:
    """Class-prompt embeddings: (K, D) one per class or (K, T, D) T templates per class, float64.

    Real floats only (bf16 and ``requires_grad`` tensors are fine; int, bool, complex are not).
    """
    A = to_numpy(class_text, name)
    if A.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be (K, D) class prompts or (K, T, D) prompt ensembles, got shape "
            f"{A.shape}"
        )
    return as_array(A, name, A.ndim, shape_doc="(K, D) or (K, T, D)")


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
