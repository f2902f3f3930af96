"""InfoNCE: CLIP's symmetric contrastive loss and VLM2Vec's one-directional in-batch form.

Spec: ``methods-spectral.md`` §0 (VLM2Vec: ``L = CE(Q T^T / τ, diag)``, τ = 0.02, in-batch
negatives only) and CLIP / open_clip ``ClipLoss`` (symmetric, learnable temperature). With the
default arguments the loss equals ``open_clip.loss.ClipLoss()(image, text, logit_scale)`` on the
same inputs (tested), and the same ops are used so that the match is exact in float32. The
arithmetic is :func:`workbench.methods.feature_loss.info_nce`; this module is the method.
"""

from __future__ import annotations

import functools

import torch

from workbench.methods.base import METHODS, BatchOutputs, LossOutput, StepState
from workbench.methods.feature_loss import FeatureLoss, Side, same_caption_positives


class InfoNCE(FeatureLoss):
    """Contrastive InfoNCE loss (CLIP symmetric, or VLM2Vec one-directional).

    Args:
        temperature: Fixed τ (VLM2Vec: 0.02); ``None`` uses the encoder's learnable
            ``logit_scale`` (``BatchOutputs.logit_scale`` = exp of it), as CLIP/open_clip.
        symmetric: ``True`` = CLIP's two-way loss; ``False`` = one-directional from ``query``.
        query: ``"image"`` or ``"text"``, the query side of the one-directional form.
        caption_positives: Rows whose captions are the same string are positives of each other
            (soft targets, :func:`~workbench.methods.feature_loss.same_caption_positives`) instead
            of negatives — for data with repeated short captions (templated class captions); the
            embedded default's pretraining recipe uses it. ``False`` = CLIP exactly.

    Terms logged: ``infonce``; logs: ``temperature`` (the τ in use), and with
    ``caption_positives`` the mean number of extra positives per row (``dup_positives``).
    """

    name = "infonce"

    def __init__(
        self,
        temperature: float | None = None,
        symmetric: bool = True,
        query: Side = "image",
        caption_positives: bool = False,
    ) -> None:
        super().__init__(temperature, symmetric, query)
        self.caption_positives = bool(caption_positives)

    def loss(
        self, query: torch.Tensor, target: torch.Tensor, out: BatchOutputs, state: StepState
    ) -> LossOutput:
        logs: dict[str, float] = {}
        positives = None
        if self.caption_positives:
            if len(out.captions) != query.shape[0]:
                raise ValueError(
                    f"infonce(caption_positives=True) needs one caption per row of the (gathered) "
                    f"batch: {len(out.captions)} captions for {query.shape[0]} rows (in a "
                    "distributed run the loop gathers features, not captions: run it in one "
                    "process or leave caption_positives off)"
                )
            positives = same_caption_positives(out.captions)
            logs["dup_positives"] = float(positives.sum() - positives.shape[0]) / positives.shape[0]
        loss = self.contrastive(query, target, out, positives)
        tau = float(1.0 / torch.as_tensor(self.scale(out)).detach().float())
        return LossOutput(loss, {"infonce": loss}, {"temperature": tau, **logs})


METHODS.register("infonce", aliases=("clip",))(InfoNCE)
METHODS.register("infonce/vlm2vec", aliases=("vlm2vec",))(
    functools.partial(InfoNCE, temperature=0.02, symmetric=False, query="image")
)
