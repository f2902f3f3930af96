"""FANoise — singular value-adaptive noise modulation (AAAI 2026, arXiv 2511.20997).

Spec: ``methods-spectral.md`` §2.3. For a (B, n) batch ``X = U Σ Vᵀ`` (no grad)::

    X̃ = X + (α / √n) · N_rand · diag(S(Σ_d)) · Vᵀ,   N_rand ~ N(0, 1)^{B×r}

with the scaling ``S`` uniform (``1``), linear (``Σ_d / mean Σ_d``) or sublinear (default,
``√Σ_d / mean √Σ_d``). The noise is an additive constant (SVD and draw under no-grad), injected
on the query and/or target side right before InfoNCE, during training only ([our reading]:
after L2 normalisation, no re-normalisation unless asked). ``α/√n`` keeps the noise energy per
row independent of the dimension: ``E‖noise_row‖² = α²/n · Σ_k S_k²``.

>>> from workbench import methods
>>> fan = methods.get("fanoise")                              # α = 0.1, sublinear, both sides
>>> uni = methods.get("fanoise", scaling="uniform", alpha=0.5, side="query")
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from workbench._validate import require
from workbench.methods.base import METHODS, BatchOutputs, LossOutput, StepState
from workbench.methods.feature_loss import FeatureLoss, Side
from workbench.methods.spectral import SVD_ROUTES, SvdRoute, batch_svd

Scaling = Literal["uniform", "linear", "sublinear"]
SCALINGS: tuple[str, ...] = ("uniform", "linear", "sublinear")
NoiseSide = Literal["both", "query", "target"]
NOISE_SIDES: tuple[str, ...] = ("both", "query", "target")


def noise_scaling(singular_values: torch.Tensor, scaling: Scaling) -> torch.Tensor:
    """The per-direction noise std ``S(Σ_d)`` of spec §2.3 for (r,) singular values.

    ``uniform`` → 1; ``linear`` → ``Σ_d / mean(Σ_d)``; ``sublinear`` → ``√Σ_d / mean(√Σ_d)``.
    An all-zero spectrum gives zeros for the adaptive scalings (nothing to modulate).
    """
    s = singular_values.to(torch.float64)
    if scaling == "uniform":
        return torch.ones_like(s)
    if scaling == "linear":
        base = s
    elif scaling == "sublinear":
        base = s.clamp_min(0).sqrt()
    else:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    mean = base.mean()
    return base / mean if mean > 0 else torch.zeros_like(s)


@torch.no_grad()
def fanoise(
    features: torch.Tensor,
    alpha: float,
    scaling: Scaling = "sublinear",
    *,
    generator: torch.Generator | None = None,
    svd_route: SvdRoute = "auto",
) -> torch.Tensor:
    """The FANoise perturbation ``(α/√n)·N_rand·diag(S(Σ_d))·Vᵀ`` of a batch (spec §2.3).

    Args:
        features: (B, n) batch ``X`` (L2-normalised in training; any float dtype).
        alpha: Noise strength α ≥ 0.
        scaling: ``"uniform"``, ``"linear"`` or ``"sublinear"``.
        generator: Torch generator for the draw (default: the global RNG, which the training
            loop seeds and checkpoints).
        svd_route: See :func:`workbench.methods.spectral.batch_svd`.

    Returns:
        (B, n) noise, float32 (float64 for float64 input), without gradient. Add it to ``X``.
    """
    if features.ndim != 2:
        raise ValueError(f"expected a (B, n) batch, got shape {tuple(features.shape)}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    b, n = features.shape
    s, v = batch_svd(features, svd_route)  # (r,), (n, r)
    scale = noise_scaling(s, scaling)
    draw = torch.randn(b, len(s), generator=generator, dtype=dtype, device=features.device)
    return (alpha / math.sqrt(n)) * (draw * scale.to(dtype)) @ v.T.to(dtype)


class FANoise(FeatureLoss):
    """InfoNCE on features perturbed by singular-value-adaptive noise (spec §2.3).

    Args:
        alpha: Noise strength α (0.1, the paper's main setting).
        scaling: ``"sublinear"`` (default, best in the paper), ``"linear"`` or ``"uniform"``.
        side: Where noise is injected: ``"both"`` (Fig. 1), ``"query"`` or ``"target"``.
        renormalize: L2-normalise the noisy rows again before the loss (off: spec [our reading]).
        temperature: τ of the InfoNCE (VLM2Vec: 0.02); ``None`` → the encoder's ``logit_scale``.
        symmetric: Two-way CLIP loss (``True``) or one-way VLM2Vec from the query (``False``).
        query: Query side, ``"image"`` or ``"text"``.
        svd_route: See :func:`workbench.methods.spectral.batch_svd`.

    Noise is drawn only while the module is in training mode (``method.eval()`` turns it off).
    Terms: ``infonce``. Logs: ``noise_rms`` (root-mean-square noise entry, both sides).
    """

    name = "fanoise"

    def __init__(
        self,
        alpha: float = 0.1,
        scaling: Scaling = "sublinear",
        side: NoiseSide = "both",
        renormalize: bool = False,
        temperature: float | None = 0.02,
        symmetric: bool = False,
        query: Side = "image",
        svd_route: SvdRoute = "auto",
    ) -> None:
        super().__init__(temperature, symmetric, query)
        require(alpha >= 0, self.name, "alpha", alpha, ">= 0")
        require(scaling in SCALINGS, self.name, "scaling", scaling, f"one of {SCALINGS}")
        require(side in NOISE_SIDES, self.name, "side", side, "'both', 'query' or 'target'")
        require(svd_route in SVD_ROUTES, self.name, "svd_route", svd_route, "auto/gram/svd")
        self.alpha, self.scaling, self.side = alpha, scaling, side
        self.renormalize, self.svd_route = renormalize, svd_route

    def perturb(self, features: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(X̃, rms noise)`` for one side's (B, n) features; ``X̃`` stays attached to ``X``."""
        noise = fanoise(features, self.alpha, self.scaling, svd_route=self.svd_route)
        out = features.to(noise.dtype) + noise
        if self.renormalize:
            out = F.normalize(out, dim=-1)
        return out, float(noise.square().mean().sqrt())

    def loss(
        self, query: torch.Tensor, target: torch.Tensor, out: BatchOutputs, state: StepState
    ) -> LossOutput:
        """InfoNCE on the noised query/target rows (noise only in training mode)."""
        rms: list[float] = []
        if self.training and self.alpha > 0:
            if self.side in ("both", "query"):
                query, r = self.perturb(query)
                rms.append(r)
            if self.side in ("both", "target"):
                target, r = self.perturb(target)
                rms.append(r)
        loss = self.contrastive(query.float(), target.float(), out)
        noise_rms = math.sqrt(sum(r * r for r in rms) / len(rms)) if rms else 0.0
        return LossOutput(loss, {"infonce": loss}, {"noise_rms": noise_rms})


METHODS.register("fanoise")(FANoise)
