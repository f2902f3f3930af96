"""Earth-Adapter: the frequency split, the adapter layers, attaching them to conv and ViT towers,
what trains, and the round trip of a trained run through ``load_encoder("run:...")``."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from seg_fakes import TinyConvEncoder, tiny_vit_encoder

from workbench import methods
from workbench.methods.earth_adapter import (
    AdapterLayer,
    Expert,
    frequency_split,
    layer_scales,
    low_pass_cutoff,
    low_pass_mask,
    mix_experts,
)
from workbench.methods.earth_adapter.frequency import band_operator, fft_split, split_bands
from workbench.methods.earth_adapter.segmenter import capture_outputs, hook_target

# the tiny conv tower: blocks 1, 2 (8×8 at stride 8) get the mixture, block 3 (4×4) one expert
TINY = {"min_stride": 8, "fft_layers": 2, "bottleneck": 4, "head_width": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def _official_decompose(feats: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """A numpy transcription of the official ``decompose_fft`` on (B, C, H, W) maps."""
    fft = np.fft.fftshift(np.fft.fft2(feats, norm="ortho"), axes=(-2, -1))
    h, w = fft.shape[-2:]
    cutoff = int(min(h, w) * ratio // 2)
    mask = np.zeros_like(fft)
    cx, cy = h // 2, w // 2
    mask[:, :, cx - cutoff : cx + cutoff, cy - cutoff : cy + cutoff] = 1
    low = np.fft.ifft2(np.fft.ifftshift(fft * mask, axes=(-2, -1)), norm="ortho").real
    high = np.fft.ifft2(np.fft.ifftshift(fft * (1 - mask), axes=(-2, -1)), norm="ortho").real
    return low, high


# -- the frequency split ---------------------------------------------------------------------
@pytest.mark.parametrize("grid", [(8, 8), (7, 9), (32, 32), (12, 10)])
def test_low_plus_high_reconstructs_the_input(grid):
    x = torch.randn(3, grid[0] * grid[1], 5, generator=torch.Generator().manual_seed(0))
    low, high = frequency_split(x, grid, 0.3)
    assert low.shape == high.shape == x.shape and low.dtype == x.dtype
    torch.testing.assert_close(low + high, x, atol=2e-6, rtol=0)
    assert high.abs().max() > 0.1 and low.abs().max() > 0.01  # neither band is trivial


def test_a_constant_map_is_all_low_frequency():
    x = torch.full((2, 64, 3), 2.5)
    low, high = frequency_split(x, (8, 8), 0.3)
    torch.testing.assert_close(low, x, atol=1e-6, rtol=0)
    assert high.abs().max() < 1e-6


@pytest.mark.parametrize("grid", [(8, 8), (16, 12)])
def test_a_checkerboard_is_all_high_frequency(grid):
    h, w = grid
    board = torch.tensor([[(-1.0) ** (i + j) for j in range(w)] for i in range(h)])
    x = board.reshape(1, h * w, 1).repeat(2, 1, 4)  # (B, H·W, C), row-major
    low, high = frequency_split(x, grid, 0.3)
    torch.testing.assert_close(high, x, atol=1e-6, rtol=0)
    assert low.abs().max() < 1e-6


def test_split_matches_the_official_decompose_fft_line_by_line():
    g = np.random.default_rng(1)
    maps = g.normal(size=(2, 3, 32, 32))  # (B, C, H, W), the official layout and grid
    tokens = torch.from_numpy(maps).float().flatten(2).transpose(1, 2)  # (B, H·W, C)
    low, high = frequency_split(tokens, (32, 32), 0.3)
    ref_low, ref_high = _official_decompose(maps, 0.3)
    as_maps = lambda t: t.transpose(1, 2).reshape(2, 3, 32, 32).numpy()  # noqa: E731
    np.testing.assert_allclose(as_maps(low), ref_low, atol=2e-6)
    np.testing.assert_allclose(as_maps(high), ref_high, atol=2e-6)


def test_the_mask_is_the_official_asymmetric_square():
    assert low_pass_cutoff((32, 32), 0.3) == 4 and low_pass_cutoff((32, 32), 0.2) == 3
    mask = low_pass_mask((8, 8), 0.3)  # k = 1: rows/cols [3, 5), i.e. frequencies −1 and 0
    assert mask.sum() == 4 and mask[3:5, 3:5].all()
    # real part of an asymmetric mask = the symmetrised filter: frequency +1 passes half
    x = torch.tensor([math.cos(2 * math.pi * j / 8) for j in range(8)]).repeat(8, 1)  # (H, W)
    low, _ = frequency_split(x.reshape(1, 64, 1), (8, 8), 0.3)
    torch.testing.assert_close(low.reshape(8, 8), 0.5 * x, atol=1e-6, rtol=0)


def test_the_band_matrix_is_the_same_map_as_the_fft():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 80, 7, generator=g)
    low_fft, high_fft = fft_split(x, (8, 10), low_pass_mask((8, 10), 0.5))
    low_mat, high_mat = split_bands(x, (8, 10), band_operator((8, 10), 0.5))
    torch.testing.assert_close(low_mat, low_fft, atol=1e-6, rtol=0)
    torch.testing.assert_close(high_mat, high_fft, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 36, 3), (6, 6), 0.3), "cutoff k"),
        ((torch.randn(2, 50, 3), (8, 8), 0.3), "64"),
        ((torch.randn(36, 3), (6, 6), 0.5), r"\(B, H·W, C\)"),
        ((torch.ones(1, 64, 2, dtype=torch.long), (8, 8), 0.3), "floating point"),
        ((torch.full((1, 64, 2), float("nan")), (8, 8), 0.3), "NaN"),
        ((torch.randn(1, 64, 2), (8, 8), 0.0), "ratio"),
        ((torch.randn(1, 64, 2), (8, 8.0), 0.3), "grid_hw"),
    ],
)
def test_bad_split_inputs_are_refused_by_name(args, match):
    with pytest.raises(ValueError, match=match):
        frequency_split(*args)


# -- the adapter layer -------------------------------------------------------------------------
def test_experts_are_kaiming_uniform_not_zero():
    torch.manual_seed(0)
    expert = Expert(40, 8)
    for linear, fan_in in ((expert[0], 40), (expert[2], 8)):
        w = linear.weight
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=√5) → U(−1/√fan_in, 1/√fan_in)
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert expert(torch.randn(2, 40)).abs().sum() > 0


def test_update_is_the_router_weighted_sum_scaled():
    torch.manual_seed(0)
    layer = AdapterLayer(6, ("spatial", "low", "high"), 4, ratio=0.5, scale=0.3)
    x = torch.randn(2, 16, 6)
    out = layer(x, (4, 4))
    low, high = frequency_split(x, (4, 4), 0.5)
    w = torch.softmax(layer.router(x), dim=-1)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 16))
    deltas = [e(b) for e, b in zip(layer.experts, (x, low, high))]
    expected = x + 0.3 * sum(w[..., k : k + 1] * d for k, d in enumerate(deltas))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    assert layer.router_weights(x).shape == (2, 16, 3)


def test_a_zero_scale_layer_is_the_identity():
    layer = AdapterLayer(6, ("spatial", "low", "high"), 4, ratio=0.5, scale=0.0)
    x = torch.randn(2, 16, 6)
    assert torch.equal(layer(x, (4, 4)), x)
    single = AdapterLayer(6, ("spatial",), 4, ratio=0.3, scale=0.1)
    assert single.router is None and not single.uses_fft
    with pytest.raises(ValueError, match="router"):
        mix_experts(x, (4, 4), list(layer.experts), ("spatial",) * 3, None, layer.scale)


# -- attaching to towers -----------------------------------------------------------------------
def _tower_outputs(encoder, pixels):
    blocks = encoder.tower_blocks("image")
    with torch.no_grad(), capture_outputs([hook_target(b) for b in blocks]) as outs:
        pooled = encoder.image_tower(pixels)
    return pooled, outs


def _zero_scales(encoder):
    with torch.no_grad():
        for s in layer_scales(encoder):
            s.zero_()


@pytest.mark.parametrize("name", ["earth_adapter", "earth_adapter/spatial3", "rein-like"])
def test_with_every_scale_zero_the_adapted_conv_tower_equals_the_frozen_one(name):
    frozen, adapted = TinyConvEncoder(), TinyConvEncoder()
    method = methods.get(name, **TINY)
    torch.manual_seed(0)
    method.attach(adapted)
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    base, base_blocks = _tower_outputs(frozen, pixels)
    moved, _ = _tower_outputs(adapted, pixels)
    assert not torch.allclose(moved, base)  # kaiming-initialised experts change the output
    _zero_scales(adapted)
    same, same_blocks = _tower_outputs(adapted, pixels)
    assert torch.equal(same, base)
    for a, b in zip(same_blocks, base_blocks):
        assert torch.equal(a, b)


def test_attach_resolves_layers_from_the_token_strides():
    enc = TinyConvEncoder()
    method = methods.get("earth_adapter", **TINY)
    method.attach(enc)
    assert [b.stride for b in method.blocks_] == [4.0, 8.0, 8.0, 16.0]
    assert method.adapter_layers_ == (1, 2, 3) and method.fft_layers_ == (1, 2)
    assert method.feature_layers_ == (0, 2, 3)  # last block of each of the 3 coarsest grids
    assert enc.earth_adapter["1"].inputs == ("spatial", "low", "high")
    assert enc.earth_adapter["3"].inputs == ("spatial",)
    with pytest.raises(ValueError, match="already has adapters"):
        method.attach(enc)
    head_only = methods.get("frozen", **TINY)
    plain = TinyConvEncoder()
    head_only.attach(plain)
    assert not hasattr(plain, "earth_adapter") and head_only.head is not None


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"fft_layers": [3]}, "no low band"),  # block 3 is 4×4: k = 0 at ρ = 0.3
        ({"adapter_layers": [1, 9]}, "out of range"),
        ({"fft_layers": [0]}, "not adapter layers"),
        ({"min_stride": 64}, "min_stride"),
    ],
)
def test_bad_layer_choices_fail_at_attach(config, match):
    method = methods.get("earth_adapter", **{**TINY, **config})
    with pytest.raises(ValueError, match=match):
        method.attach(TinyConvEncoder())


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"experts": "spatial"}, "string"),
        ({"experts": ("spatial", "mid")}, "experts"),
        ({"bottleneck": 0}, "bottleneck"),
        ({"ratio": 1.5}, "ratio"),
        ({"adapter_layers": "5-15"}, "adapter_layers"),
        ({"fft_layers": [2, 2]}, "repeated"),
    ],
)
def test_bad_hyper_parameters_fail_at_construction(config, match):
    with pytest.raises(ValueError, match=match):
        methods.get("earth_adapter", **config)


def test_on_a_vit_the_cls_token_passes_unchanged_and_zero_scales_are_the_identity(tmp_path):
    frozen, adapted = tiny_vit_encoder(tmp_path), tiny_vit_encoder(tmp_path)
    method = methods.get("earth_adapter", adapter_layers=[0, 1], fft_layers=[0], ratio=0.3,
                         bottleneck=4, head_width=8)  # fmt: skip
    torch.manual_seed(0)
    method.attach(adapted)
    assert [b.grid for b in method.blocks_] == [(8, 8), (8, 8)] and method.blocks_[0].sequence
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    block = hook_target(adapted.tower_blocks("image")[0])
    with torch.no_grad(), capture_outputs([block], before_hooks=True) as raw:
        with capture_outputs([block]) as out:
            adapted.image_tower(pixels)
    assert torch.equal(out[0][:, 0], raw[0][:, 0])  # CLS untouched
    assert not torch.allclose(out[0][:, 1:], raw[0][:, 1:])  # patch tokens adapted
    _zero_scales(adapted)
    with torch.no_grad():
        assert torch.equal(adapted.image_tower(pixels), frozen.image_tower(pixels))
        t_adapted = adapted.tower_tokens("image", pixels, layer=0)
        t_frozen = frozen.tower_tokens("image", pixels, layer=0)
    assert torch.equal(t_adapted.tokens, t_frozen.tokens) and torch.equal(
        t_adapted.cls, t_frozen.cls
    )
    logits = method.segmenter(adapted)(pixels)
    assert logits.shape == (2, 10, 64, 64)


def test_a_deep_copy_hooks_the_copied_blocks_to_the_copied_adapters():
    enc = TinyConvEncoder()
    method = methods.get("earth_adapter", **TINY)
    method.attach(enc)
    twin = copy.deepcopy(enc)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = twin.image_tower(pixels)
        _zero_scales(enc)  # changes the original only
        assert torch.equal(twin.image_tower(pixels), before)
        assert not torch.equal(enc.image_tower(pixels), before)


def test_the_plain_feature_call_is_refused_with_what_is_missing():
    x = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    with pytest.raises(ValueError, match=r"segmentation method.*per-pixel labels"):
        methods.get("earth_adapter")(x, x, torch.tensor(10.0))
