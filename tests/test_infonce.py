"""InfoNCE: equality with open_clip's ClipLoss, the VLM2Vec form, and numerical robustness."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from open_clip.loss import ClipLoss

from workbench import methods
from workbench.methods import BatchOutputs, StepState
from workbench.methods.feature_loss import info_nce


def _pair(b: int, d: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(b, d, generator=g), dim=-1).to(dtype)
    y = F.normalize(torch.randn(b, d, generator=g), dim=-1).to(dtype)
    return x, y


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(2, 40),
    d=st.integers(1, 64),
    log_scale=st.floats(0.0, math.log(100)),
    seed=st.integers(0, 10_000),
)
def test_equals_open_clip_cliploss(b, d, log_scale, seed):
    x, y = _pair(b, d, seed)
    scale = torch.tensor(log_scale).exp()
    ours = methods.get("infonce")(x, y, scale)
    theirs = ClipLoss()(x, y, scale)
    assert torch.equal(ours, theirs)


def test_output_dict_and_gradients_match_open_clip():
    x, y = _pair(16, 8)
    x1, y1 = x.clone().requires_grad_(), y.clone().requires_grad_()
    x2, y2 = x.clone().requires_grad_(), y.clone().requires_grad_()
    s1 = torch.tensor(2.6592, requires_grad=True)
    s2 = torch.tensor(2.6592, requires_grad=True)
    ours = methods.get("infonce")(x1, y1, s1.exp(), output_dict=True)
    theirs = ClipLoss()(x2, y2, s2.exp(), output_dict=True)
    assert set(ours) == {"contrastive_loss"}
    ours["contrastive_loss"].backward()
    theirs["contrastive_loss"].backward()
    for a, b in [(x1, x2), (y1, y2), (s1, s2)]:
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-7)


def test_loop_call_equals_open_clip_style_call():
    x, y = _pair(10, 6)
    scale = torch.tensor(20.0)
    m = methods.get("infonce")
    lo = m(BatchOutputs(x, y, scale), StepState(3, 10))
    assert torch.equal(lo.loss, m(x, y, scale))
    assert set(lo.terms) == {"infonce"}
    assert lo.logs["temperature"] == pytest.approx(1 / 20)


def test_vlm2vec_form_is_one_directional_cross_entropy_at_tau_002():
    x, y = _pair(12, 5)
    m = methods.get("infonce/vlm2vec")
    assert m.config == {
        "temperature": 0.02,
        "symmetric": False,
        "query": "image",
        "caption_positives": False,
    }
    expected = F.cross_entropy(x @ y.T / 0.02, torch.arange(12))
    # The learnable scale passed in is ignored when the temperature is fixed.
    torch.testing.assert_close(m(x, y, torch.tensor(3.0)), expected)
    text_query = methods.get("infonce", temperature=0.02, symmetric=False, query="text")
    torch.testing.assert_close(
        text_query(x, y, 1.0), F.cross_entropy(y @ x.T / 0.02, torch.arange(12))
    )


def test_symmetric_loss_is_mean_of_two_directions():
    x, y = _pair(9, 7)
    one = methods.get("infonce", temperature=0.1, symmetric=False, query="image")(x, y, 1.0)
    other = methods.get("infonce", temperature=0.1, symmetric=False, query="text")(x, y, 1.0)
    both = methods.get("infonce", temperature=0.1)(x, y, 1.0)
    torch.testing.assert_close(both, (one + other) / 2)


def test_perfect_alignment_beats_random_pairs():
    x, y = _pair(32, 64)
    m = methods.get("infonce", temperature=0.05)
    assert m(x, x, 1.0) < m(x, y, 1.0)


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_rejects_non_positive_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        methods.get("infonce", temperature=bad)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        methods.get("infonce")(torch.zeros(4, 3), torch.zeros(5, 3), 1.0)


# -- numerical robustness ----------------------------------------------------------------------
def _grads(x_raw: torch.Tensor, y_raw: torch.Tensor, **cfg):
    """Gradients w.r.t. raw (un-normalised) features through the normalisation, as in training."""
    x_raw = x_raw.clone().requires_grad_()
    y_raw = y_raw.clone().requires_grad_()
    scale = torch.tensor(math.log(1 / 0.07)).requires_grad_()
    loss = methods.get("infonce", **cfg)(
        F.normalize(x_raw, dim=-1), F.normalize(y_raw, dim=-1), scale.exp()
    )
    loss.backward()
    return loss, x_raw.grad, y_raw.grad, scale.grad


def _cases():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, 16, generator=g)
    low_rank = torch.randn(8, 2, generator=g) @ torch.randn(2, 16, generator=g)  # zero σ's
    repeated = torch.zeros(8, 16)
    repeated[:, :8] = torch.eye(8)  # all singular values equal (repeated)
    dup = base.clone()
    dup[1] = dup[0]
    return {
        "rank_deficient_zero_singular_values": (low_rank, low_rank.flip(0)),
        "repeated_singular_values": (repeated, repeated.roll(1, 0)),
        "duplicate_rows": (dup, dup.clone()),
        "batch_smaller_than_dim": (
            torch.randn(3, 64, generator=g),
            torch.randn(3, 64, generator=g),
        ),
        "batch_of_two": (torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)),
        "identical_sides": (base, base.clone()),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("cfg", [{}, {"temperature": 0.02, "symmetric": False}])
def test_finite_loss_and_gradients_on_degenerate_batches(case, cfg):
    x, y = _cases()[case]
    loss, gx, gy, gs = _grads(x, y, **cfg)
    assert torch.isfinite(loss)
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    assert gs is None or torch.isfinite(gs)


@pytest.mark.parametrize("cfg", [{}, {"temperature": 0.02, "symmetric": False}])
def test_bf16_inputs_give_finite_float32_loss_close_to_fp32(cfg):
    x, y = _pair(16, 32)
    xb = x.to(torch.bfloat16).requires_grad_()
    yb = y.to(torch.bfloat16).requires_grad_()
    m = methods.get("infonce", **cfg)
    loss = m(xb, yb, torch.tensor(14.0, dtype=torch.bfloat16))
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(xb.grad.float()).all() and torch.isfinite(yb.grad.float()).all()
    ref = m(x, y, torch.tensor(14.0))
    assert abs(float(loss.detach()) - float(ref)) < 0.05 * float(ref) + 0.05


def test_info_nce_function_is_the_module_loss():
    x, y = _pair(6, 4)
    torch.testing.assert_close(info_nce(x, y, 10.0), methods.get("infonce")(x, y, 10.0))


def test_caption_positives_treat_repeated_captions_as_positives():
    from workbench.methods.feature_loss import same_caption_positives

    g = torch.Generator().manual_seed(3)
    img = torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=-1)
    scale = torch.tensor(7.0)
    distinct = BatchOutputs(img, txt, scale, captions=["a", "b", "c", "d"])
    plain = methods.get("infonce")(distinct, StepState.standalone()).loss
    dedup = methods.get("infonce", caption_positives=True)
    assert torch.equal(dedup(distinct, StepState.standalone()).loss, plain)  # no repeats: CLIP
    caps = ["a photo of a shirt", "a dog", "a photo of a shirt", "a cat"]
    out = dedup(BatchOutputs(img, txt, scale, captions=caps), StepState.standalone())
    # by hand: rows 0 and 2 share their caption, so each has two positives with weight 1/2
    logits = scale * img @ txt.T
    pos = same_caption_positives(caps).float()
    soft = pos / pos.sum(1, keepdim=True)
    want_i = -(soft * logits.log_softmax(1)).sum(1).mean()
    want_t = -(soft * logits.T.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(out.loss, (want_i + want_t) / 2)
    assert out.logs["dup_positives"] == 0.5  # two extra positives over four rows
    with pytest.raises(ValueError, match="one caption per row"):
        dedup(BatchOutputs(img, txt, scale, captions=caps[:3]), StepState.standalone())
