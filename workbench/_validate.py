"""Input checks shared by every probe and method: one place that names what is wrong.

Every public probe accepts numpy arrays, torch tensors on any device (fp16/bf16 are upcast),
memory-mapped arrays, and array-likes. Errors are ``ValueError`` whose message says *which*
argument is bad, *what* is wrong and, where it helps, *where* (first offending row).
Methods check their hyper-parameters with :func:`require` in ``__init__``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # torch is a hard dependency of the package, but keep probes importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


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


def to_numpy(X: Any) -> np.ndarray:
    """Convert ``X`` (ndarray, memmap, torch tensor on any device, array-like) to a numpy array.

    No copy is made for numpy input (memmaps stay memmaps). Torch tensors are detached, moved to
    CPU and upcast from fp16/bf16 to float32 (numpy has no bfloat16).
    """
    if torch is not None and isinstance(X, torch.Tensor):
        t = X.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return t.cpu().numpy()
    if isinstance(X, np.ndarray):
        return X
    return np.asarray(X)


def check_finite_rows(X: np.ndarray, name: str, row_offset: int = 0) -> None:
    """Raise ``ValueError`` naming the first row of ``X`` (n, d) holding NaN or Inf."""
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        row = int(bad_rows[0]) + row_offset
        kind = "NaN" if np.isnan(X[bad_rows[0]]).any() else "Inf"
        raise ValueError(
            f"{name} contains {kind} values (first at row {row}, {len(bad_rows)} bad row(s) "
            f"in this block); drop or impute those rows before computing the probe"
        )


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
            first offending row).
    """
    A = to_numpy(X)
    if A.dtype == np.bool_ or np.issubdtype(A.dtype, np.integer):
        raise ValueError(
            f"{name} has dtype {A.dtype}; probes expect real-valued embeddings. "
            f"Cast explicitly (e.g. {name}.astype(np.float32)) if these really are features"
        )
    if not np.issubdtype(A.dtype, np.floating):
        raise ValueError(f"{name} has non-float dtype {A.dtype}; pass a float array")
    if A.ndim != 2:
        hint = " (reshape a single vector with x[None, :])" if A.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {A.shape}{hint}")
    if A.size == 0:
        raise ValueError(f"{name} is empty (shape {A.shape}); nothing to measure")
    if A.shape[0] < min_rows:
        raise ValueError(f"{name} has {A.shape[0]} row(s); this probe needs at least {min_rows}")
    A = np.asarray(A, dtype=dtype)
    if check_finite:
        check_finite_rows(A, name)
    return A


def check_same_dim(
    A: np.ndarray, B: np.ndarray, names: tuple[str, str] = ("image", "text")
) -> None:
    """Raise ``ValueError`` when two modalities' embeddings have different widths."""
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"{names[0]} embeddings have dimension {A.shape[1]} but {names[1]} embeddings have "
            f"{B.shape[1]}; both modalities must live in the same space (project them first)"
        )


def check_paired(A: np.ndarray, B: np.ndarray, names: tuple[str, str] = ("image", "text")) -> None:
    """Raise ``ValueError`` unless ``A`` and ``B`` have the same shape (row i of A pairs row i of B)."""
    check_same_dim(A, B, names)
    if A.shape[0] != B.shape[0]:
        raise ValueError(
            f"{names[0]} has {A.shape[0]} rows but {names[1]} has {B.shape[0]}; paired probes "
            f"need row i of one to match row i of the other"
        )


def l2_normalize(X: np.ndarray, name: str = "X", eps: float = 0.0) -> np.ndarray:
    """Row-normalise ``X`` (n, d) to unit L2 norm; raise on zero rows (they have no direction)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] <= eps)
    if zero.size:
        raise ValueError(
            f"{name} has {zero.size} zero-norm row(s) (first at row {int(zero[0])}); "
            f"they cannot be L2-normalised — drop them"
        )
    return X / norms
