"""How far aligned text is from the image *distribution* (ReAlign, arXiv 2602.07026 v3, §2.3 figures).

* :func:`trace_normalized_spectrum_alpha` — trace-normalised covariance spectrum and its power-law
  α (Fig. 4a), via :mod:`workbench.probes.spectra`.
* :func:`cosine_js_divergence` — Jensen–Shannon divergence between KDEs of within-set pairwise
  cosine similarities (Fig. 4b).
* :func:`knn_mixing_rate` — among each aligned text's k nearest neighbours in the joint
  image ∪ text set, the fraction that are images (Fig. 5).
* :func:`knn_overlap` — how much of each point's k-NN neighbourhood survives a transformation
  (Fig. 9: ReAlign keeps 87.3 % of k = 10 neighbourhoods).

All neighbourhoods and similarities are cosine: rows are L2-normalised first, so unnormalised
outputs (ReAlign's anchor step, C3) can be passed as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench._validate import (
    as_float,
    as_int,
    as_matrix,
    check_same_dim,
    l2_normalize,
    roundoff,
)

__all__ = [
    "CosineKDE",
    "KnnMixing",
    "cosine_js_divergence",
    "knn_mixing_rate",
    "knn_overlap",
    "pairwise_cosine_sample",
    "trace_normalized_spectrum_alpha",
]


def _normed(X: Any, name: str) -> np.ndarray:
    return l2_normalize(as_matrix(X, name), name)


def trace_normalized_spectrum_alpha(
    X: Any, *, name: str = "X", group: Any = None
) -> tuple[np.ndarray, float]:
    """Trace-normalised covariance spectrum of (n, d) embeddings and its power-law α.

    Returns ``(λ_k / Σλ, α)`` with λ the centred spectrum of
    :func:`workbench.probes.spectra.spectrum` and α from
    :func:`~workbench.probes.ranks.power_law_alpha` (λ_k ∝ k^−α over ranks above the
    numerical floor). ReAlign Fig. 4a: text 1.33, ReAlign 1.33, C3 1.06, image 1.83 [paper].
    Rows are used as given (normalise first if you mean to). ``group``: as in
    :func:`~workbench.probes.spectra.spectrum` (this rank's rows; the spectrum of all ranks').
    """
    from workbench.probes.ranks import power_law_alpha
    from workbench.probes.spectra import spectrum

    spec = spectrum(X, center=True, name=name, group=group)
    if spec.degenerate:
        raise ValueError(
            f"{name} has zero variance (identical rows, up to round-off); the spectrum is empty"
        )
    return np.array(spec.energy_fraction), float(power_law_alpha(spec))


def pairwise_cosine_sample(X: Any, n_pairs: int = 20_000, seed: int = 0) -> np.ndarray:
    """(n_pairs,) cosines of random distinct pairs (i ≠ j) of rows of ``X`` (n, d).

    All n(n−1)/2 pairs when that is fewer than ``n_pairs``.
    """
    return _cosine_sample(X, "X", n_pairs, seed)


def _cosine_sample(X: Any, name: str, n_pairs: int, seed: int) -> np.ndarray:
    n_pairs, seed = as_int(n_pairs, "n_pairs", lo=1), as_int(seed, "seed", lo=0)
    Xn = _normed(X, name)
    n = Xn.shape[0]
    if n * (n - 1) // 2 <= n_pairs:
        iu = np.triu_indices(n, k=1)
        return (Xn @ Xn.T)[iu]
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n  # uniform over j ≠ i
    return np.einsum("ij,ij->i", Xn[i], Xn[j])


@dataclass(frozen=True)
class CosineKDE:
    """Two KDEs of pairwise cosine similarity on a common grid and their JS divergence.

    Attributes:
        js: Jensen–Shannon divergence (log base ``base``; in [0, 1] for base 2).
        grid: (g,) cosine values the densities are evaluated at.
        density_a, density_b: (g,) KDE densities (each integrates to ≈ 1 over the grid).
        mean_a, mean_b: mean pairwise cosine of each set.
    """

    js: float
    grid: np.ndarray
    density_a: np.ndarray
    density_b: np.ndarray
    mean_a: float
    mean_b: float


def cosine_js_divergence(
    a_emb: Any,
    b_emb: Any,
    *,
    n_pairs: int = 20_000,
    grid_size: int = 512,
    bandwidth: float | str | None = None,
    base: float = 2.0,
    seed: int = 0,
) -> CosineKDE:
    """JS divergence between the pairwise-cosine distributions of two embedding sets (Fig. 4b).

    Each set's within-set cosines (sampled pairs) are smoothed with ``scipy.stats.gaussian_kde``
    (``bandwidth`` is its ``bw_method``; Scott's rule by default), both KDEs are evaluated on one
    grid spanning both samples (padded by 3 bandwidths), turned into discrete distributions and
    compared with JS(P, Q) = ½KL(P‖M) + ½KL(Q‖M), M = ½(P + Q). The paper gives neither the
    bandwidth nor the log base [our reading: Scott's rule, base 2 so JS ∈ [0, 1]].

    Args:
        a_emb, b_emb: (n_a, d) and (n_b, d') raw embeddings (e.g. aligned text and images);
            only within-set cosines are compared, so d' may differ from d.
    """
    from scipy.stats import gaussian_kde

    grid_size = as_int(grid_size, "grid_size", lo=2)
    base = as_float(base, "base", lo=1.0, lo_open=True)
    if not (bandwidth is None or bandwidth in ("scott", "silverman")):
        bandwidth = as_float(bandwidth, "bandwidth", lo=0.0, lo_open=True)
    seed = as_int(seed, "seed", lo=0)
    ca = _cosine_sample(a_emb, "a_emb", n_pairs, seed)
    cb = _cosine_sample(b_emb, "b_emb", n_pairs, seed + 1)
    for name, c in (("a_emb", ca), ("b_emb", cb)):
        if np.ptp(c) <= roundoff(1.0, len(c)):  # cosines of unit rows: round-off of 1
            raise ValueError(
                f"{name}'s pairwise cosines are all equal (e.g. identical rows); a KDE needs spread"
            )
    ka, kb = gaussian_kde(ca, bw_method=bandwidth), gaussian_kde(cb, bw_method=bandwidth)
    pad = 3 * max(np.sqrt(ka.covariance[0, 0]), np.sqrt(kb.covariance[0, 0]))
    lo, hi = min(ca.min(), cb.min()) - pad, max(ca.max(), cb.max()) + pad
    grid = np.linspace(lo, hi, grid_size)
    da, db = ka(grid), kb(grid)
    p, q = da / da.sum(), db / db.sum()
    m = 0.5 * (p + q)

    def kl(u: np.ndarray, v: np.ndarray) -> float:
        nz = u > 0
        return float((u[nz] * np.log(u[nz] / v[nz])).sum())

    js = (0.5 * kl(p, m) + 0.5 * kl(q, m)) / np.log(base)
    return CosineKDE(float(max(js, 0.0)), grid, da, db, float(ca.mean()), float(cb.mean()))


def _topk_neighbours(
    Q: np.ndarray, G: np.ndarray, k: int, self_offset: int | None, chunk: int
) -> np.ndarray:
    """(m, k) indices into G of each query's k most cosine-similar rows, excluding the query itself.

    ``self_offset``: query i is row ``self_offset + i`` of G (excluded), or None if Q ⊄ G.
    """
    out = np.empty((Q.shape[0], k), dtype=np.int64)
    for s in range(0, Q.shape[0], chunk):
        sims = Q[s : s + chunk] @ G.T  # (c, n_G)
        if self_offset is not None:
            rows = np.arange(sims.shape[0])
            sims[rows, self_offset + s + rows] = -np.inf
        out[s : s + chunk] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return out


@dataclass(frozen=True)
class KnnMixing:
    """k-NN mixing of aligned text into images (ReAlign Fig. 5).

    Attributes:
        rate: mean over text queries of (# image neighbours among its k NN) / k.
        chance: the rate of a perfectly mixed joint set, n_x / (n_x + n_y − 1).
        per_query: (n_y,) each query's image fraction.
        k: neighbours per query.
    """

    rate: float
    chance: float
    per_query: np.ndarray
    k: int


def knn_mixing_rate(image_emb: Any, text_emb: Any, k: int = 20, chunk: int = 1024) -> KnnMixing:
    """Fraction of the k nearest neighbours of each text that are images, in image ∪ text.

    ReAlign Fig. 5 (k = 20): 0.32 % (original) → 1.31 % (C3) → 4.35 % (ReAlign) [paper]. A text
    is never its own neighbour. Cosine similarity.

    Args:
        image_emb: (n_x, d) raw image embeddings (the target distribution).
        text_emb: (n_y, d) raw (aligned) text embeddings, the queries.
    """
    X, Y = _normed(image_emb, "image_emb"), _normed(text_emb, "text_emb")
    check_same_dim(X, Y, ("image_emb", "text_emb"))
    n_x, n_y = X.shape[0], Y.shape[0]
    k = as_int(k, "k", lo=1, hi=n_x + n_y - 1)
    chunk = as_int(chunk, "chunk", lo=1)
    joint = np.concatenate([X, Y], axis=0)
    nbrs = _topk_neighbours(Y, joint, k, self_offset=n_x, chunk=chunk)
    per_query = (nbrs < n_x).mean(axis=1)
    return KnnMixing(float(per_query.mean()), n_x / (n_x + n_y - 1), per_query, k)


def knn_overlap(before: Any, after: Any, k: int = 10, chunk: int = 1024) -> float:
    """Mean fraction of each row's k-NN (cosine, within its own set) kept after a transformation.

    Args:
        before: (n, d) embeddings before (e.g. raw text).
        after: (n, d') the same rows after (e.g. ReAlign-ed text); d' may differ from d.

    Returns 1.0 for any transformation that preserves cosine rankings, ≈ k/(n−1) for a random one.
    """
    B, A = _normed(before, "before"), _normed(after, "after")
    if B.shape[0] != A.shape[0]:
        raise ValueError(
            f"before has {B.shape[0]} rows but after has {A.shape[0]}; rows must match"
        )
    n = B.shape[0]
    k = as_int(k, "k", lo=1, hi=n - 1)
    chunk = as_int(chunk, "chunk", lo=1)
    nb = _topk_neighbours(B, B, k, self_offset=0, chunk=chunk)
    na = _topk_neighbours(A, A, k, self_offset=0, chunk=chunk)
    kept = [len(np.intersect1d(nb[i], na[i], assume_unique=True)) for i in range(n)]
    return float(np.mean(kept) / k)
