"""Evaluation hooks the training loop calls: :func:`workbench.train.train` (``eval_hooks=[...]``).

A hook is any callable ``(encoder, step) -> dict[str, float]``; it runs on rank 0 with the
encoder in eval mode and the training RNG isolated, and its metrics land in ``eval`` records of
``log.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

EvalHook = Callable[[nn.Module, int], dict[str, float]]

__all__ = ["EvalHook", "suite_hook", "task_suite_hook"]


def suite_hook(
    suite: Any = None,
    *,
    tower_source: nn.Module | None = None,
    metrics: tuple[str, ...] | None = None,
) -> EvalHook:
    """Score the encoder on the D/P/retrieval suite (:func:`workbench.evals.dp_suite.score_encoder`).

    Args:
        suite: A :class:`~workbench.evals.dp_suite.SuiteConfig` (defaults if ``None``).
        tower_source: The untrained encoder whose cached tower features may be reused — valid
            for heads-only runs, where the towers do not change (``score_encoder`` checks it).
        metrics: Keep only these metric names (e.g. ``("knn_acc", "mmvp_mean")``); all if None.

    Returns:
        A hook giving ``{"<dataset>/<metric>": value}`` (mean over the suite's seeds).
    """

    def hook(encoder: nn.Module, step: int) -> dict[str, float]:
        from workbench.evals.dp_suite import score_encoder

        table = score_encoder(encoder, suite, label=f"step {step}", tower_source=tower_source)
        if metrics is not None:
            table = table[table["metric"].isin(metrics)]
        means = table.groupby(["dataset", "metric"])["value"].mean()
        return {f"{ds}/{metric}": float(v) for (ds, metric), v in means.items()}

    return hook


def task_suite_hook(suite: Any, *, check_towers: bool = True) -> EvalHook:
    """Score the encoder's heads on an MMEB-style :class:`~workbench.evals.task_suite.TaskSuite`.

    Returns a hook giving ``{"tasks/<meta-task>": P@1, "tasks/overall": P@1}`` on the suite's
    held-out split (cheap: only the heads run on the cached tower features). With
    ``check_towers`` the encoder's towers must be the ones the suite was built from.
    """

    def hook(encoder: nn.Module, step: int) -> dict[str, float]:
        df = suite.evaluate(encoder, check_towers=check_towers)
        out = {
            f"tasks/{r.meta_task}": float(r.value) for r in df[df.level == "meta_task"].itertuples()
        }
        out["tasks/overall"] = float(df[df.level == "overall"]["value"].iloc[0])
        return out

    return hook
