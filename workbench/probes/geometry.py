"""Directional geometry of embeddings: cosine distributions, cone width, alignment/uniformity.

All measures here are about *directions*: rows are L2-normalised first (zero rows raise).

- :func:`cosine_distribution` — distribution of pairwise cosines within one set or across two.
- :func:`cone_width` — mean pairwise cosine over distinct pairs (Liang et al. 2022, "Mind the
  Gap", Fig. 2: the cone effect), exact in O(n·d) and streamable.
- :func:`alignment`, :func:`uniformity` — Wang & Isola 2020 (ICML), Eq. 4–5.
- :func:`anisotropy` — mean cosine (Ethayarajh 2019), mean resultant length and top-direction
  variance share of the normalised rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._validate import (
    as_float,
    as_int,
    as_matrix,
    check_finite_rows,
    check_magnitude,
    check_paired,
    row_norms,
    to_numpy,
)
from workbench.probes._rows import _iter_chunks
from workbench.probes.spectra import spectrum

__all__ = [
    "Anisotropy",
    "CosineDistribution",
    "alignment",
    "anisotropy",
    "cone_width",
    "cosine_distribution",
    "uniformity",
]


class _Rows:
    """(n, d) embeddings validated in one chunked pass; normalised rows materialised on demand.

    Keeps the input as given (array, memmap or host copy of a tensor) plus its row norms, so a
    sampled measure touches only the rows it samples instead of a float64 copy of everything.
    """

    def __init__(self, X: Any, name: str, min_rows: int = 2) -> None:
        A = to_numpy(X, name)
        as_matrix(A, name, min_rows=min_rows, dtype=A.dtype, check_finite=False)
        norms = np.empty(A.shape[0])
        amax = np.zeros(1)
        for offset, chunk in _iter_chunks(A, name, None):
            C = np.asarray(chunk, dtype=np.float64)
            check_finite_rows(C, name, row_offset=offset)
            amax = np.maximum(amax, np.abs(C).max(initial=0.0))
            norms[offset : offset + len(C)] = row_norms(C)
        check_magnitude(amax, name)
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise ValueError(
                f"{name} has {zero.size} zero-norm row(s) (first at row {int(zero[0])}); they "
                f"have no direction — drop them"
            )
        self.A, self.norms, self.name = A, norms, name
        self.n, self.d = A.shape

    def unit(self, rows: Any = slice(None)) -> np.ndarray:
        """(k, d) float64 L2-normalised rows ``rows`` (an index array or slice)."""
        return np.asarray(self.A[rows], dtype=np.float64) / self.norms[rows, None]

    def unit_chunks(self) -> Any:
        """Normalised (rows, d) chunks in order, for one streaming pass."""
        for offset, chunk in _iter_chunks(self.A, self.name, None):
            yield (
                np.asarray(chunk, dtype=np.float64) / self.norms[offset : offset + len(chunk), None]
            )


def _sample_rows(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(rng.choice(n, size=k, replace=False))


@dataclass(frozen=True)
class CosineDistribution:
    """Pairwise cosine similarities of L2-normalised rows.

    Attributes:
        values: (m,) the cosines measured (all pairs, or a seeded uniform sample of pairs).
        mean, std: of ``values``.
        quantiles: 5/25/50/75/95 % quantiles.
        counts, edges: histogram of ``values`` on ``bins`` equal bins over [−1, 1].
        n_pairs: number of pairs in the population (distinct i < j within one set; all (i, j)
            across two sets).
        exact: True when every pair was measured.
    """

    values: np.ndarray = field(repr=False)
    mean: float
    std: float
    quantiles: dict[str, float]
    counts: np.ndarray = field(repr=False)
    edges: np.ndarray = field(repr=False)
    n_pairs: int
    exact: bool


def cosine_distribution(
    X: Any,
    Y: Any | None = None,
    *,
    bins: int = 50,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> CosineDistribution:
    """Distribution of pairwise cosines within ``X`` or between ``X`` and ``Y``.

    Args:
        X: (n, d) embeddings, raw or normalised (rows are L2-normalised here).
        Y: optional (m, d) second set (e.g. the other modality); then all (i, j) cross pairs
            are the population, matched pairs included.
        bins: histogram bins over [−1, 1].
        max_pairs: above this many pairs a seeded uniform sample of pairs is measured.
        seed: sampling seed.
    """
    bins, max_pairs = as_int(bins, "bins", lo=1), as_int(max_pairs, "max_pairs", lo=1)
    seed = as_int(seed, "seed", lo=0)
    RA = _Rows(X, "X")
    RB = None if Y is None else _Rows(Y, "Y", min_rows=1)
    if RB is not None and RA.d != RB.d:
        raise ValueError(
            f"X has dimension {RA.d} but Y has {RB.d}; both sets must live in the same space"
        )
    n = RA.n
    total = n * (n - 1) // 2 if RB is None else n * RB.n
    rng = np.random.default_rng(seed)
    if total <= max_pairs:  # the Gram is at most max_pairs (×2) entries
        A = RA.unit()
        vals = (A @ A.T)[np.triu_indices(n, k=1)] if RB is None else (A @ RB.unit().T).ravel()
        exact = True
    else:
        i = rng.integers(0, n, size=max_pairs)
        if RB is None:  # distinct pairs: j uniform over the other n − 1 rows
            j = rng.integers(0, n - 1, size=max_pairs)
            j = j + (j >= i)
        else:
            j = rng.integers(0, RB.n, size=max_pairs)
        other = RA if RB is None else RB
        step = 8192  # pairs per block: gathered rows stay O(block · d)
        vals = np.concatenate(
            [
                np.einsum("ij,ij->i", RA.unit(i[a : a + step]), other.unit(j[a : a + step]))
                for a in range(0, max_pairs, step)
            ]
        )
        exact = False
    vals = np.clip(vals, -1.0, 1.0)
    q = np.percentile(vals, [5, 25, 50, 75, 95])
    counts, edges = np.histogram(vals, bins=bins, range=(-1.0, 1.0))
    return CosineDistribution(
        values=vals,
        mean=float(vals.mean()),
        std=float(vals.std()),
        quantiles={f"q{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q)},
        counts=counts,
        edges=edges,
        n_pairs=int(total),
        exact=exact,
    )


def cone_width(X: Any, *, chunk_rows: int | None = None, group: Any = None) -> float:
    """Mean cosine over distinct pairs i ≠ j of the rows of ``X`` (Mind the Gap's cone width).

    Exact: with ``s = Σ x̂_i``, ``Σ_{i≠j} cos = ‖s‖² − n``, so one streaming pass suffices.

    Args:
        X: (n, d) embeddings (raw; normalised here) — array, memmap, torch, or row chunks.
        chunk_rows: rows per chunk for the pass.
        group: ``None`` (this process), ``"auto"`` or a ``ProcessGroup``: ``X`` is this rank's
            rows and ``s`` and ``n`` are summed over ranks (the cone width of all their rows).

    Returns:
        Mean pairwise cosine in [−1/(n−1), 1]; ≈ 0 for isotropic data, → 1 for a narrow cone.
    """
    from workbench.distributed import all_reduce_sums

    chunk_rows = as_int(chunk_rows, "chunk_rows", lo=1, none_ok=True)

    def local() -> list[Any] | None:
        total = None
        n = 0
        amax = np.zeros(1)
        for offset, chunk in _iter_chunks(X, "X", chunk_rows):
            C = np.asarray(chunk, dtype=np.float64)
            check_finite_rows(C, "X", row_offset=offset)
            amax = np.maximum(amax, np.abs(C).max(initial=0.0))
            norms = row_norms(C)
            zero = np.flatnonzero(norms == 0)
            if zero.size:
                raise ValueError(
                    f"X has a zero-norm row (first at row {offset + int(zero[0])}); it has no "
                    f"direction — drop it"
                )
            s = (C / norms[:, None]).sum(axis=0)
            total = s if total is None else total + s
            n += len(C)
        check_magnitude(amax, "X")
        return None if total is None else [total, [n]]

    sums = all_reduce_sums(local, group, "the cone width")
    n = 0 if sums is None else int(sums[1][0])
    if n < 2:
        raise ValueError(f"X has {n} row(s); the cone width needs at least 2")
    total = sums[0]
    return float((total @ total - n) / (n * (n - 1)))


def alignment(X: Any, Y: Any, alpha: float = 2.0) -> float:
    """Wang & Isola (2020) alignment ``E_i ‖x̂_i − ŷ_i‖₂^α`` over matched pairs (Eq. 4).

    Args:
        X: (n, d) embeddings of one view/modality; Y: (n, d) the matched other — row i of X
            pairs row i of Y. Both are L2-normalised here.
        alpha: exponent α > 0 (paper default 2).

    Returns:
        Lower is better aligned; in [0, 2^α].
    """
    alpha = as_float(alpha, "alpha", lo=0.0, lo_open=True)
    RA, RB = _Rows(X, "X", min_rows=1), _Rows(Y, "Y", min_rows=1)
    check_paired(RA.A, RB.A, ("X", "Y"))
    total, step = 0.0, 8192
    for a in range(0, RA.n, step):
        rows = slice(a, a + step)
        cos = np.einsum("ij,ij->i", RA.unit(rows), RB.unit(rows))
        total += float(np.sum(np.maximum(0.0, 2.0 - 2.0 * cos) ** (alpha / 2.0)))
    return total / RA.n


def uniformity(
    X: Any, t: float = 2.0, *, max_samples: int = 4096, seed: int = 0, block: int = 1024
) -> float:
    """Wang & Isola (2020) uniformity ``log E_{i≠j} exp(−t‖x̂_i − x̂_j‖²)`` (Eq. 5).

    Computed exactly over all distinct pairs of (at most ``max_samples`` seeded-random) rows, in
    blocks with a running log-sum-exp (memory O(block²)).

    Args:
        X: (n, d) embeddings (normalised here).
        t: temperature t > 0 (paper default 2).
        max_samples: rows used; above it a seeded uniform subset.
        seed: subsampling seed.
        block: block size for the pairwise pass.

    Returns:
        Lower is more uniform; the minimum on the sphere S^{d−1} is about −t·2 for large n.
    """
    t = as_float(t, "t", lo=0.0, lo_open=True)
    max_samples = as_int(max_samples, "max_samples", lo=2)
    seed, block = as_int(seed, "seed", lo=0), as_int(block, "block", lo=1)
    R = _Rows(X, "X")
    A = R.unit(_sample_rows(R.n, max_samples, np.random.default_rng(seed)))
    n = len(A)
    # exp(−t‖a−b‖²) = exp(−2t + 2t·cos); accumulate log Σ exp(2t·cos) over i < j
    m = -np.inf
    acc = 0.0
    for a in range(0, n, block):
        for b in range(a, n, block):
            z = 2.0 * t * (A[a : a + block] @ A[b : b + block].T)
            if a == b:
                z = z[np.triu_indices(len(z), k=1)]
            if z.size == 0:
                continue
            zmax = float(z.max())
            if zmax > m:
                acc *= np.exp(m - zmax)
                m = zmax
            acc += float(np.exp(z - m).sum())
    n_pairs = n * (n - 1) / 2
    return float(m + np.log(acc) - np.log(n_pairs) - 2.0 * t)


@dataclass(frozen=True)
class Anisotropy:
    """How far L2-normalised embeddings are from isotropic.

    Attributes:
        mean_cosine: mean pairwise cosine (Ethayarajh 2019's anisotropy; = cone width).
        mean_resultant_length: ‖mean of the normalised rows‖ (0 isotropic, 1 all identical).
        top_variance_fraction: λ₁/Σλ of the centred covariance of the normalised rows
            (1/d for isotropic).
        n_features: d (so 1/d is at hand for comparison).
    """

    mean_cosine: float
    mean_resultant_length: float
    top_variance_fraction: float
    n_features: int


def anisotropy(X: Any) -> Anisotropy:
    """Anisotropy summary of (n, d) embeddings (normalised here); see :class:`Anisotropy`.

    One streaming pass: the spectrum of the normalised rows also gives their mean, hence the
    mean resultant length and (through ``Σ_{i≠j} cos = n²‖mean‖² − n``) the mean cosine.
    """
    R = _Rows(X, "X")
    s = spectrum(R.unit_chunks(), center=True, name="X")
    n = R.n
    mrl2 = float(s.mean @ s.mean)
    frac = float(s.energy_fraction[0]) if s.total_energy > 0 else 1.0
    return Anisotropy(
        mean_cosine=(n * n * mrl2 - n) / (n * (n - 1)),
        mean_resultant_length=float(np.sqrt(mrl2)),
        top_variance_fraction=frac,
        n_features=R.d,
    )
