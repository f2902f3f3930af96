"""SDE (spec methods-spectral §1.2, [our reading]): pieces, ablation switches, robustness."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench import methods
from workbench.methods.base import BatchOutputs, StepState
from workbench.methods.feature_loss import info_nce
from workbench.methods.sde import (
    NOISE,
    STRONG,
    WEAK,
    cosine_decay,
    curriculum_gains,
    enhance,
    linear_ramp,
)
from workbench.methods.spectral import batch_svd

MID = StepState(step=50, total_steps=100)  # α and λ both non-zero


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(m: int, n: int, seed: int = 0, rank: int | None = None) -> tuple[torch.Tensor, ...]:
    """Paired L2-normalised (m, n) features with shared low-rank structure plus noise."""
    g = torch.Generator().manual_seed(seed)
    k = rank or max(1, min(m, n) // 4)
    base = torch.randn(m, k, generator=g) @ torch.randn(k, n, generator=g)
    img = base + 0.3 * torch.randn(m, n, generator=g)
    txt = base + 0.3 * torch.randn(m, n, generator=g)
    return F.normalize(img, dim=1), F.normalize(txt, dim=1)


def _out(img: torch.Tensor, txt: torch.Tensor) -> BatchOutputs:
    return BatchOutputs(img, txt, torch.tensor(50.0), img, txt)


# -- SVD routes --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (16, 16)])
@pytest.mark.parametrize("route", ["gram", "svd"])
def test_batch_svd_matches_reference_spectrum_and_is_orthonormal(shape, route):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    s, v = batch_svd(x, route)
    torch.testing.assert_close(s, torch.linalg.svdvals(x.double()), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(
        v.T @ v, torch.eye(min(shape), dtype=torch.float64), atol=1e-8, rtol=0
    )
    # F V Vᵀ = F: the basis spans the row space
    torch.testing.assert_close(x.double() @ v @ v.T, x.double(), atol=1e-8, rtol=0)


@pytest.mark.parametrize("route", ["gram", "svd"])
def test_batch_svd_zeroes_directions_the_batch_does_not_span(route):
    x = torch.randn(10, 3) @ torch.randn(3, 20)  # rank 3 of r = 10
    _s, v = batch_svd(x, route)
    assert (v[:, 3:] == 0).all() and (v[:, :3].norm(dim=0) > 0.99).all()
    s0, v0 = batch_svd(torch.zeros(5, 8), route)
    assert (s0 == 0).all() and (v0 == 0).all()


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(2, 24),
    n=st.integers(2, 24),
    alpha=st.floats(0.0, 0.9),
    seed=st.integers(0, 10_000),
)
def test_enhancement_does_not_depend_on_the_svd_route(m, n, alpha, seed):
    img, _txt = _pair(m, n, seed)
    a = methods.get("sde", svd_route="gram").enhance(img, alpha)
    b = methods.get("sde", svd_route="svd").enhance(img, alpha)
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.features, b.features, atol=2e-5, rtol=1e-4)


# -- gains and schedules -------------------------------------------------------------------------
def test_gains_per_band_and_noise_floor():
    labels = torch.tensor([STRONG, WEAK, NOISE])
    torch.testing.assert_close(
        curriculum_gains(labels, 0.4, beta=0.5, g_min=0.1),
        torch.tensor([1.4, 1.2, 0.6], dtype=torch.float64),
    )
    assert curriculum_gains(labels, 0.95, g_min=0.1)[2] == pytest.approx(0.1)
    assert (curriculum_gains(labels, 0.0) == 1).all()


def test_alpha_decays_from_alpha0_to_zero_and_constant_alpha_does_not():
    sde, const = methods.get("sde", alpha0=0.3), methods.get("sde", alpha0=0.3, curriculum=False)
    ts = [i / 20 for i in range(21)]
    alphas = [sde.alpha(t) for t in ts]
    assert alphas[0] == pytest.approx(0.3) and alphas[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(alphas))
    assert alphas[10] == pytest.approx(0.15)  # cosine: half-way at t = T/2
    assert all(const.alpha(t) == 0.3 for t in ts)
    assert cosine_decay(1.5, 1.0) == 0.0  # clamped past the end


def test_lambda_ramps_to_lambda_max_then_holds():
    sde = methods.get("sde", lambda_max=0.2, lambda_warmup=0.25)
    assert sde.lam(0.0) == 0.0
    assert sde.lam(0.125) == pytest.approx(0.1)
    assert all(sde.lam(t) == pytest.approx(0.2) for t in (0.25, 0.5, 1.0))
    assert linear_ramp(0.0, 0.3, 0.0) == 0.3
    assert sde.schedule_values(StepState(25, 100)) == {"alpha": sde.alpha(0.25), "lambda": 0.2}


# -- enhancement -------------------------------------------------------------------------------
def test_enhanced_singular_values_are_the_gains_times_the_originals():
    img, _ = _pair(32, 16, seed=3)
    e = methods.get("sde").enhance(img, 0.5)
    expected = torch.sort(e.singular_values * e.gains, descending=True).values
    torch.testing.assert_close(
        torch.linalg.svdvals(e.features.double()), expected, rtol=1e-5, atol=1e-6
    )
    assert set(e.labels.tolist()) <= {STRONG, WEAK, NOISE}
    assert (e.labels == STRONG).any()
    assert sum(e.proportions().values()) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(24, 10), (6, 20)])
def test_uniform_gain_scales_features_by_one_plus_alpha(shape):
    img, _ = _pair(*shape)
    e = methods.get("sde", disentangle=False).enhance(img, 0.3)
    torch.testing.assert_close(e.features, 1.3 * img, atol=1e-6, rtol=1e-5)


def test_alpha_zero_is_the_identity():
    img, _ = _pair(20, 12)
    torch.testing.assert_close(methods.get("sde").enhance(img, 0.0).features, img)


def test_gradient_is_the_constant_projector_not_an_svd_derivative():
    img, _ = _pair(12, 8, seed=5)
    x = img.clone().requires_grad_(True)
    s, v = batch_svd(x)
    g = torch.linspace(0.5, 1.5, len(s), dtype=torch.float64)
    w = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    (enhance(x, v, g) * w).sum().backward()
    expected = w + (w @ v.float()) * (g.float() - 1) @ v.float().T
    torch.testing.assert_close(x.grad, expected, atol=1e-5, rtol=1e-5)


def test_no_weak_band_merges_weak_into_strong_and_keeps_noise():
    img, _ = _pair(64, 32, seed=2, rank=8)
    s, _ = batch_svd(img)
    full = methods.get("sde").labels(img, s)
    two = methods.get("sde", weak_band=False).labels(img, s)
    assert not (two == WEAK).any()
    assert torch.equal(two == NOISE, full == NOISE)
    assert torch.equal(two == STRONG, full != NOISE)


# -- dual-domain loss and ablation switches ----------------------------------------------------------
def test_lambda_zero_loss_is_the_feature_loss_on_enhanced_features():
    img, txt = _pair(16, 12, seed=4)
    sde = methods.get("sde", lambda_max=0.0)
    res = sde(_out(img, txt), MID)
    a = MID.progress
    feat = info_nce(
        sde.enhance(img, sde.alpha(a)).features,
        sde.enhance(txt, sde.alpha(a)).features,
        50.0,
        symmetric=False,
    )
    torch.testing.assert_close(res.loss, feat)
    assert set(res.terms) == {"feat"}


def test_kl_switch_removes_exactly_the_kl_term():
    img, txt = _pair(16, 12, seed=6)
    full = methods.get("sde")(_out(img, txt), MID)
    no_kl = methods.get("sde", kl=False)(_out(img, txt), MID)
    lam = methods.get("sde").lam(MID.progress)
    t = full.terms
    torch.testing.assert_close(full.loss, t["feat"] + lam * (t["spec_nce"] + t["spec_kl"]))
    torch.testing.assert_close(no_kl.loss, t["feat"] + lam * t["spec_nce"])
    assert float(t["spec_kl"]) >= 0


def test_kl_is_zero_when_both_sides_are_equal():
    img, _ = _pair(16, 12)
    _, kl = methods.get("sde").spectral_loss(img, img)
    assert float(kl) == pytest.approx(0.0, abs=1e-6)


def test_logs_band_proportions_and_schedules():
    img, txt = _pair(32, 16)
    res = methods.get("sde")(_out(img, txt), MID)
    for side in ("image", "text"):
        props = [res.logs[f"{side}/{b}"] for b in ("strong", "weak", "noise")]
        assert sum(props) == pytest.approx(1.0)
    assert res.logs["alpha"] == pytest.approx(0.25) and res.logs["lambda"] == pytest.approx(0.1)


def test_symmetric_and_learnable_temperature_forms():
    img, txt = _pair(16, 12)
    sde = methods.get("sde", temperature=None, symmetric=True, lambda_max=0.0)
    res = sde(_out(img, txt), StepState(99, 100))
    e = lambda x: sde.enhance(x, sde.alpha(0.99)).features  # noqa: E731
    torch.testing.assert_close(res.loss, info_nce(e(img), e(txt), 50.0, symmetric=True))


def test_open_clip_call_convention_and_registry():
    img, txt = _pair(8, 6)
    loss = methods.get("sde")(img, txt, torch.tensor(50.0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"sde", "fanoise"} <= set(methods.names())


@pytest.mark.parametrize(
    "bad",
    [
        {"alpha0": -1},
        {"beta": 2},
        {"g_min": 0},
        {"lambda_warmup": 2},
        {"svd_route": "qr"},
        {"query": "x"},
    ],
)
def test_bad_config_raises_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        methods.get("sde", **bad)


# -- robustness (issue 6 item 5) ---------------------------------------------------------------
def _orthogonal_rows(m: int, n: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(0)))
    return q[:m].contiguous()  # all singular values equal (= 1)


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    img, txt = _pair(16, 24)
    dup = F.normalize(torch.randn(1, 12).repeat(8, 1), dim=1)
    rank1 = F.normalize(torch.randn(10, 1) @ torch.randn(1, 16), dim=1)
    return {
        "repeated_singular_values": (_orthogonal_rows(8, 12), _orthogonal_rows(8, 12).roll(1, 1)),
        "zero_singular_values": (rank1, F.normalize(rank1 + 0.1 * torch.randn(10, 16), dim=1)),
        "duplicate_rows": (dup, F.normalize(dup + 0.01 * torch.randn(8, 12), dim=1)),
        "batch_smaller_than_dim": (img, txt),
        "batch_of_2": _pair(2, 32),
        "bf16": (img.bfloat16(), txt.bfloat16()),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize(
    "config",
    [{}, {"disentangle": False}, {"weak_band": False, "renormalize": True, "svd_route": "svd"}],
)
def test_finite_loss_and_gradients_on_degenerate_batches(case, config):
    img, txt = (x.clone().requires_grad_(True) for x in _cases()[case])
    res = methods.get("sde", **config)(_out(img, txt), MID)
    res.loss.backward()
    assert torch.isfinite(res.loss)
    for x in (img, txt):
        assert x.grad is not None and x.grad.dtype == x.dtype
        assert torch.isfinite(x.grad.float()).all()
    assert all(math.isfinite(v) for v in res.logs.values())
