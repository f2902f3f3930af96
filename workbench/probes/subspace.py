"""Subspace comparisons: principal angles, overlap, and clean-vs-perturbed singular vectors.

- :func:`principal_angles` / :func:`subspace_overlap` between two column spaces (Björck & Golub
  1973; small angles from sines, large from cosines — Knyazev & Argentati 2002 — so both ends
  are accurate to ε rather than √ε).
- :func:`top_subspace` — the top-k principal directions of (n, d) data as a (d, k) basis.
- :func:`singular_vector_alignment` — how a perturbation (FANoise's spectrum-shaped noise,
  spec §2.2–2.3) moves the singular vectors and values of a feature matrix (FANoise Figs. 3–4
  [our reading of the axes]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._validate import as_bool, as_int, as_matrix, check_paired
from workbench.probes.spectra import spectrum

__all__ = [
    "SingularVectorAlignment",
    "principal_angles",
    "singular_vector_alignment",
    "subspace_overlap",
    "top_subspace",
]


def _basis(A: Any, name: str) -> np.ndarray:
    M = as_matrix(A, name, min_rows=1)
    rank = np.linalg.matrix_rank(M)
    if rank < M.shape[1]:
        raise ValueError(
            f"{name} (d={M.shape[0]}, k={M.shape[1]}) has linearly dependent columns (rank "
            f"{rank}); pass a basis, e.g. the top-{rank} directions"
        )
    if M.shape[1] > M.shape[0]:
        raise ValueError(f"{name} has more columns ({M.shape[1]}) than rows ({M.shape[0]})")
    return M


def principal_angles(A: Any, B: Any) -> np.ndarray:
    """Principal angles (radians, ascending) between span(A) and span(B).

    Args:
        A: (d, p) columns spanning the first subspace (need not be orthonormal).
        B: (d, q) columns spanning the second.

    Returns:
        (min(p, q),) angles in [0, π/2]; 0 for shared directions.
    """
    Ma, Mb = _basis(A, "A"), _basis(B, "B")
    if Ma.shape[0] != Mb.shape[0]:
        raise ValueError(
            f"A lives in dimension {Ma.shape[0]} but B in {Mb.shape[0]}; the subspaces must "
            f"share the ambient space (columns are the basis vectors)"
        )
    return _angles(Ma, Mb)


def _orth(M: np.ndarray) -> np.ndarray:
    U, _, _ = np.linalg.svd(M, full_matrices=False)
    return U


def _angles(Ma: np.ndarray, Mb: np.ndarray) -> np.ndarray:
    """Ascending angles between the column spaces of full-column-rank (d, p) and (d, q)."""
    Qa, Qb = _orth(Ma), _orth(Mb)
    small, big = (Qa, Qb) if Qa.shape[1] <= Qb.shape[1] else (Qb, Qa)
    cos = np.clip(np.linalg.svd(big.T @ small, compute_uv=False), 0.0, 1.0)  # descending
    resid = small - big @ (big.T @ small)  # (d, k): the part of span(small) outside span(big)
    sin = np.clip(np.linalg.svd(resid, compute_uv=False)[::-1], 0.0, 1.0)  # ascending
    # sines resolve small angles, cosines large ones; cos_i pairs with sin_i (both by angle)
    return np.where(sin**2 < 0.5, np.arcsin(sin), np.arccos(cos))


def subspace_overlap(A: Any, B: Any) -> float:
    """``Σ cos²θ_i / min(p, q)`` — 1 when one subspace contains the other, 0 when orthogonal.

    Equals ``‖Q_Aᵀ Q_B‖_F² / min(p, q)`` for orthonormal bases Q; for two random k-dimensional
    subspaces of R^d its expectation is max(p, q)/d.
    """
    theta = principal_angles(A, B)
    return float(np.mean(np.cos(theta) ** 2))


def top_subspace(X: Any, k: int, *, center: bool = True) -> np.ndarray:
    """(d, k) orthonormal basis of the top-k right singular directions of (n, d) ``X``.

    Raises:
        ValueError: ``k`` outside 1..min(n, d), or beyond the numerical rank of ``X`` (those
            directions would be round-off, not data), and every bad-input case of
            :func:`spectrum`.
    """
    s = spectrum(X, center=as_bool(center, "center"), return_components=True)
    k = as_int(k, "k", lo=1, hi=len(s))
    if k > s.rank:
        raise ValueError(
            f"k={k} exceeds the numerical rank {s.rank} of X (its other directions are "
            f"round-off); choose k ≤ {s.rank}"
        )
    return np.ascontiguousarray(s.components[:k].T)


@dataclass(frozen=True)
class SingularVectorAlignment:
    """Clean vs perturbed right singular vectors/values of two paired (n, d) matrices.

    Attributes:
        k: number of leading directions compared.
        cosines: (k,) ``|⟨v_i, v'_i⟩|`` — does the i-th direction survive the perturbation?
        captured: (k,) ``‖V'_kᵀ v_i‖`` — share of clean v_i inside the perturbed top-k span
            (robust to swaps among near-degenerate directions).
        overlap_matrix: (k, k) ``|V_kᵀ V'_k|`` (rows clean, columns perturbed).
        principal_angles: (k,) angles between the two top-k subspaces.
        singular_values_clean, singular_values_perturbed: (r,) full spectra.
        relative_change: (r,) ``(σ'_i − σ_i)/σ_i`` (NaN where σ_i = 0).
    """

    k: int
    cosines: np.ndarray
    captured: np.ndarray
    overlap_matrix: np.ndarray = field(repr=False)
    principal_angles: np.ndarray = field(repr=False)
    singular_values_clean: np.ndarray = field(repr=False)
    singular_values_perturbed: np.ndarray = field(repr=False)
    relative_change: np.ndarray = field(repr=False)


def singular_vector_alignment(
    X_clean: Any, X_perturbed: Any, k: int | None = None, *, center: bool = False
) -> SingularVectorAlignment:
    """Compare the SVDs of a feature matrix before and after a perturbation.

    Args:
        X_clean: (n, d) features, e.g. a batch's normalised embeddings.
        X_perturbed: (n, d) the same rows after perturbation (e.g. FANoise ``X + α/√d · N'``).
        k: leading directions to compare (default min(n, d, 32)).
        center: centre columns first; default ``False`` as FANoise takes the SVD of X itself.

    Raises:
        ValueError: mismatched shapes, bad k, and every bad-input case of :func:`spectrum`.
    """
    A, B = as_matrix(X_clean, "X_clean"), as_matrix(X_perturbed, "X_perturbed")
    check_paired(A, B, ("X_clean", "X_perturbed"))
    center = as_bool(center, "center")
    s_a = spectrum(A, center=center, return_components=True, method="svd", name="X_clean")
    s_b = spectrum(B, center=center, return_components=True, method="svd", name="X_perturbed")
    r = len(s_a)
    k = min(r, 32) if k is None else as_int(k, "k", lo=1, hi=r)
    Va, Vb = s_a.components[:k], s_b.components[:k]  # (k, d) rows
    M = np.abs(Va @ Vb.T)
    captured = np.linalg.norm(Va @ Vb.T, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(
            s_a.singular_values > 0,
            (s_b.singular_values - s_a.singular_values) / s_a.singular_values,
            np.nan,
        )
    return SingularVectorAlignment(
        k=k,
        cosines=np.diag(M).copy(),
        captured=np.minimum(captured, 1.0),
        overlap_matrix=M,
        principal_angles=_angles(Va.T, Vb.T),
        singular_values_clean=np.asarray(s_a.singular_values),
        singular_values_perturbed=np.asarray(s_b.singular_values),
        relative_change=rel,
    )
