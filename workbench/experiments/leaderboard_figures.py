"""Figures of the methods leaderboard: the comparative diagnostics trajectories, the final
spectra, and the D/P and compositional-vs-zero-shot scatters (issue 18)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.experiments.leaderboard_runs import COLUMNS, RunResult

__all__ = [
    "TRAJECTORY_PANELS",
    "scatter_figure",
    "spectra_figure",
    "trajectory_figure",
    "trajectory_frame",
]

#: ``(record key, panel title)`` of :func:`trajectory_figure`, in reading order.
TRAJECTORY_PANELS: tuple[tuple[str, str], ...] = (
    ("diag/gap", "centroid gap ‖μ_x − μ_y‖"),
    ("diag/beta", "‖β‖ principal bias (frame of step 0)"),
    ("diag/gamma", "‖γ‖ orthogonal bias (frame of step 0)"),
    ("diag/image/cone", "image cone width"),
    ("diag/image/erank", "image effective rank (RankMe)"),
    ("diag/text/erank", "text effective rank (RankMe)"),
    ("diag/image/strong", "image strong share (IQR+MP)"),
    ("diag/image/noise", "image noise share (IQR+MP)"),
    ("diag/text/strong", "text strong share (IQR+MP)"),
    ("diag/text/noise", "text noise share (IQR+MP)"),
    ("lb/compositional", "compositional P@1"),
    ("lb/zero_shot", "zero-shot held-out P@1"),
)


def trajectory_frame(results: Sequence[RunResult], keys: Sequence[str] | None = None) -> Any:
    """Long DataFrame ``row, seed, step, key, value`` of every run's evaluation records."""
    import pandas as pd

    keys = [k for k, _ in TRAJECTORY_PANELS] if keys is None else list(keys)
    recs = [
        {"row": r.name, "seed": r.seed, "step": p["step"], "key": k, "value": float(p[k])}
        for r in results
        for p in r.trajectory
        for k in keys
        if k in p
    ]
    if not recs:
        raise ValueError("trajectory_frame: the runs hold none of the keys asked for")
    return pd.DataFrame(recs)


def trajectory_figure(
    results: Sequence[RunResult],
    panels: Sequence[tuple[str, str]] = TRAJECTORY_PANELS,
    cols: int = 3,
) -> Any:
    """Per method (colour), each diagnostic vs training step, mean over seeds (± std band).

    A row with one point (training-free at step 0; CDDS and Earth-Adapter, scored after
    training) is a marker. Panels whose key no run logged are left out. Colours come from a
    24-colour palette, so up to 24 rows never share one.
    """
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    df = trajectory_frame(results, [k for k, _ in panels])
    panels = [(k, t) for k, t in panels if k in set(df["key"])]
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t in panels],
                        vertical_spacing=0.08, horizontal_spacing=0.07)  # fmt: skip
    palette = px.colors.qualitative.Dark24
    names = list(dict.fromkeys(df["row"]))
    for i, (key, _) in enumerate(panels):
        r, c = divmod(i, cols)
        for j, name in enumerate(names):
            sub = df[(df.key == key) & (df.row == name)]
            if sub.empty:
                continue
            g = sub.groupby("step")["value"].agg(["mean", "std"]).reset_index()
            colour = palette[j % len(palette)]
            mode = "markers" if len(g) == 1 else "lines"
            fig.add_trace(
                go.Scatter(x=g["step"], y=g["mean"], mode=mode, name=name, legendgroup=name,
                           showlegend=i == 0, line={"color": colour}, marker={"color": colour},
                           error_y={"type": "data", "array": g["std"].fillna(0), "visible": len(g) == 1}),
                row=r + 1, col=c + 1,
            )  # fmt: skip
    fig.update_xaxes(title_text="step", row=rows)
    fig.update_layout(height=280 * rows, title="How each method moves the geometry while it trains")
    return fig


def spectra_figure(results: Sequence[RunResult]) -> Any:
    """Final trace-normalised singular values per modality (mean over seeds), log scale."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("image", "text"))
    palette = px.colors.qualitative.Dark24
    for j, name in enumerate(dict.fromkeys(r.name for r in results)):
        for c, side in enumerate(("image", "text")):
            runs = [r.final for r in results if r.name == name]
            n = min(sum(k.startswith(f"diag/{side}/sv/") for k in f) for f in runs)
            if n == 0:
                continue
            sv = np.mean([[f[f"diag/{side}/sv/{i}"] for i in range(n)] for f in runs], axis=0)
            fig.add_trace(go.Scatter(x=np.arange(1, n + 1), y=sv, mode="lines", name=name,
                                     legendgroup=name, showlegend=c == 0,
                                     line={"color": palette[j % len(palette)]}), row=1, col=c + 1)  # fmt: skip
    fig.update_yaxes(type="log", title_text="σ_i / ‖σ‖₂", col=1)
    fig.update_xaxes(title_text="index i")
    fig.update_layout(title="Singular values per modality after fine-tuning")
    return fig


def scatter_figure(table: Any, x: str, y: str, *, title: str | None = None) -> Any:
    """One point per run row at (mean x, mean y) with ± std bars, from :func:`leaderboard_table`.

    The D/P scatter is ``scatter_figure(table, "fisher", "perception")``; the trade-off scatter
    ``scatter_figure(table, "zero_shot", "compositional")``.
    """
    import plotly.graph_objects as go

    labels = {c: (lab, s) for c, lab, s in COLUMNS}
    for name, col in (("x", x), ("y", y)):
        if col not in labels:
            raise ValueError(
                f"scatter_figure: {name}={col!r} is not a column; choose from {list(labels)}"
            )
    run = table[table.status == "run"]
    wide = {k: run[run.column == col].set_index("row") for k, col in (("x", x), ("y", y))}
    names = [n for n in dict.fromkeys(run["row"]) if np.isfinite(wide["x"].loc[n, "mean"])
             and np.isfinite(wide["y"].loc[n, "mean"])]  # fmt: skip
    (xl, xs), (yl, ys) = labels[x], labels[y]
    fig = go.Figure(
        go.Scatter(
            x=[xs * wide["x"].loc[n, "mean"] for n in names],
            y=[ys * wide["y"].loc[n, "mean"] for n in names],
            error_x={"type": "data", "array": [xs * np.nan_to_num(wide["x"].loc[n, "std"]) for n in names]},
            error_y={"type": "data", "array": [ys * np.nan_to_num(wide["y"].loc[n, "std"]) for n in names]},
            mode="markers+text", text=names, textposition="top center",
        )
    )  # fmt: skip
    fig.update_layout(title=title or f"{yl} vs {xl}", xaxis_title=xl, yaxis_title=yl)
    return fig
