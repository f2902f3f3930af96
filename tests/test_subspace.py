"""Principal angles, subspace overlap and clean-vs-perturbed singular-vector alignment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.probes.subspace import (
    principal_angles,
    singular_vector_alignment,
    subspace_overlap,
    top_subspace,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("theta", [0.0, 1e-6, 0.3, np.pi / 2])
def test_angle_between_two_lines_in_a_plane(theta):
    a = np.array([[1.0], [0.0], [0.0]])
    b = np.array([[np.cos(theta)], [np.sin(theta)], [0.0]])
    assert principal_angles(a, b)[0] == pytest.approx(theta, abs=1e-12)


@FAST
@given(st.integers(2, 8), st.integers(1, 4), st.integers(1, 4), st.integers(0, 10_000))
def test_angles_are_sorted_symmetric_and_rotation_invariant(d, p, q, seed):
    p, q = min(p, d), min(q, d)
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((d, p)), rng.standard_normal((d, q))
    th = principal_angles(A, B)
    assert len(th) == min(p, q) and np.all(np.diff(th) >= 0)
    assert np.all((th >= 0) & (th <= np.pi / 2 + 1e-12))
    np.testing.assert_allclose(principal_angles(B, A), th, atol=1e-10)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    np.testing.assert_allclose(principal_angles(Q @ A, Q @ B), th, atol=1e-8)
    assert 0.0 <= subspace_overlap(A, B) <= 1.0 + 1e-12


def test_same_span_in_another_basis_has_zero_angles_and_full_overlap():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((10, 3))
    B = A @ rng.standard_normal((3, 3))
    np.testing.assert_allclose(principal_angles(A, B), 0.0, atol=1e-7)
    assert subspace_overlap(A, B) == pytest.approx(1.0)
    assert subspace_overlap(A[:, :1], A) == pytest.approx(1.0)  # contained
    e = np.eye(4)
    assert subspace_overlap(e[:, :2], e[:, 2:]) == pytest.approx(0.0)


def test_top_subspace_is_an_orthonormal_basis_of_the_leading_directions():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 6)) * np.array([10, 5, 1, 0.5, 0.1, 0.1])
    V = top_subspace(X, 2)
    np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(principal_angles(V, np.eye(6)[:, :2]), 0, atol=0.1)
    with pytest.raises(ValueError, match="k must"):
        top_subspace(X, 7)


def test_unperturbed_features_align_perfectly():
    X = np.random.default_rng(2).standard_normal((100, 8)) * np.arange(8, 0, -1)
    r = singular_vector_alignment(X, X.copy(), k=5)
    np.testing.assert_allclose(r.cosines, 1.0, atol=1e-10)
    np.testing.assert_allclose(r.relative_change, 0.0, atol=1e-12)
    np.testing.assert_allclose(r.overlap_matrix, np.eye(5), atol=1e-8)


def test_small_perturbation_keeps_well_separated_directions():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 10)) * (2.0 ** -np.arange(10))
    Y = X + 1e-4 * rng.standard_normal(X.shape)
    r = singular_vector_alignment(X, Y)
    assert r.k == 10
    assert np.all(r.cosines[:5] > 0.999) and np.all(r.captured <= 1.0)
    assert np.all(r.principal_angles[:5] < 1e-2)


def test_bad_input():
    X = np.random.default_rng(4).standard_normal((20, 4))
    with pytest.raises(ValueError, match="rows"):
        singular_vector_alignment(X, X[:10])
    with pytest.raises(ValueError, match="dimension"):
        singular_vector_alignment(X, X[:, :3])
    with pytest.raises(ValueError, match="k must"):
        singular_vector_alignment(X, X, k=0)
    Xn = X.copy()
    Xn[5, 0] = np.inf
    with pytest.raises(ValueError, match=r"Inf.*row 5"):
        singular_vector_alignment(X, Xn)
    with pytest.raises(ValueError, match="linearly dependent"):
        principal_angles(np.ones((4, 2)), np.eye(4)[:, :1])
    with pytest.raises(ValueError, match="dimension"):
        principal_angles(np.eye(4)[:, :1], np.eye(3)[:, :1])
