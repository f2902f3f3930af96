"""The ``"cdds"`` method: CDDS's modules and switches wired to :func:`~.loss.cdds_loss_terms`.

Per step (spec §3): project each side's tokens to ``dim`` (``V``, ``T``: linear + parameter-free
LayerNorm, so the reconstruction targets cannot shrink to zero) → decouple each side into
semantic and modality components (:class:`~.network.DecouplingNetwork`) → identify related
semantic dimensions from the two sides' column distributions (Eq. 5, :mod:`.semantics`) →
the four losses and Eq. 15 (:mod:`.loss`). Retrieval embeds each side as its pooled semantic
component, L2-normalised; their cosine is the score [our reading].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench._validate import require
from workbench.methods.base import LossOutput, StepState
from workbench.methods.cdds.loss import Components, cdds_loss_terms
from workbench.methods.cdds.network import DecouplingNetwork
from workbench.methods.cdds.semantics import column_stats, gaussian_kl_matrix, related_weights
from workbench.methods.tokens import (
    LOSS_KINDS,
    TokenBatch,
    TokenMethod,
    masked_mean,
    project_tokens,
)

__all__ = ["ABLATIONS", "CDDS", "IDENTIFICATION", "SCORES"]

#: Table 3's rows: each switch removes one component of the method (spec §3.6).
ABLATIONS: dict[str, dict[str, bool]] = {
    "full": {},
    "no_decoupling": {"decoupling": False},
    "no_modality": {"modality_constraint": False},
    "no_completeness": {"completeness": False},
    "no_perturbation": {"perturbation": False},
    "no_sampling": {"sampling": False},
}

#: Table 5's ways of finding related semantics: Eq. 5 on every batch, Eq. 5 once on statistics
#: of the whole training set (refreshed by the trainer), or random weights.
IDENTIFICATION = ("batch", "precomputed", "random")

#: Retrieval scores (:meth:`CDDS.embed_tokens`).
SCORES = ("auto", "x-semantic", "semantic")


class CDDS(TokenMethod):
    """Constrained decoupling and distribution sampling on patch and word tokens (AAAI 2026).

    Args:
        image_dim: Width of the image tokens (1280: the default encoder's last EfficientNet
            block; 768 for ViT-B).
        text_dim: Width of the word tokens (384: MiniLM-L6; 512 for CLIP's text tower).
        dim: Width d of every component [secondary: 512].
        hidden: MLP width of the network's blocks (``None``: ``2 · dim`` [our reading]).
        heads: Attention heads of the shared encoder [our reading: 64-wide heads at d = 512].
        perturbations: z, Gaussian perturbations averaged per forward [our reading: 4].
        noise_std: σ of each perturbation [our reading: 0.1].
        a_s, a_m, a_f: Weights of Eq. 15 [our reading: 1, 1, 0.5; not recovered].
        loss: Pair loss of ``L_s``: ``"infonce"`` or ``"hinge"`` (VSE++ hardest negative, LAPS).
        temperature: InfoNCE τ [our reading: 0.05].
        margin: Hinge margin [secondary: 0.2, LAPS].
        alpha_init: Initial α_i of the adaptive threshold [our reading: 1, keep P(j|i) more
            than one std above its row mean].
        kl_temperature: Temperature T of ``P(j|i) = softmax(−S_ij / T)`` [our reading: 0.1,
            from {1, 0.1, 0.01} on a validation stream (synthetic-world's ``test`` split, not
            the notebook's held-out images): rSum 171 / 260 / 47 — T = 1 keeps ~30 loosely
            related columns per dimension, T = 0.01 a single one].
        sharpness: Sigmoid width of the soft mask in row standard deviations [our reading: 0.1].
        identification: ``"batch"`` (Eq. 5 per batch), ``"precomputed"`` (statistics of the
            whole training set, see :meth:`set_statistics`) or ``"random"`` (Table 5).
        detach_statistics: Stop gradients through the column statistics (``False``: the
            closed-form KL is differentiated, as the spec reads it).
        decoupling: ``False`` = "w/o Dec.": no network, ``V^s = V``, ``V^m = 0``.
        perturbation: ``False`` = "w/o Gau.": one unperturbed decoder pass.
        sampling: ``False`` = "w/o Sam.": ``L_s`` aligns ``V^s`` with ``T^s`` directly.
        modality_constraint: ``False`` = "w/o Mod.": no ``L_m``.
        completeness: ``False`` = "w/o Int.": no ``L_f``, ``L_x``.
        score: Retrieval score: ``"x-semantic"`` (what ``L_s`` trains with sampling: pooled
            semantic components against the other side's mapped through the related-semantics
            weights), ``"semantic"`` (the spec's reading: cosine of the pooled semantic
            components — what ``L_s`` trains without sampling; with sampling it matches the
            training target only when w ≈ I) or ``"auto"`` (the one ``L_s`` trains: x-semantic
            with sampling, semantic without). See :meth:`embed_tokens`.
    """

    name = "cdds"

    def __init__(
        self,
        image_dim: int = 1280,
        text_dim: int = 384,
        dim: int = 512,
        hidden: int | None = None,
        heads: int = 8,
        perturbations: int = 4,
        noise_std: float = 0.1,
        a_s: float = 1.0,
        a_m: float = 1.0,
        a_f: float = 0.5,
        loss: str = "infonce",
        temperature: float = 0.05,
        margin: float = 0.2,
        alpha_init: float = 1.0,
        kl_temperature: float = 0.1,
        sharpness: float = 0.1,
        identification: str = "batch",
        detach_statistics: bool = False,
        decoupling: bool = True,
        perturbation: bool = True,
        sampling: bool = True,
        modality_constraint: bool = True,
        completeness: bool = True,
        score: str = "auto",
    ) -> None:
        super().__init__()
        for arg, value in (("image_dim", image_dim), ("text_dim", text_dim), ("dim", dim)):
            require(isinstance(value, int) and value >= 1, "cdds", arg, value, "an int ≥ 1")
        hidden = 2 * dim if hidden is None else hidden
        require(isinstance(hidden, int) and hidden >= 1, "cdds", "hidden", hidden, "an int ≥ 1")
        require(isinstance(heads, int) and heads >= 1 and dim % heads == 0, "cdds", "heads",
                heads, f"an int ≥ 1 dividing dim={dim}")  # fmt: skip
        require(isinstance(perturbations, int) and perturbations >= 1, "cdds", "perturbations",
                perturbations, "an int ≥ 1")  # fmt: skip
        require(noise_std >= 0, "cdds", "noise_std", noise_std, "≥ 0")
        for arg, value in (("a_s", a_s), ("a_m", a_m)):
            require(value >= 0, "cdds", arg, value, "≥ 0")
        require(0 <= a_f <= 1, "cdds", "a_f", a_f, "in [0, 1] (Eq. 15 weighs L_x by 1 − a_f)")
        require(loss in LOSS_KINDS, "cdds", "loss", loss, f"one of {LOSS_KINDS}")
        for arg, value in (("temperature", temperature), ("kl_temperature", kl_temperature),
                           ("sharpness", sharpness)):  # fmt: skip
            require(value > 0, "cdds", arg, value, "> 0")
        require(margin >= 0, "cdds", "margin", margin, "≥ 0")
        require(identification in IDENTIFICATION, "cdds", "identification", identification,
                f"one of {IDENTIFICATION}")  # fmt: skip
        require(score in SCORES, "cdds", "score", score, f"one of {SCORES}")
        self.embed_dim, self.score = dim, score
        self.loss_kind, self.temperature, self.margin = loss, temperature, margin
        self.a = (a_s, a_m, a_f)
        self.kl_temperature, self.sharpness = kl_temperature, sharpness
        self.identification, self.detach_statistics = identification, detach_statistics
        self.decoupling, self.sampling = decoupling, sampling
        self.modality_constraint, self.completeness = modality_constraint, completeness
        self.project = nn.ModuleDict(
            {"image": nn.Linear(image_dim, dim), "text": nn.Linear(text_dim, dim)}
        )
        if decoupling:
            z, sigma = (perturbations, noise_std) if perturbation else (1, 0.0)
            self.networks = nn.ModuleDict(
                {
                    side: DecouplingNetwork(dim, hidden, heads, z, sigma)
                    for side in ("image", "text")
                }
            )
        #: α_i of the image columns (row 0) and α_j of the text columns (row 1).
        self.alpha = nn.Parameter(torch.full((2, dim), float(alpha_init)))
        #: (w_s, w_m, w_x) of Eqs. 13–14, image (row 0) and text (row 1).
        self.recon = nn.Parameter(torch.ones(2, 3))
        #: Column statistics [side, (mean, std), d]: precomputed ones, or an EMA of the batches'.
        self.register_buffer(
            "statistics", torch.stack([torch.zeros(2, dim), torch.ones(2, dim)], 1)
        )

    # -- components ---------------------------------------------------------------------------
    def components(self, side: str, tokens: torch.Tensor, mask: torch.Tensor) -> Components:
        """One side's ``V`` and its ``(V^s, V^m)``: (B, L, C) tokens, (B, L) mask → d-wide.

        Only valid tokens are projected (:func:`~workbench.methods.tokens.project_tokens`), so
        padding values — even NaN — reach neither a valid token (attention gives zeroed
        padding weight exactly 0), nor a column distribution, nor a gradient.
        """
        v = project_tokens(self.project[side], tokens, mask)  # (B, L, d), 0 at padding
        v = torch.where(mask[..., None], F.layer_norm(v, (self.embed_dim,)), 0.0)
        if not self.decoupling:
            return Components(v, mask, v, torch.zeros_like(v))
        semantic, modality = self.networks[side](v, mask)
        return Components(v, mask, semantic, modality)

    def embed_tokens(self, side: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, C) tokens → L2-normalised retrieval embeddings (see :attr:`score`).

        ``score="semantic"``: (B, d) pooled semantic components; image·text = cos(V̄^s, T̄^s).
        ``score="x-semantic"``: (B, 2d), the score ``L_s`` trains, in encoder form. Pooling
        removes the ranks from the pooled x-semantic component, ``mean_p V^x ≈ w^v T̄^s``
        (exact when the caption has as many tokens as the image), so
        ``score = ½[cos(V̄^s, w^v T̄^s) + cos(w^t V̄^s, T̄^s)]`` is the dot product of
        ``[n(V̄^s), n(w^t V̄^s)]/√2`` (image) and ``[n(w^v T̄^s), n(T̄^s)]/√2`` (text), with
        ``w`` from :meth:`eval_weights`.
        """
        c = self.components(side, tokens, mask)
        pooled = masked_mean(c.semantic.float(), mask)  # (B, d)
        if self.score == "semantic" or (self.score == "auto" and not self.sampling):
            return F.normalize(pooled, dim=-1)
        w_v, w_t = self.eval_weights()
        own, other = (pooled, pooled @ w_t.T) if side == "image" else (pooled @ w_v.T, pooled)
        parts = (F.normalize(own, dim=-1), F.normalize(other, dim=-1))
        return torch.cat(parts, dim=-1) / 2**0.5

    def eval_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The related-semantics weights ``(w^v, w^t)`` at inference: Eq. 5 on the stored
        statistics (the training batches' running average, or the precomputed ones) with the
        learned α; for ``identification="random"`` one fixed random draw (seed 0)."""
        with torch.no_grad():
            if self.identification == "random":
                g = torch.Generator().manual_seed(0)
                kl_v, kl_t = torch.randn(2, self.embed_dim, self.embed_dim, generator=g)
                kl_v, kl_t = kl_v.to(self.alpha.device), kl_t.to(self.alpha.device)
            else:
                (mv, sv), (mt, st) = self.statistics[0], self.statistics[1]
                kl_v, kl_t = gaussian_kl_matrix(mv, sv, mt, st), gaussian_kl_matrix(mt, st, mv, sv)
            opts = {"temperature": self.kl_temperature, "sharpness": self.sharpness}
            return (related_weights(kl_v, self.alpha[0], **opts)[2],
                    related_weights(kl_t, self.alpha[1], **opts)[2])  # fmt: skip

    # -- related semantics ----------------------------------------------------------------------
    def set_statistics(self, image: tuple[torch.Tensor, torch.Tensor], text: tuple) -> None:
        """Store column ``(mean, std)`` (each (d,)) of both sides' semantic components, e.g.
        over the whole training set (``identification="precomputed"``)."""
        with torch.no_grad():
            for k, (mean, std) in enumerate((image, text)):
                self.statistics[k, 0].copy_(mean.detach())
                self.statistics[k, 1].copy_(std.detach().clamp_min(1e-6))

    def related(
        self, image: Components, text: Components
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Eq. 5 both ways: ``(w^v (d, d), w^t (d, d), logs)`` by :attr:`identification`."""
        d = self.embed_dim
        if self.identification == "random":
            kl_v = torch.randn(d, d, device=self.alpha.device)
            kl_t = torch.randn(d, d, device=self.alpha.device)
        else:
            if self.identification == "batch":
                (mv, sv), (mt, st) = (column_stats(c.semantic, c.mask) for c in (image, text))
                if self.detach_statistics:
                    mv, sv, mt, st = (t.detach() for t in (mv, sv, mt, st))
                if self.training:  # running statistics for inspection and precomputed starts
                    with torch.no_grad():
                        new = torch.stack([torch.stack([mv, sv]), torch.stack([mt, st])])
                        self.statistics.lerp_(new, 0.1)
            else:
                (mv, sv), (mt, st) = self.statistics[0], self.statistics[1]
            kl_v = gaussian_kl_matrix(mv, sv, mt, st)  # (d, d): KL(C_i^v ‖ C_j^t)
            kl_t = gaussian_kl_matrix(mt, st, mv, sv)  # (d, d): KL(C_j^t ‖ C_i^v)
        opts = {"temperature": self.kl_temperature, "sharpness": self.sharpness}
        _, mask_v, w_v = related_weights(kl_v, self.alpha[0], **opts)
        _, mask_t, w_t = related_weights(kl_t, self.alpha[1], **opts)
        with torch.no_grad():
            logs = {
                "mask_density": float(0.5 * (mask_v.mean() + mask_t.mean())),
                "related_per_dim": float(0.5 * ((1 / (w_v**2).sum(1)).mean()
                                                + (1 / (w_t**2).sum(1)).mean())),
                "diagonal_weight": float(0.5 * (w_v.diagonal().mean() + w_t.diagonal().mean())),
                "alpha_mean": float(self.alpha.mean()),
            }  # fmt: skip
        return w_v, w_t, logs

    # -- the step -----------------------------------------------------------------------------
    def compute_tokens(self, batch: TokenBatch, state: StepState) -> LossOutput:
        image = self.components("image", batch.image_tokens, batch.image_mask)
        text = self.components("text", batch.text_tokens, batch.text_mask)
        w_v, w_t, logs = self.related(image, text)
        a_s, a_m, a_f = self.a
        loss, terms, weights = cdds_loss_terms(
            image, text, w_v, w_t, self.recon, a_s=a_s, a_m=a_m, a_f=a_f,
            sampling=self.sampling, modality_constraint=self.modality_constraint,
            completeness=self.completeness, positives=batch.positives(), loss=self.loss_kind,
            temperature=self.temperature, margin=self.margin,
        )  # fmt: skip
        logs.update({f"weight/{k}": v for k, v in weights.items()})
        return LossOutput(loss, terms, logs)
