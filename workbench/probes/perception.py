"""P-ability: MMVP-VLM scoring of image pairs that differ in one fine-grained visual pattern.

Implements the MMVP-VLM protocol of ``methods-geometry.md`` §0 exactly (``boyuh/DCR
evaluation/evaluate_mmvp_*.py``, same as GenHancer's):

- each pair holds two images and two statements; statement ``j`` is true of image ``j``
  (in the CSV, odd qid → img1, even qid → img2);
- texts are ``"a photo of " + statement``;
- per statement, softmax of ``logits_per_text`` over the pair's **two** images; the prediction is
  img1 when ``p(img1) > 0.5`` (strictly), otherwise img2;
- a pair scores only when **both** statements are predicted right;
- per-category accuracy, then the unweighted mean over categories. Categories of the real
  benchmark are ``pair_index // 15`` in the fixed order of :data:`MMVP_CATEGORIES`.

Accuracies are fractions in [0, 1] (the papers print percentages: multiply by 100).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from workbench._validate import (
    as_array,
    as_float,
    as_int,
    as_names,
    l2_normalize,
    to_numpy,
)
from workbench.data.base import MMVP_CATEGORIES, MMVPPair

__all__ = [
    "MMVP_CATEGORIES",
    "MMVP_PREFIX",
    "MMVPResult",
    "mmvp_categories_by_index",
    "mmvp_logits",
    "mmvp_logits_from_embeddings",
    "mmvp_pair_correct",
    "mmvp_pairs_from_dataset",
    "mmvp_scores",
    "score_mmvp",
]

MMVP_PREFIX = "a photo of "
# The reference rule ``category = pair_index // 15`` over 9 categories covers 135 pairs (270
# images). The spec's "300 images → 150 pairs" matches MMVP (the VQA set), not this rule; pairs
# beyond 135 have no category under it, so they need explicit ``categories``.
PAIRS_PER_CATEGORY = 15


class PairLike(Protocol):
    """What :func:`mmvp_logits` needs of a pair (``workbench.data.base.MMVPPair`` fits)."""

    category: str
    images: Sequence[Any]  # (img1, img2), PIL
    statements: Sequence[str]  # statement j is true of image j


def _logits(logits_per_text: Any) -> np.ndarray:
    name = "logits_per_text"
    L = to_numpy(logits_per_text, name)
    if L.dtype == np.bool_ or not (
        np.issubdtype(L.dtype, np.integer) or np.issubdtype(L.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold real logits, got dtype {L.dtype}")
    L = L.astype(np.float64)
    if L.ndim != 3 or L.shape[1:] != (2, 2):
        raise ValueError(
            "logits_per_text must have shape (n_pairs, 2, 2) = (pair, statement, image) with "
            f"statement j true of image j; got {L.shape}"
        )
    if L.shape[0] == 0:
        raise ValueError("logits_per_text holds no pairs")
    if not np.isfinite(L).all():
        bad = int(np.flatnonzero(~np.isfinite(L).reshape(len(L), -1).all(axis=1))[0])
        raise ValueError(f"logits_per_text has NaN/Inf (first at pair {bad})")
    return L


def mmvp_pair_correct(logits_per_text: Any) -> np.ndarray:
    """(n_pairs,) bool: both statements of the pair pick their own image.

    ``logits_per_text`` is (n_pairs, 2, 2): ``[p, j, m]`` is the logit of statement ``j`` against
    image ``m`` of pair ``p`` (any positive logit scale; the decision does not depend on it).
    Statement 0 is right when ``softmax(...)[0] > 0.5``; statement 1 is right when it is not
    (``≤ 0.5`` predicts img2), exactly as the reference code breaks ties.
    """
    L = _logits(logits_per_text)
    # softmax over the two images, numerically stable
    p_img1 = 1.0 / (1.0 + np.exp(L[:, :, 1] - L[:, :, 0]))  # (n_pairs, 2)
    pred_img1 = p_img1 > 0.5
    return pred_img1[:, 0] & ~pred_img1[:, 1]


def mmvp_categories_by_index(n_pairs: int = 135) -> list[str]:
    """Category of each pair of the real benchmark: ``MMVP_CATEGORIES[pair_index // 15]``."""
    limit = PAIRS_PER_CATEGORY * len(MMVP_CATEGORIES)
    n_pairs = as_int(n_pairs, "n_pairs")
    if not 0 < n_pairs <= limit:
        raise ValueError(
            f"the pair_index // 15 rule names categories for 1..{limit} pairs, got "
            f"n_pairs={n_pairs}; pass categories explicitly"
        )
    return [MMVP_CATEGORIES[i // PAIRS_PER_CATEGORY] for i in range(n_pairs)]


@dataclass
class MMVPResult:
    """MMVP-VLM scores.

    Attributes:
        per_category: category → fraction of its pairs with both statements right, in the fixed
            :data:`MMVP_CATEGORIES` order first, then any other categories sorted.
        mean: unweighted mean of ``per_category`` (the benchmark's "average").
        n_pairs: category → number of pairs scored.
        pair_correct: (n_pairs,) bool per pair, in input order.
        categories: (n_pairs,) category of each pair.
    """

    per_category: dict[str, float]
    mean: float
    n_pairs: dict[str, int]
    pair_correct: np.ndarray = field(repr=False)
    categories: list[str] = field(repr=False)

    @property
    def pair_accuracy(self) -> float:
        """Fraction of all pairs right, ignoring categories (micro average)."""
        return float(self.pair_correct.mean())


def mmvp_scores(logits_per_text: Any, categories: Sequence[str] | None = None) -> MMVPResult:
    """Score pairs by the MMVP-VLM rule (§0): pair accuracy per category and their mean.

    Args:
        logits_per_text: (n_pairs, 2, 2) logits, see :func:`mmvp_pair_correct`.
        categories: category name of each pair; ``None`` applies the real benchmark's rule
            ``MMVP_CATEGORIES[pair_index // 15]`` (requires the benchmark's pair order).
    """
    correct = mmvp_pair_correct(logits_per_text)
    if categories is None:
        cats = mmvp_categories_by_index(len(correct))
    else:
        cats = list(as_names(categories, "categories"))
    if len(cats) != len(correct):
        raise ValueError(
            f"categories has {len(cats)} entries for {len(correct)} pairs of logits_per_text; "
            f"pass one per pair"
        )
    order = [c for c in MMVP_CATEGORIES if c in cats] + sorted(set(cats) - set(MMVP_CATEGORIES))
    cat_arr = np.asarray(cats, dtype=object)
    per = {c: float(correct[cat_arr == c].mean()) for c in order}
    counts = {c: int((cat_arr == c).sum()) for c in order}
    return MMVPResult(per, float(np.mean(list(per.values()))), counts, correct, cats)


def mmvp_logits_from_embeddings(image: Any, text: Any, logit_scale: float = 100.0) -> np.ndarray:
    """(n_pairs, 2, 2) ``logits_per_text`` from pair embeddings.

    Args:
        image: (n_pairs, 2, D) image embeddings (raw; L2-normalised here), ``[:, m]`` = image m.
        text: (n_pairs, 2, D) statement embeddings (raw; normalised here), ``[:, j]`` = statement j.
        logit_scale: CLIP's ``exp(logit_scale)``; only the softmax temperature, not the decision.
    """
    shape = "(n_pairs, 2, D)"
    I = as_array(image, "image", 3, shape_doc=shape)
    T = as_array(text, "text", 3, shape_doc=shape)
    if I.shape[1] != 2 or T.shape != I.shape:
        raise ValueError(
            f"image and text must both be {shape} with equal shapes; got {I.shape}, {T.shape}"
        )
    logit_scale = as_float(logit_scale, "logit_scale", lo=0.0, lo_open=True)
    I = l2_normalize(I.reshape(-1, I.shape[-1]), "image").reshape(I.shape)
    T = l2_normalize(T.reshape(-1, T.shape[-1]), "text").reshape(T.shape)
    return logit_scale * np.einsum("pjd,pmd->pjm", T, I)


def mmvp_logits(
    encoder: Any, pairs: Sequence[PairLike], *, prefix: str = MMVP_PREFIX, batch_size: int = 64
) -> np.ndarray:
    """Run ``encoder`` on MMVP-style ``pairs`` → (n_pairs, 2, 2) ``logits_per_text``.

    Texts are ``prefix + statement`` (the protocol's ``"a photo of "``); the logit scale is the
    encoder's ``exp(logit_scale)``.
    """
    import torch

    pairs = _check_pairs(pairs)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {prefix!r}")
    batch_size = as_int(batch_size, "batch_size", lo=1)
    images = [im for p in pairs for im in p.images]
    texts = [prefix + s for p in pairs for s in p.statements]
    with torch.no_grad():
        I = torch.cat(
            [
                encoder.encode_images(images[i : i + batch_size])
                for i in range(0, len(images), batch_size)
            ]
        )
        T = torch.cat(
            [
                encoder.encode_texts(texts[i : i + batch_size])
                for i in range(0, len(texts), batch_size)
            ]
        )
        scale = float(encoder.logit_scale.exp()) if hasattr(encoder, "logit_scale") else 100.0
    n = len(pairs)
    return mmvp_logits_from_embeddings(
        to_numpy(I).reshape(n, 2, -1), to_numpy(T).reshape(n, 2, -1), scale
    )


def _check_pairs(pairs: Any) -> list[Any]:
    if pairs is None or isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__len__"):
        raise TypeError(f"pairs must be a sequence of MMVP pairs, got {pairs!r}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty; no pairs to score")
    for i, p in enumerate(pairs):
        if not (hasattr(p, "images") and hasattr(p, "statements") and hasattr(p, "category")):
            raise TypeError(f"pairs[{i}] is not an MMVP pair (category, images, statements)")
        if len(p.images) != 2 or len(p.statements) != 2:
            raise ValueError(f"pairs[{i}] must hold exactly 2 images and 2 statements")
    return pairs


def score_mmvp(encoder: Any, pairs: Sequence[PairLike], **kw: Any) -> MMVPResult:
    """MMVP-VLM scores of ``encoder`` on ``pairs`` (synthetic ``mmvp_pairs`` or a real benchmark)."""
    pairs = _check_pairs(pairs)
    return mmvp_scores(mmvp_logits(encoder, pairs, **kw), [p.category for p in pairs])


def mmvp_pairs_from_dataset(dataset: Any) -> list[MMVPPair]:
    """The pairs of a real MMVP-VLM dataset (``load_dataset("mmvp-vlm", root=...)``).

    Uses the dataset's own ``pairs()`` when it has one, else groups consecutive items (``2p``:
    odd qid, true of img1; ``2p + 1``: even qid) with ``captions[0]`` as the statement and the
    category from ``attributes["category"]`` or the ``pair_index // 15`` rule.

    Footgun: :func:`mmvp_logits` prepends ``"a photo of "`` itself, so load the dataset with
    ``statement_prefix=""`` or score with ``prefix=""`` — never both prefixes.
    """
    if hasattr(dataset, "pairs"):
        return list(dataset.pairs())
    if dataset is None or isinstance(dataset, (str, bytes)) or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"dataset must be an MMVP-VLM dataset (a sequence of items), got {dataset!r}"
        )
    n = len(dataset)
    if n == 0 or n % 2:
        raise ValueError(
            f"dataset must have an even, non-zero number of rows (an MMVP-VLM dataset); got {n}"
        )
    by_index = mmvp_categories_by_index(n // 2) if n // 2 <= 135 else None
    pairs = []
    for p in range(n // 2):
        a, b = dataset[2 * p], dataset[2 * p + 1]
        cat = a.attributes.get("category") or (by_index[p] if by_index else "unknown")
        pairs.append(
            MMVPPair(
                category=str(cat),
                images=(a.image, b.image),
                statements=(a.captions[0], b.captions[0]),
                attributes=(dict(a.attributes), dict(b.attributes)),
            )
        )
    return pairs
