"""Fixed-frame decomposition Δ = β + γ + δ + ζ, POB drift, phantom drift, κ_eff, U→V coupling (spec §2.1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError

from workbench.probes.fixed_frame import (
    Decomposition,
    FixedFrame,
    kappa_eff,
    phantom_drift,
    phantom_drift_monte_carlo,
    pob_drift,
    uv_coupling,
)

D, R = 24, 5
E = np.eye(D)
# the planted gap: centres differ along e0 (in U → β) and along e20 − e21 (in V → γ)
BETA = 0.2 * E[0]
GAMMA = 0.1 * (E[20] - E[21])
DELTA_STD = np.array([0.03, 0.02, 0.015, 0.01, 0.005])  # anisotropic residual inside U
ZETA_STD = np.concatenate([[0.008, 0.004], np.full(D - R - 2, 0.001)])  # and inside V


def _planted(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paired embeddings whose shared content spans U = span(e0..e4) and whose gap is planted.

    Per-modality noise has std s/√2 per axis, so the *difference* δ/ζ has std s per axis.
    """
    rng = np.random.default_rng(seed)
    centre = E[22]
    shared = np.zeros((n, D))
    shared[:, :R] = 0.1 * rng.standard_normal((n, R))
    noise_std = np.concatenate([DELTA_STD, ZETA_STD]) / np.sqrt(2)
    x = centre + BETA / 2 + GAMMA / 2 + shared + noise_std * rng.standard_normal((n, D))
    y = centre - BETA / 2 - GAMMA / 2 + shared + noise_std * rng.standard_normal((n, D))
    return x, y


@pytest.fixture(scope="module")
def planted() -> tuple[FixedFrame, Decomposition, np.ndarray, np.ndarray]:
    x, y = _planted()
    frame = FixedFrame(energy=0.9).fit(x[:10_000], y[:10_000])  # probe set
    return frame, frame.decompose(x[10_000:], y[10_000:]), x, y


def test_frame_recovers_the_planted_subspace(planted) -> None:
    frame, *_ = planted
    assert frame.rank_ == R
    P_hat = frame.U_ @ frame.U_.T
    P_true = np.diag((np.arange(D) < R).astype(float))
    assert np.linalg.norm(P_hat - P_true, 2) < 0.05  # sin of the largest principal angle
    np.testing.assert_allclose(frame.U_.T @ frame.U_, np.eye(R), atol=1e-12)
    np.testing.assert_allclose(frame.U_.T @ frame.V_, 0.0, atol=1e-12)


def test_decomposition_recovers_planted_biases_and_residual_structure(planted) -> None:
    _, dec, *_ = planted
    # the normalisation to the sphere distorts the planted numbers only at second order
    np.testing.assert_allclose(dec.beta, BETA, atol=0.01)
    np.testing.assert_allclose(dec.gamma, GAMMA, atol=0.01)
    assert dec.beta_norm == pytest.approx(0.2, rel=0.05)
    assert dec.gamma_norm == pytest.approx(np.sqrt(2) * 0.1, rel=0.05)
    # δ carries the anisotropic residual inside U, ζ the one inside V
    var_delta = np.diag(np.cov(dec.delta, rowvar=False))[:R]
    np.testing.assert_allclose(np.sqrt(var_delta), DELTA_STD, rtol=0.15)
    var_zeta = np.diag(np.cov(dec.zeta, rowvar=False))[R : R + 2]
    np.testing.assert_allclose(np.sqrt(var_zeta), ZETA_STD[:2], rtol=0.15)
    assert dec.delta.mean(0) == pytest.approx(np.zeros(D), abs=1e-12)
    # κ_eff of Cov(δ): λ1/λk over the planted variances holding 99 % of the trace
    v = DELTA_STD**2
    k = np.searchsorted(np.cumsum(v) / v.sum(), 0.99)
    assert kappa_eff(np.cov(dec.delta, rowvar=False)) == pytest.approx(v[0] / v[k], rel=0.25)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 40),
    d=st.integers(2, 12),
    energy=st.floats(0.05, 1.0),
)
def test_four_parts_sum_to_the_gap(seed: int, n: int, d: int, energy: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) + 3 * rng.standard_normal(d)
    y = rng.standard_normal((n, d))
    dec = FixedFrame(energy=energy).fit(x, y).decompose(x, y)
    rebuilt = dec.beta + dec.gamma + dec.delta + dec.zeta
    assert np.abs(dec.gap - rebuilt).max() < 1e-10
    assert dec.reconstruction_error() < 1e-10
    assert abs(dec.beta @ dec.gamma) < 1e-10  # U ⟂ V


def test_frame_errors() -> None:
    with pytest.raises(NotFittedError):
        FixedFrame().decompose(np.ones((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="energy"):
        FixedFrame(energy=1.5).fit(np.eye(3), np.eye(3))
    frame = FixedFrame(rank=2).fit(np.random.default_rng(0).standard_normal((10, 4)), np.eye(4))
    assert frame.rank_ == 2
    with pytest.raises(ValueError, match="rows"):
        frame.decompose(np.ones((5, 4)), np.ones((4, 4)))  # decompose needs pairs
    with pytest.raises(ValueError, match="NaN"):
        frame.decompose(np.full((3, 4), np.nan), np.ones((3, 4)))


def test_pob_drift(planted) -> None:
    frame, _, x, y = planted
    ref = (x[10_000:], y[10_000:])
    same = pob_drift(frame, ref, ref)
    assert same.relative_drift == 0.0 and same.cosine == pytest.approx(1.0)
    # a later checkpoint whose text moved further along the V axis e20: γ grows along e20
    moved = pob_drift(frame, ref, (x[10_000:], y[10_000:] - 0.05 * E[20]))
    expected = np.linalg.norm(moved.gamma - moved.gamma_ref) / np.linalg.norm(moved.gamma_ref)
    assert moved.relative_drift == pytest.approx(expected)
    assert moved.relative_drift == pytest.approx(0.05 / np.linalg.norm(GAMMA), rel=0.1)
    assert 0 < moved.cosine < 1


def test_phantom_drift_matches_monte_carlo_and_vanishes_tangentially_when_isotropic() -> None:
    rng = np.random.default_rng(0)
    mu = np.array([2.0, 0.5, 0.0, 0.0, 0.0])
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    cov = Q @ np.diag([0.08, 0.04, 0.02, 0.01, 0.005]) @ Q.T
    est = phantom_drift(mu, cov)
    mc = phantom_drift_monte_carlo(mu, cov, n_samples=400_000, seed=1)
    assert np.linalg.norm(mc - est.total) < 0.1 * np.linalg.norm(est.total)
    a = mu / np.linalg.norm(mu)
    assert abs(est.tangential @ a) < 1e-14
    np.testing.assert_allclose(est.radial, a * (a @ est.total), atol=1e-14)
    iso = phantom_drift(mu, 0.03 * np.eye(5))
    np.testing.assert_allclose(iso.tangential, 0.0, atol=1e-15)
    with pytest.raises(ValueError, match="zero vector"):
        phantom_drift(np.zeros(5), cov)


def test_kappa_eff_definition() -> None:
    assert kappa_eff(np.diag([10.0, 5.0, 1.0, 1e-6])) == pytest.approx(10.0)  # 3 axes hold 99 %
    assert kappa_eff(np.diag([10.0, 5.0, 1.0, 1e-6]), mass=0.5) == pytest.approx(1.0)
    assert kappa_eff(np.eye(7)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="square"):
        kappa_eff(np.ones((3, 2)))
    with pytest.raises(ValueError, match="zero trace"):
        kappa_eff(np.zeros((3, 3)))


def test_uv_coupling_recovers_planted_linear_map() -> None:
    rng = np.random.default_rng(0)
    d, r, n = 10, 4, 5000
    frame = FixedFrame(rank=r).fit(
        np.hstack([rng.standard_normal((200, r)) * 5, rng.standard_normal((200, d - r))]),
        rng.standard_normal((200, d)) * 0.01,
    )
    A = rng.standard_normal((r, d - r)) * 0.5
    dc = rng.standard_normal((n, r))  # δ in U coordinates
    zc = dc @ A + 0.3 * rng.standard_normal((n, d - r))
    delta, zeta = dc @ frame.U_.T, zc @ frame.V_.T
    dec = Decomposition(
        gap=delta + zeta, mean=np.zeros(d), beta=np.zeros(d), gamma=np.zeros(d), delta=delta,
        zeta=zeta, beta_norm=0.0, gamma_norm=0.0, delta_norms=np.linalg.norm(delta, axis=1),
        zeta_norms=np.linalg.norm(zeta, axis=1),
    )  # fmt: skip
    cpl = uv_coupling(frame, dec, alpha=1e-6)
    assert cpl.spectral_norm == pytest.approx(np.linalg.norm(A, 2), rel=0.05)
    signal = np.square(dc @ A).sum()
    assert cpl.r2 == pytest.approx(signal / (signal + 0.09 * n * (d - r)), abs=0.03)
