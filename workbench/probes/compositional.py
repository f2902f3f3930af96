"""Compositional understanding: does the image prefer its caption over hard-negative captions?

ARO / SugarCrepe style (``methods-geometry.md`` §5, DeGLA's negative subtypes): each image has
its true caption and, per negative *kind* (swap attributes, replace a noun, reorder...), one or
more negative captions. Per kind, an image is right when its cosine similarity to the true
caption is **strictly** higher than to every negative of that kind. Accuracy is reported per
kind and as the unweighted mean over kinds.

Negatives come from ``workbench.data.negatives.hard_negatives`` (rule-based; synthetic-world
items pass their attribute dicts for exact attribute-level negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._validate import (
    as_indices,
    as_int,
    as_matrix,
    as_names,
    check_paired,
    check_same_dim,
    l2_normalize,
)

__all__ = [
    "CompositionalResult",
    "NegativeSet",
    "build_negatives",
    "compositional_scores",
    "score_compositional",
]


@dataclass
class NegativeSet:
    """Flat list of negative captions: ``texts[m]`` is a negative of kind ``kinds[m]`` for item ``owner[m]``."""

    owner: np.ndarray  # (m,) int64, row of the image/caption it negates
    kinds: list[str]
    texts: list[str]

    def __post_init__(self) -> None:
        self.owner = np.asarray(self.owner, dtype=np.int64)
        if not len(self.owner) == len(self.kinds) == len(self.texts):
            raise ValueError("NegativeSet: owner, kinds and texts must have the same length")

    def __len__(self) -> int:
        return len(self.texts)


def build_negatives(
    captions: Sequence[str],
    attributes: Sequence[dict[str, Any]] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    seed: int = 0,
    max_per_kind: int | None = 3,
) -> NegativeSet:
    """Hard negatives for every caption through ``workbench.data.negatives.hard_negatives``.

    ``attributes[i]`` (synthetic-world factors) is passed along when given; ``kinds`` restricts
    the negative types (``None`` = the generator's default set); ``max_per_kind`` caps the
    negatives per kind and caption (1 = SugarCrepe's one-negative protocol). Item ``i`` uses seed
    ``seed + i`` so the set is deterministic and independent of batch composition.
    """
    from workbench.data.negatives import KINDS, hard_negatives

    captions = as_names(captions, "captions")
    kinds = as_names(kinds, "kinds", none_ok=True)
    if kinds is not None:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"kinds holds unknown negative kind(s) {unknown}; choose from {KINDS}")
    seed = as_int(seed, "seed", lo=0)
    max_per_kind = as_int(max_per_kind, "max_per_kind", lo=1, none_ok=True)
    if attributes is not None and len(attributes) != len(captions):
        raise ValueError(
            f"attributes has {len(attributes)} dicts for {len(captions)} captions; pass one per "
            f"caption (or None)"
        )
    owner: list[int] = []
    out_kinds: list[str] = []
    texts: list[str] = []
    for i, cap in enumerate(captions):
        kw: dict[str, Any] = {"seed": seed + i, "max_per_kind": max_per_kind}
        if kinds is not None:
            kw["kinds"] = tuple(kinds)
        attrs = attributes[i] if attributes is not None else None
        for kind, negs in hard_negatives(cap, attrs or None, **kw).items():
            for neg in negs:
                if neg != cap:
                    owner.append(i)
                    out_kinds.append(kind)
                    texts.append(neg)
    return NegativeSet(np.asarray(owner, dtype=np.int64), out_kinds, texts)


@dataclass
class CompositionalResult:
    """Per-kind image→caption accuracy against hard negatives.

    Attributes:
        per_kind: kind → fraction of items (having ≥ 1 negative of that kind) whose true caption
            beats all of them.
        n_items: kind → number of items scored for that kind.
        mean: unweighted mean of ``per_kind`` over kinds.
        correct: kind → (n_items,) bool per scored item (in row order).
    """

    per_kind: dict[str, float]
    n_items: dict[str, int]
    mean: float
    correct: dict[str, np.ndarray] = field(repr=False)


def compositional_scores(
    image: Any, positive_text: Any, negative_text: Any, negatives: NegativeSet
) -> CompositionalResult:
    """Score images against their true caption and their hard negatives.

    Args:
        image: (n, D) image embeddings (raw; L2-normalised here).
        positive_text: (n, D) embeddings of each image's true caption.
        negative_text: (m, D) embeddings of ``negatives.texts``, same order.
        negatives: which item and kind each negative belongs to.
    """
    I = l2_normalize(as_matrix(image, "image", min_rows=1), "image")
    P = l2_normalize(as_matrix(positive_text, "positive_text", min_rows=1), "positive_text")
    check_paired(I, P, ("image", "positive_text"))
    if len(negatives) == 0:
        raise ValueError("no hard negatives to score against (the generator produced none)")
    N = l2_normalize(as_matrix(negative_text, "negative_text", min_rows=1), "negative_text")
    check_same_dim(I, N, ("image", "negative_text"))
    if N.shape[0] != len(negatives):
        raise ValueError(f"negative_text has {N.shape[0]} rows for {len(negatives)} negatives")
    as_indices(negatives.owner, "negatives.owner", n=I.shape[0])
    pos_sim = (I * P).sum(axis=1)  # (n,)
    neg_sim = (I[negatives.owner] * N).sum(axis=1)  # (m,)
    kinds_arr = np.asarray(negatives.kinds, dtype=object)
    per, counts, correct = {}, {}, {}
    for kind in dict.fromkeys(negatives.kinds):  # first-seen order
        sel = kinds_arr == kind
        best_neg = np.full(I.shape[0], -np.inf)
        np.maximum.at(best_neg, negatives.owner[sel], neg_sim[sel])
        scored = np.isfinite(best_neg)
        hit = pos_sim[scored] > best_neg[scored]
        per[kind], counts[kind], correct[kind] = float(hit.mean()), int(scored.sum()), hit
    return CompositionalResult(per, counts, float(np.mean(list(per.values()))), correct)


def score_compositional(
    encoder: Any,
    images: Sequence[Any],
    captions: Sequence[str],
    attributes: Sequence[dict[str, Any]] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> CompositionalResult:
    """Generate hard negatives for ``captions`` and score ``encoder`` on (image, caption) rows."""
    import torch

    captions = as_names(captions, "captions")
    batch_size = as_int(batch_size, "batch_size", lo=1)
    if images is None or isinstance(images, (str, bytes)) or len(images) != len(captions):
        raise ValueError(
            f"images must be a sequence of one image per caption ({len(captions)} captions)"
        )
    negatives = build_negatives(captions, attributes, kinds=kinds, seed=seed)

    def enc(fn: Any, xs: Sequence[Any]) -> np.ndarray:
        with torch.no_grad():
            return (
                torch.cat([fn(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)])
                .cpu()
                .numpy()
            )

    return compositional_scores(
        enc(encoder.encode_images, list(images)),
        enc(encoder.encode_texts, list(captions)),
        enc(encoder.encode_texts, negatives.texts),
        negatives,
    )
