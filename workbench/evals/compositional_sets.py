"""Held-out compositional benchmarks that do not grade a fine-tuning run's own negative rules.

A model fine-tuned on rule-made hard negatives (DeGLA, :mod:`workbench.data.negative_bank`)
would look good on a benchmark made by the same rules, so these sets come from a *different
generator configuration* (:class:`HeldOutConfig`):

* **SugarCrepe-style** (Hsieh et al. 2023; :func:`sugarcrepe_style`): one negative per item
  and sub-kind — ``replace-att``, ``replace-obj``, ``swap-att``, ``swap-obj``, ``add-att``,
  ``add-obj`` — a binary test (the true caption must score higher);
* **ARO-style word order** (Yuksekgonul et al. 2023, COCO/Flickr-order;
  :func:`aro_order`): four word-order perturbations per caption, the true caption must rank
  first of five.

What differs from the training generator (``NegativeConfig`` defaults): another seed (1 vs 0);
replacements only from the *held-out half* of the vocabulary (``vocabulary="eval"``: no
replacement word of the training negatives ever appears as one here); held-out captions (the
caller passes a test split / rows never trained on); the ``add`` kinds, which training never
makes; and ARO's two perturbations the training ``reorder`` never uses (shuffle within trigrams,
shuffle all but nouns and adjectives). The swap kinds follow the same structural rule as
training's swaps (synthetic-world: shape colour ↔ dot colour, shapes ↔ dots), on other images.

:class:`CompositionalBenchmark` holds one set with its tower features, so a trained pair of
heads is scored without running a tower (``benchmark.score(heads)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.probes.compositional import CompositionalResult, NegativeSet, compositional_scores

__all__ = [
    "ARO_ORDER_KINDS",
    "SUGARCREPE_KINDS",
    "CompositionalBenchmark",
    "HeldOutConfig",
    "aro_order",
    "sugarcrepe_style",
]

SUGARCREPE_KINDS: tuple[str, ...] = (
    "replace-att",
    "replace-obj",
    "swap-att",
    "swap-obj",
    "add-att",
    "add-obj",
)
#: ARO's word-order perturbations that DeGLA's training ``reorder`` rule never produces.
ARO_ORDER_KINDS: tuple[str, ...] = ("within_trigrams", "all_but_nouns_adj")
_FROM_TRAINING_KIND = {
    "replace_attribute": "replace-att",
    "replace_noun": "replace-obj",
    "swap_attributes": "swap-att",
    "swap_nouns": "swap-obj",
}


@dataclass(frozen=True)
class HeldOutConfig:
    """The evaluation generator; each default differs from the training one on purpose.

    Attributes:
        seed: Generator seed (1: the training bank uses 0).
        vocabulary: Replacement words from this half of
            :func:`~workbench.data.negative_bank.vocabulary_half` (``"eval"``: training
            replaces only with ``"train"`` words); ``"all"`` lifts the split.
        order_kinds: ARO perturbations used for word order (default: the two training never makes).
        order_negatives: Perturbations per caption (4, as ARO's COCO/Flickr-order).
    """

    seed: int = 1
    vocabulary: str = "eval"
    order_kinds: tuple[str, ...] = ARO_ORDER_KINDS
    order_negatives: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.order_kinds, str):
            raise TypeError(
                f"HeldOutConfig: order_kinds must be a sequence, got {self.order_kinds!r}"
            )
        object.__setattr__(self, "order_kinds", tuple(self.order_kinds))
        if self.vocabulary not in ("all", "train", "eval"):
            raise ValueError(
                f"HeldOutConfig: vocabulary must be 'all', 'train' or 'eval', got {self.vocabulary!r}"
            )
        if not self.order_kinds:
            raise ValueError("HeldOutConfig: order_kinds must name at least one perturbation")
        if not (isinstance(self.order_negatives, int) and self.order_negatives >= 1):
            raise ValueError(
                f"HeldOutConfig: order_negatives must be an int ≥ 1, got {self.order_negatives!r}"
            )

    @property
    def allow(self) -> Any:
        from workbench.data.negative_bank import vocabulary_half

        if self.vocabulary == "all":
            return None
        half = self.vocabulary
        return lambda word: vocabulary_half(word) == half


def _rng(config: HeldOutConfig, caption: str, salt: int) -> np.random.Generator:
    h = int.from_bytes(hashlib.sha256(caption.encode()).digest()[:4], "little")
    return np.random.default_rng([config.seed, h, salt])


def _pick(options: Sequence[str], rng: np.random.Generator) -> str | None:
    return options[int(rng.integers(len(options)))] if options else None


def _synthetic_adds(attrs: Mapping[str, Any], config: HeldOutConfig, rng: np.random.Generator):
    """add-att: a colour on the (always black) glyph; add-obj: a second, absent kind of object."""
    from workbench.data import synthetic as sw

    allow = config.allow or (lambda w: True)
    parts = sw.caption_parts(attrs)
    kind = "digit" if str(attrs["text"]).isdigit() else "letter"
    colours = [c for c in sw.FACTORS["colour"] if allow(c)]
    shapes = [s for s in sw.FACTORS["shape"] if s != attrs["shape"] and allow(s)]
    out = {}
    colour = _pick(colours, rng)
    if colour is not None:
        out["add-att"] = sw.join_caption(
            {**parts, "text": f", and the {colour} {kind} {attrs['text']}"}
        )
    shape, colour = _pick(shapes, rng), _pick(colours, rng)
    if shape is not None and colour is not None:
        article = "an" if colour[0] in "aeiou" else "a"
        extra = f"{parts['position']}, next to {article} {colour} {shape}"
        out["add-obj"] = sw.join_caption({**parts, "position": extra})
    return out


def sugarcrepe_style(
    captions: Sequence[str],
    attributes: Sequence[Mapping[str, Any]] | None = None,
    *,
    positives: Sequence[Sequence[str]] | None = None,
    corpus: Sequence[str] | None = None,
    config: HeldOutConfig | None = None,
) -> NegativeSet:
    """SugarCrepe-style negatives: at most one per item and sub-kind (:data:`SUGARCREPE_KINDS`).

    Synthetic-world rows (their factor dict in ``attributes``) get exact factor edits from
    :func:`workbench.data.negatives.hard_negatives`; other captions get spaCy part-of-speech
    edits (:mod:`workbench.data.pos_negatives`) with replacements from ``corpus``' nouns and
    adjectives (default: ``captions``), both restricted to ``config.vocabulary``.

    Args:
        captions: (n) held-out captions (item ``i``'s true caption).
        attributes: Per-item attribute dicts (synthetic-world factors), or ``None``.
        positives: Per-item other true captions; a negative equal to one is dropped.
        corpus: Captions whose vocabulary real-caption replacements come from.
        config: The evaluation generator (default :class:`HeldOutConfig`).

    Returns:
        :class:`~workbench.probes.compositional.NegativeSet` with ``kinds`` from
        :data:`SUGARCREPE_KINDS`.
    """
    from workbench.data.negatives import hard_negatives, is_synthetic_caption

    config = config or HeldOutConfig()
    captions = list(captions)
    n = len(captions)
    attributes = [dict(a or {}) for a in attributes] if attributes is not None else [{}] * n
    positives = [list(p) for p in positives] if positives is not None else [[] for _ in range(n)]
    if len(attributes) != n or len(positives) != n:
        raise ValueError(f"attributes/positives need one entry per caption ({n})")
    synthetic = [is_synthetic_caption(c, a) for c, a in zip(captions, attributes)]
    real = [i for i in range(n) if not synthetic[i]]
    parsed, vocab = {}, None
    if real:
        from workbench.data.pos_negatives import PosVocabulary, parse_captions

        docs = parse_captions([captions[i] for i in real])
        parsed = dict(zip(real, docs))
        vocab_docs = parse_captions(list(corpus)) if corpus is not None else docs
        vocab = PosVocabulary.from_parsed(vocab_docs).restrict(config.allow)
    owner, kinds, texts = [], [], []
    for i, cap in enumerate(captions):
        rng = _rng(config, cap, 0)
        if synthetic[i]:
            found = hard_negatives(
                cap, attributes[i], tuple(_FROM_TRAINING_KIND), seed=int(rng.integers(2**31)),
                max_per_kind=None, allow=config.allow,
            )  # fmt: skip
            by_kind = {_FROM_TRAINING_KIND[k]: v for k, v in found.items()}
            by_kind.update({k: [v] for k, v in _synthetic_adds(attributes[i], config, rng).items()})
        else:
            from workbench.data.pos_negatives import add_negatives, pos_negatives

            found = pos_negatives(parsed[i], vocab, tuple(_FROM_TRAINING_KIND), rng)
            by_kind = {_FROM_TRAINING_KIND[k]: v for k, v in found.items()}
            adds = add_negatives(parsed[i], vocab, rng)
            by_kind.update({"add-att": adds["add_attribute"], "add-obj": adds["add_object"]})
        banned = {s.casefold() for s in (cap, *positives[i])}
        for kind in SUGARCREPE_KINDS:
            pick = _pick([c for c in by_kind.get(kind, []) if c.casefold() not in banned], rng)
            if pick is not None:
                owner.append(i)
                kinds.append(kind)
                texts.append(pick)
    return NegativeSet(np.asarray(owner, dtype=np.int64), kinds, texts)


def aro_order(
    captions: Sequence[str],
    *,
    positives: Sequence[Sequence[str]] | None = None,
    config: HeldOutConfig | None = None,
) -> NegativeSet:
    """ARO-style word-order negatives: ``config.order_negatives`` perturbations per caption,
    spread evenly over ``config.order_kinds`` (all of kind ``"order"``, so an item counts as
    right only when its caption beats all of them, as ARO's COCO/Flickr-order)."""
    from workbench.data.pos_negatives import order_perturbations, parse_captions

    config = config or HeldOutConfig()
    captions = list(captions)
    positives = [list(p) for p in positives] if positives is not None else [[] for _ in captions]
    if len(positives) != len(captions):
        raise ValueError(f"positives need one entry per caption ({len(captions)})")
    per = -(-config.order_negatives // len(config.order_kinds))  # ceil
    owner, texts = [], []
    for i, (cap, parsed) in enumerate(zip(captions, parse_captions(captions))):
        rng = _rng(config, cap, 1)
        found = order_perturbations(parsed, rng, config.order_kinds, per_kind=per)
        banned = {s.casefold() for s in (cap, *positives[i])}
        pool = list(dict.fromkeys(c for k in config.order_kinds for c in found[k]))
        pool = [c for c in pool if c.casefold() not in banned][: config.order_negatives]
        owner += [i] * len(pool)
        texts += pool
    return NegativeSet(np.asarray(owner, dtype=np.int64), ["order"] * len(texts), texts)


@dataclass
class CompositionalBenchmark:
    """One held-out set with the tower features needed to score heads without a tower pass.

    Attributes:
        name: Label, e.g. ``"sugarcrepe/synthetic-world"``.
        image_tower: (n, D_img) image-tower features of the items.
        caption_tower: (n, D_txt) text-tower features of their true captions.
        negative_tower: (m, D_txt) text-tower features of ``negatives.texts``.
        negatives: Which item and kind each negative belongs to.
    """

    name: str
    image_tower: np.ndarray
    caption_tower: np.ndarray
    negative_tower: np.ndarray
    negatives: NegativeSet
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, m = len(self.image_tower), len(self.negatives)
        if len(self.caption_tower) != n:
            raise ValueError(f"{self.name}: {len(self.caption_tower)} caption rows for {n} images")
        if len(self.negative_tower) != m:
            raise ValueError(
                f"{self.name}: {len(self.negative_tower)} negative rows for {m} negatives"
            )
        if m == 0:
            raise ValueError(f"{self.name}: the generator produced no negatives for these captions")

    @classmethod
    def build(
        cls, name: str, encoder: Any, emb: Any, negatives: NegativeSet, text_cache: Any = None
    ) -> CompositionalBenchmark:
        """From :class:`~workbench.encoders.embeddings.Embeddings` with tower features (the
        items) and their negatives; negatives' tower features via ``text_cache``
        (:class:`~workbench.encoders.text_cache.TextTowerCache`, one is made if ``None``)."""
        from workbench.encoders.text_cache import TextTowerCache

        if emb.image_tower is None or emb.text_tower is None:
            raise ValueError(f"{name}: embed the items with tower_features=True")
        cache = text_cache or TextTowerCache(encoder)
        neg = cache(negatives.texts).numpy() if len(negatives) else np.zeros((0, 1), np.float32)
        return cls(name, np.asarray(emb.image_tower), np.asarray(emb.text_tower), neg, negatives)

    @property
    def n_items(self) -> int:
        return len(self.image_tower)

    def score(self, heads: Any, rows: Sequence[int] | None = None) -> CompositionalResult:
        """Per-kind accuracy of ``heads`` (:class:`~workbench.encoders.heads.Heads` or an
        encoder) on the items ``rows`` (default all)."""
        from workbench.encoders.heads import as_heads

        h = as_heads(heads)
        keep = np.arange(self.n_items) if rows is None else np.asarray(rows, dtype=np.int64)
        remap = np.full(self.n_items, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        sel = np.flatnonzero(remap[self.negatives.owner] >= 0)
        if sel.size == 0:
            raise ValueError(f"{self.name}: none of the chosen rows has a negative")
        negs = NegativeSet(
            remap[self.negatives.owner[sel]],
            [self.negatives.kinds[j] for j in sel],
            [self.negatives.texts[j] for j in sel],
        )
        return compositional_scores(
            h.project("image", self.image_tower[keep]),
            h.project("text", self.caption_tower[keep]),
            h.project("text", self.negative_tower[sel]),
            negs,
        )
