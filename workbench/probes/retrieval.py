"""Image↔text retrieval: Recall@K in both directions and rSum, from a similarity matrix.

An image may own several captions (COCO/Flickr style): ``caption_owner[t]`` names the image of
caption ``t``. Image→text counts a hit when *any* of the image's captions is in the top K;
text→image when the caption's own image is in the top K. Ties are counted against the query
(a candidate scoring *equal* to the best ground truth ranks above it), so a constant similarity
matrix does not earn recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench._validate import (
    as_indices,
    as_int,
    as_int_tuple,
    as_matrix,
    check_same_dim,
    l2_normalize,
    to_numpy,
)

__all__ = ["gt_ranks", "precision_at_1", "recall_at_k", "retrieval_scores", "similarity"]


def similarity(image: Any, text: Any) -> np.ndarray:
    """Cosine similarity (n_img, n_txt) of raw embeddings (rows L2-normalised here)."""
    I = l2_normalize(as_matrix(image, "image", min_rows=1), "image")
    T = l2_normalize(as_matrix(text, "text", min_rows=1), "text")
    check_same_dim(I, T)
    return I @ T.T


def gt_ranks(scores: Any, positives: np.ndarray) -> np.ndarray:
    """0-based rank of the best positive per query row.

    Args:
        scores: (n_query, n_cand) similarity, higher = better.
        positives: (n_query, n_cand) bool, True where the candidate is a correct answer; every
            row needs at least one.

    Returns:
        (n_query,) int: number of non-positive candidates scoring ≥ the best positive (ties count
        against the query).
    """
    S = as_matrix(scores, "scores", min_rows=1)
    P = _bool_matrix(positives, "positives")
    if P.shape != S.shape:
        raise ValueError(f"positives has shape {P.shape}, scores {S.shape}; they must match")
    if not P.any(axis=1).all():
        row = int(np.flatnonzero(~P.any(axis=1))[0])
        raise ValueError(
            f"positives: query row {row} has no positive candidate; every query needs one"
        )
    best = np.where(P, S, -np.inf).max(axis=1, keepdims=True)
    return ((S >= best) & ~P).sum(axis=1)


def _bool_matrix(values: Any, name: str) -> np.ndarray:
    """A 2-D mask: bools, or 0/1 integers or floats."""
    P = to_numpy(values, name)
    if P.dtype != np.bool_:
        if not (np.issubdtype(P.dtype, np.integer) or np.issubdtype(P.dtype, np.floating)):
            raise ValueError(f"{name} must be a boolean mask, got dtype {P.dtype}")
        if not np.isin(P, (0, 1)).all():
            raise ValueError(f"{name} must be a boolean mask (True/False or 0/1), got other values")
        P = P.astype(bool)
    if P.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_query, n_cand), got shape {P.shape}")
    return P


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose best positive has 0-based rank < ``k``.

    Args:
        ranks: (n_query,) non-negative integer ranks (e.g. from :func:`gt_ranks`).
        k: cut-off ≥ 1.
    """
    k = as_int(k, "k", lo=1)
    r = to_numpy(ranks, "ranks")
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array of ranks, got shape {r.shape}")
    r = as_indices(r, "ranks", n=np.iinfo(np.int64).max)
    return float(np.mean(r < k))


def retrieval_scores(
    sim: Any,
    caption_owner: Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    text_keys: Sequence[str] | None = None,
) -> dict[str, float]:
    """R@K image→text and text→image, and rSum.

    Args:
        sim: (n_img, n_txt) similarity of every image against every caption (e.g.
            :func:`similarity`, or ``logits_per_image``).
        caption_owner: (n_txt,) index of the image each caption belongs to; ``None`` means
            caption ``i`` belongs to image ``i`` (requires a square ``sim``).
        ks: recall cut-offs.
        text_keys: (n_txt,) strings (usually the captions themselves): a caption whose key equals
            one of an image's own captions' keys counts as a hit for that image, and vice versa —
            a gallery with repeated captions ("a frog") cannot tell its owners apart, so the
            strict protocol (``None``) undercounts. Report both.

    Returns:
        ``{"i2t_R@1": ..., "t2i_R@1": ..., ..., "rsum": ...}``. Recalls are fractions in [0, 1];
        ``rsum`` follows the usual convention: the sum of all the recalls **in percent**
        (0–600 for ``ks=(1, 5, 10)``).
    """
    S = as_matrix(sim, "sim", min_rows=1)
    n_img, n_txt = S.shape
    ks = as_int_tuple(ks, "ks", lo=1)
    if caption_owner is None:
        if n_img != n_txt:
            raise ValueError(
                f"sim is {n_img}x{n_txt}; pass caption_owner (image index of each caption) "
                "when images and captions are not one-to-one"
            )
        owner = np.arange(n_txt)
    else:
        owner = as_indices(caption_owner, "caption_owner", n=n_img, length=n_txt, of="sim")
    if text_keys is None:
        pos = owner[None, :] == np.arange(n_img)[:, None]  # (n_img, n_txt)
    else:
        if isinstance(text_keys, (str, bytes)) or not hasattr(text_keys, "__len__"):
            raise TypeError(
                f"text_keys must be a sequence of one key per caption, got {text_keys!r}"
            )
        keys = list(text_keys)
        if len(keys) != n_txt:
            raise ValueError(
                f"text_keys must have one entry per caption ({n_txt}), got {len(keys)}"
            )
        index: dict[str, int] = {}
        kid = np.array([index.setdefault(str(k), len(index)) for k in keys], dtype=np.int64)
        own = np.zeros((n_img, len(index)), dtype=bool)  # (n_img, n_keys): keys of its captions
        own[owner, kid] = True
        pos = own[:, kid]  # (n_img, n_txt)
    has_caption = pos.any(axis=1)
    i2t = gt_ranks(S[has_caption], pos[has_caption])
    t2i = gt_ranks(S.T, pos.T)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = recall_at_k(i2t, k)
    for k in ks:
        out[f"t2i_R@{k}"] = recall_at_k(t2i, k)
    out["rsum"] = 100.0 * sum(out.values())
    return out


def precision_at_1(
    sim: np.ndarray, target: np.ndarray, candidates: np.ndarray | None = None
) -> float:
    """Fraction of queries whose right candidate strictly beats every other candidate.

    Args:
        sim: (n_q, n_c) query × candidate similarity (finite floats).
        target: (n_q,) column of the right candidate.
        candidates: (n_q, C) columns each query ranks (``-1`` = padding); ``None`` = all columns.
    """
    sim = as_matrix(sim, "sim", min_rows=1)
    n_q, n_c = sim.shape
    target = as_indices(target, "target", n=n_c, length=n_q, of="sim")
    cand = (
        np.broadcast_to(np.arange(n_c), (n_q, n_c))
        if candidates is None
        else as_indices(candidates, "candidates", n=n_c, ndim=2, length=n_q, padding=True, of="sim")
    )
    valid = cand >= 0
    is_target = valid & (cand == target[:, None])
    if not is_target.any(axis=1).all():
        row = int(np.flatnonzero(~is_target.any(axis=1))[0])
        raise ValueError(
            f"target of query {row} is not among its candidates; every query's target must be"
        )
    scores = np.take_along_axis(sim, np.where(valid, cand, 0), axis=1)
    best_other = np.where(valid & ~is_target, scores, -np.inf).max(axis=1)
    return float(np.mean(sim[np.arange(n_q), target] > best_other))
