"""One call that scores an encoder (or a run's checkpoint) on the D/P suite → a tidy table.

``score_encoder("default", suite=SuiteConfig(...))`` returns a ``pandas.DataFrame`` with one row
per measurement: ``encoder, dataset, metric, value, seed``. Metrics:

- D-ability on each labelled dataset (image embeddings after the head, L2-normalised):
  ``s_inner``, ``s_inter``, ``fisher``, ``knn_acc``, ``linear_probe_acc``, ``kmeans_nmi``,
  ``kmeans_acc``, ``kmeans_ari`` (means over ``kmeans_restarts`` k-means seeds),
  ``zero_shot_acc`` (prompt-ensembled class names);
- retrieval on datasets with (mostly) distinct captions: ``i2t_R@K``, ``t2i_R@K``, ``rsum``;
- compositional on synthetic-world captions: ``comp/<kind>`` and ``comp_mean``;
- P-ability: MMVP-VLM scoring on synthetic-world pairs (dataset ``"synthetic-mmvp"``) and on a
  real MMVP-VLM directory when ``mmvp_vlm_root`` is set (dataset ``"mmvp-vlm"``):
  ``mmvp/<category>`` and ``mmvp_mean``.

Concatenate tables of several encoders and pass them to :func:`workbench.viz.dp.dp_points`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workbench._validate import (
    as_bool,
    as_float,
    as_int,
    as_int_tuple,
    as_labels,
    as_matrix,
    as_names,
)
from workbench.probes.separability import (
    PROMPT_TEMPLATES,
    class_scatter,
    clustering_scores,
    knn_accuracy,
    linear_probe,
    zero_shot_accuracy,
)

__all__ = [
    "SuiteConfig",
    "d_ability",
    "embed_with",
    "score_embeddings",
    "score_encoder",
]

SYNTHETIC_MMVP = "synthetic-mmvp"
REAL_MMVP = "mmvp-vlm"


@dataclass
class SuiteConfig:
    """What :func:`score_encoder` measures; every field is validated.

    Attributes:
        datasets: Labelled datasets for D-ability (and retrieval / compositional where their
            captions allow). Registry names of :func:`workbench.load_dataset`.
        n_samples: Items embedded per dataset and seed (a seeded subset; 500 keeps a CPU run
            to seconds per dataset with the default encoder).
        seeds: One full pass per seed (data subset, probe split, k-means seeds, MMVP pairs,
            negatives all derive from it), so the table shows the spread.
        knn_k: Neighbours of the leave-one-out k-NN classifier.
        kmeans_restarts: k-means seeds per pass; the reported NMI/ACC/ARI are their means.
        probe_test_fraction: Held-out fraction of the linear probe's stratified split.
        templates: Prompt templates (``{}`` = class name) ensembled for zero-shot.
        mmvp_pairs_per_category: Synthetic-world MMVP pairs per category (9 categories); 0 skips.
        mmvp_vlm_root: Directory of the real MMVP-VLM benchmark (``load_dataset("mmvp-vlm",
            root=...)``); ``None`` skips it.
        retrieval: Score R@1/5/10 and rSum on datasets whose captions are ≥ 90 % distinct.
        compositional: Score hard-negative caption accuracy on ``"synthetic-world"`` rows (when
            listed in ``datasets``).
        compositional_samples: Rows (of the ``n_samples``) scored against hard negatives; one
            negative per kind each (SugarCrepe style), so the text tower runs ≤ 5× this often.
        negative_kinds: Negative types for the compositional score (``None`` = generator default).
        dataset_kwargs: Per-dataset keyword arguments for ``load_dataset`` (e.g.
            ``{"synthetic-world": {"split": "test"}}`` to score on items a head fit never saw).
        batch_size: Encoder batch size.
    """

    datasets: tuple[str, ...] = ("digits", "synthetic-world")
    n_samples: int = 500
    seeds: tuple[int, ...] = (0,)
    knn_k: int = 10
    kmeans_restarts: int = 3
    probe_test_fraction: float = 0.3
    templates: tuple[str, ...] = PROMPT_TEMPLATES
    mmvp_pairs_per_category: int = 10
    mmvp_vlm_root: str | None = None
    retrieval: bool = True
    compositional: bool = True
    compositional_samples: int = 100
    negative_kinds: tuple[str, ...] | None = None
    dataset_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 64

    def __post_init__(self) -> None:
        from workbench.data import dataset_names

        own = "SuiteConfig"
        self.datasets = dataset_names(self.datasets, "datasets", owner=own)
        if not isinstance(self.dataset_kwargs, dict) or not all(
            isinstance(v, dict) for v in self.dataset_kwargs.values()
        ):
            raise TypeError(f"{own}: dataset_kwargs must map dataset names to dicts of arguments")
        stray = set(self.dataset_kwargs) - set(self.datasets)
        if stray:
            raise ValueError(
                f"{own}: dataset_kwargs names datasets not in datasets: {sorted(stray)}"
            )
        self.seeds = as_int_tuple(self.seeds, "seeds", owner=own, lo=0, unique=True)
        self.templates = as_names(self.templates, "templates", owner=own)
        self.negative_kinds = as_names(
            self.negative_kinds, "negative_kinds", owner=own, none_ok=True
        )
        self.n_samples = as_int(self.n_samples, f"{own}: n_samples", lo=10)
        self.knn_k = as_int(self.knn_k, f"{own}: knn_k", lo=1)
        self.kmeans_restarts = as_int(self.kmeans_restarts, f"{own}: kmeans_restarts", lo=1)
        self.probe_test_fraction = as_float(
            self.probe_test_fraction,
            f"{own}: probe_test_fraction",
            lo=0.0,
            hi=1.0,
            lo_open=True,
            hi_open=True,
        )
        if any("{}" not in t for t in self.templates):
            raise ValueError(f"{own}: templates must be format strings each containing '{{}}'")
        self.mmvp_pairs_per_category = as_int(
            self.mmvp_pairs_per_category, f"{own}: mmvp_pairs_per_category (0 skips)", lo=0
        )
        if self.mmvp_vlm_root is not None and not isinstance(self.mmvp_vlm_root, str):
            raise TypeError(f"{own}: mmvp_vlm_root must be a path (str) or None")
        self.retrieval = as_bool(self.retrieval, f"{own}: retrieval")
        self.compositional = as_bool(self.compositional, f"{own}: compositional")
        self.batch_size = as_int(self.batch_size, f"{own}: batch_size", lo=1)
        self.compositional_samples = as_int(
            self.compositional_samples, f"{own}: compositional_samples", lo=1
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def d_ability(
    image: Any,
    labels: Any,
    *,
    seed: int = 0,
    knn_k: int = 10,
    kmeans_restarts: int = 3,
    probe_test_fraction: float = 0.3,
    class_text: Any = None,
) -> dict[str, float]:
    """Every D-ability number for image embeddings ``image`` (n, D; raw) with class ``labels``.

    Returns ``s_inner``, ``s_inter``, ``fisher`` (L2-normalised rows), ``knn_acc``,
    ``linear_probe_acc`` (split seeded by ``seed``), ``kmeans_nmi/acc/ari`` (means over
    k-means seeds ``1000*seed + r``), and ``zero_shot_acc`` when ``class_text`` (K, [T,] D) is given.

    Raises:
        ValueError: bad ``image`` / ``labels`` (named as such), and the probes' own checks.
    """
    image = as_matrix(image, "image")
    labels = as_labels(labels, "labels", n=image.shape[0], rows_of="image", negative=False)
    seed = as_int(seed, "seed", lo=0)
    knn_k = as_int(knn_k, "knn_k", lo=1)
    kmeans_restarts = as_int(kmeans_restarts, "kmeans_restarts", lo=1)
    sc = class_scatter(image, labels)
    km = clustering_scores(
        image, labels, seeds=[1000 * seed + r for r in range(kmeans_restarts)], n_init=1
    )
    out = {
        "s_inner": sc.s_inner,
        "s_inter": sc.s_inter,
        "fisher": sc.fisher,
        "knn_acc": knn_accuracy(image, labels, k=min(knn_k, len(labels) - 1)),
        "linear_probe_acc": linear_probe(
            image, labels, test_fraction=probe_test_fraction, seed=seed
        ).accuracy,
        "kmeans_nmi": float(np.mean([s.nmi for s in km])),
        "kmeans_acc": float(np.mean([s.acc for s in km])),
        "kmeans_ari": float(np.mean([s.ari for s in km])),
    }
    if class_text is not None:
        out["zero_shot_acc"] = zero_shot_accuracy(image, class_text, labels)
    return out


def _captions_distinct(captions: Sequence[str], threshold: float = 0.9) -> bool:
    return len(captions) > 1 and len(set(captions)) >= threshold * len(captions)


def score_embeddings(
    emb: Any, *, encoder: Any = None, suite: SuiteConfig | None = None, seed: int = 0
) -> dict[str, float]:
    """D-ability (+ zero-shot when ``encoder`` is given) and retrieval for one :class:`Embeddings`.

    Unlabelled rows (label -1) are dropped for the D metrics; retrieval uses every row when the
    captions are ≥ 90 % distinct.
    """
    from workbench.probes.retrieval import retrieval_scores, similarity
    from workbench.probes.separability import zero_shot_classifier

    cfg = suite or SuiteConfig()
    out: dict[str, float] = {}
    keep = np.flatnonzero(emb.labels >= 0)
    if keep.size and np.unique(emb.labels[keep]).size >= 2:
        class_text = None
        if encoder is not None and emb.class_names:
            class_text = zero_shot_classifier(encoder, emb.class_names, cfg.templates)
        out.update(
            d_ability(
                emb.image[keep],
                emb.labels[keep],
                seed=seed,
                knn_k=cfg.knn_k,
                kmeans_restarts=cfg.kmeans_restarts,
                probe_test_fraction=cfg.probe_test_fraction,
                class_text=class_text,
            )
        )
    if cfg.retrieval and _captions_distinct(emb.captions):
        out.update(retrieval_scores(similarity(emb.image, emb.text)))
    return out


def _rows(encoder: str, dataset: str, seed: int, values: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {"encoder": encoder, "dataset": dataset, "metric": m, "value": float(v), "seed": seed}
        for m, v in values.items()
    ]


def score_encoder(
    encoder: Any,
    suite: SuiteConfig | None = None,
    *,
    label: str | None = None,
    tower_source: Any = None,
) -> Any:
    """Score ``encoder`` on the configured D/P suite; return a tidy DataFrame.

    Args:
        encoder: an :class:`~workbench.encoders.base.Encoder`, a registry name (``"default"``,
            ``"open_clip:..."``), ``"run:<dir>"`` or a run directory path (its latest checkpoint).
        suite: what to measure (:class:`SuiteConfig`; defaults if ``None``).
        label: value of the ``encoder`` column (default: the name it was loaded by).
        tower_source: an encoder with the *same towers* (checked by weight hash) whose cached
            tower features are reused: only ``encoder``'s heads run on them. Use it for
            head-only fits (the towers need not run again).

    Returns:
        DataFrame with columns ``encoder, dataset, metric, value, seed`` (see module docstring).
        Datasets that cannot be loaded raise — list only datasets that exist on this machine.
    """
    import pandas as pd
    import torch

    from workbench.data import load_dataset

    cfg = suite or SuiteConfig()
    from workbench.encoders.registry import resolve_encoder

    enc, name = resolve_encoder(encoder)
    name = label or name
    if tower_source is not None:
        from workbench.encoders.heads import tower_fingerprint

        if tower_fingerprint(tower_source) != tower_fingerprint(enc):
            raise ValueError("tower_source's towers differ from encoder's; drop tower_source")
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for seed in cfg.seeds:
            for ds_name in cfg.datasets:
                ds = load_dataset(ds_name, **cfg.dataset_kwargs.get(ds_name, {}))
                emb = embed_with(enc, ds, size=cfg.n_samples, seed=seed, tower_source=tower_source)
                rows += _rows(
                    name, ds_name, seed, score_embeddings(emb, encoder=enc, suite=cfg, seed=seed)
                )
                if cfg.compositional and ds_name == "synthetic-world":
                    rows += _rows(name, ds_name, seed, _compositional(enc, ds, emb, cfg, seed))
            if cfg.mmvp_pairs_per_category:
                rows += _rows(name, SYNTHETIC_MMVP, seed, _synthetic_mmvp(enc, cfg, seed))
            if cfg.mmvp_vlm_root is not None:
                rows += _rows(name, REAL_MMVP, seed, _real_mmvp(enc, cfg))
    return pd.DataFrame(rows, columns=["encoder", "dataset", "metric", "value", "seed"])


def embed_with(
    encoder: Any, dataset: Any, *, size: int | None, seed: int, tower_source: Any = None
) -> Any:
    """:func:`workbench.embed` of ``dataset``, reusing ``tower_source``'s cached tower features.

    With ``tower_source`` (an encoder with the same towers), only ``encoder``'s heads run: the
    result's ``image``/``text`` are ``encoder.image_head(image_tower)`` etc.
    """
    from workbench.encoders.embed import embed

    if tower_source is None:  # tower features too: the same cache entry serves head-only fits
        return embed(encoder, dataset, size=_cap(size, dataset), seed=seed, tower_features=True)
    from workbench.encoders.heads import apply_heads

    base = embed(tower_source, dataset, size=_cap(size, dataset), seed=seed, tower_features=True)
    return apply_heads(encoder, base)


def _cap(size: int | None, dataset: Any) -> int | None:
    """``size`` as a cap: a data set smaller than it is scored whole (``embed`` refuses more)."""
    return None if size is None else min(size, len(dataset))


def _mmvp_values(result: Any) -> dict[str, float]:
    out = {f"mmvp/{c}": v for c, v in result.per_category.items()}
    out["mmvp_mean"] = result.mean
    return out


def _synthetic_mmvp(enc: Any, cfg: SuiteConfig, seed: int) -> dict[str, float]:
    from workbench.data.synthetic import mmvp_pairs
    from workbench.probes.perception import score_mmvp

    pairs = mmvp_pairs(cfg.mmvp_pairs_per_category, seed=seed)
    return _mmvp_values(score_mmvp(enc, pairs, batch_size=cfg.batch_size))


def _real_mmvp(enc: Any, cfg: SuiteConfig) -> dict[str, float]:
    from workbench.data import load_dataset
    from workbench.probes.perception import mmvp_pairs_from_dataset, score_mmvp

    # statement_prefix="": score_mmvp adds the protocol's "a photo of " itself
    ds = load_dataset(REAL_MMVP, root=cfg.mmvp_vlm_root, statement_prefix="")
    pairs = mmvp_pairs_from_dataset(ds)
    return _mmvp_values(score_mmvp(enc, pairs, batch_size=cfg.batch_size))


def _compositional(enc: Any, ds: Any, emb: Any, cfg: SuiteConfig, seed: int) -> dict[str, float]:
    from workbench.probes.compositional import build_negatives, compositional_scores

    emb = emb.subset(np.arange(min(cfg.compositional_samples, len(emb))))
    negatives = build_negatives(
        emb.captions, emb.attributes or None, kinds=cfg.negative_kinds, seed=seed, max_per_kind=1
    )
    if len(negatives) == 0:
        return {}
    neg = np.concatenate(
        [
            enc.encode_texts(negatives.texts[i : i + cfg.batch_size], normalize=False).cpu().numpy()
            for i in range(0, len(negatives), cfg.batch_size)
        ]
    )
    res = compositional_scores(emb.image, emb.text, neg, negatives)
    out = {f"comp/{k}": v for k, v in res.per_kind.items()}
    out["comp_mean"] = res.mean
    return out
