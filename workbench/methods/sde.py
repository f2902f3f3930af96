"""SDE — Spectral Disentanglement and Enhancement (WWW 2026, arXiv 2602.09066).

Spec: ``methods-spectral.md`` §1. The paper's method section could not be recovered, so every
formula below is **[our reading]** (§1.2) and every constant is a constructor argument:

1. *Disentanglement* — per batch, the SVD ``F = U diag(s) Vᵀ`` (no grad) and the IQR +
   Marchenko–Pastur partition of ``s`` into strong / weak / noise directions
   (:func:`workbench.probes.partitions.iqr_mp_partition`).
2. *Curriculum enhancement* — gains ``1 + α(t)`` (strong), ``1 + β·α(t)`` (weak),
   ``max(1 − α(t), g_min)`` (noise); ``F̃ = F V diag(g) Vᵀ + F (I − V Vᵀ)`` with ``V`` constant,
   so gradients flow through ``F`` and the SVD is never differentiated;
   ``α(t) = α₀·½(1 + cos πt/T)``.
3. *Dual-domain loss* — ``L = L_feat(F̃_q, F̃_t) + λ(t)·L_spec`` with
   ``L_spec`` = InfoNCE on the strong+weak coordinates of a shared basis (SVD of ``[F̃_q; F̃_t]``)
   weighted by ``sqrt(p_k)``, plus ``KL(p_q ‖ p_t)`` of the two sides' energy spectra in that
   basis; ``λ(t) = λ_max·min(1, t / (warmup·T))``.

Each ablation of §1.3 is one switch: ``disentangle=False`` (uniform gain ``1 + α``),
``weak_band=False`` (two-way split at the MP edge), ``curriculum=False`` (constant ``α₀``),
``lambda_max=0`` (no ``L_spec``), ``kl=False`` (``L_spec`` without its KL term).

>>> from workbench import methods
>>> sde = methods.get("sde")                        # full method
>>> no_kl = methods.get("sde", kl=False)            # one ablation row
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from workbench._validate import require
from workbench.methods.base import METHODS, BatchOutputs, LossOutput, StepState
from workbench.methods.feature_loss import FeatureLoss, Side, info_nce
from workbench.methods.spectral import SVD_ROUTES, SvdRoute, batch_svd

STRONG, WEAK, NOISE = 0, 1, 2
BANDS = ("strong", "weak", "noise")

#: Ablation rows of §1.3 as constructor overrides (``{}`` = full method).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_disentanglement": {"disentangle": False},
    "no_weak_band": {"weak_band": False},
    "constant_alpha": {"curriculum": False},
    "lambda_0": {"lambda_max": 0.0},
    "no_kl": {"kl": False},
}


# -- the pieces of §1.2 -------------------------------------------------------------------------
@torch.no_grad()
def partition_labels(
    features: torch.Tensor, singular_values: torch.Tensor, tukey_k: float = 1.5
) -> torch.Tensor:
    """Strong / weak / noise label (0 / 1 / 2) of each singular direction of a batch.

    Spec §1.2 step 1 [our reading]: noise scale ``ŝ = IQR(F − colmean)/1.349``, noise edge
    ``ŝ(√m + √n)`` (MP upper edge), strong edge ``Q3(s) + tukey_k·IQR(s)`` (Tukey fence), at
    least one strong direction — all computed by :mod:`workbench.probes.partitions`.

    Args:
        features: (m, n) batch matrix (uncentred; centred here for the noise scale only).
        singular_values: (r,) its singular values, descending.
        tukey_k: Tukey fence multiplier for the strong edge.

    Returns:
        (r,) int64 labels on ``singular_values.device``.
    """
    from workbench.probes.partitions import iqr_mp_partition, iqr_noise_scale

    x = features.detach().to(torch.float64).cpu().numpy()
    m, n = x.shape
    part = iqr_mp_partition(
        singular_values.detach().cpu().numpy(), iqr_noise_scale(x), m, n, tukey_k=tukey_k
    )
    labels = part.labels
    return torch.from_numpy(labels).to(singular_values.device)


def curriculum_gains(
    labels: torch.Tensor, alpha: float, beta: float = 0.5, g_min: float = 0.1
) -> torch.Tensor:
    """Per-direction gains of spec §1.2 step 2 [our reading].

    Args:
        labels: (r,) band labels (0 strong, 1 weak, 2 noise).
        alpha: Curriculum factor α(t) ≥ 0.
        beta: Weak-band fraction of the strong gain (``1 + β·α``).
        g_min: Floor of the noise gain ``max(1 − α, g_min)``.

    Returns:
        (r,) float64 gains.
    """
    table = torch.tensor(
        [1.0 + alpha, 1.0 + beta * alpha, max(1.0 - alpha, g_min)], dtype=torch.float64
    )
    return table.to(labels.device)[labels]


def enhance(features: torch.Tensor, basis: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """``F̃ = F V diag(g) Vᵀ + F (I − V Vᵀ)`` = ``F + (F V) diag(g − 1) Vᵀ`` (spec §1.2 step 2).

    ``basis`` and ``gains`` are constants (no grad), so the gradient is ``G + G V diag(g−1) Vᵀ``
    and never differentiates the SVD.

    Args:
        features: (m, n) features; bf16/fp16 are computed in float32.
        basis: (n, r) right singular vectors ``V`` (zero columns = directions left untouched).
        gains: (r,) gains ``g``.

    Returns:
        (m, n) enhanced features, float32 (or float64 when ``features`` is float64).
    """
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    x = features.to(dtype)
    v = basis.to(dtype)
    return x + ((x @ v) * (gains.to(dtype) - 1.0)) @ v.T


def cosine_decay(progress: float, start: float) -> float:
    """``α(t) = α₀·½(1 + cos(π t/T))`` for ``progress = t/T`` in [0, 1] (spec §1.2, Fig. 4a)."""
    return start * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def linear_ramp(progress: float, peak: float, warmup: float) -> float:
    """``λ(t) = λ_max·min(1, t/(warmup·T))`` (spec §1.2 step 3, Fig. 4b); ``warmup=0`` → ``λ_max``."""
    if warmup <= 0:
        return peak
    return peak * min(1.0, max(progress, 0.0) / warmup)


@dataclass
class Enhancement:
    """What :meth:`SDE.enhance` did to one side's (m, n) batch (all tensors detached).

    Attributes:
        features: (m, n) enhanced features ``F̃`` (attached to the graph).
        singular_values: (r,) float64 singular values of the input, descending.
        labels: (r,) band labels (0 strong, 1 weak, 2 noise).
        gains: (r,) float64 gains applied.
    """

    features: torch.Tensor
    singular_values: torch.Tensor
    labels: torch.Tensor
    gains: torch.Tensor

    def proportions(self) -> dict[str, float]:
        """Fraction of the r directions in each band (Fig. 3a)."""
        r = max(len(self.labels), 1)
        return {b: float((self.labels == i).sum()) / r for i, b in enumerate(BANDS)}


# -- the method -----------------------------------------------------------------------------------
class SDE(FeatureLoss):
    """Spectral Disentanglement and Enhancement [our reading of spec §1.2 throughout].

    Features are the loop's L2-normalised (B, D) post-head embeddings; the image side is the
    query ``F_q`` and the text side the target ``F_t`` (``query="text"`` swaps them).

    Args:
        alpha0: α₀, the starting curriculum factor (0.5; gains stay within [g_min, 1 + α₀]).
        beta: Weak-band gain fraction, gain ``1 + β·α`` (0.5: halfway between strong and none).
        g_min: Floor of the noise-band gain ``max(1 − α, g_min)`` (0.1: never zero a direction).
        tukey_k: Tukey fence multiplier of the strong edge ``Q3 + k·IQR`` (1.5, Tukey's).
        lambda_max: Peak weight of ``L_spec`` (0.1); 0 disables ``L_spec`` (ablation).
        lambda_warmup: Fraction of the run over which λ ramps from 0 to ``lambda_max`` (0.1).
        temperature: τ of ``L_feat`` (VLM2Vec: 0.02); ``None`` uses the encoder's learnable
            ``logit_scale`` (CLIP).
        symmetric: ``L_feat`` (and the spectral InfoNCE) two-way as CLIP (``True``) or one-way
            from the query as VLM2Vec (``False``, default).
        spec_temperature: τ of the spectral-space InfoNCE on row-normalised coordinates (0.02).
        kl_weight: Weight of ``KL(p_q ‖ p_t)`` inside ``L_spec`` (1.0).
        disentangle: ``False`` → no partition, uniform gain ``1 + α`` (ablation).
        weak_band: ``False`` → two-way split at the MP noise edge, weak merged into strong
            (ablation).
        curriculum: ``False`` → constant α = α₀ (ablation).
        kl: ``False`` → ``L_spec`` without the KL term (ablation).
        renormalize: Re-normalise enhanced rows to unit length before ``L_feat`` (off).
        query: Query side, ``"image"`` or ``"text"``.
        svd_route: See :func:`workbench.methods.spectral.batch_svd`.

    Loss terms: ``feat``, ``spec_nce``, ``spec_kl`` (the latter two only when λ(t) > 0).
    Logs: ``alpha``, ``lambda``, ``{image,text}/{strong,weak,noise}`` band proportions.
    """

    name = "sde"

    def __init__(
        self,
        alpha0: float = 0.5,
        beta: float = 0.5,
        g_min: float = 0.1,
        tukey_k: float = 1.5,
        lambda_max: float = 0.1,
        lambda_warmup: float = 0.1,
        temperature: float | None = 0.02,
        symmetric: bool = False,
        spec_temperature: float = 0.02,
        kl_weight: float = 1.0,
        disentangle: bool = True,
        weak_band: bool = True,
        curriculum: bool = True,
        kl: bool = True,
        renormalize: bool = False,
        query: Side = "image",
        svd_route: SvdRoute = "auto",
    ) -> None:
        super().__init__(temperature, symmetric, query)
        require(alpha0 >= 0, self.name, "alpha0", alpha0, ">= 0")
        require(0 <= beta <= 1, self.name, "beta", beta, "in [0, 1]")
        require(0 < g_min <= 1, self.name, "g_min", g_min, "in (0, 1]")
        require(tukey_k >= 0, self.name, "tukey_k", tukey_k, ">= 0")
        require(lambda_max >= 0, self.name, "lambda_max", lambda_max, ">= 0 (0 disables L_spec)")
        require(
            0 <= lambda_warmup <= 1,
            self.name,
            "lambda_warmup",
            lambda_warmup,
            "a fraction in [0, 1]",
        )
        require(spec_temperature > 0, self.name, "spec_temperature", spec_temperature, "> 0")
        require(kl_weight >= 0, self.name, "kl_weight", kl_weight, ">= 0")
        require(svd_route in SVD_ROUTES, self.name, "svd_route", svd_route, "auto/gram/svd")
        self.alpha0, self.beta, self.g_min, self.tukey_k = alpha0, beta, g_min, tukey_k
        self.lambda_max, self.lambda_warmup = lambda_max, lambda_warmup
        self.spec_temperature, self.kl_weight = spec_temperature, kl_weight
        self.disentangle, self.weak_band = disentangle, weak_band
        self.curriculum, self.kl = curriculum, kl
        self.renormalize, self.svd_route = renormalize, svd_route

    # -- schedules (Fig. 4) -------------------------------------------------------------------
    def alpha(self, progress: float) -> float:
        """α(t) at ``progress = t/T``: cosine decay from α₀ to 0, or α₀ when not curriculum."""
        return cosine_decay(progress, self.alpha0) if self.curriculum else self.alpha0

    def lam(self, progress: float) -> float:
        """λ(t) at ``progress = t/T``: linear ramp to ``lambda_max`` over ``lambda_warmup``."""
        return linear_ramp(progress, self.lambda_max, self.lambda_warmup)

    def schedule_values(self, state: StepState) -> dict[str, float]:
        return {"alpha": self.alpha(state.progress), "lambda": self.lam(state.progress)}

    # -- pieces ---------------------------------------------------------------------------------
    def labels(self, features: torch.Tensor, singular_values: torch.Tensor) -> torch.Tensor:
        """(r,) band labels of a (m, n) batch under this method's switches."""
        r = len(singular_values)
        if not self.disentangle:
            return torch.full((r,), STRONG, dtype=torch.long, device=singular_values.device)
        labels = partition_labels(features, singular_values, self.tukey_k)
        if not self.weak_band:
            labels = torch.where(labels == WEAK, STRONG, labels)
        return labels

    def enhance(self, features: torch.Tensor, alpha: float) -> Enhancement:
        """Disentangle and enhance one side's (m, n) batch at curriculum factor ``alpha``."""
        s, v = batch_svd(features, self.svd_route)
        labels = self.labels(features, s)
        gains = curriculum_gains(labels, alpha, self.beta, self.g_min)
        out = enhance(features, v, gains)
        if self.renormalize:
            out = F.normalize(out, dim=-1)
        return Enhancement(out, s, labels, gains)

    def spectral_loss(
        self, query: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(spectral InfoNCE, KL(p_q ‖ p_t))`` of (m, n) query/target features.

        Shared basis ``V_j`` from the SVD of ``[F_q; F_t]`` (no grad) and its partition; the
        InfoNCE runs on the strong+weak coordinates ``F V_k · sqrt(p_k)``, row-normalised,
        ``p_k = s_k²/Σs²``; the KL compares the two sides' energy ``‖F v_k‖²`` normalised over
        every spanned direction (differentiable in ``F``, no SVD gradient).
        """
        joint = torch.cat([query, target]).float()
        s, v = batch_svd(joint, self.svd_route)
        keep = (self.labels(joint, s) != NOISE) & (v.abs().sum(0) > 0)
        if not keep.any():  # nothing spanned: all-zero batch
            keep = v.abs().sum(0) > 0
        p = s.square() / s.square().sum().clamp_min(torch.finfo(torch.float64).tiny)
        vk = (v[:, keep] * p[keep].sqrt()).float()
        zq, zt = F.normalize(query.float() @ vk, dim=-1), F.normalize(target.float() @ vk, dim=-1)
        nce = info_nce(zq, zt, 1.0 / self.spec_temperature, symmetric=self.symmetric)
        vs = v[:, v.abs().sum(0) > 0].float()
        eq, et = (query.float() @ vs).square().sum(0), (target.float() @ vs).square().sum(0)
        pq = eq / eq.sum().clamp_min(1e-30)
        pt = et / et.sum().clamp_min(1e-30)
        eps = 1e-8
        kl = (pq * ((pq + eps).log() - (pt + eps).log())).sum()
        return nce, kl

    # -- FeatureLoss piece -------------------------------------------------------------------------
    def loss(
        self, query: torch.Tensor, target: torch.Tensor, out: BatchOutputs, state: StepState
    ) -> LossOutput:
        """``L_feat`` on the enhanced query/target rows, plus ``λ(t)·L_spec`` when λ(t) > 0."""
        alpha, lam = self.alpha(state.progress), self.lam(state.progress)
        eq, et = self.enhance(query, alpha), self.enhance(target, alpha)
        feat = self.contrastive(eq.features, et.features, out)
        terms = {"feat": feat}
        loss = feat
        if lam > 0:
            nce, kl = self.spectral_loss(eq.features, et.features)
            terms["spec_nce"], terms["spec_kl"] = nce, kl
            spec = nce + self.kl_weight * kl if self.kl else nce
            loss = feat + lam * spec
        logs = {"alpha": alpha, "lambda": lam}
        for name, e in ((self.query, eq), (self.target, et)):
            logs.update({f"{name}/{b}": v for b, v in e.proportions().items()})
        return LossOutput(loss, terms, logs)


METHODS.register("sde")(SDE)
