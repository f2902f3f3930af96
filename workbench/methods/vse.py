"""``"vse"``: the VSE-style baseline on token features, CDDS's like-for-like reference.

Mean-pooled tokens → linear projection → L2 normalisation, trained with InfoNCE or VSE++'s
hinge with the hardest negative (margin 0.2) — the same pair loss as CDDS's ``L_s`` (Faghri et
al. 2018; LAPS's base). Optional pieces, each for one comparison of the CDDS study:

* ``encoder_layers=N``: N pre-norm transformer blocks over the projected tokens before pooling
  (CDDS's shared-encoder width), so a CDDS row can be compared at equal token capacity;
* ``sampling=True``: CDDS's distribution sampling plugged into the baseline (Table 4): the
  x-semantic components of the projected tokens (:func:`~workbench.methods.cdds.quantile_map`
  with Eq. 5 weights) add ``λ · ½[contrast(V, V^x) + contrast(T, T^x)]`` to the direct loss.

Without either, the projection is applied after pooling (a linear map commutes with the mean),
which is the cheapest exact form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench._validate import require
from workbench.methods.base import METHODS, LossOutput, StepState
from workbench.methods.cdds.network import TokenBlock
from workbench.methods.cdds.semantics import (
    column_stats,
    gaussian_kl_matrix,
    quantile_map,
    related_weights,
)
from workbench.methods.tokens import (
    LOSS_KINDS,
    TokenBatch,
    TokenMethod,
    contrastive_loss,
    masked_mean,
    project_tokens,
)

__all__ = ["VSE"]


@METHODS.register("vse")
class VSE(TokenMethod):
    """VSE-style image–text embedding on patch and word tokens.

    Args:
        image_dim: Width of the image tokens (1280: the default encoder's last block).
        text_dim: Width of the word tokens (384: MiniLM-L6).
        dim: Embedding width (CDDS's d) [secondary: 512].
        encoder_layers: Transformer blocks over the projected tokens before pooling (0: the
            plain VSE baseline).
        heads: Attention heads of those blocks.
        loss: ``"infonce"`` or ``"hinge"`` (VSE++ hardest negative).
        temperature: InfoNCE τ [our reading: 0.05, as CDDS].
        margin: Hinge margin [secondary: 0.2].
        sampling: Add CDDS's distribution-sampling loss (the Table 4 plug-in).
        sampling_weight: λ of that loss [our reading: 1].
        alpha_init, kl_temperature, sharpness: Its Eq. 5 threshold (as CDDS's).
    """

    name = "vse"

    def __init__(
        self,
        image_dim: int = 1280,
        text_dim: int = 384,
        dim: int = 512,
        encoder_layers: int = 0,
        heads: int = 8,
        loss: str = "infonce",
        temperature: float = 0.05,
        margin: float = 0.2,
        sampling: bool = False,
        sampling_weight: float = 1.0,
        alpha_init: float = 1.0,
        kl_temperature: float = 0.1,
        sharpness: float = 0.1,
    ) -> None:
        super().__init__()
        for arg, value in (("image_dim", image_dim), ("text_dim", text_dim), ("dim", dim)):
            require(isinstance(value, int) and value >= 1, "vse", arg, value, "an int ≥ 1")
        require(isinstance(encoder_layers, int) and encoder_layers >= 0, "vse",
                "encoder_layers", encoder_layers, "an int ≥ 0")  # fmt: skip
        require(isinstance(heads, int) and heads >= 1 and dim % heads == 0, "vse", "heads",
                heads, f"an int ≥ 1 dividing dim={dim}")  # fmt: skip
        require(loss in LOSS_KINDS, "vse", "loss", loss, f"one of {LOSS_KINDS}")
        for arg, value in (("temperature", temperature), ("kl_temperature", kl_temperature),
                           ("sharpness", sharpness)):  # fmt: skip
            require(value > 0, "vse", arg, value, "> 0")
        require(margin >= 0, "vse", "margin", margin, "≥ 0")
        require(sampling_weight >= 0, "vse", "sampling_weight", sampling_weight, "≥ 0")
        self.embed_dim = dim
        self.loss_kind, self.temperature, self.margin = loss, temperature, margin
        self.sampling, self.sampling_weight = sampling, sampling_weight
        self.kl_opts = {"temperature": kl_temperature, "sharpness": sharpness}
        self.project = nn.ModuleDict(
            {"image": nn.Linear(image_dim, dim), "text": nn.Linear(text_dim, dim)}
        )
        self.blocks = nn.ModuleDict(
            {
                side: nn.ModuleList(TokenBlock(dim, 2 * dim, heads) for _ in range(encoder_layers))
                for side in ("image", "text")
            }
        )
        if sampling:
            self.alpha = nn.Parameter(torch.full((2, dim), float(alpha_init)))

    @property
    def _token_level(self) -> bool:
        return self.sampling or len(self.blocks["image"]) > 0

    def tokens(self, side: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, C) tokens → (B, L, dim) projected (and encoded) tokens, zero at padding."""
        x = project_tokens(self.project[side], tokens, mask)  # valid tokens only
        for block in self.blocks[side]:
            x = block(x, mask)
        return torch.where(mask[..., None], x, 0.0)

    def embed_tokens(self, side: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, C) tokens → (B, dim) L2-normalised embeddings (pool, then project when the
        model has no token-level part)."""
        if self._token_level:
            return F.normalize(masked_mean(self.tokens(side, tokens, mask).float(), mask), dim=-1)
        pooled = masked_mean(tokens, mask)  # (B, C): pooling first is exact for a linear map
        return F.normalize(self.project[side](pooled).float(), dim=-1)

    def compute_tokens(self, batch: TokenBatch, state: StepState) -> LossOutput:
        pair = {"kind": self.loss_kind, "temperature": self.temperature, "margin": self.margin,
                "positives": batch.positives()}  # fmt: skip
        if not self.sampling:
            a = self.embed_tokens("image", batch.image_tokens, batch.image_mask)
            b = self.embed_tokens("text", batch.text_tokens, batch.text_mask)
            direct = contrastive_loss(a, b, **pair)
            return LossOutput(direct, {"L_direct": direct})
        v = self.tokens("image", batch.image_tokens, batch.image_mask)
        t = self.tokens("text", batch.text_tokens, batch.text_mask)
        vm, tm = batch.image_mask, batch.text_mask
        a, b = (F.normalize(masked_mean(x.float(), m), dim=-1) for x, m in ((v, vm), (t, tm)))
        direct = contrastive_loss(a, b, **pair)
        (mv, sv), (mt, st) = column_stats(v, vm), column_stats(t, tm)
        _, _, w_v = related_weights(
            gaussian_kl_matrix(mv, sv, mt, st), self.alpha[0], **self.kl_opts
        )
        _, _, w_t = related_weights(
            gaussian_kl_matrix(mt, st, mv, sv), self.alpha[1], **self.kl_opts
        )
        vx, tx = quantile_map(v, vm, t, tm, w_v), quantile_map(t, tm, v, vm, w_t)
        ds = 0.5 * (
            contrastive_loss(a, F.normalize(masked_mean(vx, vm), dim=-1), **pair)
            + contrastive_loss(b, F.normalize(masked_mean(tx, tm), dim=-1), **pair)
        )
        loss = direct + self.sampling_weight * ds
        return LossOutput(loss, {"L_direct": direct, "L_sampling": ds})
