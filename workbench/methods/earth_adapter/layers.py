"""Earth-Adapter's per-layer module: experts on the spatial / low / high parts, a router, a scale.

Spec ``methods-geometry.md`` §6 and §8 [code: ``earth_adapter.py``]. At an adapted block with
output tokens F (B, L, C) on an H × W grid::

    ΔF_k = W_up,k ReLU(W_down,k X_k)      X_k ∈ {F, F_low, F_high}   (one expert per input)
    w    = softmax(Linear_{C→K}(F))      per token, only when K > 1
    F̄    = F + s_l Σ_k w_k ΔF_k           s_l learnable, 0.1 at init

The experts are kaiming-uniform initialised (``a = √5``, as the official code calls explicitly —
not zero), so the adapted tower differs from the frozen one from the first step unless
``s_l = 0``. A layer with a single expert has no router (the official non-FFT layers).

:class:`AdapterLayer` sits on a tower block as a forward hook (:meth:`AdapterLayer.block_hook`),
so the frozen block and its parameter names stay untouched. The hook accepts the block outputs of
every encoder in ``workbench.encoders``: (B, C, H, W) feature maps (EfficientNet; the tokens are
the grid cells, row-major) and (B, P + H·W, C) token sequences whose first P prefix tokens (the
CLS token) pass through unchanged, plus tuples whose first element is one of these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from workbench._validate import require
from workbench.methods.earth_adapter.frequency import (
    OPERATOR_MAX_TOKENS,
    band_operator,
    low_pass_mask,
    split_bands,
)

__all__ = [
    "EXPERT_INPUTS",
    "AdapterLayer",
    "Expert",
    "from_tokens",
    "mix_experts",
    "to_tokens",
]

#: What each kind of expert reads: the tokens themselves or one of their frequency bands (§6).
EXPERT_INPUTS: tuple[str, ...] = ("spatial", "low", "high")


class Expert(nn.Sequential):
    """``W_up ReLU(W_down x)``: Linear(C → r) → ReLU → Linear(r → C), kaiming-uniform (a = √5)
    weights and PyTorch's default biases, as the official ``mlp_list`` experts [code]."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__(nn.Linear(dim, bottleneck), nn.ReLU(), nn.Linear(bottleneck, dim))
        for linear in (self[0], self[2]):
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))


def mix_experts(
    tokens: torch.Tensor,
    grid_hw: tuple[int, int],
    experts: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    inputs: Sequence[str],
    router: Callable[[torch.Tensor], torch.Tensor] | None,
    scale: torch.Tensor,
    band: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F + s Σ_k w_k E_k(X_k)``, the Earth-Adapter update of one layer (spec §6) [code].

    Args:
        tokens: (B, H·W, C) patch tokens F (no CLS), row-major over the grid.
        grid_hw: ``(H, W)``.
        experts: K callables (B, H·W, C) → (B, H·W, C).
        inputs: K names from :data:`EXPERT_INPUTS`: what expert k reads (F, F_low or F_high).
        router: (B, H·W, C) → (B, H·W, K) logits, softmaxed per token; ``None`` when K = 1.
        scale: s_l, a scalar tensor.
        band: How the bands are split (:func:`~.frequency.split_bands`): the (H·W, H·W)
            :func:`~.frequency.band_operator` or the (H, W) :func:`~.frequency.low_pass_mask`;
            needed when an expert reads a frequency band.

    Returns:
        (B, H·W, C) updated tokens, in the dtype of ``tokens``.
    """
    bands: dict[str, torch.Tensor] = {"spatial": tokens}
    if "low" in inputs or "high" in inputs:
        if band is None:
            raise ValueError("mix_experts: a frequency expert needs the band operator or mask")
        bands["low"], bands["high"] = split_bands(tokens, grid_hw, band)
    deltas = [expert(bands[name]) for expert, name in zip(experts, inputs)]  # K × (B, L, C)
    if router is None:
        if len(deltas) != 1:
            raise ValueError(f"mix_experts: {len(deltas)} experts need a router")
        delta = deltas[0]
    else:
        weights = torch.softmax(router(tokens), dim=-1)  # (B, L, K)
        delta = sum(weights[..., k : k + 1] * d for k, d in enumerate(deltas))
    return tokens + scale.to(tokens.dtype) * delta


# -- block outputs ↔ tokens ---------------------------------------------------------------------
def to_tokens(
    output: torch.Tensor, prefix_tokens: int
) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
    """A block's output → ``(tokens (B, H·W, C), (H, W), prefix (B, P, C) or None)``.

    (B, C, H, W) maps give their grid cells row-major (no prefix); (B, N, C) sequences drop
    their first ``prefix_tokens`` tokens (CLS) and need a square grid of ``N − P`` tokens.
    """
    if output.ndim == 4:
        b, c, h, w = output.shape
        return output.permute(0, 2, 3, 1).reshape(b, h * w, c), (h, w), None  # (B, H·W, C)
    if output.ndim == 3:
        n = output.shape[1] - prefix_tokens
        side = math.isqrt(max(n, 0))
        if n < 1 or side * side != n:
            raise ValueError(
                f"Earth-Adapter: a block output of {output.shape[1]} tokens minus "
                f"{prefix_tokens} prefix token(s) is not a square grid; set prefix_tokens= to "
                "the number of CLS/register tokens of this tower"
            )
        prefix = output[:, :prefix_tokens] if prefix_tokens else None
        return output[:, prefix_tokens:], (side, side), prefix
    raise ValueError(
        f"Earth-Adapter: cannot read a block output of shape {tuple(output.shape)}; expected "
        "(B, C, H, W) feature maps or (B, N, C) token sequences"
    )


def from_tokens(
    tokens: torch.Tensor, like: torch.Tensor, grid_hw: tuple[int, int], prefix: torch.Tensor | None
) -> torch.Tensor:
    """Inverse of :func:`to_tokens` for a block output shaped like ``like``."""
    if like.ndim == 4:
        b, c, h, w = like.shape
        # (B, H·W, C) → (B, C, H, W) as a channels-last view: no copy, and EfficientNet's
        # depthwise convolutions keep their fast memory format
        return tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return tokens if prefix is None else torch.cat([prefix, tokens], dim=1)


class AdapterLayer(nn.Module):
    """The adapter of one tower block: experts, router (when > 1 expert) and the scale s_l.

    Args:
        dim: Channels C of the block's output.
        inputs: What each expert reads, from :data:`EXPERT_INPUTS`: ``("spatial", "low",
            "high")`` for Earth-Adapter's FFT layers, ``("spatial",) * 3`` for the three-spatial
            ablation, ``("spatial",)`` for the other layers (no router).
        bottleneck: Expert width r (16–64 in the official configs) [code].
        ratio: ρ of the frequency split (used when an expert reads a band).
        scale: Initial s_l (0.1) [code].
        prefix_tokens: Leading tokens of a (B, N, C) block output that pass through unchanged
            (the CLS token).

    Attributes:
        experts: ``nn.ModuleList`` of :class:`Expert`.
        router: ``nn.Linear(C, K)`` (default init, as the official router), or ``None``.
        scale: s_l, a 0-d parameter.
    """

    def __init__(
        self,
        dim: int,
        inputs: Sequence[str],
        bottleneck: int,
        ratio: float,
        scale: float = 0.1,
        prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        self.inputs = tuple(inputs)
        bad = [i for i in self.inputs if i not in EXPERT_INPUTS]
        require(bool(self.inputs) and not bad, "AdapterLayer", "inputs", inputs,
                f"a non-empty sequence of {EXPERT_INPUTS}")  # fmt: skip
        self.dim, self.bottleneck, self.ratio = int(dim), int(bottleneck), float(ratio)
        self.prefix_tokens = int(prefix_tokens)
        self.experts = nn.ModuleList(Expert(dim, bottleneck) for _ in self.inputs)
        self.router = nn.Linear(dim, len(self.inputs)) if len(self.inputs) > 1 else None
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self._bands: dict[tuple[int, int, str], torch.Tensor] = {}

    @property
    def uses_fft(self) -> bool:
        """Whether an expert reads a frequency band."""
        return any(i != "spatial" for i in self.inputs)

    def band(self, grid_hw: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        """The split of this grid (cached): the matrix on small grids, the FFT mask on others."""
        if not self.uses_fft:
            return None
        key = (*grid_hw, str(device))
        if key not in self._bands:
            small = grid_hw[0] * grid_hw[1] <= OPERATOR_MAX_TOKENS
            build = band_operator if small else low_pass_mask
            self._bands[key] = build(grid_hw, self.ratio, device)
        return self._bands[key]

    def forward(self, tokens: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """(B, H·W, C) patch tokens → adapted tokens (:func:`mix_experts`)."""
        return mix_experts(
            tokens, grid_hw, list(self.experts), self.inputs, self.router, self.scale,
            self.band(grid_hw, tokens.device),
        )  # fmt: skip

    def router_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, K) per-token expert weights ``softmax(router(F))`` for (B, L, C) tokens."""
        if self.router is None:
            return torch.ones(*tokens.shape[:2], 1, dtype=tokens.dtype, device=tokens.device)
        return torch.softmax(self.router(tokens), dim=-1)

    def block_hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        """Forward hook on the adapted block: its output with the patch tokens adapted.

        A bound method (not a closure), so a ``copy.deepcopy`` of the encoder — an EMA
        teacher — hooks the copied block to the copied adapter.
        """
        rest: tuple[Any, ...] = ()
        if isinstance(output, tuple):
            output, rest = output[0], output[1:]
        tokens, grid, prefix = to_tokens(output, self.prefix_tokens)
        adapted = from_tokens(self(tokens, grid), output, grid, prefix)
        return (adapted, *rest) if rest else adapted

    def extra_repr(self) -> str:
        return f"dim={self.dim}, inputs={self.inputs}, bottleneck={self.bottleneck}, ratio={self.ratio}"
