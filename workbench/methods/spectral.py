"""Spectral primitives shared by methods: the no-grad batch SVD that SDE and FANoise build on.

Methods decompose the (global) batch of features every step, so the SVD here is cheap for the
(B, D) shapes of training (Gram route on the smaller side), never differentiated (gradients flow
through the features, with the basis held constant), and returns zero columns for directions the
batch does not span numerically, so operations built on ``V`` leave those directions alone.
"""

from __future__ import annotations

from typing import Literal

import torch

SvdRoute = Literal["auto", "gram", "svd"]
SVD_ROUTES: tuple[str, ...] = ("auto", "gram", "svd")


@torch.no_grad()
def batch_svd(
    features: torch.Tensor, route: SvdRoute = "auto", rtol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values and right singular vectors of a batch, without gradient.

    Args:
        features: (m, n) batch matrix, any float dtype (bf16/fp16 are up-cast), not centred.
        route: ``"gram"`` = ``eigh`` of the smaller Gram matrix (``FᵀF`` when m ≥ n, else
            ``FFᵀ`` with ``V = FᵀU/s``) in float64; ``"svd"`` = ``torch.linalg.svd`` in float64;
            ``"auto"`` = ``"gram"``: on a 2-core CPU (one thread) a 128×256 batch takes 1.5 ms
            this way vs 9 ms (float32) / 12 ms (float64) through ``linalg.svd``, and 1024×768
            ~0.58 s vs 0.59 s / 1.2 s. Both are exact up to float32 input precision.
        rtol: Directions with ``s ≤ rtol·s_max`` are not spanned by the batch numerically;
            their columns of ``V`` are returned as zeros, so every operation built on ``V``
            leaves them untouched (identity gain, no noise) — this keeps gradients finite and
            route-independent for repeated or zero singular values.

    Returns:
        ``(s, V)``: ``s`` (r,) float64 descending, ``r = min(m, n)``; ``V`` (n, r) float64.
    """
    if features.ndim != 2:
        raise ValueError(f"expected a (m, n) batch matrix, got shape {tuple(features.shape)}")
    if route not in SVD_ROUTES:
        raise ValueError(f"svd route must be 'auto', 'gram' or 'svd', got {route!r}")
    x = features.detach().to(torch.float64)
    m, n = x.shape
    if route == "svd":
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        v = vh.T
    elif m >= n:
        evals, v = torch.linalg.eigh(x.T @ x)  # ascending
        s, v = evals.flip(0).clamp_min(0).sqrt(), v.flip(1)
    else:
        evals, u = torch.linalg.eigh(x @ x.T)
        s, u = evals.flip(0).clamp_min(0).sqrt(), u.flip(1)
        v = (x.T @ u) / s.clamp_min(torch.finfo(torch.float64).tiny)
    spanned = s > rtol * s[0].clamp_min(torch.finfo(torch.float64).tiny)
    return s, v * spanned
