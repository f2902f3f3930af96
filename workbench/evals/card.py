"""The held-out measurements a model card of the embedded default reports, each beside its chance.

:func:`heldout_card_metrics` runs an encoder over data that its pretraining never trained on —
openclipart's and emoji's id-hash ``test`` splits, Fashion-MNIST's official test split, all of
digits and skimage's photos (kept out of training entirely: true zero-shot), Tux Paint's held-out
photographs, synthetic-world's independent test stream — and scores it with the workbench's own
probes. Every number comes with its chance level, so a reader can tell signal from luck.

Retrieval is reported two ways: ``strict`` (caption *i* belongs to image *i* only) and ``keyed``
(identical captions, compared case- and space-insensitively, count as hits: a gallery where 300
drawings are titled "a frog" cannot tell its owners apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["PHOTO_TEMPLATES", "CardEvalConfig", "heldout_card_metrics", "normalise_caption"]

#: Templates for zero-shot over photo names ("a frog", "an Indian blackbuck").
PHOTO_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "{}.",
    "a picture of {}.",
    "a close-up photo of {}.",
    "an image of {}.",
    "a cut-out photo of {}.",
)


@dataclass
class CardEvalConfig:
    """Sizes of the held-out sets (``None`` = the whole split); every field is validated.

    Attributes:
        fashion_test: Fashion-MNIST test items (10,000 in the split; a seeded subset when fewer).
        digits: digits items (1,797; never trained on).
        synthetic_test: synthetic-world test-stream items for the compositional score.
        mmvp_pairs_per_category: synthetic MMVP-style pairs per category (9 categories).
        batch_size: encoder batch size.
        seed: seeds subsets, MMVP pairs and hard negatives.
    """

    fashion_test: int | None = None
    digits: int | None = None
    synthetic_test: int = 500
    mmvp_pairs_per_category: int = 20
    batch_size: int = 64
    seed: int = 0
    datasets: tuple[str, ...] = field(
        default=(
            "openclipart",
            "emoji",
            "fashion-mnist",
            "digits",
            "tuxpaint-stamps",
            "skimage-photos",
            "synthetic-world",
        )
    )

    def __post_init__(self) -> None:
        if isinstance(self.datasets, str):
            raise TypeError("datasets must be a sequence of names, not one string")
        self.datasets = tuple(self.datasets)
        unknown = sorted(
            set(self.datasets) - set(CardEvalConfig.__dataclass_fields__["datasets"].default)
        )
        if unknown:
            raise ValueError(f"datasets: no held-out evaluation for {unknown}")
        for name in ("fashion_test", "digits"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 10):
                raise ValueError(f"{name} must be an int ≥ 10 or None, got {v!r}")
        if self.synthetic_test < 10 or self.mmvp_pairs_per_category < 1 or self.batch_size < 1:
            raise ValueError("synthetic_test ≥ 10, mmvp_pairs_per_category ≥ 1, batch_size ≥ 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise_caption(text: str) -> str:
    """Case- and whitespace-insensitive key of a caption (what ``keyed`` retrieval compares)."""
    return " ".join(str(text).casefold().split())


def _retrieval(emb: Any) -> dict[str, float]:
    from workbench.probes.retrieval import retrieval_scores, similarity

    sim = similarity(emb.image, emb.text)
    keys = [normalise_caption(c) for c in emb.captions]
    out: dict[str, float] = {"gallery": len(keys), "distinct_captions": len(set(keys))}
    out["chance_R@1"] = 1.0 / len(keys)
    for tag, kw in (("strict", {}), ("keyed", {"text_keys": keys})):
        for k, v in retrieval_scores(sim, **kw).items():
            if k != "rsum":
                out[f"{tag}/{k}"] = float(v)
    return out


def _zero_shot(
    encoder: Any, emb: Any, class_names: Sequence[str], templates: Sequence[str]
) -> dict:
    from workbench.probes.separability import zero_shot_accuracy, zero_shot_classifier

    keep = np.flatnonzero(np.asarray(emb.labels) >= 0)
    prompts = zero_shot_classifier(encoder, list(class_names), templates)
    acc = zero_shot_accuracy(emb.image[keep], prompts, emb.labels[keep])
    return {
        "top1": float(acc),
        "n": int(keep.size),
        "classes": len(class_names),
        "chance": 1.0 / len(class_names),
    }


def _photo_names(emb: Any) -> tuple[list[str], np.ndarray]:
    """Each Tux Paint photo's class is its description's first sentence ("a frog")."""
    names = [c[0].lower() + c[1:] if c else c for c in emb.captions]
    classes = sorted(set(names))
    return classes, np.asarray([classes.index(n) for n in names], dtype=np.int64)


def _geometry(emb: Any) -> dict[str, float]:
    from workbench.probes.gap import modality_gap
    from workbench.probes.ranks import effective_rank

    gap = modality_gap(emb.image, emb.text, with_spectra=False)
    return {
        "centroid_gap": float(gap.gap_norm),
        "cone_width_image": float(gap.cone_width_image),
        "cone_width_text": float(gap.cone_width_text),
        "effective_rank_image": float(effective_rank(emb.image_normed)),
        "effective_rank_text": float(effective_rank(emb.text_normed)),
    }


def heldout_card_metrics(encoder: Any, config: CardEvalConfig | None = None) -> dict[str, Any]:
    """Every held-out number of the default's model card (see the module docstring).

    Returns ``{dataset: {metric: value}}`` with chance levels beside the scores, plus
    ``"geometry"`` (centroid gap ‖Δ‖, mean intra-modality cosines, effective ranks per modality on
    held-out openclipart).
    """
    import workbench as wb
    from workbench.probes.separability import PROMPT_TEMPLATES

    cfg = config or CardEvalConfig()
    out: dict[str, Any] = {}
    bs = cfg.batch_size

    def emb(ds: Any, size: int | None = None) -> Any:
        n = None if size is None else min(size, len(ds))
        return wb.embed(encoder, ds, size=n, seed=cfg.seed, batch_size=bs, progress=False)

    if "openclipart" in cfg.datasets:
        oc = emb(wb.load_dataset("openclipart", split="test"))
        out["openclipart"] = _retrieval(oc)
        out["geometry"] = _geometry(oc)
    if "emoji" in cfg.datasets:
        out["emoji"] = _retrieval(emb(wb.load_dataset("emoji", split="test")))
    if "fashion-mnist" in cfg.datasets:
        ds = wb.load_dataset("fashion-mnist", split="test")
        out["fashion-mnist"] = _zero_shot(
            encoder, emb(ds, cfg.fashion_test), ds.class_names, PROMPT_TEMPLATES
        )
    if "digits" in cfg.datasets:
        ds = wb.load_dataset("digits")
        out["digits"] = _zero_shot(encoder, emb(ds, cfg.digits), ds.class_names, PROMPT_TEMPLATES)
    if "tuxpaint-stamps" in cfg.datasets:
        photos = emb(wb.load_dataset("tuxpaint-stamps", split="test", photos_only=True))
        classes, labels = _photo_names(photos)
        photos.labels = labels
        out["tuxpaint-photos"] = _zero_shot(encoder, photos, classes, PHOTO_TEMPLATES)
    if "skimage-photos" in cfg.datasets:
        ds = wb.load_dataset("skimage-photos")
        out["skimage-photos"] = _zero_shot(encoder, emb(ds), ds.class_names, PROMPT_TEMPLATES)
    if "synthetic-world" in cfg.datasets:
        out["synthetic-mmvp"] = _mmvp(encoder, cfg)
        out["synthetic-compositional"] = _compositional(encoder, cfg)
    return out


def _mmvp(encoder: Any, cfg: CardEvalConfig) -> dict[str, float]:
    from workbench.data.synthetic import mmvp_pairs
    from workbench.probes.perception import score_mmvp

    pairs = mmvp_pairs(cfg.mmvp_pairs_per_category, seed=cfg.seed)
    res = score_mmvp(encoder, pairs, batch_size=cfg.batch_size)
    return {"pair_accuracy": float(res.mean), "pairs": len(pairs), "chance": 0.25}


def _compositional(encoder: Any, cfg: CardEvalConfig) -> dict[str, float]:
    import workbench as wb
    from workbench.probes.compositional import build_negatives, compositional_scores

    ds = wb.load_dataset("synthetic-world", split="test", size=cfg.synthetic_test, seed=cfg.seed)
    e = wb.embed(encoder, ds, batch_size=cfg.batch_size, progress=False)
    negs = build_negatives(e.captions, e.attributes, seed=cfg.seed, max_per_kind=1)
    neg = np.concatenate(
        [
            encoder.encode_texts(negs.texts[i : i + cfg.batch_size], normalize=False)
            .detach()
            .cpu()
            .numpy()
            for i in range(0, len(negs), cfg.batch_size)
        ]
    )
    res = compositional_scores(e.image, e.text, neg, negs)
    per_image = np.bincount(np.asarray(negs.owner), minlength=len(e)).mean()
    return {
        "accuracy": float(res.mean),
        "negatives": len(negs),
        "chance": float(1 / (1 + per_image)),
    }
