"""D/P figures: the D-ability vs P-ability scatter, t-SNE/UMAP class maps, per-category P bars.

- :func:`dp_points` + :func:`dp_scatter` — DCR Fig. 1(d) / DeGLA Fig. 5 analogue: one labelled
  point per encoder / method / checkpoint, measured positions from a tidy score table
  (:func:`workbench.evals.dp_suite.score_encoder`), error bars = spread over seeds. Axes **[our
  reading]** (``methods-geometry.md`` §1.6): x = k-means ACC averaged over the D datasets, y =
  MMVP-VLM average; both are parameters and the axis titles name the exact metric.
- :func:`embedding_map` + :func:`embedding_map_figure` — DCR Fig. 5 analogue: 2-D t-SNE or UMAP
  of embeddings coloured by class; PCA to 50 dims first; coordinates cached on disk by key.
- :func:`pability_bars` — per-category MMVP accuracy, grouped by encoder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench._validate import as_matrix

__all__ = [
    "dp_points",
    "dp_scatter",
    "embedding_map",
    "embedding_map_figure",
    "pability_bars",
]

_METRIC_NAMES = {
    "kmeans_acc": "k-means ACC (Hungarian)",
    "kmeans_nmi": "k-means NMI",
    "kmeans_ari": "k-means ARI",
    "fisher": "Fisher ratio S_inter/S_inner",
    "knn_acc": "k-NN accuracy",
    "linear_probe_acc": "linear-probe accuracy",
    "zero_shot_acc": "zero-shot top-1 accuracy",
    "mmvp_mean": "MMVP-VLM average (pair accuracy)",
    "comp_mean": "hard-negative caption accuracy (mean over kinds)",
    "rsum": "retrieval rSum",
}


def _axis_title(metric: str, datasets: Sequence[str]) -> str:
    name = _METRIC_NAMES.get(metric, metric)
    where = ", ".join(datasets)
    mean = "mean over " if len(datasets) > 1 else ""
    return f"{name} [{metric}] — {mean}{where}"


def dp_points(
    table: Any,
    *,
    x_metric: str = "kmeans_acc",
    y_metric: str = "mmvp_mean",
    x_datasets: Sequence[str] | None = None,
    y_datasets: Sequence[str] | None = None,
    label: str = "encoder",
) -> Any:
    """Reduce a tidy score table to one (x, y) point per ``label`` value.

    Args:
        table: DataFrame with columns ``encoder, dataset, metric, value, seed`` (rows from
            :func:`~workbench.evals.dp_suite.score_encoder`, concatenated over encoders).
        x_metric, y_metric: metric names for the D and P axes.
        x_datasets, y_datasets: datasets averaged on each axis; ``None`` = every dataset that
            reports the metric.
        label: column naming the points.

    Returns:
        DataFrame ``[label, x, y, x_std, y_std, n_seeds, x_title, y_title]``: per seed the metric
        is averaged over datasets, then mean and std are taken over seeds.
    """
    import pandas as pd

    need = {label, "dataset", "metric", "value", "seed"}
    missing = need - set(table.columns)
    if missing:
        raise ValueError(f"score table lacks columns {sorted(missing)}; expected {sorted(need)}")
    axes = {}
    titles = {}
    for axis, metric, datasets in (("x", x_metric, x_datasets), ("y", y_metric, y_datasets)):
        rows = table[table["metric"] == metric]
        if datasets is not None:
            rows = rows[rows["dataset"].isin(list(datasets))]
        if rows.empty:
            have = sorted(table["metric"].unique())
            raise ValueError(
                f"no rows for {axis}-axis metric {metric!r}"
                + (f" on datasets {list(datasets)}" if datasets is not None else "")
                + f"; metrics present: {have}"
            )
        used = list(dict.fromkeys(rows["dataset"]))
        titles[axis] = _axis_title(metric, used)
        per_seed = rows.groupby([label, "seed"], sort=False)["value"].mean()
        axes[axis] = per_seed.groupby(level=0, sort=False).agg(["mean", "std", "count"])
    joined = axes["x"].add_suffix("_x").join(axes["y"].add_suffix("_y"), how="inner")
    if joined.empty:
        raise ValueError(f"no {label} has both {x_metric!r} and {y_metric!r}")
    return pd.DataFrame(
        {
            label: joined.index,
            "x": joined["mean_x"].to_numpy(),
            "y": joined["mean_y"].to_numpy(),
            "x_std": joined["std_x"].fillna(0.0).to_numpy(),
            "y_std": joined["std_y"].fillna(0.0).to_numpy(),
            "n_seeds": np.minimum(joined["count_x"], joined["count_y"]).to_numpy(),
            "x_title": titles["x"],
            "y_title": titles["y"],
        }
    )


def dp_scatter(points: Any, *, label: str = "encoder", title: str | None = None) -> Any:
    """Plotly scatter of :func:`dp_points` output: labelled points with seed-spread error bars."""
    import plotly.graph_objects as go

    if len(points) == 0:
        raise ValueError("no points to plot")
    fig = go.Figure()
    for _, p in points.iterrows():
        fig.add_trace(
            go.Scatter(
                x=[p["x"]],
                y=[p["y"]],
                mode="markers+text",
                name=str(p[label]),
                text=[str(p[label])],
                textposition="top center",
                marker={"size": 12},
                error_x={"type": "data", "array": [p["x_std"]], "visible": bool(p["x_std"] > 0)},
                error_y={"type": "data", "array": [p["y_std"]], "visible": bool(p["y_std"] > 0)},
                hovertemplate=f"{p[label]}<br>x=%{{x:.4f}}<br>y=%{{y:.4f}}<br>seeds={int(p['n_seeds'])}"
                "<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or "D-ability vs P-ability",
        xaxis_title=points["x_title"].iloc[0],
        yaxis_title=points["y_title"].iloc[0],
        template="plotly_white",
    )
    return fig


# -- embedding maps -----------------------------------------------------------------------------


def _cache_root() -> Path:
    from workbench.encoders.cache import default_cache_dir

    return default_cache_dir() / "maps"


def embedding_map(
    X: Any,
    *,
    method: str = "tsne",
    pca_dims: int = 50,
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    key: str | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """2-D map (n, 2) of embeddings ``X`` (n, d) by t-SNE or UMAP, cached on disk.

    Rows are L2-normalised, then reduced by PCA to ``min(pca_dims, n, d)`` dims (the usual
    de-noising step before t-SNE/UMAP), then embedded. UMAP is imported only when asked for.
    The result is cached as ``<cache_dir>/<key>-<digest>.npy`` where the digest covers the data
    bytes and every parameter, so a stale map is never returned; ``cache_dir`` defaults to
    ``$WORKBENCH_CACHE/maps`` (``~/.cache/workbench/maps``).
    """
    if method not in ("tsne", "umap"):
        raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
    A = as_matrix(X, "X", min_rows=5)
    A = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    params = f"{method}|{pca_dims}|{seed}|{perplexity}|{n_neighbors}|{A.shape}"
    digest = hashlib.sha256(np.ascontiguousarray(A.astype(np.float32)).tobytes() + params.encode())
    stem = f"{key or 'map'}-{digest.hexdigest()[:16]}"
    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    path = root / f"{stem}.npy"
    if path.exists():
        return np.load(path)
    from sklearn.decomposition import PCA

    k = min(pca_dims, A.shape[0], A.shape[1])
    Z = PCA(n_components=k, random_state=seed).fit_transform(A) if k < A.shape[1] else A
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = min(perplexity, (A.shape[0] - 1) / 3.0)
        coords = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(
            Z
        )
    else:
        import umap  # lazy: numba compilation is slow to import

        nn = min(n_neighbors, A.shape[0] - 1)
        coords = umap.UMAP(n_components=2, n_neighbors=nn, random_state=seed).fit_transform(Z)
    coords = np.asarray(coords, dtype=np.float32)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{stem}.{os.getpid()}.npy"
    np.save(tmp, coords)
    os.replace(tmp, path)
    return coords


def embedding_map_figure(
    coords: Any,
    labels: Any,
    class_names: Sequence[str] | None = None,
    *,
    title: str = "",
    hover: Sequence[str] | None = None,
) -> Any:
    """Scatter of 2-D ``coords`` (n, 2) coloured by class ``labels`` (n,), one legend entry per class."""
    import plotly.graph_objects as go

    C = np.asarray(coords)
    y = np.asarray(labels)
    if C.ndim != 2 or C.shape[1] != 2 or len(y) != len(C):
        raise ValueError(f"coords must be (n, 2) with one label per row; got {C.shape}, {y.shape}")
    fig = go.Figure()
    for c in np.unique(y):
        sel = np.flatnonzero(y == c)
        name = class_names[int(c)] if class_names is not None and int(c) >= 0 else str(c)
        fig.add_trace(
            go.Scattergl(
                x=C[sel, 0],
                y=C[sel, 1],
                mode="markers",
                name=name,
                marker={"size": 5},
                text=[hover[i] for i in sel] if hover is not None else None,
            )
        )
    fig.update_layout(
        title=title, template="plotly_white", xaxis_title="dim 1", yaxis_title="dim 2"
    )
    return fig


def pability_bars(table: Any, *, dataset: str | None = None, label: str = "encoder") -> Any:
    """Grouped bars of per-category MMVP accuracy (``metric`` = ``"mmvp/<category>"``) per ``label``.

    ``table`` is a tidy score table; values are averaged over seeds and error bars show their std.
    """
    import plotly.graph_objects as go

    rows = table[table["metric"].str.startswith("mmvp/")]
    if dataset is not None:
        rows = rows[rows["dataset"] == dataset]
    if rows.empty:
        raise ValueError("no per-category MMVP rows ('mmvp/<category>') in the table")
    rows = rows.assign(category=rows["metric"].str.slice(len("mmvp/")))
    stats = (
        rows.groupby([label, "category"], sort=False)["value"].agg(["mean", "std"]).reset_index()
    )
    order = list(dict.fromkeys(rows["category"]))
    fig = go.Figure()
    for name, g in stats.groupby(label, sort=False):
        g = g.set_index("category").reindex(order)
        fig.add_trace(
            go.Bar(
                x=order,
                y=g["mean"],
                name=str(name),
                error_y={"type": "data", "array": g["std"].fillna(0.0)},
            )
        )
    fig.update_layout(
        barmode="group",
        title="P-ability per MMVP category" + (f" — {dataset}" if dataset else ""),
        yaxis_title="pair accuracy (both statements right)",
        yaxis_range=[0, 1],
        template="plotly_white",
    )
    return fig
