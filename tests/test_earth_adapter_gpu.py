"""Earth-Adapter on CUDA (``gpu`` marker; skipped without a GPU): the frequency split runs in
float32 under bf16 autocast, and an adapted ViT-B-32 trains a step in bf16 with finite values
close to its float32 step."""

from __future__ import annotations

import pytest
import torch

from workbench import methods
from workbench.methods.earth_adapter import frequency_split, segmentation_loss

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_split_under_bf16_autocast_is_float32_arithmetic():
    x = torch.randn(4, 32 * 32, 64, device="cuda").bfloat16()
    ref_low, ref_high = frequency_split(x.float(), (32, 32))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low, high = frequency_split(x, (32, 32))
    assert low.dtype == high.dtype == torch.bfloat16  # returned in the input's dtype
    # only the final rounding to bf16 differs from the float32 split
    torch.testing.assert_close(low.float(), ref_low, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(high.float(), ref_high, rtol=1e-2, atol=1e-2)


def test_adapted_vit_b32_trains_a_bf16_step_close_to_fp32():
    import workbench as wb

    losses = {}
    for amp in (False, True):
        torch.manual_seed(0)
        enc = wb.load_encoder("open_clip:ViT-B-32").cuda()
        method = methods.get("earth_adapter")  # every ViT block (stride 32), mixture on 0-2
        method.attach(enc)
        assert method.fft_layers_ == (0, 1, 2) and method.blocks_[0].grid == (7, 7)
        seg = method.segmenter(enc)
        g = torch.Generator(device="cuda").manual_seed(0)
        pixels = torch.randn(8, 3, 224, 224, device="cuda", generator=g)
        labels = torch.randint(0, 10, (8, 224, 224), device="cuda", generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = segmentation_loss(seg(pixels), labels)
        loss.backward()
        grad = enc.earth_adapter["0"].scale.grad
        assert torch.isfinite(loss) and grad is not None and torch.isfinite(grad)
        losses[amp] = float(loss)
    assert abs(losses[True] - losses[False]) < 0.05 * abs(losses[False])
