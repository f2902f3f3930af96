"""The contrastive feature loss every method builds on: InfoNCE's arithmetic and its base module.

Functional core (pure functions of tensors, easy to compare with open_clip by hand):

* :func:`contrastive_logits` — open_clip's ``get_logits``: ``scale · image @ text.T`` both ways;
* :func:`logits_cross_entropy` — cross-entropy against the diagonal, two-way or one-way;
* :func:`info_nce` — the two composed (CLIP's loss, or VLM2Vec's ``CE(Q Tᵀ/τ, diag)``).

:class:`FeatureLoss` is the ``Method`` base that owns what InfoNCE, SDE and FANoise share —
the temperature (fixed τ, or ``None`` = the encoder's learnable logit scale), two-way vs
one-way, and which side is the query — and splits :meth:`Method.compute` into pieces::

    compute(out, state) = loss(*sides(out), out, state)
    contrastive(query, target, out) = CE(logits(query, target, out))   # with this τ/direction

A subclass overrides one piece, as open_clip's ``DistillClipLoss`` overrides one method of
``ClipLoss``: InfoNCE, SDE and FANoise override :meth:`FeatureLoss.loss` (what happens to the
query/target features before and around :meth:`FeatureLoss.contrastive`); a method that changes
the similarity (e.g. adds hard negatives to the logits) overrides :meth:`FeatureLoss.logits`.

>>> import torch
>>> x = torch.eye(4)                                # 4 orthonormal pairs, each its own positive
>>> round(float(info_nce(x, x, 1.0)), 4)           # log(1 + 3/e): three negatives at cosine 0
0.7437
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from workbench._validate import require
from workbench.methods.base import BatchOutputs, LossOutput, Method, StepState

Side = Literal["image", "text"]
SIDES: tuple[str, ...] = ("image", "text")


def contrastive_logits(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits_per_image, logits_per_text)``, each (B, B): ``scale · image @ text.T`` and
    ``scale · text @ image.T`` for L2-normalised (B, D) features (open_clip ``get_logits``)."""
    return scale * image @ text.T, scale * text @ image.T


def same_caption_positives(captions: Sequence[str]) -> torch.Tensor:
    """(B, B) bool: ``[i, j]`` is ``True`` when rows i and j carry the same caption string.

    Short templated captions repeat inside a batch ("a photo of a sneaker"); treating those
    pairs as negatives pushes apart images the text cannot tell apart.

    >>> same_caption_positives(["a cat", "a dog", "a cat"]).int().tolist()
    [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    """
    index: dict[str, int] = {}
    ids = torch.tensor([index.setdefault(c, len(index)) for c in captions])
    return ids[:, None] == ids[None, :]


def logits_cross_entropy(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    *,
    symmetric: bool = True,
    query: Side = "image",
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of (B, B) logits against the diagonal (row i's positive is column i).

    ``symmetric`` → the mean of both directions (CLIP); else only ``query``'s rows (VLM2Vec).
    ``positives`` (B, B) bool, diagonal included, makes every marked column a positive of its
    row with equal weight (soft targets ``positives / positives.sum(1)``; the text side uses its
    transpose) — e.g. :func:`same_caption_positives`. ``None`` is the plain diagonal.
    Half/bf16 logits are up-cast first, so the loss is float32 (float64 for float64 logits).
    """
    if logits_per_image.dtype in (torch.float16, torch.bfloat16):
        logits_per_image, logits_per_text = logits_per_image.float(), logits_per_text.float()
    if positives is not None:
        pos = positives.to(device=logits_per_image.device, dtype=logits_per_image.dtype)
        if pos.shape != logits_per_image.shape or not bool(torch.diagonal(pos).all()):
            raise ValueError(
                f"positives must be a (B, B) mask with a true diagonal, got {tuple(pos.shape)}"
            )
        soft_i, soft_t = pos / pos.sum(1, keepdim=True), pos.T / pos.T.sum(1, keepdim=True)
        if symmetric:
            return (
                F.cross_entropy(logits_per_image, soft_i) + F.cross_entropy(logits_per_text, soft_t)
            ) / 2
        return F.cross_entropy(
            *((logits_per_image, soft_i) if query == "image" else (logits_per_text, soft_t))
        )
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    if symmetric:
        return (
            F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
        ) / 2
    return F.cross_entropy(logits_per_image if query == "image" else logits_per_text, labels)


def info_nce(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor | float,
    *,
    symmetric: bool = True,
    query: Side = "image",
) -> torch.Tensor:
    """In-batch InfoNCE on paired rows; row i of ``image`` and ``text`` are positives.

    Spec ``methods-spectral.md`` §0 (VLM2Vec) and open_clip ``ClipLoss`` (bit-identical in
    float32 for ``symmetric=True``: the same ops in the same order).

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
    return logits_cross_entropy(logits_per_image, logits_per_text, symmetric=symmetric, query=query)


class FeatureLoss(Method):
    """Base of the contrastive methods: temperature, direction and query side live here.

    Args:
        temperature: Fixed τ (VLM2Vec: 0.02); ``None`` uses the encoder's learnable
            ``logit_scale`` (``BatchOutputs.logit_scale`` = exp of it), as CLIP/open_clip.
        symmetric: ``True`` = CLIP's two-way loss; ``False`` = one-way from the query (VLM2Vec).
        query: ``"image"`` or ``"text"``: the query side ``F_q`` (the other is the target
            ``F_t``); for a symmetric loss it only fixes the order of :meth:`sides`.

    Subclasses set their own defaults in their ``__init__`` signature (the registry records it)
    and pass these three up; they implement :meth:`loss`.
    """

    def __init__(
        self, temperature: float | None = None, symmetric: bool = True, query: Side = "image"
    ) -> None:
        super().__init__()
        require(
            temperature is None or temperature > 0,
            self.name,
            "temperature",
            temperature,
            "> 0 or None (learnable)",
        )
        require(query in SIDES, self.name, "query", query, "'image' or 'text'")
        self.temperature = temperature
        self.symmetric = symmetric
        self.query = query

    @property
    def target(self) -> Side:
        """The side that is not the query."""
        return "text" if self.query == "image" else "image"

    def scale(self, out: BatchOutputs) -> torch.Tensor | float:
        """The logit multiplier: ``1/temperature`` when fixed, else ``out.logit_scale``."""
        return out.logit_scale if self.temperature is None else 1.0 / self.temperature

    def sides(self, out: BatchOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F_q, F_t)``: the (B, D) L2-normalised query and target features of ``out``."""
        if self.query == "image":
            return out.image_features, out.text_features
        return out.text_features, out.image_features

    def logits(
        self, query: torch.Tensor, target: torch.Tensor, out: BatchOutputs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(query→target, target→query)`` logits, each (B, B), at this method's scale."""
        return contrastive_logits(query, target, self.scale(out))

    def contrastive(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        out: BatchOutputs,
        positives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """This method's InfoNCE on (B, D) ``query``/``target`` rows (scalar, float32);
        ``positives`` as in :func:`logits_cross_entropy`."""
        logits_q, logits_t = self.logits(query, target, out)
        return logits_cross_entropy(
            logits_q, logits_t, symmetric=self.symmetric, positives=positives
        )

    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        return self.loss(*self.sides(out), out, state)

    def loss(
        self, query: torch.Tensor, target: torch.Tensor, out: BatchOutputs, state: StepState
    ) -> LossOutput:
        """The step's :class:`LossOutput` from the (B, D) query and target features."""
        raise NotImplementedError
