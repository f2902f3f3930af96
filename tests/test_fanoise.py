"""FANoise (spec methods-spectral §2.3): noise law, switches, robustness."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench import methods
from workbench.methods.base import BatchOutputs, StepState
from workbench.methods.fanoise import fanoise, noise_scaling
from workbench.methods.feature_loss import info_nce
from workbench.methods.spectral import batch_svd

STATE = StepState(step=3, total_steps=10)


pytestmark = pytest.mark.usefixtures("one_thread")


def _feats(m: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # anisotropic spectrum so the scalings differ
    x = torch.randn(m, n, generator=g) * torch.logspace(0, -2, n)
    return F.normalize(x, dim=1)


def _out(img: torch.Tensor, txt: torch.Tensor) -> BatchOutputs:
    return BatchOutputs(img, txt, torch.tensor(50.0), img, txt)


def test_scalings_follow_the_spec_and_average_to_one():
    s = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)
    assert (noise_scaling(s, "uniform") == 1).all()
    torch.testing.assert_close(noise_scaling(s, "linear"), s / s.mean())
    torch.testing.assert_close(noise_scaling(s, "sublinear"), s.sqrt() / s.sqrt().mean())
    for kind in ("linear", "sublinear"):
        assert noise_scaling(s, kind).mean() == pytest.approx(1.0)
        assert (noise_scaling(torch.zeros(3), kind) == 0).all()
    with pytest.raises(ValueError, match="scaling"):
        noise_scaling(s, "quadratic")


def test_noise_is_linear_in_alpha_for_the_same_draw():
    x = _feats(16, 8)
    a = fanoise(x, 0.1, generator=torch.Generator().manual_seed(1))
    b = fanoise(x, 0.4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(b, 4 * a)
    assert (fanoise(x, 0.0) == 0).all()


@pytest.mark.parametrize("n", [16, 64])
def test_uniform_noise_energy_per_row_is_alpha_squared_whatever_the_dimension(n):
    # α/√n normalisation: E‖row noise‖² = α²/n · Σ_k S_k² = α² when the batch spans all n dims
    x = _feats(4 * n, n, seed=n)
    g = torch.Generator().manual_seed(0)
    energy = torch.stack(
        [fanoise(x, 0.5, "uniform", generator=g).square().sum(1).mean() for _ in range(10)]
    ).mean()
    assert float(energy) == pytest.approx(0.25, rel=0.05)


@pytest.mark.parametrize("scaling", ["uniform", "linear", "sublinear"])
def test_per_direction_noise_std_follows_the_scaling(scaling):
    x = _feats(256, 8, seed=2)
    s, v = batch_svd(x)
    g = torch.Generator().manual_seed(3)
    draws = torch.cat([fanoise(x, 1.0, scaling, generator=g) for _ in range(20)])  # (5120, 8)
    std = (draws.double() @ v).std(0) * math.sqrt(8)  # undo α/√n
    torch.testing.assert_close(std, noise_scaling(s, scaling), rtol=0.06, atol=0.02)


def test_noise_stays_in_the_row_space_of_a_small_batch():
    x = _feats(5, 32)
    noise = fanoise(x, 1.0, "uniform").double()
    _, v = batch_svd(x)
    torch.testing.assert_close(noise @ v @ v.T, noise, atol=1e-6, rtol=0)


def test_noise_is_a_constant_for_autograd():
    x = _feats(12, 6).requires_grad_(True)
    fan = methods.get("fanoise", alpha=0.5)
    noisy, _ = fan.perturb(x)
    w = torch.randn(12, 6)
    (noisy * w).sum().backward()
    torch.testing.assert_close(x.grad, w)


@pytest.mark.parametrize("side", ["query", "target", "both"])
def test_side_switch_perturbs_only_the_named_side(side):
    img, txt = _feats(16, 8, 1), _feats(16, 8, 2)
    fan = methods.get("fanoise", alpha=0.5, side=side)
    torch.manual_seed(7)
    loss = fan(_out(img, txt), STATE).loss
    torch.manual_seed(7)
    q = img + fanoise(img, 0.5) if side in ("query", "both") else img
    t = txt + fanoise(txt, 0.5) if side in ("target", "both") else txt
    torch.testing.assert_close(loss, info_nce(q, t, 50.0, symmetric=False))


def test_eval_mode_and_alpha_zero_are_plain_infonce():
    img, txt = _feats(16, 8, 1), _feats(16, 8, 2)
    plain = info_nce(img, txt, 50.0, symmetric=False)
    fan = methods.get("fanoise", alpha=1.0).eval()
    torch.testing.assert_close(fan(_out(img, txt), STATE).loss, plain)
    torch.testing.assert_close(methods.get("fanoise", alpha=0.0)(_out(img, txt), STATE).loss, plain)


def test_renormalize_returns_unit_rows_and_logs_noise():
    img = _feats(16, 8)
    noisy, rms = methods.get("fanoise", alpha=2.0, renormalize=True).perturb(img)
    torch.testing.assert_close(noisy.norm(dim=1), torch.ones(16))
    assert rms > 0


@pytest.mark.parametrize("bad", [{"alpha": -0.1}, {"scaling": "cubic"}, {"side": "left"}])
def test_bad_config_raises_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        methods.get("fanoise", **bad)


# -- robustness (issue 6 item 5) ---------------------------------------------------------------
def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(0)))
    rank1 = F.normalize(torch.randn(10, 1) @ torch.randn(1, 16), dim=1)
    dup = F.normalize(torch.randn(1, 12).repeat(8, 1), dim=1)
    return {
        "repeated_singular_values": (q[:8], q[4:]),
        "zero_singular_values": (rank1, F.normalize(rank1 + 0.1 * torch.randn(10, 16), dim=1)),
        "duplicate_rows": (dup, dup.clone()),
        "batch_smaller_than_dim": (_feats(6, 24, 1), _feats(6, 24, 2)),
        "batch_of_2": (_feats(2, 16, 1), _feats(2, 16, 2)),
        "bf16": (_feats(16, 8, 1).bfloat16(), _feats(16, 8, 2).bfloat16()),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("scaling", ["uniform", "linear", "sublinear"])
def test_finite_loss_and_gradients_on_degenerate_batches(case, scaling):
    img, txt = (x.clone().requires_grad_(True) for x in _cases()[case])
    res = methods.get("fanoise", alpha=0.5, scaling=scaling, renormalize=True)(
        _out(img, txt), STATE
    )
    res.loss.backward()
    assert torch.isfinite(res.loss) and math.isfinite(res.logs["noise_rms"])
    for x in (img, txt):
        assert x.grad is not None and x.grad.dtype == x.dtype
        assert torch.isfinite(x.grad.float()).all()
