"""Plotly figures for the modality-gap notebook (Mind the Gap Figs. 2–3, ReAlign Figs. 3–6, Tab. 5).

Each builder takes the result objects of :mod:`workbench.probes.gap`, :mod:`~workbench.probes.realign`
and :mod:`~workbench.probes.distribution` (or plain dicts of them) and returns a ``go.Figure``;
nothing is computed here beyond arranging numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ablation_table_figure",
    "centroid_gap_figure",
    "cone_figure",
    "cosine_kde_figure",
    "knn_mixing_figure",
    "shift_figure",
    "spectra_figure",
    "stability_figure",
]


def cone_figure(cone: Any, encoder_widths: Mapping[str, float] | None = None) -> Any:
    """Mind the Gap Fig. 2: (left) mean pairwise cosine vs depth per activation, with the real
    encoder's cone widths as dashed lines; (right) 2-D PCA of the deepest outputs, one colour per
    random initialisation (each init its own cone).

    Args:
        cone: a :class:`~workbench.probes.gap.ConeResult`.
        encoder_widths: e.g. ``{"image": 0.4, "text": 0.6}`` from a :class:`GapReport`.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "Random MLPs: cone width vs depth",
            f"{cone.n_inits} random inits ({cone.activations[0]}, depth {int(cone.depths[-1])}), PCA",
        ),
    )
    for a, act in enumerate(cone.activations):
        fig.add_trace(
            go.Scatter(
                x=cone.depths,
                y=cone.mean_cosine[a],
                error_y={"type": "data", "array": cone.mean_cosine_std[a]},
                mode="lines+markers",
                name=act,
            ),
            row=1,
            col=1,
        )
    for label, width in (encoder_widths or {}).items():
        fig.add_hline(
            y=width, line_dash="dash", annotation_text=f"encoder {label}: {width:.2f}", row=1, col=1
        )
    for k in range(cone.n_inits):
        fig.add_trace(
            go.Scatter(
                x=cone.projection[k, :, 0],
                y=cone.projection[k, :, 1],
                mode="markers",
                marker={"size": 4},
                name=f"init {k}",
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="depth (layers)", row=1, col=1)
    fig.update_yaxes(title_text="mean pairwise cosine", row=1, col=1)
    fig.update_layout(title="Cone effect (Mind the Gap Fig. 2)")
    return fig


def shift_figure(shift: Any) -> Any:
    """Mind the Gap Fig. 3: signed remaining gap, CLIP loss and accuracies vs shift λ.

    The dotted line marks λ = 0 (the trained embedding).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "signed centroid distance",
            f"CLIP loss (τ = {shift.temperature:g})",
            "accuracy",
        ),
    )
    x = shift.lambdas
    fig.add_trace(go.Scatter(x=x, y=shift.signed_gap, mode="lines+markers", name="gap"), 1, 1)
    fig.add_hline(y=0, line_color="grey", row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=shift.loss, mode="lines+markers", name="loss"), 1, 2)
    for key, label in (
        ("i2t", "image→text R@1"),
        ("t2i", "text→image R@1"),
        ("zero_shot", "zero-shot"),
    ):
        y = getattr(shift, key)
        if np.isfinite(y).any():
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label), 1, 3)
    for col in (1, 2, 3):
        fig.add_vline(x=0, line_dash="dot", line_color="grey", row=1, col=col)
        fig.update_xaxes(title_text="shift λ", row=1, col=col)
    fig.update_layout(
        title=f"Shifting along the gap (‖Δ‖ = {shift.gap_norm:.3f}; Mind the Gap Fig. 3)"
    )
    return fig


def centroid_gap_figure(
    gaps: Mapping[str, float], title: str = "Centroid gap (ReAlign Fig. 3)"
) -> Any:
    """Bar chart of ‖µ_x − µ_ŷ‖ per variant on a log axis, bars labelled with their values."""
    import plotly.graph_objects as go

    names, vals = list(gaps), [float(v) for v in gaps.values()]
    fig = go.Figure(
        go.Bar(x=names, y=vals, text=[f"{v:.2e}" for v in vals], textposition="outside")
    )
    fig.update_yaxes(type="log", title_text="‖µ_image − µ_text‖")
    fig.update_layout(title=title)
    return fig


def spectra_figure(spectra: Mapping[str, np.ndarray], alphas: Mapping[str, float]) -> Any:
    """ReAlign Fig. 4a: trace-normalised eigen-spectra on log–log axes, α in the legend."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, spec in spectra.items():
        s = np.asarray(spec)
        keep = s > 0
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, s.size + 1)[keep],
                y=s[keep],
                mode="lines",
                name=f"{name} (α = {alphas[name]:.2f})",
            )
        )
    fig.update_xaxes(type="log", title_text="rank k")
    fig.update_yaxes(type="log", title_text="λ_k / Σλ")
    fig.update_layout(title="Trace-normalised spectra (ReAlign Fig. 4a)")
    return fig


def cosine_kde_figure(
    reference: Any, kdes: Mapping[str, Any], reference_name: str = "image"
) -> Any:
    """ReAlign Fig. 4b: pairwise-cosine KDEs, each variant against the image reference, JS in legend.

    Args:
        reference: a :class:`~workbench.probes.distribution.CosineKDE` whose ``density_b`` is the
            image distribution (any of the ``kdes`` values works).
        kdes: name → CosineKDE of (variant text, images).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=reference.grid, y=reference.density_b, name=reference_name, line={"width": 3})
    )
    for name, kde in kdes.items():
        fig.add_trace(go.Scatter(x=kde.grid, y=kde.density_a, name=f"{name} (JS = {kde.js:.4f})"))
    fig.update_xaxes(title_text="pairwise cosine similarity")
    fig.update_yaxes(title_text="density")
    fig.update_layout(title="Pairwise-cosine distributions (ReAlign Fig. 4b)")
    return fig


def knn_mixing_figure(rates: Mapping[str, float], chance: float, k: int) -> Any:
    """ReAlign Fig. 5: k-NN mixing rate per variant (percent), with the perfect-mixing rate."""
    import plotly.graph_objects as go

    names, vals = list(rates), [100 * float(v) for v in rates.values()]
    fig = go.Figure(
        go.Bar(x=names, y=vals, text=[f"{v:.2f}%" for v in vals], textposition="outside")
    )
    fig.add_hline(y=100 * chance, line_dash="dash", annotation_text="perfect mixing")
    fig.update_yaxes(title_text=f"image share of {k} nearest neighbours (%)")
    fig.update_layout(title="k-NN mixing of text into images (ReAlign Fig. 5)")
    return fig


def ablation_table_figure(
    rows: Sequence[Mapping[str, Any]], title: str = "ReAlign ablation (Tab. 5)"
) -> Any:
    """A plotly table of ``rows`` (dicts with the same keys); floats shown to 4 significant digits."""
    import plotly.graph_objects as go

    keys = list(rows[0])
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for r in rows] for k in keys]
    fig = go.Figure(go.Table(header={"values": keys}, cells={"values": cells}))
    fig.update_layout(title=title)
    return fig


def stability_figure(sizes: Sequence[int], errors: Mapping[str, Sequence[float]]) -> Any:
    """ReAlign Fig. 6: relative error of each fitted statistic vs the number of unpaired samples."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, err in errors.items():
        fig.add_trace(go.Scatter(x=list(sizes), y=list(err), mode="lines+markers", name=name))
    fig.update_xaxes(type="log", title_text="unpaired samples per modality N")
    fig.update_yaxes(type="log", title_text="relative error vs full fit")
    fig.update_layout(title="Statistics stability (ReAlign Fig. 6)")
    return fig
