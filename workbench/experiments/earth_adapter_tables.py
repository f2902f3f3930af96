"""The tables of the Earth-Adapter study (:mod:`workbench.experiments.earth_adapter`): mIoU per
row and domain with the seed-spread test, row differences, the ρ sweep and trainable parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.experiments.earth_adapter import TARGETS, StudyResult
from workbench.experiments.stats import spread_test

__all__ = ["compare_rows", "domain_table", "format_domain_table", "rho_table", "trainable_table"]


# -- tables ------------------------------------------------------------------------------------
def _per_seed(scores: Any, domains: Sequence[str]) -> Any:
    """Wide per-seed mIoU: index (row, seed), columns clean, domains…, targets (their mean)."""
    wide = scores.pivot_table(index=["row", "seed"], columns="domain", values="miou")
    wide[TARGETS] = wide[list(domains)].mean(axis=1)
    return wide[["clean", *domains, TARGETS]]


def domain_table(scores: Any, domains: Sequence[str], baseline: str) -> Any:
    """Mean ± std over seeds of mIoU per row and domain (+ the target mean), with the difference
    from ``baseline`` and :func:`spread_test`.

    Args:
        scores: Rows of one ``table`` and ``mode`` of :attr:`StudyResult.scores`.
        domains: Target domains (columns after ``clean``).
        baseline: Row to compare with.

    Returns:
        Long DataFrame ``row, column, mean, std, n_seeds, diff, exceeds_spread``.
    """
    import pandas as pd

    wide = _per_seed(scores, domains)
    rows = list(dict.fromkeys(scores["row"]))
    if baseline not in rows:
        raise ValueError(f"domain_table: baseline {baseline!r} is not a row of {rows}")
    out = []
    for row in rows:
        for col in wide.columns:
            v = wide.loc[row, col].to_numpy(dtype=np.float64)
            test = spread_test(v, wide.loc[baseline, col].to_numpy(dtype=np.float64))
            out.append({"row": row, "column": col, "mean": float(v.mean()),
                        "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                        "n_seeds": int(v.size), "diff": test.diff,
                        "exceeds_spread": test.exceeds})  # fmt: skip
    return pd.DataFrame(out)


def format_domain_table(table: Any, baseline: str, paper: dict[str, float] | None = None) -> Any:
    """Wide display of :func:`domain_table` in %: ``mean ± std (Δ*)`` (Δ from ``baseline``,
    ``*`` = beyond the seed spread); a ``paper`` column when given (row → the paper's number)."""
    from workbench.experiments.tables import spread_grid

    wide = spread_grid(table, "row", "column", baseline)
    if paper is not None:
        wide["paper"] = [f"{paper[r]:.1f}" if r in paper else "" for r in wide.index]
    return wide


def rho_table(scores: Any, domains: Sequence[str], grid: tuple[int, int]) -> Any:
    """ρ sweep: per ρ, the cutoff k on the mixture layers' ``grid`` and mIoU mean ± std on clean
    and over the target domains."""
    import pandas as pd

    from workbench.methods.earth_adapter import low_pass_cutoff

    out = []
    for ratio, sub in scores.groupby("ratio"):
        wide = _per_seed(sub, domains)
        rec = {
            "ratio": float(ratio),
            "k": low_pass_cutoff(grid, float(ratio)),
            "n_seeds": len(wide),
        }
        for col in ("clean", TARGETS):
            v = wide[col].to_numpy(dtype=np.float64)
            rec[f"{col}_mean"] = float(v.mean())
            rec[f"{col}_std"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        out.append(rec)
    return pd.DataFrame(out)


def compare_rows(scores: Any, domains: Sequence[str], a: str, b: str) -> Any:
    """Row ``a`` minus row ``b`` per column (mIoU points), with :func:`spread_test`:
    DataFrame ``column, diff, spread, exceeds_spread`` (empty when either row is missing)."""
    import pandas as pd

    if not {a, b} <= set(scores["row"]):
        return pd.DataFrame(columns=["column", "diff", "spread", "exceeds_spread"])
    wide = _per_seed(scores, domains)
    out = []
    for col in wide.columns:
        test = spread_test(wide.loc[a, col].to_numpy(), wide.loc[b, col].to_numpy())
        out.append({"column": col, "diff": 100 * test.diff, "spread": 100 * test.spread,
                    "exceeds_spread": test.exceeds})  # fmt: skip
    return pd.DataFrame(out)


def trainable_table(result: StudyResult) -> Any:
    """Per DG row: trainable parameters (adapters, routers, scales, head), training seconds
    (mean over seeds) and, for its DA continuation, the mean confident pseudo-label fraction."""
    import pandas as pd

    recs = [{"table": t, "mode": m, "row": r, "ratio": rho, "seed": s, **info}
            for (t, m, r, rho, s), info in result.runs.items()]  # fmt: skip
    df = pd.DataFrame(recs)
    keys = ["table", "row", "ratio"]
    out = (
        df[df["mode"] == "dg"]
        .groupby(keys, sort=False)
        .agg(n_trainable=("n_trainable", "first"), dg_seconds=("seconds", "mean"))
    )
    da = df[df["mode"] == "da"]
    if len(da):
        out = out.join(
            da.groupby(keys, sort=False).agg(
                da_seconds=("seconds", "mean"), confident_fraction=("confident_fraction", "mean")
            )
        )
    return out.reset_index()
