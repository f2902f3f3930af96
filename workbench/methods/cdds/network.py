"""CDDS's dual-path UNet decoupling network, one per modality (spec §3.2).

A shared encoder ``E`` (two pre-norm transformer blocks over the tokens) maps projected tokens
``V`` to ``H``; ``z`` Gaussian perturbations ``Ĥ_k = H + Δ_k`` go through two decoders with
separate weights — semantic ``D_s`` and modality ``D_m``, each two token-wise linear + GELU
layers and an output map, with a UNet skip from the encoder's first level into the decoders'
second layer — and the outputs are averaged over ``k``::

    e1 = E1(V);  H = E2(e1);  Ĥ_k = H + Δ_k,  Δ_k ~ N(0, σ²)
    D(Ĥ_k) = W_out · gelu(W_2 · (gelu(W_1 · Ĥ_k) + e1))
    V^s = (1/z) Σ_k D_s(Ĥ_k),   V^m = (1/z) Σ_k D_m(Ĥ_k)

[secondary] shared 2-layer transformer encoder, 2-layer decoders with UNet skips, d = 512;
[our reading] Δ ~ N(0, 0.1²), z = 4, decoders per token (the encoder mixes tokens) made of
plain linear + GELU layers, additive skips, no perturbation in eval mode (the average of ``z``
identical passes). Cost: the two decoders run as batched matmuls on a stacked (2, ·) input
(their first layers, which share the input ``Ĥ_k``, as one GEMM), on the valid tokens only,
with the ``z`` perturbations in the row dimension, and the average over ``k`` taken before the
linear output map (exact) — a handful of large ops rather than ``2z`` small ones, no work on
padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DecouplingNetwork", "TokenBlock", "TwinLinear"]


class TokenBlock(nn.Module):
    """Pre-norm transformer block on tokens: masked multi-head self-attention, then an MLP.

    Args:
        dim: Token width d.
        hidden: MLP hidden width.
        heads: Attention heads (``dim`` must divide by it).
    """

    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"cdds: dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d), mask (B, L) bool (keys at padding are never attended) → (B, L, d)."""
        b, l, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, l, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hs)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.proj(a.transpose(1, 2).reshape(b, l, d))
        return x + self.mlp(self.norm2(x))


class TwinLinear(nn.Module):
    """Two linear maps with separate weights applied to a stacked input: ``x[0] @ W[0]``,
    ``x[1] @ W[1]`` (+ bias) — a semantic and a modality decoder layer as one ``baddbmm``.

    Args:
        dim_in: Input width.
        dim_out: Output width.
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2, dim_in, dim_out))
        self.bias = nn.Parameter(torch.empty(2, 1, dim_out))
        bound = 1 / math.sqrt(dim_in)  # nn.Linear's default init, per twin
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (2, N, dim_in) → (2, N, dim_out)."""
        return torch.baddbmm(self.bias, x, self.weight)


class DecouplingNetwork(nn.Module):
    """One modality's encoder + semantic/modality decoders (see the module docstring).

    Args:
        dim: Token width d (the projected tokens' width).
        hidden: MLP hidden width of the encoder blocks.
        heads: Attention heads of the encoder blocks.
        perturbations: ``z``, Gaussian perturbations averaged per training forward (≥ 1).
        noise_std: σ of each perturbation Δ_k (0 = none: one unperturbed pass).
    """

    def __init__(
        self, dim: int, hidden: int, heads: int, perturbations: int, noise_std: float
    ) -> None:
        super().__init__()
        self.perturbations, self.noise_std = perturbations, noise_std
        self.enc1 = TokenBlock(dim, hidden, heads)
        self.enc2 = TokenBlock(dim, hidden, heads)
        self.dec1 = nn.Linear(dim, 2 * dim)  # both decoders' first layers: one input, one GEMM
        self.dec2 = TwinLinear(dim, dim)
        self.out = TwinLinear(dim, dim)

    def forward(self, v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decouple tokens ``v`` (B, L, d) with ``mask`` (B, L) into ``(V^s, V^m)``, each
        (B, L, d), zero at padding. Perturbations use torch's global RNG (seeded by the run).

        The decoders are token-wise, so they run on the valid tokens only, packed into
        (z·N, d) rows: padding costs nothing there.
        """
        b, l, d = v.shape
        e1 = self.enc1(v, mask)
        h = self.enc2(e1, mask)
        flat = mask.reshape(-1).nonzero().squeeze(1)  # (N,) valid token rows
        hv = h.reshape(-1, d).index_select(0, flat)  # (N, d)
        skip = e1.reshape(-1, d).index_select(0, flat)
        n = hv.shape[0]
        z = self.perturbations if (self.training and self.noise_std > 0) else 1
        hh = hv.unsqueeze(0).expand(z, n, d)  # (z, N, d)
        if self.training and self.noise_std > 0:
            hh = hh + self.noise_std * torch.randn_like(hh)
        u = F.gelu(self.dec1(hh)).view(z, n, 2, d).permute(2, 0, 1, 3)  # (2, z, N, d)
        u = (u + skip).reshape(2, z * n, d)  # UNet skip from encoder level 1
        u = F.gelu(self.dec2(u)).view(2, z, n, d).mean(1)  # (2, N, d)
        # averaging over the perturbations before the output map is exact: the map is linear
        u = self.out(u)
        out = u.new_zeros(2, b * l, d).index_copy(1, flat, u).view(2, b, l, d)
        return out[0], out[1]
