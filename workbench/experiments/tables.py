"""Tables of grid results: mean ± std over seeds, the difference from a baseline and the spread test.

Every "differs beyond the seed spread" in the workbench is :func:`workbench.experiments.stats.spread_test`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.experiments.stats import spread_test

__all__ = [
    "OVERALL",
    "ablation_table",
    "cross_task_table",
    "format_table",
    "summary_records",
    "table_figure",
]

#: Column label of the mean over meta-tasks.
OVERALL = "overall"


def ablation_table(scores: Any, baseline: str | None = None) -> Any:
    """Mean ± std over seeds per arm and meta-task (plus overall), with the baseline difference.

    Args:
        scores: ``GridResult.scores`` (one ``train_on`` value).
        baseline: Arm to difference against (default: the first arm).

    Returns:
        Long DataFrame ``arm, column, mean, std, n_seeds, diff, exceeds_spread``: ``column`` is
        a meta-task or ``"overall"``; ``std`` is the sample std over seeds (NaN for one seed);
        ``diff`` = mean − baseline mean; ``exceeds_spread`` is
        :func:`~workbench.experiments.stats.spread_test` (the two mean ± std intervals do not
        overlap; always ``False`` with one seed).
    """
    import pandas as pd

    df = scores[scores["level"].isin(["meta_task", "overall"])].copy()
    if df["train_on"].nunique() > 1:
        raise ValueError("ablation_table takes scores of one training set; filter train_on first")
    df["column"] = np.where(df["level"] == "overall", OVERALL, df["meta_task"])
    arms = list(dict.fromkeys(df["arm"]))
    baseline = baseline or arms[0]
    if baseline not in arms:
        raise ValueError(f"baseline {baseline!r} is not an arm; arms: {arms}")
    columns = [*dict.fromkeys(c for c in df["column"] if c != OVERALL), OVERALL]
    values = df.groupby(["arm", "column"])["value"].apply(list)
    rows = []
    for arm in arms:
        for col in columns:
            v = np.asarray(values.loc[(arm, col)], dtype=np.float64)
            test = spread_test(v, values.loc[(baseline, col)])
            rows.append(
                {
                    "arm": arm,
                    "column": col,
                    "mean": float(v.mean()),
                    "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                    "n_seeds": int(v.size),
                    "diff": test.diff,
                    "exceeds_spread": test.exceeds,
                }
            )
    return pd.DataFrame(rows)


def spread_grid(
    table: Any,
    rows: str,
    columns: str,
    baseline: str,
    *,
    digits: int = 1,
    scale: float = 100.0,
    column_order: Sequence[str] | None = None,
) -> Any:
    """Wide ``"mean ± std (Δ diff*)"`` grid of a long table with ``mean, std, diff,
    exceeds_spread`` per (``rows``, ``columns``) pair; ``*`` = the difference from ``baseline``
    (the ``rows`` value whose cells carry no Δ) exceeds the seed spread. A NaN ``std`` (one
    seed) prints the mean alone. Values are multiplied by ``scale``; rows and columns keep
    their order of first appearance unless ``column_order`` is given.
    """
    import pandas as pd

    def cell(r: Any) -> str:
        txt = f"{scale * r['mean']:.{digits}f}"
        if not math.isnan(r["std"]):
            txt += f" ± {scale * r['std']:.{digits}f}"
        if r[rows] != baseline:
            txt += f" ({scale * r['diff']:+.{digits}f}{'*' if r['exceeds_spread'] else ''})"
        return txt

    wide = table.assign(cell=table.apply(cell, axis=1)).pivot(
        index=rows, columns=columns, values="cell"
    )
    cols = list(column_order) if column_order is not None else list(dict.fromkeys(table[columns]))
    return pd.DataFrame(wide, index=list(dict.fromkeys(table[rows])), columns=cols)


def format_table(table: Any, digits: int = 1, scale: float = 100.0) -> Any:
    """Wide display of :func:`ablation_table`: ``"mean ± std (Δ diff)"``, ``*`` = exceeds spread.

    Values are multiplied by ``scale`` (P@1 in percent by default).
    """
    cols = [*dict.fromkeys(c for c in table["column"] if c != OVERALL), OVERALL]
    return spread_grid(table, "arm", "column", table["arm"].iloc[0], digits=digits, scale=scale,
                       column_order=cols)  # fmt: skip


def cross_task_table(scores: Any) -> dict[str, Any]:
    """Per arm, the (train meta-task × eval meta-task) matrix of mean P@1 over seeds (SDE Fig. 2)."""
    df = scores[(scores["level"] == "meta_task") & (scores["train_on"] != "all")]
    out = {}
    for arm, sub in df.groupby("arm", sort=False):
        order = list(dict.fromkeys(sub["train_on"]))
        cols = list(dict.fromkeys(sub["meta_task"]))
        mat = sub.pivot_table(index="train_on", columns="meta_task", values="value", aggfunc="mean")
        out[arm] = mat.loc[order, cols]
    return out


def summary_records(table: Any) -> list[dict[str, Any]]:
    """JSON-able rows of a table DataFrame (NaN → ``None``)."""
    recs = table.to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in recs
    ]


def table_figure(table: Any, *, title: str = "Held-out Precision@1") -> Any:
    """Grouped bars of :func:`ablation_table`: mean ± std per arm (colour) and column (x)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for arm, sub in table.groupby("arm", sort=False):
        fig.add_trace(
            go.Bar(
                x=sub["column"],
                y=100 * sub["mean"],
                error_y={"type": "data", "array": 100 * sub["std"].fillna(0)},
                name=arm,
            )
        )
    fig.update_layout(
        title=title, barmode="group", yaxis_title="Precision@1 (%)", legend_title="arm"
    )
    return fig
