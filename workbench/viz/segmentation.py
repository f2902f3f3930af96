"""Figures of the segmentation study: label maps as colours, image grids, heat-map grids, bars.

Plotly builders over plain arrays (no training here); :mod:`workbench.experiments.earth_adapter`
computes what they show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "bars_figure",
    "heatmap_grid_figure",
    "image_grid_figure",
    "label_colours",
    "labels_to_rgb",
]

# background light grey, then distinct colours (Plotly's qualitative "Bold"); the glyph near-black
_PALETTE = (
    (235, 235, 235), (127, 60, 141), (17, 165, 121), (57, 105, 172), (242, 183, 1),
    (231, 63, 116), (128, 186, 90), (230, 131, 16), (0, 134, 149), (40, 40, 40),
    (249, 123, 114), (165, 170, 153),
)  # fmt: skip


def label_colours(n_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours, class 0 (background) light grey."""
    if n_classes > len(_PALETTE):
        extra = np.random.default_rng(0).integers(0, 256, (n_classes - len(_PALETTE), 3))
        return np.concatenate([np.asarray(_PALETTE), extra]).astype(np.uint8)
    return np.asarray(_PALETTE[:n_classes], dtype=np.uint8)


def labels_to_rgb(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(H, W) class indices → (H, W, 3) uint8 colours (:func:`label_colours`)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels_to_rgb: labels must be (H, W), got {labels.shape}")
    return label_colours(n_classes)[np.clip(labels, 0, n_classes - 1)]


def image_grid_figure(
    images: Sequence[Sequence[np.ndarray]],
    row_names: Sequence[str],
    col_names: Sequence[str],
    *,
    title: str = "",
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
) -> Any:
    """A grid of (H, W, 3) uint8 images: ``images[r][c]``; ``legend`` = (label, colour) pairs."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n_r, n_c = len(images), max(len(r) for r in images)
    if len(row_names) != n_r or len(col_names) != n_c:
        raise ValueError("image_grid_figure: one name per row and per column")
    fig = make_subplots(rows=n_r, cols=n_c, column_titles=list(col_names),
                        row_titles=list(row_names), horizontal_spacing=0.01,
                        vertical_spacing=0.02)  # fmt: skip
    for r, row in enumerate(images, start=1):
        for c, img in enumerate(row, start=1):
            fig.add_trace(go.Image(z=np.asarray(img, dtype=np.uint8)), row=r, col=c)
    for label, colour in legend:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker={"color": f"rgb{tuple(colour)}", "size": 10,
                                         "symbol": "square"}))  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, showlegend=bool(legend), margin={"l": 40, "r": 10, "t": 60},
                      plot_bgcolor="white")  # fmt: skip
    return fig


def heatmap_grid_figure(
    maps: Sequence[Sequence[np.ndarray]],
    row_names: Sequence[str],
    col_names: Sequence[str],
    *,
    title: str = "",
    colorscale: str = "Viridis",
    shared_scale_per_column: bool = True,
) -> Any:
    """A grid of 2-D heat maps ``maps[r][c]``; colour ranges shared down each column."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n_r, n_c = len(maps), max(len(r) for r in maps)
    fig = make_subplots(rows=n_r, cols=n_c, column_titles=list(col_names),
                        row_titles=list(row_names), horizontal_spacing=0.03,
                        vertical_spacing=0.04)  # fmt: skip
    ranges = []
    for c in range(n_c):
        col = np.concatenate([np.ravel(maps[r][c]) for r in range(n_r)])
        ranges.append((float(col.min()), float(col.max())))
    for r in range(n_r):
        for c in range(n_c):
            lo, hi = ranges[c] if shared_scale_per_column else (None, None)
            fig.add_trace(go.Heatmap(z=np.asarray(maps[r][c]), zmin=lo, zmax=hi,
                                     colorscale=colorscale, showscale=False),
                          row=r + 1, col=c + 1)  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    for i in range(1, n_r * n_c + 1):  # square cells: each y axis follows its x axis
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=(i - 1) // n_c + 1,
                         col=(i - 1) % n_c + 1)  # fmt: skip
    fig.update_layout(title=title, margin={"l": 60, "r": 10, "t": 70})
    return fig


def bars_figure(
    table: Any,
    *,
    x: str,
    y: str,
    color: str,
    error: str | None = None,
    title: str = "",
    yaxis_title: str = "",
) -> Any:
    """Grouped bars from a long DataFrame: one trace per ``color`` value, ± ``error``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, sub in table.groupby(color, sort=False):
        err = None
        if error is not None:
            err = {"type": "data", "array": sub[error].fillna(0).to_numpy()}
        fig.add_trace(go.Bar(x=sub[x], y=sub[y], name=str(name), error_y=err))
    fig.update_layout(title=title, barmode="group", yaxis_title=yaxis_title, legend_title=color)
    return fig
