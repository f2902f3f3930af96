"""ProCLIP's text adapter ``t* = Adapter(G_T(T))`` [code: ``openclip/model.py`` ``TextProj``]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench._validate import require

__all__ = ["ProCLIPAdapter"]


class _LinearBlock(nn.Module):
    """``x + W₂ Dropout(GELU(W₁ LN(x)))`` [code: ``LinearBlock``]."""

    def __init__(self, dim: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fn = nn.Sequential(
            nn.Linear(dim, expansion * dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(expansion * dim, dim),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.ln(x))


class ProCLIPAdapter(nn.Module):
    """The text adapter ``t* = Adapter(G_T(T))``: (n, D_in) embedder features → (n, D_out).

    Layout [code: ``TextProj``]: L2-normalise the input, residual blocks LN → Linear(d, e·d) →
    GELU → Dropout → Linear(e·d, d), then LN → Linear(d, D_out). ``linear_layers`` counts the
    linear layers [paper appendix: 4; the released default is 3 = one block]: an even count
    adds an input Linear(D_in, D_in) before the blocks [our reading of "4 linear layers" with
    the code's blocks]; ``(linear_layers − 1) // 2`` blocks follow.

    Args:
        d_in: Embedder width (MiniLM: 384).
        d_out: Shared-space width (``encoder.embed_dim``).
        linear_layers: Linear layers in all (≥ 1; 4 [paper appendix]).
        expansion: Block hidden width factor (8 [code]).
        dropout: Dropout inside the blocks (0 [code]).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        linear_layers: int = 4,
        expansion: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        require(linear_layers >= 1, "ProCLIPAdapter", "linear_layers", linear_layers, "≥ 1")
        require(expansion >= 1, "ProCLIPAdapter", "expansion", expansion, "≥ 1")
        require(0 <= dropout < 1, "ProCLIPAdapter", "dropout", dropout, "in [0, 1)")
        self.in_features, self.out_features = d_in, d_out
        layers: list[nn.Module] = []
        if linear_layers % 2 == 0:
            layers.append(nn.Linear(d_in, d_in))
        layers += [_LinearBlock(d_in, expansion, dropout) for _ in range((linear_layers - 1) // 2)]
        layers += [nn.LayerNorm(d_in), nn.Linear(d_in, d_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D_in) raw embedder features → (n, D_out) raw (un-normalised) adapter outputs."""
        return self.net(F.normalize(x, dim=-1))
