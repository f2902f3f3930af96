"""The feature-loss base: shared temperature/direction/query, and one overridable piece each."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench import methods
from workbench.methods import BatchOutputs, LossOutput, StepState
from workbench.methods.feature_loss import FeatureLoss, info_nce

CONTRASTIVE = ("infonce", "sde", "fanoise")


def _out(seed: int = 0, b: int = 8, d: int = 6) -> BatchOutputs:
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(b, d, generator=g), dim=-1).requires_grad_(True)
    y = F.normalize(torch.randn(b, d, generator=g), dim=-1).requires_grad_(True)
    return BatchOutputs(x, y, torch.tensor(20.0, requires_grad=True), x, y)


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_every_contrastive_method_validates_the_shared_fields_once(name):
    assert isinstance(methods.get(name), FeatureLoss)
    with pytest.raises(ValueError, match=f"{name}: temperature must be > 0"):
        methods.get(name, temperature=0.0)
    with pytest.raises(ValueError, match=f"{name}: query must be 'image' or 'text'"):
        methods.get(name, query="audio")


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_learnable_temperature_trains_the_logit_scale_and_fixed_does_not(name):
    out = _out()
    learnable = methods.get(name, temperature=None).eval()(out, StepState(0, 10)).loss
    (grad,) = torch.autograd.grad(learnable, out.logit_scale)
    assert grad != 0
    fixed = methods.get(name, temperature=0.05).eval()(out, StepState(0, 10)).loss
    assert torch.autograd.grad(fixed, out.logit_scale, allow_unused=True)[0] is None


def test_query_side_picks_the_rows_of_the_one_way_loss():
    out = _out()
    m = methods.get("infonce", temperature=0.1, symmetric=False, query="text")
    assert m.sides(out)[0] is out.text_features and m.target == "image"
    expected = info_nce(out.text_features, out.image_features, 10.0, symmetric=False)
    assert torch.equal(m(out, StepState.standalone()).loss, expected)


class _Margin(FeatureLoss):
    """Additive-margin InfoNCE: overrides only ``logits`` (the positives' logit minus m/τ)."""

    name = "test-margin"

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__(temperature=0.1)
        self.margin = margin

    def logits(self, query, target, out):
        lq, lt = super().logits(query, target, out)
        eye = torch.eye(len(query)) * self.margin / self.temperature
        return lq - eye, lt - eye

    def loss(self, query, target, out, state):
        loss = self.contrastive(query, target, out)
        return LossOutput(loss, {"margin_nce": loss})


def test_overriding_logits_changes_only_the_similarity():
    out = _out()
    m = _Margin(0.2)
    got = m(out, StepState.standalone()).loss
    x, y = out.image_features, out.text_features
    logits = 10.0 * x @ y.T - 2.0 * torch.eye(8)
    labels = torch.arange(8)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(got, expected)
    assert got > methods.get("infonce", temperature=0.1)(out, StepState.standalone()).loss
