"""The SDE study behind ``sde_ablation.ipynb`` (the main job) and ``sde_figures.ipynb``.

SDE Table 2 (baseline + full method + each ablation switch), Fig. 2 (cross-task generalisation),
Fig. 3 (band proportions, spectra before/after enhancement, cumulative energy) and Fig. 4
(the α(t), λ(t) schedules); spec ``methods-spectral.md`` §1.3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._validate import as_int, as_int_tuple, as_names
from workbench.experiments.grid import (
    Arm,
    GridResult,
    HeadsTraining,
    SuiteRunConfig,
    check_arms,
    run_grid,
    trainable_meta_tasks,
)
from workbench.experiments.tables import cross_task_table

__all__ = [
    "ABLATION_ROWS",
    "SDEAblationConfig",
    "SDEFiguresConfig",
    "band_records",
    "band_trace",
    "cross_task_figure",
    "cross_task_matrix",
    "schedule_figure",
    "schedule_trace",
    "sde_ablation_arms",
]


ABLATION_ROWS: tuple[str, ...] = (
    "full",
    "no_disentanglement",
    "no_weak_band",
    "constant_alpha",
    "lambda_0",
    "no_kl",
)


def sde_ablation_arms(
    rows: Sequence[str] = ("full",),
    *,
    temperature: float | None = 0.02,
    symmetric: bool = False,
    sde_config: dict[str, Any] | None = None,
    baseline: str = "infonce",
) -> list[Arm]:
    """The InfoNCE baseline plus one SDE arm per ablation row (``workbench.methods.sde.ABLATIONS``).

    Baseline and SDE share the feature loss (``temperature``, ``symmetric``), so each row
    differs from the baseline only by SDE's enhancement and ``L_spec``.

    Args:
        rows: Ablation row names: ``full``, ``no_disentanglement``, ``no_weak_band``,
            ``constant_alpha``, ``lambda_0``, ``no_kl``.
        temperature: Feature-loss τ (VLM2Vec 0.02; ``None`` = learnable logit scale).
        symmetric: CLIP two-way loss (``True``) or VLM2Vec one-way (``False``).
        sde_config: Extra SDE arguments applied to every SDE row (e.g. ``{"alpha0": 0.3}``).
        baseline: Name of the baseline arm.
    """
    from workbench.methods.sde import ABLATIONS

    unknown = [r for r in rows if r not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose from {list(ABLATIONS)}")
    feat = {"temperature": temperature, "symmetric": symmetric}
    arms = [Arm(baseline, "infonce", dict(feat))]
    for r in rows:
        arms.append(Arm(f"sde/{r}", "sde", {**feat, **(sde_config or {}), **ABLATIONS[r]}))
    return arms


@dataclass
class SDEAblationConfig(SuiteRunConfig):
    """``notebooks/sde_ablation.ipynb``: baseline + SDE ablation rows over seeds (SDE Table 2).

    Attributes:
        rows: Ablation rows (``workbench.methods.sde.ABLATIONS``): all six by default.
        sde_config: Extra SDE arguments for every row (e.g. ``{"alpha0": 0.3}``).
    """

    rows: tuple[str, ...] = ABLATION_ROWS
    sde_config: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "figures/sde_ablation"

    def __post_init__(self) -> None:
        self.rows = as_names(self.rows, "rows", owner="SDEAblationConfig", unique=True)
        _check_dict(self.sde_config, "sde_config", "SDEAblationConfig")
        super().__post_init__()
        check_arms(self.arms())

    def arms(self) -> list[Arm]:
        return sde_ablation_arms(self.rows, sde_config=self.sde_config, **self.feat)


@dataclass
class SDEFiguresConfig(SuiteRunConfig):
    """``notebooks/sde_figures.ipynb``: SDE Figs. 2, 3 and 4.

    Attributes:
        cross_task_seeds: Seeds of the cross-task matrix (each trains 4 meta-tasks × 2 arms).
        sde_config: SDE arguments (defaults: spec §1.2 [our reading]).
        spectrum_rows: Rows of the batch whose spectrum is shown before/after enhancement.
    """

    cross_task_seeds: tuple[int, ...] = (0, 1)
    sde_config: dict[str, Any] = field(default_factory=dict)
    spectrum_rows: int = 256
    output_dir: str = "figures/sde_figures"

    def __post_init__(self) -> None:
        own = "SDEFiguresConfig"
        self.cross_task_seeds = as_int_tuple(
            self.cross_task_seeds, "cross_task_seeds", owner=own, lo=0, unique=True
        )
        _check_dict(self.sde_config, "sde_config", own)
        super().__post_init__()
        self.spectrum_rows = as_int(self.spectrum_rows, f"{own}: spectrum_rows", lo=2)
        check_arms(self.arms())

    def arms(self) -> list[Arm]:
        return sde_ablation_arms(("full",), sde_config=self.sde_config, **self.feat)


def _check_dict(value: Any, name: str, owner: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{owner}: {name} must be a dict of method arguments, got {value!r}")


def band_trace(log: Sequence[dict[str, Any]]) -> Any:
    """Strong / weak / noise proportions per step and side from an SDE run's log (SDE Fig. 3a).

    Returns:
        Long DataFrame ``step, side, band, proportion``.
    """
    import pandas as pd

    rows = []
    for rec in log:
        for key, value in rec.get("logs", {}).items():
            side, _, band = key.partition("/")
            if band in ("strong", "weak", "noise"):
                rows.append({"step": rec["step"], "side": side, "band": band, "proportion": value})
    if not rows:
        raise ValueError("the log has no band proportions (is it an SDE run?)")
    return pd.DataFrame(rows)


def band_records(log: Sequence[dict[str, Any]], side: str = "image") -> list[dict[str, float]]:
    """``[{"step", "strong", "weak", "noise"}]`` of one side from an SDE run's log, the record
    format of :func:`workbench.viz.spectrum.partition_proportions_figure` (SDE Fig. 3a)."""
    df = band_trace(log)
    df = df[df["side"] == side]
    if df.empty:
        raise ValueError(f"the log has no band proportions for side {side!r}")
    wide = df.pivot_table(index="step", columns="band", values="proportion")
    return [{"step": int(s), **{b: float(r[b]) for b in wide.columns}} for s, r in wide.iterrows()]


def schedule_trace(log: Sequence[dict[str, Any]]) -> Any:
    """α(t) and λ(t) per step from a run's log (SDE Fig. 4): DataFrame ``step, alpha, lambda``."""
    import pandas as pd

    rows = [{"step": r["step"], **r.get("schedule", {})} for r in log]
    df = pd.DataFrame(rows)
    missing = {"alpha", "lambda"} - set(df.columns)
    if missing:
        raise ValueError(f"the log has no {sorted(missing)} schedule (is it an SDE run?)")
    return df[["step", "alpha", "lambda"]]


def schedule_figure(trace: Any, column: str, *, title: str | None = None) -> Any:
    """One schedule (``"alpha"`` or ``"lambda"``) vs step from :func:`schedule_trace` (SDE Fig. 4)."""
    import plotly.graph_objects as go

    symbol = {"alpha": "α(t)", "lambda": "λ(t)"}.get(column, column)
    fig = go.Figure(go.Scatter(x=trace["step"], y=trace[column], mode="lines", name=symbol))
    fig.update_layout(title=title or symbol, xaxis_title="training step", yaxis_title=symbol)
    return fig


def cross_task_figure(matrices: dict[str, Any], baseline: str, method: str) -> Any:
    """Heat-maps of P@1 (train meta-task × eval meta-task): baseline, method, difference (SDE Fig. 2)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    a, b = matrices[baseline], matrices[method]
    diff = b - a
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.1,
        subplot_titles=(baseline, method, f"{method} − {baseline}"),
    )
    lim = float(np.nanmax(np.abs(100 * diff.values))) or 1.0
    for col, (mat, kw) in enumerate(
        (
            (a, {"zmin": 0, "zmax": 100, "colorscale": "Viridis", "showscale": False}),
            (b, {"zmin": 0, "zmax": 100, "colorscale": "Viridis", "colorbar": _bar(0.645)}),
            (diff, {"zmin": -lim, "zmax": lim, "colorscale": "RdBu", "colorbar": _bar(1.01)}),
        ),
        start=1,
    ):
        z = 100 * mat.values
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(mat.columns),
                y=list(mat.index),
                text=np.round(z, 1),
                texttemplate="%{text}",
                **kw,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="trained on", autorange="reversed", row=1, col=1)
    for col in (2, 3):
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=col)
    fig.update_xaxes(title_text="evaluated on")
    fig.update_layout(title="Cross-task generalisation (held-out P@1, %)")
    return fig


def _bar(x: float) -> dict[str, Any]:
    return {"x": x, "thickness": 12, "len": 0.9}


def cross_task_matrix(
    encoder: Any,
    suite: Any,
    arms: Sequence[Arm],
    seeds: Sequence[int],
    training: HeadsTraining | None = None,
    *,
    on_run: Callable[[Arm, int, str], None] | None = None,
) -> tuple[dict[str, Any], GridResult]:
    """Train on each meta-task alone, evaluate on all (SDE Fig. 2).

    Meta-tasks without training pairs (:func:`trainable_meta_tasks`) get no row.

    Returns:
        ``(matrices, grid)``: ``matrices[arm]`` is a DataFrame (rows: training meta-task,
        columns: evaluated meta-task, values: mean held-out P@1 over seeds).
    """
    grid = run_grid(
        encoder, suite, arms, seeds, training, train_on=trainable_meta_tasks(suite), on_run=on_run
    )
    return cross_task_table(grid.scores), grid
