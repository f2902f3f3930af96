"""Methods on CUDA (``gpu`` marker; skipped without a GPU): the goldens hold there too, and
bf16 autocast — what ``benchmarks/gpu_check.py`` times — stays close to float32."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_method_goldens import (
    CASES,
    LOSS_FILE,
    NOISE_SEED,
    STATE,
    TOKEN_CASES,
    TOKEN_FILE,
    case_outputs,
    golden_batch,
    golden_token_batch,
    revision_batch,
    token_case_outputs,
)

from workbench import methods
from workbench.methods import BatchOutputs

pytestmark = pytest.mark.gpu

#: FANoise draws its noise from the CUDA generator there, so only its eval-mode case compares.
DETERMINISTIC = [c for c in CASES if not (c.startswith("fanoise") and c != "fanoise/eval")]


def _on_cuda(out: BatchOutputs) -> BatchOutputs:
    leaf = lambda t: t.detach().cuda().requires_grad_(True)  # noqa: E731
    return BatchOutputs(
        leaf(out.image_features), leaf(out.text_features), leaf(out.logit_scale),
        out.image_raw.cuda(), out.text_raw.cuda(),
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("case", DETERMINISTIC)
def test_goldens_hold_on_cuda(case, monkeypatch):
    import test_method_goldens as goldens

    monkeypatch.setattr(goldens, "golden_batch", lambda: _on_cuda(golden_batch()))
    stored = load_file(str(LOSS_FILE))
    for key, value in case_outputs(case).items():
        expected = stored[key]
        scale = max(1.0, float(expected.abs().max()))
        # cuBLAS reduces in another order than the CPU BLAS that wrote the goldens
        torch.testing.assert_close(value.cpu(), expected, rtol=1e-5, atol=1e-5 * scale)


POOLED = [n for n in methods.names() if not getattr(methods.get(n), "needs_tokens", False)]
#: Token cases without random draws (perturbation noise and random identification differ on CUDA).
TOKEN_DETERMINISTIC = [c for c, (_, kw) in TOKEN_CASES.items() if c.startswith("vse")
                       or kw.get("perturbation") is False]  # fmt: skip


def _tokens_on_cuda(batch):
    from workbench.methods.tokens import TokenBatch

    leaf = lambda t: t.detach().cuda().requires_grad_(True)  # noqa: E731
    return TokenBatch(leaf(batch.image_tokens), batch.image_mask.cuda(), leaf(batch.text_tokens),
                      batch.text_mask.cuda(), batch.image_ids.cuda())  # fmt: skip


@pytest.mark.parametrize("case", TOKEN_DETERMINISTIC)
def test_token_goldens_hold_on_cuda(case, monkeypatch):
    import test_method_goldens as goldens

    monkeypatch.setattr(
        goldens, "golden_token_batch", lambda: _tokens_on_cuda(golden_token_batch())
    )
    real_get = methods.get
    monkeypatch.setattr(goldens.methods, "get", lambda *a, **k: real_get(*a, **k).cuda())
    stored = load_file(str(TOKEN_FILE))
    for key, value in token_case_outputs(case).items():
        expected = stored[key]
        scale = max(1.0, float(expected.abs().max()))
        torch.testing.assert_close(value.cpu(), expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_token_methods_bf16_autocast_stays_close_to_fp32(case):
    name, config = TOKEN_CASES[case]
    torch.manual_seed(0)
    method = methods.get(name, **config).cuda().eval()
    batch = _tokens_on_cuda(golden_token_batch())
    torch.manual_seed(NOISE_SEED)  # random identification draws its weights per call
    fp32 = method(batch, STATE).loss
    torch.manual_seed(NOISE_SEED)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = method(batch, STATE).loss
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16)
    torch.testing.assert_close(bf16, fp32, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", POOLED)
def test_bf16_autocast_loss_is_close_to_fp32(name):
    method = methods.get(name)
    if method.needs_towers:
        pytest.skip("runs a denoiser on pixels: tests/test_dcr.py::test_dcr_bf16_on_cuda")
    out = _on_cuda(golden_batch())
    if getattr(method, "needs_captions", False):  # ReVision: its LM, projector and captions
        out = revision_batch(method, out)
    method = method.cuda().eval()
    with torch.random.fork_rng(devices=[0]):
        torch.manual_seed(NOISE_SEED)
        fp32 = method(out, STATE).loss
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = method(out, STATE).loss
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16)
    # bf16 keeps 8 bits of mantissa: logits of size up to 1/τ = 50 are off by ~0.2 at worst
    torch.testing.assert_close(bf16, fp32, rtol=5e-2, atol=5e-2)
