"""Cosine distributions, cone width, alignment/uniformity and anisotropy against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.probes.geometry import (
    alignment,
    anisotropy,
    cone_width,
    cosine_distribution,
    uniformity,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
shapes = st.tuples(st.integers(2, 30), st.integers(1, 8), st.integers(0, 10_000))


def _rows(n: int, d: int, seed: int, offset: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)) + offset


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@FAST
@given(shapes)
def test_cone_width_is_mean_off_diagonal_cosine_and_streams(shape):
    n, d, seed = shape
    X = _rows(n, d, seed)
    C = _unit(X) @ _unit(X).T
    brute = (C.sum() - np.trace(C)) / (n * (n - 1))
    assert cone_width(X) == pytest.approx(brute, abs=1e-12)
    assert cone_width(iter(np.array_split(X, 3))) == pytest.approx(brute, abs=1e-12)
    assert cosine_distribution(X).mean == pytest.approx(brute, abs=1e-12)


def test_cosine_distribution_counts_pairs_and_samples_without_self_pairs():
    X = _rows(40, 5, 0)
    exact = cosine_distribution(X, bins=20)
    assert exact.exact and exact.n_pairs == 40 * 39 // 2 == len(exact.values)
    assert exact.counts.sum() == exact.n_pairs and len(exact.edges) == 21
    assert exact.quantiles["q5"] <= exact.quantiles["q50"] <= exact.quantiles["q95"]
    sampled = cosine_distribution(X, max_pairs=300, seed=1)
    assert not sampled.exact and len(sampled.values) == 300
    assert np.all(sampled.values < 1 - 1e-9) or np.linalg.matrix_rank(X) < 2  # no i == j
    cross = cosine_distribution(X, X[:7])
    assert cross.n_pairs == 40 * 7 and cross.values.max() == pytest.approx(1.0)


def test_alignment_matches_definition():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((50, 6)), rng.standard_normal((50, 6))
    d = np.linalg.norm(_unit(X) - _unit(Y), axis=1)
    assert alignment(X, Y) == pytest.approx(np.mean(d**2))
    assert alignment(X, Y, alpha=1.0) == pytest.approx(np.mean(d))
    assert alignment(X, 3.0 * X) == pytest.approx(0.0, abs=1e-12)
    assert alignment(X, -X) == pytest.approx(4.0)


@FAST
@given(shapes, st.floats(0.5, 4.0))
def test_uniformity_matches_brute_force_and_is_rotation_invariant(shape, t):
    n, d, seed = shape
    X = _rows(n, d, seed)
    U = _unit(X)
    sq = np.sum((U[:, None] - U[None]) ** 2, axis=-1)[np.triu_indices(n, k=1)]
    brute = np.log(np.mean(np.exp(-t * sq)))
    assert uniformity(X, t, block=3) == pytest.approx(brute, abs=1e-9)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    assert uniformity(X @ Q, t) == pytest.approx(brute, abs=1e-9)


def test_uniformity_extremes():
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0)
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]]), t=2.0) == pytest.approx(-8.0)


def test_anisotropy_extremes():
    same = anisotropy(np.tile([[1.0, 2.0, 3.0]], (10, 1)) * np.arange(1, 11)[:, None])
    assert same.mean_cosine == pytest.approx(1.0) and same.mean_resultant_length == pytest.approx(1)
    iso = anisotropy(np.vstack([np.eye(4), -np.eye(4)]))
    assert iso.mean_resultant_length == pytest.approx(0.0, abs=1e-12)
    assert iso.top_variance_fraction == pytest.approx(1 / 4)
    assert iso.mean_cosine == pytest.approx(-1 / 7)


def test_bad_input():
    X = _rows(10, 3, 0)
    Z = X.copy()
    Z[6] = 0.0
    with pytest.raises(ValueError, match=r"zero-norm.*row 6"):
        cone_width(Z)
    with pytest.raises(ValueError, match="zero-norm"):
        uniformity(Z)
    N = X.copy()
    N[3, 1] = np.nan
    for fn in (cone_width, uniformity, anisotropy, cosine_distribution):
        with pytest.raises(ValueError, match=r"NaN.*row 3"):
            fn(N)
    with pytest.raises(ValueError, match="rows"):
        alignment(X, X[:5])
    with pytest.raises(ValueError, match="dimension"):
        alignment(X, X[:, :2])
    with pytest.raises(ValueError, match="dimension"):
        cosine_distribution(X, X[:, :2])
    with pytest.raises(ValueError, match="t must"):
        uniformity(X, t=0)
    with pytest.raises(ValueError, match="at least 2"):
        cone_width(X[:1])
    with pytest.raises(ValueError, match="int"):
        cone_width(np.ones((3, 3), dtype=int))
