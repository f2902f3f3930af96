"""InfoNCE: CLIP's symmetric contrastive loss and VLM2Vec's one-directional in-batch form.

Spec: ``methods-spectral.md`` §0 (VLM2Vec: ``L = CE(Q T^T / τ, diag)``, τ = 0.02, in-batch
negatives only) and CLIP / open_clip ``ClipLoss`` (symmetric, learnable temperature). With the
default arguments the loss equals ``open_clip.loss.ClipLoss()(image, text, logit_scale)`` on the
same inputs (tested), and the same ops are used so that the match is exact in float32.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F

from workbench.methods.base import METHODS, BatchOutputs, LossOutput, Method, StepState

Side = Literal["image", "text"]


def contrastive_logits(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits_per_image, logits_per_text)``, each (B, B): ``scale · image @ text.T`` and
    ``scale · text @ image.T`` for L2-normalised (B, D) features (open_clip ``get_logits``)."""
    return scale * image @ text.T, scale * text @ image.T


def info_nce(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor | float,
    *,
    symmetric: bool = True,
    query: Side = "image",
) -> torch.Tensor:
    """In-batch InfoNCE on paired rows; row i of ``image`` and ``text`` are positives.

    Args:
        image: (B, D) image-side features, normally L2-normalised.
        text: (B, D) text-side features, normally L2-normalised.
        scale: Logit multiplier ``1/τ`` (a scalar tensor keeps it trainable).
        symmetric: ``True`` → CLIP: mean of image→text and text→image cross-entropies.
            ``False`` → VLM2Vec: only ``query`` → other side (§0, ``CE(Q T^T/τ, diag)``).
        query: Query side for the one-directional form.

    Returns:
        Scalar loss in float32 (half/bf16 logits are up-cast before the softmax).
    """
    logits_per_image, logits_per_text = contrastive_logits(image, text, scale)
    if logits_per_image.dtype in (torch.float16, torch.bfloat16):
        logits_per_image, logits_per_text = logits_per_image.float(), logits_per_text.float()
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    if symmetric:
        return (
            F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
        ) / 2
    return F.cross_entropy(logits_per_image if query == "image" else logits_per_text, labels)


class InfoNCE(Method):
    """Contrastive InfoNCE loss (CLIP symmetric, or VLM2Vec one-directional).

    Args:
        temperature: Fixed τ (VLM2Vec: 0.02); ``None`` uses the encoder's learnable
            ``logit_scale`` (``BatchOutputs.logit_scale`` = exp of it), as CLIP/open_clip.
        symmetric: ``True`` = CLIP's two-way loss; ``False`` = one-directional from ``query``.
        query: ``"image"`` or ``"text"``, the query side of the one-directional form.

    Terms logged: ``infonce``; logs: ``temperature`` (the τ in use).
    """

    name = "infonce"

    def __init__(
        self, temperature: float | None = None, symmetric: bool = True, query: Side = "image"
    ) -> None:
        super().__init__()
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0 or None (learnable), got {temperature!r}")
        if query not in ("image", "text"):
            raise ValueError(f"query must be 'image' or 'text', got {query!r}")
        self.temperature = temperature
        self.symmetric = symmetric
        self.query = query

    def scale(self, out: BatchOutputs) -> torch.Tensor | float:
        """The logit multiplier: ``1/temperature`` when fixed, else ``out.logit_scale``."""
        return out.logit_scale if self.temperature is None else 1.0 / self.temperature

    def loss(self, image: torch.Tensor, text: torch.Tensor, out: BatchOutputs) -> torch.Tensor:
        """This method's InfoNCE on (B, D) ``image``/``text`` (other methods reuse it on
        enhanced or noised features)."""
        return info_nce(image, text, self.scale(out), symmetric=self.symmetric, query=self.query)

    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        loss = self.loss(out.image_features, out.text_features, out)
        scale = self.scale(out)
        return LossOutput(
            loss,
            {"infonce": loss},
            {"temperature": float(1.0 / torch.as_tensor(scale).detach().float())},
        )


METHODS.register("infonce", aliases=("clip",))(InfoNCE)
METHODS.register("infonce/vlm2vec", aliases=("vlm2vec",))(
    functools.partial(InfoNCE, temperature=0.02, symmetric=False, query="image")
)
