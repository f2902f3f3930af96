"""Learning-rate schedules and stage bookkeeping, as pure functions of the step.

The learning rate is recomputed from the step at every step (no scheduler object carries state),
so resuming needs nothing beyond the step counter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from workbench.methods.base import Stage


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak LR at 0-based ``step`` of a ``steps``-long stage.

    Linear warm-up ``(step + 1) / warmup`` for the first ``warmup`` steps (never 0, so step 0
    already moves), then ``cosine`` (½(1 + cos πp)), ``linear`` (1 − p) or ``constant`` (1),
    with p the post-warm-up progress in [0, 1).
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(steps - warmup, 1)
    p = min((step - warmup) / span, 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return 1.0 - p
    raise ValueError(f"unknown schedule {schedule!r}; use cosine, linear or constant")


def stage_at(stages: Sequence[Stage], step: int) -> tuple[int, Stage, int]:
    """``(stage index, stage, step inside the stage)`` for 0-based global ``step``."""
    start = 0
    for i, stage in enumerate(stages):
        if step < start + stage.steps:
            return i, stage, step - start
        start += stage.steps
    last = len(stages) - 1
    return last, stages[last], step - (start - stages[last].steps)


def check_stages(stages: Sequence[Stage], total_steps: int) -> None:
    """Raise ``ValueError`` unless stage names are unique, steps ≥ 1, and they sum to ``total_steps``."""
    if not stages:
        raise ValueError("a method must define at least one stage")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    if any(s.steps < 1 for s in stages):
        raise ValueError(f"every stage needs ≥ 1 step, got {[(s.name, s.steps) for s in stages]}")
    if sum(s.steps for s in stages) != total_steps:
        raise ValueError(
            f"stage steps {[(s.name, s.steps) for s in stages]} sum to "
            f"{sum(s.steps for s in stages)}, but the run has {total_steps} steps"
        )
