"""CDDS's four losses and their total (spec §3.5, Eqs. 11–15), as one pure function of tensors.

``L = a_s L_s + a_m L_m + a_f L_f + (1 − a_f) L_x`` (Eq. 15), each term the mean of its image
and text halves:

* ``L_s`` (Eq. 11): pooled semantic components against the pooled x-semantic components of the
  same pair, every other pair a negative — ``contrast(V^s, V^x)`` and ``contrast(T^s, T^x)``.
  Without distribution sampling (the "w/o Sam." row) it is the direct
  ``contrast(V^s, T^s)``;
* ``L_m`` (Eq. 12): the modality components of all tokens of one modality share one
  distribution — ``mean_p KL(softmax(V^m_p) ‖ softmax(mean_p V^m_p))`` over the batch's
  valid tokens [our reading: the mean over the whole batch of that modality];
* ``L_f`` (Eq. 13): information completeness of the decomposition,
  ``‖V − (w_s V^s + w_m V^m)‖²`` per valid token element, ``w_s``, ``w_m`` learnable;
* ``L_x`` (Eq. 14): the x-semantic components with the modality components rebuild the
  original, ``‖V − (w_x V^x + w_m V^m)‖²`` [our reading].

All in float32. See :func:`cdds_loss_terms` for which switch removes which term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workbench.methods.cdds.semantics import quantile_map
from workbench.methods.tokens import contrastive_loss, masked_mean

__all__ = ["Components", "cdds_loss_terms", "modality_consistency", "reconstruction_error"]


@dataclass
class Components:
    """One modality's decomposition of a batch.

    Attributes:
        tokens: (B, L, d) the projected tokens ``V`` (what ``L_f``/``L_x`` reconstruct).
        mask: (B, L) bool, ``True`` at valid tokens.
        semantic: (B, L, d) semantic components ``V^s`` (zero at padding).
        modality: (B, L, d) modality components ``V^m`` (zero at padding).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    semantic: torch.Tensor
    modality: torch.Tensor


def modality_consistency(modality: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_m`` of one modality (Eq. 12, our reading): mean over valid tokens ``p`` of
    ``KL(softmax(V^m_p) ‖ softmax(mean_p V^m_p))``; (B, L, d) + (B, L) → scalar float32."""
    m = modality.float()
    keep = mask[..., None]
    centre = torch.where(keep, m, 0.0).sum((0, 1)) / mask.sum().clamp_min(1)  # (d,)
    log_p = F.log_softmax(m, dim=-1)  # (B, L, d)
    kl = (log_p.exp() * (log_p - F.log_softmax(centre, dim=-1))).sum(-1)  # (B, L)
    return torch.where(mask, kl, 0.0).sum() / mask.sum().clamp_min(1)


def reconstruction_error(
    target: torch.Tensor, estimate: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over the valid tokens' elements (Eqs. 13–14); padding never enters."""
    err = (target.float() - estimate.float()) ** 2  # (B, L, d)
    n = mask.sum().clamp_min(1) * target.shape[-1]
    return torch.where(mask[..., None], err, 0.0).sum() / n


def _pooled(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.normalize(masked_mean(x.float(), mask), dim=-1)  # (B, d)


def cdds_loss_terms(
    image: Components,
    text: Components,
    image_weights: torch.Tensor,
    text_weights: torch.Tensor,
    recon: torch.Tensor,
    *,
    a_s: float = 1.0,
    a_m: float = 1.0,
    a_f: float = 0.5,
    sampling: bool = True,
    modality_constraint: bool = True,
    completeness: bool = True,
    positives: torch.Tensor | None = None,
    loss: str = "infonce",
    temperature: float = 0.05,
    margin: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """The CDDS objective on one batch (spec §3.5, Eq. 15).

    Args:
        image, text: Each modality's :class:`Components`; row ``k`` of ``image`` pairs row
            ``k`` of ``text``.
        image_weights: (d, d) related-semantics weights ``w^v`` (row ``i``: an image column,
            over text columns; rows sum to 1), from :func:`~.semantics.related_weights`.
        text_weights: (d, d) ``w^t`` (row ``j``: a text column, over image columns).
        recon: (2, 3) learnable reconstruction weights ``(w_s, w_m, w_x)`` of image (row 0)
            and text (row 1).
        a_s, a_m, a_f: Term weights of Eq. 15 (values not recovered [our reading]: 1, 1, ½).
        sampling: Build x-semantic components by distribution sampling (``False``: the
            "w/o Sam." row — ``L_s`` aligns ``V^s`` with ``T^s`` directly and ``L_x``, which has
            no x-semantic component to rebuild from, is dropped; ``L_f`` keeps weight ``a_f``).
        modality_constraint: Include ``L_m`` (``False``: the "w/o Mod." row).
        completeness: Include ``L_f`` and ``L_x`` (``False``: the "w/o Int." row).
        positives: (B, B) bool, rows sharing an image (never negatives of each other).
        loss: Pair loss of ``L_s``: ``"infonce"`` or ``"hinge"`` (VSE++ hardest negative).
        temperature: InfoNCE τ.
        margin: Hinge margin (LAPS: 0.2).

    Returns:
        ``(loss, terms, weights)``: the scalar total; every computed term (``L_s``, ``L_m``,
        ``L_f`` and, with sampling, ``L_x``) unweighted and attached to the graph, whether or
        not its switch includes it; and the weight each term enters the total with (0 for a
        switched-off term), so ``loss == Σ weights[t] · terms[t]``.
    """
    pair = {"kind": loss, "temperature": temperature, "margin": margin, "positives": positives}
    vs, ts = _pooled(image.semantic, image.mask), _pooled(text.semantic, text.mask)  # (B, d)
    terms: dict[str, torch.Tensor] = {}
    if sampling:
        vx = quantile_map(image.semantic, image.mask, text.semantic, text.mask, image_weights)
        tx = quantile_map(text.semantic, text.mask, image.semantic, image.mask, text_weights)
        terms["L_s"] = 0.5 * (
            contrastive_loss(vs, _pooled(vx, image.mask), **pair)
            + contrastive_loss(ts, _pooled(tx, text.mask), **pair)
        )
    else:
        terms["L_s"] = contrastive_loss(vs, ts, **pair)
    terms["L_m"] = 0.5 * (
        modality_consistency(image.modality, image.mask)
        + modality_consistency(text.modality, text.mask)
    )
    r = recon.float()
    terms["L_f"] = 0.5 * sum(
        reconstruction_error(c.tokens, r[k, 0] * c.semantic + r[k, 1] * c.modality, c.mask)
        for k, c in enumerate((image, text))
    )
    if sampling:
        terms["L_x"] = 0.5 * sum(
            reconstruction_error(c.tokens, r[k, 2] * x + r[k, 1] * c.modality, c.mask)
            for k, (c, x) in enumerate(((image, vx), (text, tx)))
        )
    weights = {
        "L_s": a_s,
        "L_m": a_m if modality_constraint else 0.0,
        "L_f": a_f if completeness else 0.0,
    }
    if sampling:
        weights["L_x"] = (1.0 - a_f) if completeness else 0.0
    total = sum(weights[k] * terms[k] for k in terms)
    return total, terms, weights
