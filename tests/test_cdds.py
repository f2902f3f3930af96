"""CDDS (spec §3) and its VSE baseline: the properties a user of the method relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import methods
from workbench.methods.cdds import (
    ABLATIONS,
    column_stats,
    gaussian_kl_matrix,
    quantile_grid,
    quantile_map,
    related_weights,
)
from workbench.methods.tokens import TokenBatch, contrastive_loss, masked_mean

C_IMG, C_TXT = 12, 10
SMALL = {"image_dim": C_IMG, "text_dim": C_TXT, "dim": 16, "heads": 2}
SMOKE_CFG = {**SMALL, "perturbations": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def token_batch(b: int = 6, seed: int = 0, lengths=None, pad_value: float = 0.0) -> TokenBatch:
    """Seeded batch: 4 patch tokens per image, captions of varying length padded to 7."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths or [3, 7, 5, 2, 6, 4][:b])
    image = torch.randn(b, 4, C_IMG, generator=g)
    text = torch.randn(b, 7, C_TXT, generator=g)
    text_mask = torch.arange(7)[None, :] < lengths[:, None]
    text = torch.where(text_mask[..., None], text, torch.tensor(pad_value))
    ids = torch.tensor([0, 0, 1, 2, 3, 4][:b])
    return TokenBatch(image, torch.ones(b, 4, dtype=torch.bool), text, text_mask, ids)


def build(name: str = "cdds", **kw):
    """The method with seeded weights: every ablation row starts from the same parameters."""
    torch.manual_seed(0)
    return methods.get(name, **{**SMOKE_CFG, **kw}).train()


def run(method, batch, seed: int = 0):
    torch.manual_seed(seed)
    return method(batch)


# -- related semantics: column distributions, KL matrix, threshold ----------------------------
def test_column_stats_ignore_padding_even_nan():
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [float("nan"), float("inf")]]])
    mean, std = column_stats(x, torch.tensor([[True, True, False]]), eps=0.0)
    torch.testing.assert_close(mean, torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(std, torch.tensor([1.0, 2.0]))


def test_kl_matrix_equals_a_direct_per_pair_computation():
    g = torch.Generator().manual_seed(1)
    mp, mq = torch.randn(5, generator=g), torch.randn(3, generator=g)
    sp, sq = torch.rand(5, generator=g) + 0.2, torch.rand(3, generator=g) + 0.2
    S = gaussian_kl_matrix(mp, sp, mq, sq)
    assert S.shape == (5, 3)
    N = torch.distributions.Normal
    for i in range(5):
        for j in range(3):
            direct = torch.distributions.kl_divergence(N(mp[i], sp[i]), N(mq[j], sq[j]))
            torch.testing.assert_close(S[i, j], direct, rtol=1e-5, atol=1e-6)
    assert float(gaussian_kl_matrix(mp, sp, mp, sp).diagonal().abs().max()) < 1e-6


def test_related_weights_rows_normalised_and_alpha_controls_sparsity():
    g = torch.Generator().manual_seed(2)
    S = torch.rand(8, 8, generator=g) * 3
    _, M_low, w = related_weights(S, torch.zeros(8))
    torch.testing.assert_close(w.sum(1), torch.ones(8))
    assert (w >= 0).all()
    _, M_high, _ = related_weights(S, torch.full((8,), 2.0))
    assert float(M_high.mean()) < float(M_low.mean())
    # the most related column (smallest KL) always carries the largest weight
    assert torch.equal(w.argmax(1), S.argmin(1))


def test_alpha_receives_gradient_through_the_soft_mask():
    S = torch.rand(6, 6, generator=torch.Generator().manual_seed(3))
    alpha = torch.ones(6, requires_grad=True)
    _, _, w = related_weights(S, alpha)
    (w * torch.arange(6.0)).sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


# -- distribution sampling --------------------------------------------------------------------
def naive_quantile_map(source, source_mask, target, target_mask, weights):
    """Per pair, per column, per token: the reading of spec §3.4 written as plain loops."""
    b, l_s, d_s = source.shape
    out = torch.zeros(b, l_s, d_s, dtype=torch.float64)
    for k in range(b):
        src = source[k][source_mask[k]].double()  # (n_s, D_s)
        tgt = target[k][target_mask[k]].double()  # (n_t, D_t)
        n_s, n_t = len(src), len(tgt)
        valid = torch.nonzero(source_mask[k]).flatten()
        for i in range(d_s):
            ranks = src[:, i].argsort().argsort()
            for p_idx, p in enumerate(valid):
                u = (float(ranks[p_idx]) + 0.5) / n_s
                pos = min(max(u * n_t - 0.5, 0.0), n_t - 1)
                lo, frac = int(np.floor(pos)), pos - np.floor(pos)
                hi = min(lo + 1, n_t - 1)
                srt = tgt.sort(0).values  # (n_t, D_t)
                q = srt[lo] + frac * (srt[hi] - srt[lo])  # (D_t,)
                out[k, p, i] = (weights[i].double() * q).sum()
    return out


def test_quantile_map_equals_the_loop_reading_and_never_reads_padding():
    batch = token_batch(pad_value=float("nan"))
    g = torch.Generator().manual_seed(4)
    source = torch.randn(6, 7, 3, generator=g)
    target = torch.randn(6, 4, 5, generator=g)
    w = torch.softmax(torch.randn(3, 5, generator=g), 1)
    target_mask = torch.ones(6, 4, dtype=torch.bool)
    target_mask[0, 2:] = False
    target = torch.where(target_mask[..., None], target, torch.nan)
    source = torch.where(batch.text_mask[..., None], source, torch.nan)
    out = quantile_map(source, batch.text_mask, target, target_mask, w)
    assert torch.isfinite(out).all()
    assert (out[~batch.text_mask] == 0).all()
    want = naive_quantile_map(source, batch.text_mask, target, target_mask, w)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)


def test_quantile_grid_returns_the_sample_at_its_own_levels():
    x = torch.tensor([[[3.0], [1.0], [2.0], [9.0]]])
    levels = (torch.arange(3.0) + 0.5)[None] / 3
    got = quantile_grid(x, torch.tensor([[True, True, True, False]]), levels)
    torch.testing.assert_close(got.flatten(), torch.tensor([1.0, 2.0, 3.0]))


def test_quantile_map_is_monotone_in_the_source_per_column():
    g = torch.Generator().manual_seed(5)
    source, target = torch.randn(4, 9, 6, generator=g), torch.randn(4, 5, 6, generator=g)
    w = torch.softmax(torch.randn(6, 6, generator=g), 1)
    ones = torch.ones(4, 9, dtype=torch.bool)
    out = quantile_map(source, ones, target, torch.ones(4, 5, dtype=torch.bool), w)
    order = source.argsort(dim=1)
    along = out.gather(1, order)  # out sorted by the source's order, per (pair, column)
    assert (along[:, 1:] - along[:, :-1] >= -1e-6).all()


def test_quantile_map_is_differentiable_wrt_target_and_weights_not_source():
    g = torch.Generator().manual_seed(6)
    source = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    target = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(3, 3, generator=g, dtype=torch.float64), 1).requires_grad_()
    ms = torch.ones(2, 5, dtype=torch.bool)
    mt = torch.tensor([[True, True, True, False], [True, True, True, True]])

    def f(t, weights):
        return quantile_map(source, ms, t, mt, weights).double()

    # float32 arithmetic inside, so a loose gradcheck against float64 finite differences
    assert torch.autograd.gradcheck(f, (target, w), eps=1e-3, atol=2e-3, rtol=2e-3)
    src = source.clone().requires_grad_()
    quantile_map(src, ms, target, mt, w).sum().backward()
    assert src.grad is None or float(src.grad.abs().sum()) == 0.0


# -- the method -------------------------------------------------------------------------------
def test_padding_never_enters_a_distribution():
    m = methods.get("cdds", **SMOKE_CFG).train()
    clean = run(m, token_batch(pad_value=0.0))
    nan = run(m, token_batch(pad_value=float("nan")))
    assert torch.isfinite(nan.loss)
    torch.testing.assert_close(nan.loss, clean.loss)
    # nor the backward pass: NaN padding rows would poison the projection's weight gradient
    grads = []
    for lo in (clean, nan):
        m.zero_grad()
        lo.loss.backward()
        grads.append([p.grad.clone() for p in m.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b)
    # extra padding columns change nothing either
    b = token_batch()
    wide = TokenBatch(
        b.image_tokens, b.image_mask,
        torch.cat([b.text_tokens, torch.full((6, 3, C_TXT), 7.0)], 1),
        torch.cat([b.text_mask, torch.zeros(6, 3, dtype=torch.bool)], 1), b.image_ids,
    )  # fmt: skip
    torch.testing.assert_close(run(m, wide).loss, clean.loss, rtol=1e-5, atol=1e-6)


def test_each_ablation_switch_changes_exactly_its_term():
    batch = token_batch()
    out = {row: run(build(**kw), batch) for row, kw in ABLATIONS.items()}
    for row, lo in out.items():  # the total is exactly the weighted sum of the reported terms
        total = sum(lo.logs[f"weight/{k}"] * v for k, v in lo.terms.items())
        torch.testing.assert_close(lo.loss, total, msg=row)
    full = out["full"]
    same = lambda a, b, keys: all(torch.allclose(a.terms[k], b.terms[k]) for k in keys)  # noqa: E731
    # w/o Mod.: only L_m's weight goes to zero; every term keeps its value
    assert same(out["no_modality"], full, full.terms) and out["no_modality"].logs["weight/L_m"] == 0
    # w/o Int.: L_f and L_x leave the total, nothing else changes
    nc = out["no_completeness"]
    assert same(nc, full, full.terms) and nc.logs["weight/L_f"] == nc.logs["weight/L_x"] == 0
    # w/o Sam.: L_s becomes direct alignment, L_x (nothing to rebuild from) is gone
    ns = out["no_sampling"]
    assert "L_x" not in ns.terms and same(ns, full, ("L_m", "L_f"))
    assert not torch.allclose(ns.terms["L_s"], full.terms["L_s"])
    # w/o Gau.: the decoders run once, unperturbed: the result no longer depends on the noise
    npert = build(**ABLATIONS["no_perturbation"])
    torch.testing.assert_close(run(npert, batch, 0).loss, run(npert, batch, 1).loss)
    pert = build()
    assert not torch.allclose(run(pert, batch, 0).loss, run(pert, batch, 1).loss)
    # w/o Dec.: semantic = projected tokens, modality = 0 (so L_m = 0)
    nd = build(**ABLATIONS["no_decoupling"])
    c = nd.components("image", batch.image_tokens, batch.image_mask)
    assert torch.equal(c.semantic, c.tokens) and not c.modality.any()
    assert float(out["no_decoupling"].terms["L_m"]) == 0.0
    assert not hasattr(nd, "networks")


@pytest.mark.parametrize("name", ["cdds", "vse"])
def test_batch_of_two_duplicate_rows_and_bf16_stay_finite(name):
    cfg = SMOKE_CFG if name == "cdds" else {**SMALL, "sampling": True}
    m = methods.get(name, **cfg).train()
    two = token_batch(b=2, lengths=[1, 7])
    assert torch.isfinite(run(m, two).loss)
    b = token_batch()
    dup = TokenBatch(
        b.image_tokens[[0, 0, 1, 1]], b.image_mask[[0, 0, 1, 1]],
        b.text_tokens[[0, 0, 1, 1]], b.text_mask[[0, 0, 1, 1]], torch.tensor([0, 1, 2, 3]),
    )  # fmt: skip
    lo = run(m, dup)
    assert torch.isfinite(lo.loss)
    lo.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run(m, b)
    full = run(m, b)
    assert low.loss.dtype == torch.float32 and torch.isfinite(low.loss)
    torch.testing.assert_close(low.loss, full.loss, rtol=0.05, atol=0.05)


def test_plain_features_are_refused_with_the_missing_tokens_named():
    for name in ("cdds", "vse"):
        m = methods.get(name)
        assert m.needs_tokens
        x = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        with pytest.raises(ValueError, match="token features"):
            m(x, x, torch.tensor(10.0))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"dim": 10, "heads": 3}, "heads"),
        ({"a_f": 1.5}, "a_f"),
        ({"identification": "per-batch"}, "identification"),
        ({"loss": "triplet"}, "loss"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"score": "cosine"}, "score"),
    ],
)
def test_bad_arguments_name_themselves(bad, match):
    with pytest.raises(ValueError, match=match):
        methods.get("cdds", **bad)


def test_identification_modes():
    batch = token_batch()
    pre = methods.get("cdds", **SMOKE_CFG, identification="precomputed").train()
    d = 16
    pre.set_statistics((torch.zeros(d), torch.ones(d)), (torch.zeros(d), torch.ones(d)))
    # identical statistics: every KL is 0, so every column is equally related
    w_v, w_t, _ = pre.related(*(pre.components(s, t, m) for s, t, m in (
        ("image", batch.image_tokens, batch.image_mask),
        ("text", batch.text_tokens, batch.text_mask))))  # fmt: skip
    torch.testing.assert_close(w_v, torch.full((d, d), 1 / d))
    torch.testing.assert_close(w_t, torch.full((d, d), 1 / d))
    rnd = methods.get("cdds", **SMOKE_CFG, identification="random").train()
    a, b = run(rnd, batch, 0), run(rnd, batch, 1)
    assert not torch.allclose(a.loss, b.loss)


# -- the pair loss and the VSE baseline -------------------------------------------------------
def test_contrastive_loss_never_counts_a_caption_of_the_same_image_as_negative():
    g = torch.Generator().manual_seed(7)
    a = torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=-1)
    b = a.clone()
    b[1] = a[0]  # rows 0 and 1 share an image: identical text embeddings
    same = torch.tensor([0, 0, 1, 2])
    pos = same[:, None] == same[None, :]
    for kind in ("infonce", "hinge"):
        masked = contrastive_loss(a, b, kind=kind, positives=pos)
        plain = contrastive_loss(a, b, kind=kind)
        assert float(masked) < float(plain), kind
    hinge = contrastive_loss(a, a, kind="hinge", margin=0.0)
    assert float(hinge) == 0.0  # perfect alignment, hardest negative below the positive


def test_vse_pooled_projection_equals_projecting_every_token():
    m = methods.get("vse", **SMALL)
    b = token_batch()
    pooled = m.embed_tokens("text", b.text_tokens, b.text_mask)
    per_token = masked_mean(m.project["text"](b.text_tokens), b.text_mask)
    torch.testing.assert_close(pooled, torch.nn.functional.normalize(per_token, dim=-1))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: column_stats(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)), "x"),
        (lambda: column_stats(torch.zeros(2, 3, 4), torch.ones(2, 3)), "mask"),
        (lambda: column_stats(torch.zeros(2, 3, 4), torch.ones(2, 5, dtype=torch.bool)), "mask"),
        (
            lambda: gaussian_kl_matrix(
                torch.zeros(3), torch.ones(4), torch.zeros(3), torch.ones(3)
            ),
            "std_p",
        ),
        (lambda: gaussian_kl_matrix([0.0], [1.0], torch.zeros(1), torch.ones(1)), "mean_p"),
        (lambda: related_weights(torch.zeros(4, 5), torch.zeros(5)), "alpha"),
        (lambda: related_weights(torch.zeros(4, 5), torch.zeros(4), temperature=0), "temperature"),
        (
            lambda: quantile_map(
                torch.zeros(2, 3, 4),
                torch.ones(2, 3, dtype=torch.bool),
                torch.zeros(2, 5, 6),
                torch.ones(2, 5, dtype=torch.bool),
                torch.zeros(6, 4),
            ),
            "weights",
        ),
        (
            lambda: quantile_grid(
                torch.zeros(2, 5, 6), torch.ones(2, 5, dtype=torch.bool), torch.zeros(3, 4)
            ),
            "levels",
        ),
    ],
)
def test_semantics_functions_name_their_bad_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"datasets": ("synthetic-wrld",)}, "synthetic-world"),
        ({"datasets": "openclipart"}, "datasets"),
        ({"encoder": "defualt"}, "default"),
        ({"rows": ("full", "full")}, "rows"),
        ({"rows": ("full", "no_everything")}, "unknown ablation rows"),
        ({"seeds": (0, 0)}, "seeds"),
        ({"dataset_kwargs": {"flickr30k": {"root": "/x"}}}, "not in datasets"),
        ({"dataset_kwargs": {"openclipart": "/x"}}, "dataset_kwargs"),
    ],
)
def test_study_config_refuses_bad_names_before_any_work(bad, match):
    from workbench.experiments.cdds import CDDSStudyConfig

    with pytest.raises((ValueError, TypeError), match=match):
        CDDSStudyConfig(**bad)


def test_distance_ratio_names_non_finite_rows_and_misaligned_owners():
    from workbench.experiments.cdds_report import distance_ratio

    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert distance_ratio(X, np.array([0, 0, 1, 1])) < 0.1  # one image's captions coincide
    bad = X.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="X"):
        distance_ratio(bad, np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="owners"):
        distance_ratio(X, np.array([0, 0, 1]))
