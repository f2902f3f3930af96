"""The one seed-spread test: does a difference between two arms exceed what reseeding moves?

Every table and scatter that marks a difference as real (SDE/FANoise ablation tables, the D/P
separation check, each method notebook's rows) calls :func:`spread_test`.

Which test: the two arms' *mean ± one sample standard deviation* intervals over seeds do not
overlap, ``|mean_a − mean_b| > std_a + std_b`` (``ddof=1``), and never with fewer than two seeds
per arm.

Why this one: with the 3 seeds a CPU budget allows, a t-test has 2–4 degrees of freedom and its
p-value swings with a single run, while the interval rule is exactly what a reader sees in a
"mean ± std" table. It is conservative: with equal spreads ``s`` and 3 seeds per arm it asks for
``|Δ| > 2s``, i.e. 2.45 standard errors of the difference, about a two-sided Welch t-test at
p ≈ 0.07. It says nothing about pairing (arms share seeds); it never reports a difference a
paired test would call noise, but may miss small paired effects — run more seeds for those.

>>> spread_test([0.50, 0.52, 0.51], [0.40, 0.41, 0.39]).exceeds
True
>>> spread_test([0.50, 0.52, 0.51], [0.50, 0.49, 0.53]).exceeds
False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SpreadTest", "spread_test", "spread_test_from_stats"]


@dataclass(frozen=True)
class SpreadTest:
    """Result of :func:`spread_test`.

    Attributes:
        diff: ``mean_a − mean_b``.
        spread: ``std_a + std_b`` (sample std over seeds; NaN with one seed).
        exceeds: ``|diff| > spread`` with ≥ 2 seeds in each arm (``False`` otherwise).
        n_a, n_b: Seeds per arm.
    """

    diff: float
    spread: float
    exceeds: bool
    n_a: int
    n_b: int


def spread_test_from_stats(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> SpreadTest:
    """:func:`spread_test` from per-arm means, sample stds and seed counts."""
    diff = float(mean_a - mean_b)
    spread = float(std_a + std_b)
    exceeds = bool(n_a >= 2 and n_b >= 2 and math.isfinite(spread) and abs(diff) > spread)
    return SpreadTest(diff, spread, exceeds, int(n_a), int(n_b))


def spread_test(a: Sequence[float], b: Sequence[float]) -> SpreadTest:
    """Compare arm ``a``'s per-seed values with arm ``b``'s (see the module docstring).

    Args:
        a: One value per seed of arm ``a`` (finite).
        b: One value per seed of arm ``b`` (finite).

    Raises:
        ValueError: An empty arm or a non-finite value.
    """
    xa, xb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    for name, x in (("a", xa), ("b", xb)):
        if x.size == 0:
            raise ValueError(f"spread_test: arm {name} has no values")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"spread_test: arm {name} holds a non-finite value: {x.tolist()}")
    std = lambda x: float(x.std(ddof=1)) if x.size > 1 else float("nan")  # noqa: E731
    return spread_test_from_stats(xa.mean(), std(xa), xa.size, xb.mean(), std(xb), xb.size)
