"""Golden ``LossOutput`` of DCR and its two baselines (the registry's coverage test in
``test_method_goldens.py`` counts these cases through ``OWN_GOLDENS``).

The plain golden batch of ``test_method_goldens.py`` has no pixels, so these cases run on eight
toy images (``NormalisedToy``, ImageNet-normalised 8×8 pixels) through the seeded, untrained
``"tiny:random"`` denoiser. Stored per case: the loss, every term and log, and the gradients of
the loss with respect to the image head's weight and the projector's first linear weight.

Tolerance: ``rtol = atol = 2e-5`` (losses), gradients ``atol`` scaled by their largest entry:
the UNet's float32 reductions re-order with the BLAS blocking and thread count. Regenerate only
after an intended change: ``WORKBENCH_REGEN_GOLDENS=1 pytest tests/test_dcr_goldens.py``.
"""

from __future__ import annotations

import pytest
import torch
from dcr_fixtures import NormalisedToy, pixel_batch
from goldens import check_golden

from workbench import methods
from workbench.methods import StepState

#: case → (registry name, method arguments, stage)
CASES = {
    "dcr/all": ("dcr", {}, "align"),
    "dcr/k3_enhance": ("dcr", {"negatives": 3}, "enhance"),
    "dcr/v_target": ("dcr", {"negatives": 3, "gt_target": "v"}, "enhance"),
    "dcr/before_normalise": ("dcr", {"negatives": 3, "augment_before_normalise": True}, "enhance"),
    "dcr/stage1_mse": ("dcr", {"stage1_loss": "mse"}, "align"),
    "dcr/joint": ("dcr", {"protocol": "joint", "negatives": 3}, "joint"),
    "dcr/naive": ("dcr/naive", {}, "enhance"),
    "dcr/recon": ("dcr/recon", {}, "enhance"),
}
TOL = 2e-5


def case_outputs(case: str) -> dict[str, torch.Tensor]:
    name, cfg, stage = CASES[case]
    torch.manual_seed(0)
    enc = NormalisedToy(seed=0)
    m = methods.get(name, denoiser="tiny:random", **cfg)
    m.attach(enc)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        lo = m(pixel_batch(8, encoder=enc), StepState(3, 10, stage))
    params = {"image_head": enc.image_head.weight, "projector": m.projector[1].weight}
    grads = torch.autograd.grad(lo.loss, list(params.values()), allow_unused=True)
    out = {"loss": lo.loss.detach().clone()}
    out.update({f"terms.{k}": v.detach().clone() for k, v in lo.terms.items()})
    out.update({f"logs.{k}": torch.tensor(float(v)) for k, v in lo.logs.items()})
    for (k, p), g in zip(params.items(), grads):
        out[f"grad.{k}"] = torch.zeros_like(p) if g is None else g
    return {f"{case}|{k}": v for k, v in out.items()}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_dcr_loss_outputs_match_golden():
    current = {k: v for c in CASES for k, v in case_outputs(c).items()}
    atol = {
        k: TOL * max(1.0, float(v.abs().max())) if "|grad." in k else TOL
        for k, v in current.items()
    }
    check_golden("dcr_methods", current, atol=atol, rtol=TOL)


def test_golden_cases_cover_every_dcr_variant():
    registered = {n for n in methods.names() if n == "dcr" or n.startswith("dcr/")}
    assert registered <= {name for name, _, _ in CASES.values()}
