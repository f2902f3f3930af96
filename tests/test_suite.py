"""score_encoder's tidy table, the D-ability bundle, and the D/P figure builders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dp_fakes import TinyEncoder

from workbench.encoders.registry import resolve_encoder
from workbench.evals.dp_suite import SuiteConfig, d_ability, score_encoder
from workbench.viz.dp import (
    dp_points,
    dp_scatter,
    embedding_map,
    embedding_map_figure,
    pability_bars,
)


def blobs(spread, seed=0, n_per=25, k=4, d=12):
    rng = np.random.default_rng(seed)
    X = np.concatenate(
        [3 * np.eye(d)[c] + spread * rng.standard_normal((n_per, d)) for c in range(k)]
    )
    return X, np.repeat(np.arange(k), n_per)


def test_d_ability_separated_vs_mixed():
    sep = d_ability(*blobs(0.05), knn_k=5, kmeans_restarts=2)
    mixed = d_ability(*blobs(5.0), knn_k=5, kmeans_restarts=2)
    for m in ("knn_acc", "linear_probe_acc", "kmeans_acc", "kmeans_nmi", "kmeans_ari"):
        assert sep[m] == pytest.approx(1.0), m
        assert mixed[m] < sep[m], m
    assert sep["fisher"] > 10 * mixed["fisher"]
    assert "zero_shot_acc" not in sep
    zs = d_ability(*blobs(0.05), class_text=3 * np.eye(12)[:4])
    assert zs["zero_shot_acc"] == 1.0


@pytest.fixture(scope="module")
def table():
    cfg = SuiteConfig(
        datasets=("digits", "synthetic-world"),
        n_samples=40,
        seeds=(0, 1),
        kmeans_restarts=2,
        mmvp_pairs_per_category=2,
        templates=("a photo of a {}.",),
    )
    return pd.concat(
        [score_encoder(TinyEncoder(seed=s), cfg, label=f"tiny-{s}") for s in (0, 1)],
        ignore_index=True,
    )


@pytest.mark.slow
def test_score_encoder_tidy_table(table):
    assert list(table.columns) == ["encoder", "dataset", "metric", "value", "seed"]
    assert set(table.encoder) == {"tiny-0", "tiny-1"} and set(table.seed) == {0, 1}
    assert set(table.dataset) == {"digits", "synthetic-world", "synthetic-mmvp"}
    digits = set(table[table.dataset == "digits"].metric)
    assert {
        "fisher",
        "knn_acc",
        "linear_probe_acc",
        "kmeans_acc",
        "kmeans_nmi",
        "kmeans_ari",
        "zero_shot_acc",
    } <= digits
    assert "rsum" not in digits  # digit captions repeat: retrieval is ill-posed
    world = set(table[table.dataset == "synthetic-world"].metric)
    assert {"i2t_R@1", "t2i_R@10", "rsum", "comp_mean"} <= world
    mmvp = table[table.dataset == "synthetic-mmvp"]
    assert (
        mmvp.metric.str.startswith("mmvp/").sum() // 4
    ) == 9  # 9 categories × 2 seeds × 2 encoders
    frac = table[~table.metric.isin(["fisher", "s_inner", "s_inter", "rsum", "kmeans_ari"])]
    assert frac.value.between(0, 1).all()
    assert table[table.metric == "kmeans_ari"].value.between(-0.5, 1).all()  # ARI may dip below 0
    # one row per (encoder, dataset, metric, seed)
    assert not table.duplicated(["encoder", "dataset", "metric", "seed"]).any()


@pytest.mark.slow
def test_mmvp_mean_is_mean_of_categories(table):
    t = table[(table.dataset == "synthetic-mmvp") & (table.encoder == "tiny-0") & (table.seed == 0)]
    cats = t[t.metric.str.startswith("mmvp/")].value
    assert t[t.metric == "mmvp_mean"].value.item() == pytest.approx(cats.mean())


@pytest.mark.slow
def test_dp_points_and_figures(table):
    pts = dp_points(table, x_metric="kmeans_acc", y_metric="mmvp_mean")
    assert list(pts.encoder) == ["tiny-0", "tiny-1"]
    t0 = table[(table.encoder == "tiny-0") & (table.metric == "kmeans_acc")]
    per_seed = t0.groupby("seed").value.mean()  # averaged over digits + synthetic-world first
    assert pts.x.iloc[0] == pytest.approx(per_seed.mean())
    assert pts.x_std.iloc[0] == pytest.approx(per_seed.std())
    assert "kmeans_acc" in pts.x_title.iloc[0] and "digits" in pts.x_title.iloc[0]
    assert "mmvp_mean" in pts.y_title.iloc[0]
    fig = dp_scatter(pts)
    assert fig.layout.xaxis.title.text == pts.x_title.iloc[0]
    assert [tr.name for tr in fig.data] == ["tiny-0", "tiny-1"]
    bars = pability_bars(table)
    assert len(bars.data) == 2 and len(bars.data[0].x) == 9
    with pytest.raises(ValueError, match="metrics present"):
        dp_points(table, x_metric="nope")


@pytest.mark.slow
def test_embedding_map_cached_by_key(tmp_path, monkeypatch):
    X, y = blobs(0.3, n_per=15)
    a = embedding_map(X, method="tsne", key="blobs", cache_dir=tmp_path, perplexity=5)
    assert a.shape == (60, 2) and len(list(tmp_path.glob("blobs-*.npy"))) == 1
    import sklearn.manifold

    monkeypatch.setattr(sklearn.manifold, "TSNE", lambda *a, **k: pytest.fail("cache missed"))
    assert np.array_equal(
        embedding_map(X, method="tsne", key="blobs", cache_dir=tmp_path, perplexity=5), a
    )
    fig = embedding_map_figure(a, y, ["a", "b", "c", "d"])
    assert [tr.name for tr in fig.data] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="method"):
        embedding_map(X, method="pca")


def test_embedding_map_umap_is_lazy_and_gets_pca_input(tmp_path, monkeypatch):
    """UMAP's first call JIT-compiles for minutes, so a stand-in checks the wiring: PCA to
    ``pca_dims`` first, then ``umap.UMAP(n_components=2, ...)`` imported only when asked for."""
    import sys
    import types

    seen = {}

    class FakeUMAP:
        def __init__(self, n_components, n_neighbors, random_state):
            seen["init"] = (n_components, n_neighbors, random_state)

        def fit_transform(self, Z):
            seen["dims"] = Z.shape[1]
            return Z[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    X, _ = blobs(0.3, n_per=15, d=80)
    out = embedding_map(X, method="umap", pca_dims=50, cache_dir=tmp_path, seed=3)
    assert out.shape == (60, 2) and seen == {"init": (2, 15, 3), "dims": 50}


def test_resolve_encoder_accepts_run_dirs(tmp_path, monkeypatch):
    import workbench.encoders.registry

    calls = []
    monkeypatch.setattr(
        workbench.encoders.registry,
        "load_encoder",
        lambda name, **k: calls.append(name) or TinyEncoder(),
    )
    (tmp_path / "config.json").write_text("{}")
    _, label = resolve_encoder(str(tmp_path))
    assert calls == [f"run:{tmp_path}"] and label == f"run:{tmp_path}"
    enc = TinyEncoder()
    assert resolve_encoder(enc) == (enc, "tiny")
    with pytest.raises(TypeError):
        resolve_encoder(3)


def test_suite_config_validation():
    with pytest.raises(ValueError, match="seeds"):
        SuiteConfig(seeds=())
    with pytest.raises(ValueError, match="templates"):
        SuiteConfig(templates=("no placeholder",))
