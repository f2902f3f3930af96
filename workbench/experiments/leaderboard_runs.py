"""Leaderboard results read from run directories, and the table built from them.

A leaderboard run (:func:`workbench.experiments.leaderboard.run_leaderboard`) logs its metrics
(``lb/...``) and diagnostics (``diag/...``) as the loop's ``eval`` records, so a finished run
directory holds everything its table row needs; ``workbench leaderboard RUN_DIR...`` and the
notebook both go through :func:`results_from_runs` and :func:`leaderboard_table`. The table's
"differs from InfoNCE beyond the seed spread" is :func:`~workbench.experiments.stats.spread_test`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.experiments.stats import spread_test

__all__ = [
    "COLUMNS",
    "RunResult",
    "format_leaderboard",
    "leaderboard_table",
    "median_step_time",
    "results_from_runs",
]

#: ``(column, label, display scale)`` of the table, in order; P@1 columns shown in percent.
COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("classification", "classification P@1 (%)", 100.0),
    ("retrieval_i2t", "retrieval i→t R@1 (%)", 100.0),
    ("retrieval_t2i", "retrieval t→i R@1 (%)", 100.0),
    ("perception", "MMVP-style P@1 (%)", 100.0),
    ("compositional", "compositional P@1 (%)", 100.0),
    ("zero_shot", "zero-shot held-out (%)", 100.0),
    ("fisher", "Fisher ratio (D)", 1.0),
    ("gap", "centroid gap", 1.0),
    ("erank", "effective rank", 1.0),
    ("step_ratio", "step time / InfoNCE", 1.0),
    ("wall_s", "wall-clock per run (s)", 1.0),
)


@dataclass
class RunResult:
    """One finished run (or one training-free fit) of a leaderboard row.

    Attributes:
        name: Row label (the method's registry name).
        seed: Its seed.
        final: Metrics at the last step (``lb/...``, ``diag/...`` keys).
        trajectory: ``[{"step": s, **metrics}]`` at every evaluation, step 0 first.
        steps: Optimiser steps (0 for a training-free method).
        seconds: Wall-clock of the run (training + its evaluations).
        step_time: Median seconds of one optimiser step, evaluations excluded (NaN: no steps).
        run_dir: The run directory (``None`` for a fit that has none).
    """

    name: str
    seed: int
    final: dict[str, float]
    trajectory: list[dict[str, float]]
    steps: int
    seconds: float
    step_time: float
    run_dir: Path | None

    def value(self, column: str) -> float:
        """This run's value of a table column (NaN when it has none)."""
        f = self.final
        if column == "erank":
            return float(
                np.mean([f.get("diag/image/erank", np.nan), f.get("diag/text/erank", np.nan)])
            )
        if column == "gap":
            return float(f.get("diag/gap", np.nan))
        if column == "wall_s":
            return float(self.seconds)
        return float(f.get(f"lb/{column}", np.nan))


def median_step_time(records: Sequence[dict[str, Any]]) -> float:
    """Median gap between consecutive step records with no evaluation between them."""
    gaps, prev = [], None
    for r in records:
        if r.get("kind") == "eval":
            prev = None
        elif r.get("kind") == "step" and "time" in r:
            if prev is not None:
                gaps.append(r["time"] - prev)
            prev = r["time"]
    return float(np.median(gaps)) if gaps else float("nan")


def results_from_runs(paths: Sequence[str | Path]) -> list[RunResult]:
    """Read leaderboard results from run directories (a ``"run:"`` prefix is accepted).

    Raises:
        ValueError: A path that is not a run directory, or a run without leaderboard records
            (not trained with the leaderboard's eval hook) — score it with
            :func:`workbench.experiments.leaderboard.score_runs`, which evaluates checkpoints.
    """
    from workbench.train import RunDir

    if isinstance(paths, (str, Path)):
        raise TypeError(
            "results_from_runs: paths must be a sequence of run directories, not one path"
        )
    out = []
    for p in paths:
        path = Path(str(p).removeprefix("run:"))
        try:
            rd = RunDir(path)
        except FileNotFoundError as err:
            raise ValueError(f"results_from_runs: {err}") from None
        records = rd.records()
        traj = [
            {"step": r["step"], **r["metrics"]}
            for r in records
            if r.get("kind") == "eval"
            and any(k.startswith(("lb/", "diag/")) for k in r.get("metrics", {}))
        ]
        if not traj:
            raise ValueError(
                f"results_from_runs: {path} has no leaderboard records (it was not trained with "
                "the leaderboard hook); score it with experiments.leaderboard.score_runs(paths, data)"
            )
        cfg = rd.raw_config["config"]
        steps = [r for r in records if r.get("kind") == "step"]
        seconds = float(steps[-1]["time"]) if steps else float("nan")
        final = {k: v for k, v in traj[-1].items() if k != "step"}
        out.append(RunResult(cfg["method"], int(cfg["seed"]), final, traj, int(cfg["steps"]),
                             seconds, median_step_time(records), path))  # fmt: skip
    return out


def leaderboard_table(
    results: Sequence[RunResult], skipped: Sequence[Any] = (), *, baseline: str = "infonce"
) -> Any:
    """Mean ± std over seeds per row and column, Δ vs ``baseline`` and the spread test.

    Args:
        results: Runs of every row and seed.
        skipped: :class:`~workbench.experiments.leaderboard.PlannedRow` s not run (or anything
            with ``name`` and ``reason``): one row each, ``status="not run"``, no values.
        baseline: Row every other is compared with; ``step_ratio`` is each run's step time over
            the baseline's at the same seed (its mean when that seed is missing).

    Returns:
        Long DataFrame ``row, column, mean, std, n_seeds, diff, exceeds_spread, status,
        reason``; ``diff``/``exceeds_spread`` are NaN/False for the baseline itself and for a
        missing baseline.
    """
    import pandas as pd

    if isinstance(results, RunResult) or not results:
        raise ValueError("leaderboard_table: results must be a non-empty sequence of RunResult")
    names = list(dict.fromkeys(r.name for r in results))
    base_time = {r.seed: r.step_time for r in results if r.name == baseline}
    mean_base = float(np.nanmean(list(base_time.values()))) if base_time else float("nan")
    values: dict[tuple[str, str], list[float]] = {}
    for r in results:
        for col, _, _ in COLUMNS:
            if col == "step_ratio":
                v = r.step_time / base_time.get(r.seed, mean_base)
            else:
                v = r.value(col)
            if math.isfinite(v):
                values.setdefault((r.name, col), []).append(v)
    rows = []
    for name in names:
        for col, _, _ in COLUMNS:
            v = np.asarray(values.get((name, col), []), dtype=np.float64)
            base = values.get((baseline, col), [])
            diff, exceeds = float("nan"), False
            if v.size and base and name != baseline:
                test = spread_test(v, base)
                diff, exceeds = test.diff, test.exceeds
            rows.append({
                "row": name, "column": col,
                "mean": float(v.mean()) if v.size else float("nan"),
                "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                "n_seeds": int(v.size), "diff": diff, "exceeds_spread": bool(exceeds),
                "status": "run", "reason": "",
            })  # fmt: skip
    for s in skipped:
        rows.append({"row": s.name, "column": "", "mean": float("nan"), "std": float("nan"),
                     "n_seeds": 0, "diff": float("nan"), "exceeds_spread": False,
                     "status": "not run", "reason": s.reason})  # fmt: skip
    return pd.DataFrame(rows)


def format_leaderboard(table: Any, digits: int = 1) -> Any:
    """Wide display: ``"mean ± std (Δ diff*)"`` per column (``*`` = beyond the seed spread);
    a row that was not run shows its reason instead."""
    import pandas as pd

    labels = {c: (lab, s) for c, lab, s in COLUMNS}
    out: dict[str, dict[str, str]] = {}
    for r in table.itertuples():
        row = out.setdefault(r.row, {})
        if r.status != "run":
            row["not run"] = r.reason
            continue
        label, scale = labels[r.column]
        if math.isnan(r.mean):
            row[label] = "—"
            continue
        txt = f"{scale * r.mean:.{digits}f}"
        if not math.isnan(r.std):
            txt += f" ± {scale * r.std:.{digits}f}"
        if not math.isnan(r.diff):
            txt += f" ({scale * r.diff:+.{digits}f}{'*' if r.exceeds_spread else ''})"
        row[label] = txt
    cols = [lab for _, lab, _ in COLUMNS]
    if (table.status != "run").any():
        cols.append("not run")
    return pd.DataFrame.from_dict(out, orient="index").reindex(columns=cols).fillna("")
