"""Figures of the ProCLIP study (``notebooks/proclip.ipynb``): Table 5 bars, the Table 7
λ_reg sweep beside the paper's, the image-side spectrum and the modality gap per stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.experiments.proclip import METRICS, ROW_LABELS, ArmRun

__all__ = [
    "gap_figure",
    "lambda_figure",
    "spectrum_curves",
    "spectrum_figure",
    "stage_records",
    "table5_figure",
]


def table5_figure(table: Any) -> Any:
    """Grouped bars (mean ± std over seeds, percent) of Table 5's metrics per row."""
    from workbench.experiments.tables import table_figure

    sub = table[table.metric.isin(METRICS)].rename(columns={"metric": "column"})
    sub = sub.assign(arm=sub.arm.map(lambda a: ROW_LABELS.get(a, a)))
    return table_figure(
        sub, title="ProCLIP Table 5 (ours): zero-shot and R@1 (short / long captions)"
    )


def lambda_figure(t7: Any) -> Any:
    """Table 7: our zero-shot (± std) per λ_reg beside the paper's IN-1k (right axis)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = [f"{v:g}" for v in t7["lambda_reg"]]
    fig.add_trace(go.Scatter(x=x, y=t7["zero_shot"], error_y={"array": t7["zero_shot_std"]},
                             mode="lines+markers", name="ours: zero-shot (%)"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=t7["t2i_long"], error_y={"array": t7["t2i_long_std"]},
                             mode="lines+markers", name="ours: T2I R@1 long (%)"))  # fmt: skip
    fig.add_trace(
        go.Scatter(x=x, y=t7["paper_in1k"], mode="lines+markers", name="paper: IN-1k (%)",
                   line={"dash": "dash"}),
        secondary_y=True,
    )  # fmt: skip
    fig.update_layout(title="ProCLIP Table 7: λ_reg sweep", xaxis_title="λ_reg")
    fig.update_yaxes(title_text="ours (%)", secondary_y=False)
    fig.update_yaxes(title_text="paper IN-1k (%)", secondary_y=True)
    return fig


def spectrum_figure(curves: dict[str, Sequence[float]], top: int = 64) -> Any:
    """Image-side spectra (singular values of the centred, normalised held-out image
    embeddings, log scale) before and after each stage."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, sv in curves.items():
        s = np.asarray(sv, dtype=np.float64)[:top]
        fig.add_trace(go.Scatter(x=np.arange(1, len(s) + 1), y=s, mode="lines", name=name))
    fig.update_layout(title="Image-side spectrum before / after each stage", xaxis_title="index",
                      yaxis_title="singular value", yaxis_type="log")  # fmt: skip
    return fig


def gap_figure(records: Sequence[dict[str, Any]]) -> Any:
    """Centroid modality gap ‖Δ‖ on held-out scenes, short and long captions, per stage."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for length in ("short", "long"):
        fig.add_trace(go.Bar(
            x=[r["state"] for r in records], y=[r[f"gap_{length}"] for r in records],
            error_y={"array": [r.get(f"gap_{length}_std", 0.0) for r in records]},
            name=f"{length} captions",
        ))  # fmt: skip
    fig.update_layout(title="Modality gap ‖Δ‖ before / after each stage", barmode="group",
                      yaxis_title="‖mean image − mean text‖")  # fmt: skip
    return fig


def stage_records(runs: Sequence[ArmRun], clip: dict[str, Any]) -> list[dict[str, Any]]:
    """Gap (mean ± std over seeds) of CLIP, after stage 1 and after stage 2 of the full method,
    and of direct replacement; plus whether stage 1 left the image spectrum unchanged."""
    recs = [
        {"state": "CLIP (before)", "gap_short": clip["gap_short"], "gap_long": clip["gap_long"]}
    ]
    recs[0]["image_drift"] = 0.0
    groups = {
        "ProCLIP after stage 1": [r.boundary for r in runs if r.arm == "full" and r.boundary],
        "ProCLIP after stage 2": [r.scores for r in runs if r.arm == "full"],
        "direct replacement": [r.scores for r in runs if r.arm == "direct"],
    }
    for state, scores in groups.items():
        if not scores:
            continue
        rec: dict[str, Any] = {"state": state}
        for m in ("gap_short", "gap_long", "image_drift"):
            v = np.asarray([s[m] for s in scores])
            rec[m], rec[f"{m}_std"] = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
        recs.append(rec)
    after1 = groups["ProCLIP after stage 1"]
    if after1:
        recs[0]["stage1_image_spectrum_unchanged"] = bool(
            all(np.allclose(s["image_sv"], clip["image_sv"], rtol=1e-9, atol=1e-12) for s in after1)
        )
    return recs


def spectrum_curves(
    runs: Sequence[ArmRun], clip: dict[str, Any], seed: int = 0
) -> dict[str, list[float]]:
    """Image-side singular values of CLIP (before), ProCLIP after stage 1 and after stage 2, and
    direct replacement, for one seed."""
    curves = {"CLIP (before)": list(clip["image_sv"])}
    for r in runs:
        if r.seed != seed:
            continue
        if r.arm == "full":
            if r.boundary:
                curves["ProCLIP after stage 1"] = list(r.boundary["image_sv"])
            curves["ProCLIP after stage 2"] = list(r.scores["image_sv"])
        elif r.arm == "direct":
            curves["direct replacement"] = list(r.scores["image_sv"])
    return curves
