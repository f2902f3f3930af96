"""Distribution metrics of aligned text vs images: cosine-KDE JS, k-NN mixing and overlap (spec §2.3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.probes.distribution import (
    cosine_js_divergence,
    knn_mixing_rate,
    knn_overlap,
    pairwise_cosine_sample,
    trace_normalized_spectrum_alpha,
)


def _cloud(n: int, d: int, centre: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.eye(d)[centre] + spread * rng.standard_normal((n, d))


def test_pairwise_cosine_sample_uses_all_pairs_when_few() -> None:
    X = _cloud(30, 5, 0, 0.5, 0)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = Xn @ Xn.T
    sample = pairwise_cosine_sample(X, n_pairs=10_000)
    assert sample.size == 30 * 29 // 2
    assert sample.mean() == pytest.approx((C.sum() - 30) / (30 * 29))
    big = pairwise_cosine_sample(_cloud(500, 5, 0, 0.5, 1), n_pairs=1000, seed=3)
    assert big.size == 1000 and (big < 1 - 1e-9).all()  # never a row with itself


def test_js_is_small_for_same_distribution_and_large_for_different() -> None:
    a, b = _cloud(800, 16, 0, 0.2, 0), _cloud(800, 16, 0, 0.2, 1)
    far = _cloud(800, 16, 0, 1.0, 2)
    same = cosine_js_divergence(a, b, n_pairs=5000)
    diff = cosine_js_divergence(a, far, n_pairs=5000)
    assert 0 <= same.js < 0.01
    assert diff.js > 0.3 and diff.js <= 1.0  # base 2: bounded by 1
    assert diff.mean_a > diff.mean_b  # the tight cloud has the larger mean cosine
    dx = diff.grid[1] - diff.grid[0]
    assert diff.density_a.sum() * dx == pytest.approx(1.0, abs=0.02)
    assert cosine_js_divergence(far, a, n_pairs=5000).js == pytest.approx(diff.js, abs=0.05)


def test_knn_mixing_is_chance_for_identical_distributions_and_zero_for_separate() -> None:
    X, Y = _cloud(600, 8, 0, 0.3, 0), _cloud(400, 8, 0, 0.3, 1)
    mixed = knn_mixing_rate(X, Y, k=20)
    assert mixed.chance == pytest.approx(600 / 999)
    assert mixed.rate == pytest.approx(mixed.chance, abs=0.05)
    apart = knn_mixing_rate(X, _cloud(400, 8, 1, 0.05, 2), k=20)
    assert apart.rate == 0.0
    assert apart.per_query.shape == (400,)
    with pytest.raises(ValueError, match="k must be"):
        knn_mixing_rate(X[:5], Y[:5], k=10)


def test_knn_never_counts_a_text_as_its_own_neighbour() -> None:
    # two texts and many far images: each text's single nearest neighbour is the other text
    X = _cloud(50, 4, 0, 0.01, 0)
    Y = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.01, 0.0]])
    assert knn_mixing_rate(X, Y, k=1).rate == 0.0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), scale=st.floats(0.1, 10.0))
def test_knn_overlap_is_one_for_cosine_preserving_maps(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((120, 6))
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    row_scale = scale * rng.uniform(0.5, 2.0, (120, 1))
    assert knn_overlap(X, (X @ Q) * row_scale, k=10) == pytest.approx(1.0)


def test_knn_overlap_is_near_chance_for_a_scrambled_set() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6))
    overlap = knn_overlap(X, X[rng.permutation(400)], k=10)
    assert overlap < 0.1  # chance is 10/399
    with pytest.raises(ValueError, match="rows must match"):
        knn_overlap(X, X[:10])


def test_trace_normalized_spectrum_recovers_a_planted_power_law() -> None:
    rng = np.random.default_rng(0)
    ranks = np.arange(1, 65)
    X = rng.standard_normal((20_000, 64)) * ranks ** (-0.75)  # variances ∝ k^−1.5
    spec, alpha = trace_normalized_spectrum_alpha(X)
    assert spec.sum() == pytest.approx(1.0)
    assert (np.diff(spec) <= 1e-15).all()
    assert alpha == pytest.approx(1.5, abs=0.1)
