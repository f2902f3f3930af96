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
from pathlib import Path
from typing import Any

import numpy as np

from workbench.probes.separability import (
    PROMPT_TEMPLATES,
    class_scatter,
    clustering_scores,
    knn_accuracy,
    linear_probe,
    zero_shot_accuracy,
)

__all__ = [
    "RANDOM_INIT",
    "TRAINED_HEADS",
    "DPStudyConfig",
    "SuiteConfig",
    "d_ability",
    "embed_with",
    "fit_infonce_heads",
    "resolve_encoder",
    "score_embeddings",
    "score_encoder",
    "score_study",
    "study_encoders",
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
        self.datasets = tuple(self.datasets)
        stray = set(self.dataset_kwargs) - set(self.datasets)
        if stray:
            raise ValueError(f"dataset_kwargs names datasets not in datasets: {sorted(stray)}")
        self.seeds = tuple(int(s) for s in self.seeds)
        self.templates = tuple(self.templates)
        if self.negative_kinds is not None:
            self.negative_kinds = tuple(self.negative_kinds)
        if self.n_samples < 10:
            raise ValueError(f"n_samples must be ≥ 10, got {self.n_samples}")
        if not self.seeds:
            raise ValueError("seeds is empty; pass at least one seed")
        if self.knn_k < 1:
            raise ValueError(f"knn_k must be ≥ 1, got {self.knn_k}")
        if self.kmeans_restarts < 1:
            raise ValueError(f"kmeans_restarts must be ≥ 1, got {self.kmeans_restarts}")
        if not 0.0 < self.probe_test_fraction < 1.0:
            raise ValueError(
                f"probe_test_fraction must be in (0, 1), got {self.probe_test_fraction}"
            )
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("templates must be non-empty format strings each containing '{}'")
        if self.mmvp_pairs_per_category < 0:
            raise ValueError("mmvp_pairs_per_category must be ≥ 0 (0 skips synthetic MMVP)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.compositional_samples < 1:
            raise ValueError(f"compositional_samples must be ≥ 1, got {self.compositional_samples}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_encoder(encoder: Any) -> tuple[Any, str]:
    """``(Encoder, label)`` from an Encoder, a registry name, ``"run:<dir>"`` or a run directory."""
    if isinstance(encoder, Path):
        encoder = str(encoder)
    if isinstance(encoder, str):
        from workbench.encoders import load_encoder

        path = Path(encoder)
        if not encoder.startswith("run:") and path.is_dir() and (path / "config.json").exists():
            return load_encoder(f"run:{encoder}"), f"run:{encoder}"
        return load_encoder(encoder), encoder
    if hasattr(encoder, "encode_images") and hasattr(encoder, "encode_texts"):
        return encoder, str(getattr(encoder, "name", type(encoder).__name__))
    raise TypeError(
        f"encoder must be an Encoder, a registry name or a run directory, got {type(encoder).__name__}"
    )


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
    """
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
    enc, name = resolve_encoder(encoder)
    name = label or name
    if tower_source is not None:
        from workbench.probes.tasks import _tower_fingerprint

        if _tower_fingerprint(tower_source) != _tower_fingerprint(enc):
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
        return embed(encoder, dataset, size=size, seed=seed, tower_features=True)
    base = embed(tower_source, dataset, size=size, seed=seed, tower_features=True)
    return _reproject(base, encoder)


def _reproject(emb: Any, enc: Any) -> Any:
    """``emb`` with ``image``/``text`` recomputed by ``enc``'s heads from its tower features."""
    from workbench.probes.tasks import _apply

    out = emb.subset(np.arange(len(emb)))
    out.image = _apply(enc.image_head, emb.image_tower)
    out.text = _apply(enc.text_head, emb.text_tower)
    out.provenance["heads_from"] = str(getattr(enc, "name", type(enc).__name__))
    return out


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


# -- the D/P study behind notebooks/dp_ability.ipynb ---------------------------------------------

TRAINED_HEADS = "default + InfoNCE heads"
RANDOM_INIT = "random-init"
_HAS_TEST_SPLIT = ("synthetic-world", "digits", "fashion-mnist")


@dataclass
class DPStudyConfig:
    """Parameters of ``notebooks/dp_ability.ipynb`` (its ``parameters`` cell repeats these defaults).

    Attributes:
        encoders: Extra encoders to place on the scatter: registry names, ``"run:<dir>"`` or run
            directories (checkpoints of fine-tuning runs). ``"default"`` = pretrained towers with
            their seeded, untrained heads. The trained-head default and a random-init default
            are always added.
        datasets: D-ability datasets (scored on their ``test`` split where they have one, so the
            head fit's synthetic-world ``train`` items are never scored).
        seeds: Scoring seeds (data subset, probe split, k-means, MMVP pairs); 3 give a spread
            estimate for the separation check.
        n_samples: Items per dataset and seed (300: seconds per dataset on a 2-core CPU).
        head_steps: InfoNCE steps of the head fit (frozen towers, cached features).
        head_train_samples: synthetic-world ``train`` pairs the heads are fitted on.
        head_batch_size: Batch of the head fit.
        mmvp_pairs_per_category: Synthetic MMVP pairs per category (9 categories).
        mmvp_vlm_root: A real MMVP-VLM folder to score as well (``None`` = skip).
        map_dataset: Dataset of the t-SNE/UMAP class maps (must be in ``datasets``).
        map_method: ``"tsne"`` or ``"umap"``.
        x_metric, y_metric: Scatter axes (D: k-means ACC, DCR Tab. 2's benchmark metric; P:
            MMVP-VLM average).
        extra_x_metrics: Further D metrics, each drawn as its own scatter against ``y_metric``
            (default: the Fisher ratio S_inter/S_inner, DCR's own definition of D-ability).
        output_dir: Where figures and ``summary.json`` go.
        run_root: Where the head-fit run directory goes.
        device: Training/embedding device (``"auto"``, ``"cpu"``, ``"cuda"``).
    """

    encoders: tuple[str, ...] = ("default",)
    datasets: tuple[str, ...] = ("digits", "synthetic-world")
    seeds: tuple[int, ...] = (0, 1, 2)
    n_samples: int = 300
    head_steps: int = 300
    head_train_samples: int = 1000
    head_batch_size: int = 128
    mmvp_pairs_per_category: int = 10
    mmvp_vlm_root: str | None = None
    map_dataset: str = "digits"
    map_method: str = "tsne"
    x_metric: str = "kmeans_acc"
    y_metric: str = "mmvp_mean"
    extra_x_metrics: tuple[str, ...] = ("fisher",)
    output_dir: str = "figures/dp_ability"
    run_root: str = "runs/dp_ability"
    device: str = "auto"

    def __post_init__(self) -> None:
        self.encoders = tuple(self.encoders)
        self.datasets = tuple(self.datasets)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.extra_x_metrics = tuple(self.extra_x_metrics)
        if not self.datasets:
            raise ValueError("datasets is empty; name at least one labelled dataset for D-ability")
        if self.map_dataset not in self.datasets:
            raise ValueError(
                f"map_dataset {self.map_dataset!r} must be one of datasets {self.datasets}"
            )
        if self.map_method not in ("tsne", "umap"):
            raise ValueError(f"map_method must be 'tsne' or 'umap', got {self.map_method!r}")
        if self.head_steps < 1 or self.head_train_samples < 4 or self.head_batch_size < 2:
            raise ValueError(
                "head_steps ≥ 1, head_train_samples ≥ 4 and head_batch_size ≥ 2 are required"
            )
        if self.mmvp_pairs_per_category < 1 and self.y_metric == "mmvp_mean":
            raise ValueError("y_metric 'mmvp_mean' needs mmvp_pairs_per_category ≥ 1")
        self.suite()  # validates the rest

    def suite(self) -> SuiteConfig:
        """The :class:`SuiteConfig` every encoder of the study is scored with."""
        return SuiteConfig(
            datasets=self.datasets,
            n_samples=self.n_samples,
            seeds=self.seeds,
            mmvp_pairs_per_category=self.mmvp_pairs_per_category,
            mmvp_vlm_root=self.mmvp_vlm_root,
            compositional=False,  # not on the D/P axes; keeps the study's text-tower passes few
            dataset_kwargs={d: {"split": "test"} for d in self.datasets if d in _HAS_TEST_SPLIT},
        )


def fit_infonce_heads(
    encoder: str = "default",
    *,
    steps: int = 300,
    n_samples: int = 1000,
    batch_size: int = 128,
    seed: int = 0,
    run_root: str = "runs",
    device: str = "auto",
) -> Any:
    """Fit ``encoder``'s two heads (+ logit scale) by InfoNCE on frozen towers; return the ``Run``.

    Trains on cached tower features of ``n_samples`` synthetic-world ``train`` pairs through
    :func:`workbench.train.train` (the run directory lands under ``run_root``; load it later as
    ``"run:<dir>"``).
    """
    from workbench.train import TrainConfig, train

    cfg = TrainConfig(
        method="infonce",
        encoder=encoder,
        dataset="synthetic-world",
        dataset_kwargs={"size": n_samples, "split": "train", "seed": seed},
        steps=steps,
        batch_size=min(batch_size, n_samples // 2),
        trainable="heads+logit_scale",
        data="cached",
        snapshot_every=0,
        log_every=max(1, steps // 10),
        seed=seed,
        device=device,
        run_root=run_root,
        run_name="dp-heads",
        holdout=0.2,
    )
    return train(cfg, progress=False)


def study_encoders(config: DPStudyConfig, trained: Any) -> list[tuple[str, Any, Any]]:
    """``(label, encoder, tower_source)`` for every point of the study.

    ``trained`` is the :func:`fit_infonce_heads` run; its encoder reuses the untrained default's
    cached tower features (same towers, checked by hash).
    """
    from workbench.encoders import load_encoder

    base = load_encoder("default")
    out: list[tuple[str, Any, Any]] = [
        (TRAINED_HEADS, trained.encoder, base),
        (RANDOM_INIT, load_encoder("default", pretrained=False), None),
    ]
    for name in config.encoders:
        if name == "default":
            out.append(("default (untrained heads)", base, None))
        else:
            enc, label = resolve_encoder(name)
            out.append((label, enc, None))
    return out


def score_study(entries: Sequence[tuple[str, Any, Any]], suite: SuiteConfig) -> Any:
    """Concatenated :func:`score_encoder` tables of ``(label, encoder, tower_source)`` entries."""
    import pandas as pd

    return pd.concat(
        [score_encoder(enc, suite, label=label, tower_source=src) for label, enc, src in entries],
        ignore_index=True,
    )
