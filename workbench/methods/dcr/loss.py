"""DCR's arithmetic as pure functions of tensors (spec §1.2, §1.3, §8).

* :func:`dcr_contrastive_loss` — the DCR loss on noise predictions (paper Eq. L_dcr; the official
  code's loss block, line for line in float32);
* :func:`reconstruction_loss` — L_rec, the denoising MSE (Stage-1 "mse", DIVA/GenHancer-like
  reconstruction only, the naive method's second term);
* :func:`view_info_nce` — the naive method's feature-space InfoNCE between augmented views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pred(
    pred: torch.Tensor,
    pred_aug: torch.Tensor,
    target: torch.Tensor,
    tau: float,
    cond_index: torch.Tensor | None,
) -> torch.Tensor:
    """Validate the shapes and return the (B,) anchor column of every row."""
    if pred.ndim != 3:
        raise ValueError(f"pred must be (B, C, P), got shape {tuple(pred.shape)}")
    b, c, p = pred.shape
    if pred_aug.shape != (b, p) or target.shape != (b, p):
        raise ValueError(
            f"pred_aug and target must be (B, P) = ({b}, {p}), got {tuple(pred_aug.shape)} "
            f"and {tuple(target.shape)}; flatten the predictions per sample first"
        )
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ValueError(f"tau must be a positive number, got {tau!r}")
    if c < 2:
        raise ValueError(f"pred needs at least one negative column (C ≥ 2), got C = {c}")
    rows = torch.arange(b, device=pred.device)
    if cond_index is None:
        if c != b:
            raise ValueError(
                f"without cond_index pred must be the B×B layout (B, B, P), got {tuple(pred.shape)}"
            )
        return rows
    if cond_index.shape != (b, c) or cond_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cond_index must be an integer (B, C) = ({b}, {c}) tensor")
    is_anchor = cond_index.to(pred.device) == rows[:, None]  # (B, C)
    if not bool((is_anchor.sum(1) == 1).all()):
        raise ValueError(
            "every row of cond_index must name its own image exactly once (the anchor)"
        )
    return is_anchor.float().argmax(1)


def dcr_logits(
    pred: torch.Tensor,
    pred_aug: torch.Tensor,
    target: torch.Tensor,
    tau: float = 0.1,
    cond_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine logits of the anchors: ``(s_aug (B,), s_gt (B,), s_neg (B, C−1))``, all / τ.

    Arguments as :func:`dcr_contrastive_loss`. Computed in float32 whatever the inputs' dtype.
    """
    anchor_col = _check_pred(pred, pred_aug, target, tau, cond_index)
    b, c, _ = pred.shape
    rows = torch.arange(b, device=pred.device)
    allv = F.normalize(pred.float(), dim=-1)  # (B, C, P)
    anchor = allv[rows, anchor_col]  # (B, P)
    s_all = torch.einsum("bp,bcp->bc", anchor, allv) / tau  # (B, C)
    keep = torch.ones(b, c, dtype=torch.bool, device=pred.device)
    keep[rows, anchor_col] = False  # the anchor is not its own negative
    s_neg = s_all[keep].view(b, c - 1)  # (B, C-1)
    s_aug = (anchor * F.normalize(pred_aug.float(), dim=-1)).sum(-1) / tau  # (B,)
    s_gt = (anchor * F.normalize(target.float(), dim=-1)).sum(-1) / tau  # (B,)
    return s_aug, s_gt, s_neg


def dcr_contrastive_loss(
    pred: torch.Tensor,
    pred_aug: torch.Tensor,
    target: torch.Tensor,
    tau: float = 0.1,
    cond_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """DCR's contrastive loss in noise space (spec §1.3; official loss block, spec §8).

    ``L = mean_i ½ [ −log(e^{s⁺_i}/den_i) − log(e^{s^gt_i}/den_i) ]`` with one shared
    denominator ``den_i = e^{s⁺_i} + e^{s^gt_i} + Σ_{j≠i} e^{s_ij}`` and cosine logits over τ:
    ``s⁺_i = cos(pred[i,i], pred_aug[i])/τ``, ``s^gt_i = cos(pred[i,i], target[i])/τ``,
    ``s_ij = cos(pred[i,i], pred[i,j])/τ``. Because both positives share the denominator the
    loss is bounded below by log 2 (reached only in the limit of negatives at −1).

    Args:
        pred: (B, B, P) ``pred[i, j]`` = the prediction for the noisy input of image i
            conditioned on image j, flattened (the code's B×B pass); or (B, C, P) with
            ``cond_index`` for sampled negatives.
        pred_aug: (B, P) prediction for the noisy input of image i conditioned on its augmented
            view x⁺ (the first positive).
        target: (B, P) the true noise ε (the paper) or the v-target (the code): the second
            positive.
        tau: Temperature [code: 0.1].
        cond_index: Optional (B, C) int64, the image each column of ``pred`` is conditioned on;
            each row names its own image exactly once (the anchor), the other columns are its
            negatives. ``None`` = the B×B layout (``cond_index[i, j] = j``).

    Returns:
        Scalar float32 loss (inputs of any dtype are upcast: the released runs computed it in
        bf16, whose logit resolution near 10 is ≈ 0.06).

    >>> p = torch.nn.functional.one_hot(torch.arange(3), 4).float()        # (B=3, P=4)
    >>> pred = p[None].expand(3, 3, 4).clone()                               # pred[i, j] = e_j
    >>> loss = dcr_contrastive_loss(pred, p, p, tau=1.0)                     # positives = anchors
    >>> import math
    >>> round(float(loss), 6) == round(math.log(2 * math.e + 2) - 1, 6)  # den = 2e¹ + 2e⁰
    True
    """
    s_aug, s_gt, s_neg = dcr_logits(pred, pred_aug, target, tau, cond_index)
    log_den = torch.logsumexp(torch.cat([s_aug[:, None], s_gt[:, None], s_neg], 1), 1)  # (B,)
    return (0.5 * ((log_den - s_aug) + (log_den - s_gt))).mean()


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_rec = mean ‖ε̂ − ε‖² over every element (diffusers' ``F.mse_loss``), in float32.
    ``pred`` and ``target`` of one shape, e.g. (B, C, h, w)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    return F.mse_loss(pred.float(), target.float())


def view_info_nce(z: torch.Tensor, z_aug: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """The naive method's L_con (spec §1.2): InfoNCE over 2B L2-normalised features of two
    views, each row's positive its other view and its denominator every other row (NT-Xent).

    Args:
        z: (B, D) features of the original images (any scale; normalised here).
        z_aug: (B, D) features of their augmented views.
        tau: Temperature [our reading: 0.1, DCR's τ; the paper's value was not recovered].
    """
    if z.ndim != 2 or z.shape != z_aug.shape or z.shape[0] < 2:
        raise ValueError(
            f"z and z_aug must both be (B, D) with B ≥ 2, got {tuple(z.shape)}, {tuple(z_aug.shape)}"
        )
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ValueError(f"tau must be a positive number, got {tau!r}")
    b = z.shape[0]
    x = F.normalize(torch.cat([z, z_aug]).float(), dim=-1)  # (2B, D)
    logits = x @ x.T / tau  # (2B, 2B)
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=x.device), float("-inf"))
    labels = (torch.arange(2 * b, device=x.device) + b) % (2 * b)
    return F.cross_entropy(logits, labels)


__all__ = ["dcr_contrastive_loss", "dcr_logits", "reconstruction_loss", "view_info_nce"]
