"""CDDS related-semantics identification (Eq. 5) and distribution sampling (spec §3.3–3.4).

Pure tensor functions, batched over the whole batch (no Python loop over dimensions or pairs):

* :func:`column_stats` — the Gaussian fit of each feature column's distribution over the
  batch's *valid* tokens (padding never enters);
* :func:`gaussian_kl_matrix` — ``S[i, j] = KL(C_i^v ‖ C_j^t)`` in closed form, (D_v, D_t);
* :func:`related_weights` — the adaptive soft threshold with learnable α_i: conditional
  probabilities, soft mask, normalised weights;
* :func:`quantile_map` — the x-semantic components: each source token's per-column rank picks a
  quantile of the paired target's column distributions, mixed with the related-semantics
  weights; differentiable with respect to the target (and the weights), not the source ranks.

All of them compute in float32 whatever the input dtype (bf16 autocast upcasts here).
"""

from __future__ import annotations

import torch

__all__ = [
    "column_stats",
    "gaussian_kl_matrix",
    "quantile_grid",
    "quantile_map",
    "related_weights",
]


def _check(t: object, name: str, shape: tuple[int | None, ...], fn: str) -> None:
    """``t`` is a tensor of rank ``len(shape)`` whose fixed sizes (non-``None``) match: else a
    ``TypeError``/``ValueError`` naming ``fn``'s argument. Shapes only: a per-step NaN scan
    would synchronise CUDA on every step (token tables are checked once, at caching)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != len(shape) or any(w is not None and w != n for w, n in zip(shape, t.shape)):
        want = "(" + ", ".join("·" if w is None else str(w) for w in shape) + ")"
        raise ValueError(f"{fn}: {name} must have shape {want}, got {tuple(t.shape)}")
    if t.dtype != torch.bool and not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a float tensor, got {t.dtype}")


def _check_mask(mask: object, name: str, shape: tuple[int, ...], fn: str) -> None:
    _check(mask, name, shape, fn)
    if mask.dtype != torch.bool:  # type: ignore[union-attr]
        raise TypeError(f"{fn}: {name} must be a bool tensor (True at valid tokens), "
                        f"got {mask.dtype}")  # type: ignore[union-attr]  # fmt: skip


def column_stats(
    x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each column of ``x`` over the valid tokens (spec §3.3).

    The column-wise distribution ``C_i`` of feature ``i`` is the set of its values over every
    valid token of the batch, fitted by a Gaussian [our reading].

    Args:
        x: (B, L, D) token components.
        mask: (B, L) bool, ``True`` at valid tokens; padded positions are replaced by 0 before
            any arithmetic, so NaN/Inf padding cannot leak in.
        eps: Added to the variance before the square root (keeps a constant column finite).

    Returns:
        ``(mean, std)``, each (D,) float32 (population std, i.e. ``ddof=0``).
    """
    _check(x, "x", (None, None, None), "column_stats")
    _check_mask(mask, "mask", tuple(x.shape[:2]), "column_stats")
    x = x.float()
    m = mask[..., None]  # (B, L, 1)
    n = m.sum().clamp_min(1)
    xm = torch.where(m, x, 0.0)
    mean = xm.sum((0, 1)) / n  # (D,)
    var = torch.where(m, (x - mean) ** 2, 0.0).sum((0, 1)) / n  # (D,)
    return mean, torch.sqrt(var + eps)


def gaussian_kl_matrix(
    mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor
) -> torch.Tensor:
    """Closed-form ``S[i, j] = KL(N(m_p[i], s_p[i]²) ‖ N(m_q[j], s_q[j]²))`` (spec §3.3, Eq. 5).

    ``KL = log(s_q / s_p) + (s_p² + (m_p − m_q)²) / (2 s_q²) − ½``, every pair at once by
    broadcasting: (D_p, 1) against (1, D_q).

    Args:
        mean_p, std_p: (D_p,) Gaussian fit of the first modality's columns.
        mean_q, std_q: (D_q,) Gaussian fit of the second modality's columns (std > 0).

    Returns:
        (D_p, D_q) float32, ≥ 0, zero where the two Gaussians coincide.
    """
    for mean, std, side in ((mean_p, std_p, "p"), (mean_q, std_q, "q")):
        _check(mean, f"mean_{side}", (None,), "gaussian_kl_matrix")
        _check(std, f"std_{side}", (mean.shape[0],), "gaussian_kl_matrix")
    mp, sp = mean_p.float()[:, None], std_p.float()[:, None]  # (D_p, 1)
    mq, sq = mean_q.float()[None, :], std_q.float()[None, :]  # (1, D_q)
    return torch.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5


def related_weights(
    kl: torch.Tensor,
    alpha: torch.Tensor,
    *,
    temperature: float = 1.0,
    sharpness: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adaptive soft threshold on the KL matrix → related-semantics weights (spec §3.3).

    Per row ``i`` (a column of the source modality):

    * ``P(j|i) = softmax_j(−S_ij / temperature)`` [our reading];
    * threshold ``k_i = mean_j P(j|i) + α_i · std_j P(j|i)`` [secondary], α_i learnable;
    * soft mask ``M_ij = sigmoid((P(j|i) − k_i) / (sharpness · std_j P(j|i)))`` [our reading:
      the spec's ε expressed in units of the row's spread, so the mask's softness does not
      depend on D];
    * weights ``w_ij = M_ij P(j|i) / Σ_j M_ij P(j|i)`` (rows sum to 1).

    Args:
        kl: (D_s, D_t) divergences ``S``.
        alpha: (D_s,) learnable threshold offsets α_i.
        temperature: Softmax temperature ``T`` of ``P(j|i)`` (> 0).
        sharpness: Width ε of the sigmoid in row standard deviations (> 0).

    Returns:
        ``(P, M, w)``, each (D_s, D_t) float32.
    """
    _check(kl, "kl", (None, None), "related_weights")
    _check(alpha, "alpha", (kl.shape[0],), "related_weights")
    for name, value in (("temperature", temperature), ("sharpness", sharpness)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"related_weights: {name} must be a number > 0, got {value!r}")
    P = torch.softmax(-kl.float() / temperature, dim=1)  # (D_s, D_t)
    mu = P.mean(1, keepdim=True)  # (D_s, 1), = 1 / D_t
    sd = P.std(1, keepdim=True).clamp_min(1e-12)  # (D_s, 1)
    k = mu + alpha.float()[:, None] * sd
    M = torch.sigmoid((P - k) / (sharpness * sd))
    w = M * P
    return P, M, w / w.sum(1, keepdim=True).clamp_min(1e-12)


def quantile_grid(
    target: torch.Tensor, target_mask: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """Empirical quantiles of each row's valid tokens, per column, at given levels.

    Linear interpolation between sorted values with the mid-rank convention: the ``r``-th of
    ``n`` sorted values sits at level ``(r + ½) / n``, so ``n`` values evaluated at their own
    ``n`` mid-levels come back exactly. Levels outside the first/last mid-level clamp to the
    minimum/maximum. Differentiable with respect to ``target`` (a gather of sorted values).

    Args:
        target: (B, L_t, D) values.
        target_mask: (B, L_t) bool; every row needs ≥ 1 valid token.
        levels: (B, R) quantile levels in [0, 1].

    Returns:
        (B, R, D) float32: ``Q_{target_k[:, j]}(levels[k, r])``.
    """
    _check(target, "target", (None, None, None), "quantile_grid")
    _check_mask(target_mask, "target_mask", tuple(target.shape[:2]), "quantile_grid")
    _check(levels, "levels", (target.shape[0], None), "quantile_grid")
    t = target.float()
    # sort along the last, contiguous axis: (B, D, L_t) is ~3x faster to sort than (B, L_t, D)
    filled = torch.where(target_mask[..., None], t, torch.inf).transpose(1, 2).contiguous()
    ordered = filled.sort(dim=-1).values  # (B, D, L_t), padding last
    n = target_mask.sum(1, keepdim=True).clamp_min(1)  # (B, 1) int
    pos = (levels.float() * n - 0.5).clamp(min=0).minimum((n - 1).float())  # (B, R) in [0, n-1]
    lo = pos.floor().long()
    hi = (lo + 1).minimum(n - 1)
    frac = (pos - lo)[:, None, :]  # (B, 1, R)
    d = t.shape[2]
    q_lo = ordered.gather(2, lo[:, None, :].expand(-1, d, -1))  # (B, D, R)
    q_hi = ordered.gather(2, hi[:, None, :].expand(-1, d, -1))
    # hi ≤ n − 1 always indexes a real value, so the padding's inf never enters
    return (q_lo + frac * (q_hi - q_lo)).transpose(1, 2)  # (B, R, D)


def quantile_map(
    source: torch.Tensor,
    source_mask: torch.Tensor,
    target: torch.Tensor,
    target_mask: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Distribution sampling: the source's x-semantic components from its paired target (§3.4).

    For pair ``k``, source token ``p`` and source column ``i`` [our reading]::

        u = (rank of source[k, p, i] among the valid tokens of column i + ½) / n_k
        out[k, p, i] = Σ_j weights[i, j] · Q_{target[k, :, j]}(u)

    i.e. the source keeps its *ordering* per column but takes its *values* from the related
    target columns' distributions ("image semantics in the text modality's descriptive form").
    Because the levels of one row are exactly its ``n_k`` mid-levels, the quantiles are
    evaluated once per level (:func:`quantile_grid`), mixed by one matmul, then scattered back
    to the tokens by rank: O(B·L·D·(log L + D)), no (B, L, D, D) tensor.

    Args:
        source: (B, L_s, D_s) components whose per-column ranks are kept (no gradient flows
            through ranks).
        source_mask: (B, L_s) bool.
        target: (B, L_t, D_t) the paired other modality's components (gradient flows).
        target_mask: (B, L_t) bool; every row needs ≥ 1 valid token.
        weights: (D_s, D_t) related-semantics weights (rows sum to 1; gradient flows).

    Returns:
        (B, L_s, D_s) float32, zero at padded source positions; for each (k, i), monotone
        non-decreasing in the source values of that column.
    """
    _check(source, "source", (None, None, None), "quantile_map")
    _check_mask(source_mask, "source_mask", tuple(source.shape[:2]), "quantile_map")
    _check(target, "target", (source.shape[0], None, None), "quantile_map")
    _check_mask(target_mask, "target_mask", tuple(target.shape[:2]), "quantile_map")
    _check(weights, "weights", (source.shape[2], target.shape[2]), "quantile_map")
    l_s = source.shape[1]
    with torch.no_grad():
        filled = torch.where(source_mask[..., None], source.float(), torch.inf)
        order = filled.transpose(1, 2).contiguous().argsort(dim=-1)  # (B, D_s, L_s)
        steps = torch.arange(l_s, device=source.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(-1, order, steps)  # inverse permutation
        rank = rank.transpose(1, 2)  # (B, L_s, D_s), padding ranks last
        n_s = source_mask.sum(1, keepdim=True).clamp_min(1)  # (B, 1)
        r = torch.arange(l_s, device=source.device)
        levels = (r[None, :] + 0.5) / n_s  # (B, L_s) mid-levels of the source's own count
    grid = quantile_grid(target, target_mask, levels)  # (B, L_s, D_t)
    mixed = grid @ weights.float().T  # (B, L_s, D_s): value at each source rank level
    out = mixed.gather(1, rank)  # (B, L_s, D_s): back to the tokens
    return torch.where(source_mask[..., None], out, 0.0)
