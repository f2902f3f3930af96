"""Ready-made evaluation hooks for :func:`workbench.train.train` (``eval_hooks=[...]``).

A hook is any callable ``(encoder, step) -> dict[str, float]``; it runs on rank 0 with the
encoder in eval mode and the training RNG isolated, and its metrics land in ``eval`` records of
``log.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

EvalHook = Callable[[nn.Module, int], dict[str, float]]


def suite_hook(
    suite: Any = None,
    *,
    tower_source: nn.Module | None = None,
    metrics: tuple[str, ...] | None = None,
) -> EvalHook:
    """Score the encoder on the D/P/retrieval suite (:func:`workbench.probes.suite.score_encoder`).

    Args:
        suite: A :class:`~workbench.probes.suite.SuiteConfig` (defaults if ``None``).
        tower_source: The untrained encoder whose cached tower features may be reused — valid
            for heads-only runs, where the towers do not change (``score_encoder`` checks it).
        metrics: Keep only these metric names (e.g. ``("knn_acc", "mmvp_mean")``); all if None.

    Returns:
        A hook giving ``{"<dataset>/<metric>": value}`` (mean over the suite's seeds).
    """

    def hook(encoder: nn.Module, step: int) -> dict[str, float]:
        from workbench.probes.suite import score_encoder

        table = score_encoder(encoder, suite, label=f"step {step}", tower_source=tower_source)
        if metrics is not None:
            table = table[table["metric"].isin(metrics)]
        means = table.groupby(["dataset", "metric"])["value"].mean()
        return {f"{ds}/{metric}": float(v) for (ds, metric), v in means.items()}

    return hook
