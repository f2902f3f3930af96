"""One micro-batch → :class:`~workbench.methods.base.BatchOutputs`: tower features (cached or
computed), heads, the all-gather with gradients, and the method's hard negatives."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.distributed import DistInfo, gather_features
from workbench.methods.base import BatchOutputs, Method
from workbench.train.source import Source


def hard_negatives(
    encoder: nn.Module,
    method: Method,
    batch: dict[str, Any],
    device: torch.device,
    tower_trains: bool,
) -> torch.Tensor | None:
    """(B_local, K, D) L2-normalised text embeddings of the method's K hard-negative captions
    per sample, or ``None`` when it defines none. The text tower runs without gradient unless
    tower parameters train."""
    negs = method.hard_negative_texts(batch["captions"], batch["attributes"])
    if negs is None:
        return None
    k = len(negs[0]) if negs else 0
    if k == 0 or any(len(n) != k for n in negs) or len(negs) != len(batch["captions"]):
        raise ValueError("hard_negative_texts must return K ≥ 1 captions for every sample")
    flat = [t for n in negs for t in n]
    tokens = {key: v.to(device) for key, v in encoder.tokenize(flat).items()}
    with contextlib.nullcontext() if tower_trains else torch.no_grad():
        tt = encoder.text_tower(tokens)
    z = F.normalize(encoder.text_head(tt), dim=-1)  # (B_local·K, D)
    return z.view(len(negs), k, -1)


def batch_outputs(
    encoder: nn.Module,
    method: Method,
    source: Source,
    batch: dict[str, Any],
    info: DistInfo,
    device: torch.device,
    tower_trains: bool,
) -> BatchOutputs:
    """The method's input for this rank's ``batch``: features gathered into the global batch
    (B = B_local · world size) with gradients; tower features, pixels and tokens stay local."""
    it, tt, extra = source.towers(encoder, batch, device)
    zi, zt = encoder.image_head(it), encoder.text_head(tt)  # (B_local, D) raw
    zi, zt = gather_features(zi, info), gather_features(zt, info)  # (B, D)
    negs = hard_negatives(encoder, method, batch, device, tower_trains)
    if negs is not None:
        negs = gather_features(negs, info)  # (B, K, D)
    return BatchOutputs(
        image_features=F.normalize(zi, dim=-1),
        text_features=F.normalize(zt, dim=-1),
        logit_scale=encoder.logit_scale.exp(),
        image_raw=zi,
        text_raw=zt,
        hard_negatives=negs,
        image_tower=it,
        text_tower=tt,
        pixels=extra.get("pixels"),
        tokens=extra.get("tokens"),
        captions=batch["captions"],
        attributes=batch["attributes"],
        labels=batch["labels"],
        indices=batch["indices"],
        encoder=encoder,
    )
