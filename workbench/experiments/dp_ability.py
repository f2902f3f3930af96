"""The D/P study behind ``notebooks/dp_ability.ipynb``: which encoders, how they are fitted, scored.

D-ability (class separability: k-means ACC/NMI/ARI, Fisher ratio, k-NN, linear probe, zero-shot) vs
P-ability (MMVP-style pairs) for the default encoder with InfoNCE-fitted heads, a random-init
encoder and any encoders the user lists (DCR Fig. 1(d)'s scatter; spec ``methods-geometry.md`` §1.6).
Scoring is :func:`workbench.evals.dp_suite.score_encoder`; this module only chooses the points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workbench.evals.dp_suite import SuiteConfig, score_encoder
from workbench.experiments.stats import spread_test_from_stats

__all__ = [
    "RANDOM_INIT",
    "TRAINED_HEADS",
    "DPStudyConfig",
    "dp_separation",
    "fit_infonce_heads",
    "score_study",
    "study_encoders",
]

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
        from workbench._validate import as_int, as_names
        from workbench.data import dataset_names
        from workbench.encoders.registry import check_encoder_name

        own = "DPStudyConfig"
        self.encoders = as_names(self.encoders, "encoders", owner=own, min_len=0, unique=True)
        for i, name in enumerate(self.encoders):
            check_encoder_name(name, f"encoders[{i}]", owner=own)
        self.datasets = dataset_names(self.datasets, "datasets", owner=own)
        self.extra_x_metrics = as_names(
            self.extra_x_metrics, "extra_x_metrics", owner=own, min_len=0
        )
        for name in ("n_samples", "head_steps", "head_train_samples", "head_batch_size"):
            setattr(self, name, as_int(getattr(self, name), f"{own}: {name}", lo=0))
        if self.mmvp_vlm_root is not None and not isinstance(self.mmvp_vlm_root, str):
            raise TypeError(f"{own}: mmvp_vlm_root must be a folder (str) or None")
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

    def check_data(self) -> None:
        """Build every dataset the study scores (as :meth:`suite` loads them), so a missing one
        fails in the notebook's config cell — before the head fit trains anything."""
        from workbench.data import load_dataset

        suite = self.suite()
        wanted = [(name, suite.dataset_kwargs.get(name, {})) for name in suite.datasets]
        if self.mmvp_vlm_root is not None:  # the real benchmark, loaded as _real_mmvp does
            wanted.append(("mmvp-vlm", {"root": self.mmvp_vlm_root, "statement_prefix": ""}))
        for name, kwargs in wanted:
            try:
                load_dataset(name, **kwargs)
            except FileNotFoundError as err:
                raise FileNotFoundError(
                    f"DPStudyConfig: dataset {name!r} cannot be built: {err} — install its files "
                    f"or drop it from the study"
                ) from err

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
            from workbench.encoders.registry import resolve_encoder

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


def dp_separation(points: Any, a: str, b: str, *, label: str = "encoder") -> dict[str, Any]:
    """How far point ``a`` sits from point ``b`` on each axis of a
    :func:`workbench.viz.dp.dp_points` table, with the one seed-spread test.

    Returns ``{"a", "b", "dx", "x_spread", "x_separated", "dy", ...,
    "separated_on_both_axes"}``: ``d = a − b`` and ``separated`` is
    :func:`~workbench.experiments.stats.spread_test` on the per-seed means and stds (so never
    with a single seed).
    """
    rows = points.set_index(label)
    missing = [n for n in (a, b) if n not in rows.index]
    if missing:
        raise ValueError(f"no point labelled {missing}; have {list(rows.index)}")
    pa, pb = rows.loc[a], rows.loc[b]
    out: dict[str, Any] = {"a": a, "b": b, "test": "spread_test (mean ± std intervals disjoint)"}
    for axis in ("x", "y"):
        t = spread_test_from_stats(
            pa[axis], pa[f"{axis}_std"], pa["n_seeds"], pb[axis], pb[f"{axis}_std"], pb["n_seeds"]
        )
        out[f"d{axis}"] = t.diff
        out[f"{axis}_spread"] = t.spread
        out[f"{axis}_separated"] = t.exceeds
    out["separated_on_both_axes"] = out["x_separated"] and out["y_separated"]
    return out
