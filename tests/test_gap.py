"""Modality gap, the shift experiment and the cone effect (Mind the Gap; spec §0, §3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from workbench.probes.gap import (
    clip_loss,
    cone_effect,
    modality_gap,
    retrieval_accuracy,
    shift_experiment,
)
from workbench.probes.separability import zero_shot_accuracy


def _unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _clouds(n: int = 400, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paired clouds around two different directions: a planted gap."""
    rng = np.random.default_rng(seed)
    shared = 0.3 * rng.standard_normal((n, d))
    X = np.eye(d)[0] + shared + 0.05 * rng.standard_normal((n, d))
    Y = np.eye(d)[1] + shared + 0.05 * rng.standard_normal((n, d))
    return X, Y


def test_gap_vector_is_difference_of_normalised_centroids() -> None:
    X, Y = _clouds()
    g = modality_gap(X, Y[:300], with_spectra=False)  # unpaired sizes are fine
    mu_x, mu_y = _unit(X).mean(0), _unit(Y[:300]).mean(0)
    np.testing.assert_allclose(g.delta, mu_x - mu_y, atol=1e-12)
    assert g.gap_norm == pytest.approx(np.linalg.norm(mu_x - mu_y))
    cos = mu_x @ mu_y / np.linalg.norm(mu_x) / np.linalg.norm(mu_y)
    assert g.centroid_cosine == pytest.approx(cos)
    assert (g.n_image, g.n_text) == (400, 300)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), d=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_cone_width_is_mean_off_diagonal_cosine(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + 0.5
    X[np.linalg.norm(X, axis=1) < 1e-6] += 1.0
    C = _unit(X) @ _unit(X).T
    brute = (C.sum() - np.trace(C)) / (n * (n - 1))
    g = modality_gap(X, X, with_spectra=False)
    assert g.cone_width_image == pytest.approx(brute, abs=1e-10)
    assert g.gap_norm == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("X", "Y", "match"),
    [
        (np.ones((5, 4)), np.ones((5, 3)), "dimension"),
        (np.vstack([np.ones((4, 3)), np.zeros((1, 3))]), np.ones((5, 3)), "zero-norm"),
        (np.vstack([np.ones((4, 3)), [[np.nan, 1, 1]]]), np.ones((5, 3)), "NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(X: np.ndarray, Y: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        modality_gap(X, Y, with_spectra=False)
    with pytest.raises(ValueError, match=match):
        shift_experiment(X, Y, [0.0])


def test_clip_loss_and_recall_match_brute_force() -> None:
    X, Y = _clouds(n=150, seed=3)
    Xn, Yn = _unit(X), _unit(Y)
    tau = 0.05
    S = Xn @ Yn.T / tau
    idx = np.arange(len(S))
    brute = 0.5 * (
        (logsumexp(S, axis=1) - S[idx, idx]).mean() + (logsumexp(S, axis=0) - S[idx, idx]).mean()
    )
    assert clip_loss(X, Y, temperature=tau) == pytest.approx(brute, rel=1e-10)
    r = retrieval_accuracy(X, Y)
    assert r["i2t"] == pytest.approx((S.argmax(1) == idx).mean())
    assert r["t2i"] == pytest.approx((S.argmax(0) == idx).mean())
    # the blockwise pass inside the shift experiment gives the same numbers at λ = 0
    s = shift_experiment(X, Y, [0.0], temperature=tau)
    assert s.loss[0] == pytest.approx(brute, rel=1e-10)
    assert (s.i2t[0], s.t2i[0]) == pytest.approx((r["i2t"], r["t2i"]))


def _mirror_pair(
    n: int = 300, d: int = 12, g: float = 0.8, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Text with one fixed component −g/2 along e0 and images its mirror image across e0⊥.

    x = R y with R the reflection e0 → −e0, so Δ ∥ e0 with ‖Δ‖ = g and norm(y + λΔ) has zero
    e0-component exactly at λ = 0.5: the signed gap must cross zero there.
    """
    rng = np.random.default_rng(seed)
    rest = rng.standard_normal((n, d - 1))
    rest *= np.sqrt(1 - (g / 2) ** 2) / np.linalg.norm(rest, axis=1, keepdims=True)
    Y = np.hstack([np.full((n, 1), -g / 2), rest])
    X = Y.copy()
    X[:, 0] *= -1
    return X, Y


def test_signed_gap_crosses_zero_at_half_the_gap() -> None:
    X, Y = _mirror_pair()
    lams = np.linspace(-0.5, 1.5, 17)  # contains 0.5
    s = shift_experiment(X, Y, lams, temperature=0.01)
    assert s.gap_norm == pytest.approx(0.8)
    assert s.signed_gap[0] > s.gap_norm  # negative λ widens the gap
    assert s.signed_gap[lams == 0][0] == pytest.approx(0.8)
    assert abs(s.signed_gap[lams == 0.5][0]) < 1e-12
    assert (s.signed_gap[lams < 0.5] > 0).all() and (s.signed_gap[lams > 0.5] < 0).all()
    assert s.crossing() == pytest.approx(0.5, abs=1e-9)
    # the code's unit-direction variant moves by ½·λ·Δ/‖Δ‖: it crosses at λ = ‖Δ‖
    u = shift_experiment(X, Y, np.arange(-2, 2, 0.2), direction="unit")
    assert u.crossing() == pytest.approx(0.8, abs=1e-6)


def test_shifting_only_images_leaves_text_and_crosses_at_one() -> None:
    X, Y = _mirror_pair()
    s = shift_experiment(X, Y, np.linspace(0, 2, 9), modalities="image")
    # only images move: their e0 component g/2 − λg meets the text's −g/2 at λ = 1
    assert s.crossing() == pytest.approx(1.0, abs=1e-9)


def test_zero_shot_accuracy_in_shift_matches_direct_call() -> None:
    rng = np.random.default_rng(0)
    classes = np.eye(8)[:4] + 0.1
    labels = rng.integers(0, 4, 200)
    X = classes[labels] + 0.3 * rng.standard_normal((200, 8))
    Y = classes[labels] + 0.3 * rng.standard_normal((200, 8)) + 0.5 * np.eye(8)[7]
    C = classes + 0.5 * np.eye(8)[7]
    direct = zero_shot_accuracy(X, C, labels)
    s = shift_experiment(X, Y, [0.0, 0.25], labels=labels, class_text_emb=C)
    assert s.zero_shot[0] == pytest.approx(direct)
    assert direct > 0.5  # the planted classes are recoverable
    with pytest.raises(ValueError, match="both labels and class_text_emb"):
        shift_experiment(X, Y, [0.0], labels=labels)
    with pytest.raises(ValueError, match="labels must be integers in"):
        zero_shot_accuracy(X, C, labels + 4)


def test_unpaired_shift_reports_gap_but_no_loss() -> None:
    X, Y = _clouds()
    s = shift_experiment(X, Y[:100], [0.0, 0.5])
    assert np.isfinite(s.signed_gap).all()
    assert np.isnan(s.loss).all() and np.isnan(s.i2t).all()


def test_cone_effect_relu_narrows_with_depth_and_inits_form_distinct_cones() -> None:
    c = cone_effect(
        depths=(0, 2, 6), activations=("relu", "linear"), n_samples=200, dim=64, n_inits=4
    )
    relu, linear = c.mean_cosine
    assert abs(relu[0]) < 0.05  # isotropic Gaussian input: no cone
    assert relu[0] < relu[1] < relu[2]  # deeper ReLU MLPs narrow the cone
    assert relu[2] > 0.5
    assert abs(linear[2]) < 0.2  # without a non-linearity no cone forms
    # each init is its own cone: its points agree more with each other than init centroids do
    assert c.within_init_cosine[0] > c.between_init_cosine[0]
    assert c.projection.shape == (4, 100, 2)
    with pytest.raises(ValueError, match="unknown activation"):
        cone_effect(activations=("swish",))
