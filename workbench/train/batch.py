"""One micro-batch → :class:`~workbench.methods.base.BatchOutputs`: tower features (cached or
computed), heads, the all-gather with gradients, and the method's hard negatives (their
text-tower features memoised by string while the text tower is frozen)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.distributed import DistInfo, gather_features
from workbench.encoders.text_cache import TextTowerCache
from workbench.methods.base import BatchOutputs, Method
from workbench.train.source import Source


def hard_negatives(
    encoder: nn.Module,
    method: Method,
    batch: dict[str, Any],
    device: torch.device,
    tower_trains: bool,
    text_cache: TextTowerCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]] | None:
    """The method's K hard-negative captions per sample, embedded: ``(negatives, tower, texts)``
    with ``negatives`` (B_local, K, D) L2-normalised post-head, ``tower`` (B_local, K, D_txt)
    the text-tower features they came from and ``texts`` the strings; ``None`` when the method
    defines none.

    The text tower runs without gradient unless tower parameters train. With ``text_cache``
    (given by the loop when no tower parameter trains) each distinct string's tower features are
    computed once and then looked up, so heads-only training on cached features does not run the
    text tower on every step's B·K negatives.
    """
    negs = method.hard_negative_texts(batch["captions"], batch["attributes"])
    if negs is None:
        return None
    k = len(negs[0]) if negs else 0
    if k == 0 or any(len(n) != k for n in negs) or len(negs) != len(batch["captions"]):
        raise ValueError("hard_negative_texts must return K ≥ 1 captions for every sample")
    flat = [t for n in negs for t in n]
    if text_cache is not None and not tower_trains:
        tt = text_cache(flat).to(device)  # (B_local·K, D_txt)
    else:
        tokens = {key: v.to(device) for key, v in encoder.tokenize(flat).items()}
        with contextlib.nullcontext() if tower_trains else torch.no_grad():
            tt = encoder.text_tower(tokens)
    z = F.normalize(encoder.text_head(tt), dim=-1)  # (B_local·K, D)
    b = len(negs)
    return z.view(b, k, -1), tt.view(b, k, -1), [list(n) for n in negs]


def batch_outputs(
    encoder: nn.Module,
    method: Method,
    source: Source,
    batch: dict[str, Any],
    info: DistInfo,
    device: torch.device,
    tower_trains: bool,
    text_cache: TextTowerCache | None = None,
) -> BatchOutputs:
    """The method's input for this rank's ``batch``: features gathered into the global batch
    (B = B_local · world size) with gradients; tower features, pixels and tokens stay local."""
    it, tt, extra = source.towers(encoder, batch, device)
    zi, zt = encoder.image_head(it), encoder.text_head(tt)  # (B_local, D) raw
    zi, zt = gather_features(zi, info), gather_features(zt, info)  # (B, D)
    found = hard_negatives(encoder, method, batch, device, tower_trains, text_cache)
    negs, neg_tower, neg_texts = found if found is not None else (None, None, None)
    if negs is not None:
        negs = gather_features(negs, info)  # (B, K, D)
    return BatchOutputs(
        image_features=F.normalize(zi, dim=-1),
        text_features=F.normalize(zt, dim=-1),
        logit_scale=encoder.logit_scale.exp(),
        image_raw=zi,
        text_raw=zt,
        hard_negatives=negs,
        hard_negative_tower=neg_tower,
        negative_texts=neg_texts or (),
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
