"""Golden outputs of the Earth-Adapter variants (segmentation methods: no feature-loss form, so
their cases live here rather than in ``test_method_goldens.CASES``, which counts them as covered).

Stored (``tests/data/goldens/earth_adapter.safetensors``): ``frequency_split`` of a seeded
(2, 7·9, 3) input on an odd 7 × 9 grid, and per variant, on the tiny conv tower
(``seg_fakes.TinyConvEncoder``) with seeded adapters and head: the logits of seeded pixels, the
segmentation loss against seeded labels, and the gradients of the loss with respect to every
layer scale and the head's classifier. Tolerance ``atol = rtol = 1e-5`` (float32 convolutions
re-blocked by another thread count move them by ~1e-6). Regenerate after an intended change with
``WORKBENCH_REGEN_GOLDENS=1 pytest tests/test_earth_adapter_goldens.py``.
"""

from __future__ import annotations

import pytest
import torch
from goldens import check_golden
from seg_fakes import TinyConvEncoder

from workbench import methods
from workbench.methods.earth_adapter import frequency_split, layer_scales, segmentation_loss

#: case → (registry name, overrides); every segmentation method registered needs one.
SEGMENTATION_CASES: dict[str, tuple[str, dict]] = {
    "earth_adapter": ("earth_adapter", {}),
    "earth_adapter/spatial3": ("earth_adapter/spatial3", {}),
    "earth_adapter/spatial1": ("earth_adapter/spatial1", {}),
    "earth_adapter/head_only": ("earth_adapter/head_only", {}),
    "earth_adapter/rho_0.5": ("earth_adapter", {"ratio": 0.5}),
}
TINY = {"min_stride": 8, "fft_layers": 2, "bottleneck": 4, "head_width": 8}


def _case(name: str) -> dict[str, torch.Tensor]:
    registry_name, overrides = SEGMENTATION_CASES[name]
    encoder = TinyConvEncoder()
    method = methods.get(registry_name, **TINY, **overrides)
    torch.manual_seed(7)
    method.attach(encoder)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(4, 3, 64, 64, generator=g)
    labels = torch.randint(0, 10, (4, 64, 64), generator=g)
    scales = layer_scales(encoder)
    for p in [*scales, *method.head.parameters()]:
        p.requires_grad_(True)
    method.train()
    logits = method.segmenter(encoder)(pixels)
    loss = segmentation_loss(logits, labels)
    weight = method.head.classify.weight
    grads = torch.autograd.grad(loss, [*scales, weight])
    out = {f"{name}|logits": logits.detach(), f"{name}|loss": loss.detach(),
           f"{name}|grad.head": grads[-1]}  # fmt: skip
    if scales:
        out[f"{name}|grad.scales"] = torch.stack(list(grads[:-1]))
    return out


def test_golden_outputs_of_every_variant_and_of_the_split():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(2, 63, 3, generator=torch.Generator().manual_seed(3))
        low, high = frequency_split(x, (7, 9), 0.3)
        tensors = {"split|low": low, "split|high": high}
        for name in SEGMENTATION_CASES:
            tensors.update(_case(name))
    finally:
        torch.set_num_threads(n)
    check_golden("earth_adapter", tensors, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(SEGMENTATION_CASES))
def test_every_case_is_a_registered_segmentation_method(name):
    method = methods.get(SEGMENTATION_CASES[name][0])
    assert method.task == "segmentation"


def test_every_registered_segmentation_method_has_a_case():
    registered = {
        n for n in methods.names() if getattr(methods.get(n), "task", None) == "segmentation"
    }
    assert registered <= {r for r, _ in SEGMENTATION_CASES.values()}
