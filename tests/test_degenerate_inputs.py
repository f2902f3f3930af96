"""Issue 19's reproducers for the probes, one test each: round-off is never reported as signal,
both spectrum routes decide degeneracy alike, and entry points that skipped validation refuse
bad input naming the argument.

The battery (``tests/test_probe_battery.py``) drives every probe with every bad input; these
tests pin the specific failures the issue reported.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench._validate import l2_normalize, spectral_floor
from workbench.probes.fixed_frame import (
    FixedFrame,
    phantom_drift,
    phantom_drift_monte_carlo,
    pob_drift,
)
from workbench.probes.gap import shift_experiment, signed_centroid_distance
from workbench.probes.ranks import EFFECTIVE_RANKS, effective_rank
from workbench.probes.realign import ReAlign
from workbench.probes.retrieval import precision_at_1, recall_at_k
from workbench.probes.separability import class_scatter, zero_shot_accuracy
from workbench.probes.spectra import spectrum

RNG = np.random.default_rng(0)
IDENTICAL = np.tile(RNG.normal(size=(1, 8)), (40, 1))  # (40, 8): every row the same
VARIANTS = [name for name in EFFECTIVE_RANKS.names()]


# -- degenerate spectra: one decision, both routes -------------------------------------------------
@pytest.mark.parametrize("method", ["svd", "gram"])
def test_identical_rows_give_the_zero_spectrum_on_both_routes(method):
    s = spectrum(IDENTICAL, center=True, method=method)
    assert s.degenerate and s.rank == 0
    assert not s.singular_values.any() and not s.energy_fraction.any()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "erank/rankme"])
def test_effective_rank_refuses_identical_rows_on_both_routes_alike(variant, tmp_path):
    np.save(tmp_path / "x.npy", IDENTICAL)
    memmap = np.load(tmp_path / "x.npy", mmap_mode="r")  # the streaming (Gram) route
    errors = []
    for X in (IDENTICAL, memmap):
        with pytest.raises(ValueError, match="all zero") as err:
            effective_rank(X, variant)
        errors.append(str(err.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_both_routes_agree_on_real_data(variant, tmp_path):
    X = RNG.normal(size=(300, 12)) @ np.diag(np.linspace(3, 0.1, 12)) + 5.0
    np.save(tmp_path / "x.npy", X)
    a = effective_rank(X, variant)
    b = effective_rank(np.load(tmp_path / "x.npy", mmap_mode="r"), variant)
    assert a == pytest.approx(b, rel=1e-6)


def test_identical_rows_are_still_rank_one_uncentred():
    assert effective_rank(IDENTICAL, "rankme") == pytest.approx(1.0)
    assert effective_rank(IDENTICAL, "numerical-rank", center=False) == 1


def test_the_floor_is_relative_to_the_data_scale():
    # the same data at any scale is degenerate or not alike
    for scale in (1e-100, 1.0, 1e100):
        assert spectrum(IDENTICAL * scale).degenerate
        assert not spectrum(RNG.normal(size=(20, 4)) * scale).degenerate
    assert spectral_floor(1.0, 10.0, (100, 10), 1e-16) == pytest.approx(
        max(100 * 1e-16, 4 * 10 * 1e-16 * 10.0)
    )


def test_fixed_frame_refuses_a_frame_fitted_to_round_off():
    with pytest.raises(ValueError, match="zero covariance"):
        FixedFrame().fit(IDENTICAL, IDENTICAL + 1.0)
    X, Y = RNG.normal(size=(3, 8)), RNG.normal(size=(3, 8))  # Σ̂ has rank ≤ 2·(3−1) = 4 < d
    with pytest.raises(ValueError, match=r"exceeds the \d directions of Σ̂ above round-off"):
        FixedFrame(rank=8).fit(X, Y)
    frame = FixedFrame(energy=1.0).fit(X, Y)
    assert frame.rank_ <= 4 and np.all(frame.eigenvalues_[frame.rank_ :] == 0)


def test_pob_drift_in_a_full_rank_frame_is_refused_not_round_off():
    X, Y = RNG.normal(size=(60, 6)), RNG.normal(size=(60, 6)) + 1.0
    frame = FixedFrame(rank=6).fit(X, Y)  # V is empty: γ is round-off (~1e-16)
    with pytest.raises(ValueError, match=r"γ\(t0\) is zero up to round-off.*V empty"):
        pob_drift(frame, (X, Y), (X + 0.1, Y))


def test_class_scatter_reports_inf_when_classes_collapse():
    labels = np.repeat([0, 1, 2], 10)
    X = np.repeat(RNG.normal(size=(3, 5)), 10, axis=0)  # each class one point (round-off spread)
    sc = class_scatter(X, labels)
    assert sc.s_inner == 0.0 and sc.fisher == float("inf") and sc.s_inter > 0
    with pytest.raises(ValueError, match="every row is the same point"):
        class_scatter(IDENTICAL[:30], labels)


def test_realign_zero_variance_check_fires_with_the_default_eps():
    images = RNG.normal(size=(50, 8))
    with pytest.raises(ValueError, match="text_emb has zero total variance"):
        ReAlign().fit(images, IDENTICAL)
    with pytest.raises(ValueError, match="image_emb has zero total variance"):
        ReAlign().fit(IDENTICAL, images)


def test_rows_beyond_1e154_normalise_to_unit_rows():
    X = np.array([[3e200, 4e200], [1e-200, 0.0]])
    np.testing.assert_allclose(l2_normalize(X), [[0.6, 0.8], [1.0, 0.0]])


# -- entry points that skipped validation ------------------------------------------------------------
def test_precision_at_1_refuses_nan_int_bool_and_accepts_tensors():
    S = np.eye(4)
    S[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"sim contains NaN"):
        precision_at_1(S, np.arange(4))
    for bad in (np.eye(4, dtype=np.int64), np.eye(4, dtype=bool)):
        with pytest.raises(ValueError, match="sim has dtype"):
            precision_at_1(bad, np.arange(4))
    with pytest.raises(ValueError, match="sim must be 2-D"):
        precision_at_1(np.ones(4), np.arange(4))
    clean = RNG.normal(size=(6, 6)).astype(np.float32)
    want = precision_at_1(clean, np.arange(6))
    t = torch.tensor(clean, requires_grad=True)
    assert precision_at_1(t, np.arange(6)) == want
    bf = torch.tensor(clean).bfloat16()
    assert precision_at_1(bf, np.arange(6)) == precision_at_1(bf.float().numpy(), np.arange(6))


def test_signed_centroid_distance_validates_its_inputs():
    X, Y, delta = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3)), np.ones(3)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="image_normed contains NaN"):
        signed_centroid_distance(X, Y, delta)
    with pytest.raises(ValueError, match="text_normed"):
        signed_centroid_distance(Y, np.zeros((0, 3)), delta)
    with pytest.raises(ValueError, match="image_normed must be 2-D"):
        signed_centroid_distance(Y[0], Y, delta)
    assert signed_centroid_distance(Y.tolist(), Y[::-1].tolist(), delta.tolist()) == pytest.approx(
        0.0, abs=1e-12
    )


def test_project_u_refuses_nan_and_non_float_rows():
    X, Y = RNG.normal(size=(30, 4)), RNG.normal(size=(30, 4))
    frame = FixedFrame().fit(X, Y)
    V = RNG.normal(size=(3, 4))
    V[1, 0] = np.nan
    with pytest.raises(ValueError, match="V contains NaN"):
        frame.project_u(V)
    for bad in (np.ones((2, 4), dtype=bool), np.ones((2, 4), dtype=np.int64)):
        with pytest.raises(ValueError, match="V has dtype"):
            frame.project_u(bad)
    v = RNG.normal(size=4)
    np.testing.assert_allclose(frame.project_u(v), frame.project_u(v[None])[0])


def test_phantom_drift_validates_mu_n_samples_and_cov():
    mu, cov = np.ones(3) * 2.0, 0.01 * np.eye(3)
    with pytest.raises(ValueError, match="mu contains NaN"):
        phantom_drift(np.array([1.0, np.nan, 0.0]), cov)
    for n in (0, -5):
        with pytest.raises(ValueError, match="n_samples must be an int ≥ 1"):
            phantom_drift_monte_carlo(mu, cov, n_samples=n)
    with pytest.raises(ValueError, match="cov must be positive semi-definite"):
        phantom_drift_monte_carlo(mu, -np.eye(3))
    singular = np.diag([0.01, 0.01, 0.0])  # PSD, not PD: fine
    mc = phantom_drift_monte_carlo(mu, singular, n_samples=20_000)
    np.testing.assert_allclose(mc, phantom_drift(mu, singular).total, atol=2e-4)


def test_recall_at_k_refuses_empty_nan_negative_and_2d_ranks():
    for bad, match in (
        ([], "non-empty"),
        ([0.0, np.nan], "non-integral"),
        ([0, -1], r"entries must lie in \[0"),
        ([[0, 1]], "1-D"),
    ):
        with pytest.raises(ValueError, match=match):
            recall_at_k(bad, 1)
    assert recall_at_k([0, 1, 5], 2) == pytest.approx(2 / 3)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex128])
def test_class_prompts_must_be_real_floats(dtype):
    image, labels = RNG.normal(size=(6, 4)), np.array([0, 1, 0, 1, 0, 1])
    prompts = (RNG.normal(size=(2, 4)) > 0).astype(dtype)
    with pytest.raises(ValueError, match="class_text has"):
        zero_shot_accuracy(image, prompts, labels)
    with pytest.raises(ValueError, match="class_text_emb has"):
        shift_experiment(image, image + 1.0, [0.0], labels=labels, class_text_emb=prompts)


def test_class_prompts_as_bf16_or_grad_tensors_give_the_float_result():
    image, labels = RNG.normal(size=(8, 4)), np.tile([0, 1], 4)
    prompts = torch.tensor(RNG.normal(size=(2, 3, 4)), dtype=torch.float32)
    want = zero_shot_accuracy(image, prompts.numpy(), labels)
    assert zero_shot_accuracy(image, prompts.requires_grad_(), labels) == want
    bf = prompts.detach().bfloat16()
    assert zero_shot_accuracy(image, bf, labels) == zero_shot_accuracy(
        image, bf.float().numpy(), labels
    )


def test_two_input_functions_name_each_input():
    from workbench.evals.dp_suite import d_ability
    from workbench.probes.distribution import cosine_js_divergence

    A, B = RNG.normal(size=(30, 4)), RNG.normal(size=(30, 4))
    B[3, 0] = np.inf
    with pytest.raises(ValueError, match="b_emb contains Inf"):
        cosine_js_divergence(A, B)
    with pytest.raises(ValueError, match="a_emb contains Inf"):
        cosine_js_divergence(B, A)
    with pytest.raises(ValueError, match="image contains Inf"):
        d_ability(B, np.tile([0, 1, 2], 10))
