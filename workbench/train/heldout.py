"""The loop's built-in evaluation: InfoNCE and R@1 of the held-out rows (``heldout/*`` metrics)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.methods.feature_loss import info_nce
from workbench.train.source import Source


@torch.no_grad()
def heldout_metrics(
    encoder: nn.Module,
    source: Source,
    rows: np.ndarray,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    chunk: int = 256,
) -> dict[str, float]:
    """``heldout/infonce`` (symmetric, the encoder's logit scale), ``heldout/i2t_r1`` and
    ``heldout/t2i_r1`` over the hold-out ``rows``; ``{}`` for fewer than 2 rows.

    Embeddings are post-head, L2-normalised, computed ``chunk`` rows at a time under
    ``autocast()`` and compared in float32.
    """
    if len(rows) < 2:
        return {}
    zs_i, zs_t = [], []
    for start in range(0, len(rows), chunk):
        batch = source.batch(rows[start : start + chunk])
        with autocast():
            it, tt, _ = source.towers(encoder, batch, device)
            zs_i.append(encoder.image_head(it).float())
            zs_t.append(encoder.text_head(tt).float())
    zi = F.normalize(torch.cat(zs_i), dim=-1)  # (n, D)
    zt = F.normalize(torch.cat(zs_t), dim=-1)
    scale = encoder.logit_scale.exp().float()
    sim = zi @ zt.T  # (n, n)
    target = torch.arange(len(rows), device=sim.device)
    return {
        "heldout/infonce": float(info_nce(zi, zt, scale)),
        "heldout/i2t_r1": float((sim.argmax(1) == target).float().mean()),
        "heldout/t2i_r1": float((sim.argmax(0) == target).float().mean()),
    }
