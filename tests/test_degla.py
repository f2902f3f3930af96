"""DeGLA (methods-geometry.md §5, §8): the loss terms by hand, the Table 7 switches, the EMA
teacher (no gradients, exact update, bit-identical resume) and the loop's hard-negative path."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings

from workbench import methods
from workbench.methods import BatchOutputs, StepState
from workbench.methods.degla import ABLATIONS, TERMS, DeGLA, degla_loss_terms
from workbench.train import RunDir, TrainConfig, train


def _ce(logits: list[float], label: int) -> float:
    return -logits[label] + math.log(sum(math.exp(x) for x in logits))


def _two_by_two():
    """B = 2, D = 2, K = 1, unit vectors whose dot products are easy to read."""
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    n = torch.tensor([[[0.6, 0.8]], [[1.0, 0.0]]])  # (B, K, D)
    tv = v.clone()
    tt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tn = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    return v, t, n, tv, tt, tn


def test_terms_match_a_hand_computed_two_by_two_case():
    v, t, n, tv, tt, tn = _two_by_two()
    got = degla_loss_terms(v, t, n, tv, tt, tn, 2.0)
    # image→text rows over [t1, t2, n1, n2] at scale 2; text→image over the images only
    i2t = (_ce([1.6, 0.0, 1.2, 2.0], 0) + _ce([1.2, 2.0, 1.6, 0.0], 1)) / 2
    t2i = (_ce([1.6, 1.2], 0) + _ce([0.0, 2.0], 1)) / 2
    igc = (_ce([1.6, 1.2], 0) + _ce([2.0, 0.0], 0)) / 2  # own caption vs own negative
    tgc = (_ce([8.0, 9.6], 0) + _ce([8.0, 0.0], 0)) / 2  # t·t* vs t·t̄ at the fixed scale 10
    distill = 0.0 + (0.04 + 0.36 + 0.36 + 0.04) + (0.36 + 0.04 + 0.0)
    expected = {"base": (i2t + t2i) / 2, "igc": igc, "tgc": tgc, "distill": distill}
    assert set(got) == set(TERMS)
    for name, value in expected.items():
        assert float(got[name]) == pytest.approx(value, rel=1e-6, abs=1e-6), name


def _official(v, t, n, teacher_text, scale):
    """The official CLIPloss_DeGLA masks (§8), re-implemented from its description: text rows
    [B captions; B·K negatives] caption-major; IGC mask repeat_interleave, TGC mask repeat."""
    b, k, d = n.shape
    texts = torch.cat([t, n.reshape(b * k, d)])
    mask0 = torch.full((b, b), float("-inf"))
    mask0.fill_diagonal_(0)
    igc_logits = scale * v @ texts.T + torch.cat([mask0, mask0.repeat_interleave(k, dim=1)], 1)
    tgc_logits = 10.0 * t @ torch.cat([teacher_text, n.reshape(b * k, d)]).T
    tgc_logits = tgc_logits + torch.cat([mask0, mask0.repeat(1, k)], 1)
    labels = torch.arange(b)
    return F.cross_entropy(igc_logits, labels), F.cross_entropy(tgc_logits, labels)


def test_caption_major_layout_matches_the_official_masks():
    g = torch.Generator().manual_seed(0)
    b, k, d = 3, 4, 5
    v, t, tt = (F.normalize(torch.randn(b, d, generator=g), dim=-1) for _ in range(3))
    n = F.normalize(torch.randn(b, k, d, generator=g), dim=-1)
    igc_code, tgc_code = _official(v, t, n, tt, 7.0)
    own = degla_loss_terms(v, t, n, None, tt, None, 7.0, terms=("igc", "tgc"))
    code = degla_loss_terms(v, t, n, None, tt, None, 7.0, terms=("tgc",), tgc_negatives="code")
    torch.testing.assert_close(own["igc"], igc_code)  # IGC: the release is right
    torch.testing.assert_close(code["tgc"], tgc_code)  # the parity switch reproduces its TGC
    assert not torch.allclose(own["tgc"], tgc_code)  # ... which picks other captions' negatives


def test_inputs_are_validated():
    v, t, n, tv, tt, tn = _two_by_two()
    with pytest.raises(ValueError, match=r"negatives must be \(B, K, D\)"):
        degla_loss_terms(v, t, n[0], tv, tt, tn, 2.0)
    with pytest.raises(ValueError, match="teacher_text must have the student's shape"):
        degla_loss_terms(v, t, n, tv, tt[:1], tn, 2.0)
    with pytest.raises(ValueError, match=r"term 'tgc' needs \['teacher_text'\]"):
        degla_loss_terms(v, t, n, None, None, None, 2.0, terms=("base", "tgc"))
    with pytest.raises(ValueError, match="unknown terms"):
        degla_loss_terms(v, t, n, tv, tt, tn, 2.0, terms=("base", "itc"))
    for bad in ({"lambda_igc": -1}, {"teacher": "frozen"}, {"ema_decay": 2.0}, {"k": 0}):
        with pytest.raises(ValueError):
            methods.get("degla", **bad)


def test_bf16_features_give_a_float32_loss():
    v, t, n, tv, tt, tn = (x.bfloat16() for x in _two_by_two())
    got = degla_loss_terms(v, t, n, tv, tt, tn, 2.0)
    assert all(x.dtype == torch.float32 for x in got.values())


def _batch():
    v, t, n = _two_by_two()[:3]
    out = BatchOutputs(v, t, torch.tensor(2.0), v, t, hard_negatives=n)
    return out, degla_loss_terms(v, t, n, v, t, n, 2.0)  # standalone: teacher = the student


def test_each_switch_removes_exactly_its_term():
    out, full = _batch()
    lambdas = {"igc": 0.1, "tgc": 0.1, "distill": 0.005}
    for row, switches in ABLATIONS.items():
        lo = methods.get("degla", **switches)(out, StepState.standalone())
        on = [term for term, enabled in switches.items() if enabled]
        assert set(lo.terms) == {"base", *on}, row
        expected = full["base"] + sum(lambdas[term] * full[term] for term in on)
        torch.testing.assert_close(lo.loss, expected, msg=row)
    # the terms a switch leaves on are the very numbers of the full method
    lo = methods.get("degla", tgc=False)(out, StepState.standalone())
    for term in ("base", "igc", "distill"):
        assert torch.equal(lo.terms[term], full[term])


def test_rows_without_tgc_or_distillation_build_no_teacher():
    enc = ToyEncoder()
    for row, switches in ABLATIONS.items():
        m = methods.get("degla", **switches)
        m.attach(enc)
        assert (m.teacher is not None) == (switches["tgc"] or switches["distill"]), row


def test_plain_call_without_negatives_says_what_is_missing():
    m = methods.get("degla")
    x = F.normalize(torch.randn(4, 3), dim=-1)
    with pytest.raises(ValueError, match="hard negatives"):
        m(x, x, torch.tensor(10.0))


def test_teacher_gets_no_gradient_and_its_ema_update_is_exact():
    enc = ToyEncoder()
    m = methods.get("degla", ema_decay=0.75)
    m.attach(enc)
    with torch.no_grad():
        enc.image_head.weight.fill_(1.0)
        enc.text_head.weight.fill_(1.0)
        m.teacher.module["image_head"].weight.fill_(1.0)
        m.teacher.module["text_head"].weight.fill_(1.0)
    g = torch.Generator().manual_seed(0)
    it, tt = torch.randn(4, 24, generator=g), torch.randn(4, 20, generator=g)
    nt = torch.randn(4, 2, 20, generator=g)
    zi, zt, zn = enc.image_head(it), enc.text_head(tt), enc.text_head(nt)
    out = BatchOutputs(
        F.normalize(zi, dim=-1), F.normalize(zt, dim=-1), enc.logit_scale.exp(), zi, zt,
        hard_negatives=F.normalize(zn, dim=-1), hard_negative_tower=nt,
        image_tower=it, text_tower=tt,
    )  # fmt: skip
    m(out, StepState.standalone()).loss.backward()
    assert enc.image_head.weight.grad is not None and enc.text_head.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())
    assert not any(p.requires_grad for p in m.parameters())  # the loop trains none of them
    with torch.no_grad():
        enc.image_head.weight.fill_(3.0)
        enc.text_head.weight.fill_(5.0)
    m.on_step_end(enc, StepState(0, 2))  # 0.75·1 + 0.25·3 and 0.75·1 + 0.25·5, dyadic: exact
    assert torch.equal(m.teacher.module["image_head"].weight, torch.full((16, 24), 1.5))
    assert torch.equal(m.teacher.module["text_head"].weight, torch.full((16, 20), 2.0))
    assert int(m.teacher.updates) == 1


def test_heads_teacher_refuses_trainable_towers():
    enc = ToyEncoder()
    m = methods.get("degla")
    m.attach(enc)
    x = torch.randn(2, 24, requires_grad=True)
    t = torch.randn(2, 20)
    z = F.normalize(torch.randn(2, 16), dim=-1)
    out = BatchOutputs(
        z, z, torch.tensor(10.0), z, z, hard_negatives=z[:, None], hard_negative_tower=t[:, None],
        image_tower=x, text_tower=t,
    )  # fmt: skip
    with pytest.raises(ValueError, match="teacher='encoder'"):
        m(out, StepState.standalone())


def _config(root, **kw) -> TrainConfig:
    base = dict(
        method="degla", encoder=None, dataset=None, steps=6, batch_size=16, holdout=16,
        warmup=2, lr=1e-2, snapshot_every=0, checkpoint_every=2, eval_every=2,
        trainable="heads+logit_scale", method_config={"ema_decay": 0.5}, run_root=str(root),
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


class _Crash(Exception):
    pass


def _crash_at(step_to_crash):
    def hook(encoder, step):
        if step == step_to_crash:
            raise _Crash(step)
        return {}

    return hook


@pytest.mark.parametrize(
    "mode", ["cached", "items"], ids=["heads-on-cached-features", "text-block-trains"]
)
def test_resume_with_the_teacher_is_bit_identical(tmp_path, mode):
    enc, data = ToyEncoder(), ToyDataset(80)
    if mode == "cached":
        kw = {"data": "cached"}
        inputs = {"embeddings": toy_embeddings(enc, data)}
    else:
        kw = {"data": "items", "trainable": "heads+text_blocks:1",
              "method_config": {"ema_decay": 0.5, "teacher": "encoder"}}  # fmt: skip
        inputs = {"dataset": data}
    config = _config(tmp_path, **kw)
    full = train(config, encoder=copy.deepcopy(enc), progress=False, **inputs)
    with pytest.raises(_Crash):
        train(config, encoder=copy.deepcopy(enc), eval_hooks=[_crash_at(4)], progress=False,
              **inputs)  # fmt: skip
    (crashed,) = [p for p in tmp_path.iterdir() if p != full.run_dir]
    resumed = train(resume=crashed, encoder=copy.deepcopy(enc), progress=False, **inputs)
    a, b = full.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys() and "teacher.updates" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert int(resumed.method.teacher.updates) == config.steps
    for (name, x), (_, y) in zip(
        full.encoder.state_dict().items(), resumed.encoder.state_dict().items()
    ):
        assert torch.equal(x, y), name
    log_full, log_res = RunDir(full.run_dir).log(), RunDir(crashed).log()
    assert [r["terms"] for r in log_full] == [r["terms"] for r in log_res]
    assert set(log_full[0]["terms"]) == set(TERMS)
    # the teacher followed the student part of the way
    start = dict(enc.named_parameters())["text_head.weight"]
    teacher = dict(full.method.teacher.module.named_parameters())["text_head.weight"]
    student = dict(full.encoder.named_parameters())["text_head.weight"]
    assert not torch.equal(teacher, start) and not torch.equal(teacher, student)


def test_loop_embeds_each_negative_once_while_the_text_tower_is_frozen(tmp_path, monkeypatch):
    enc, data = ToyEncoder(), ToyDataset(80)
    seen: list[str] = []
    real = ToyEncoder.text_tower

    def counting(self, tokens):
        seen.extend(["x"] * tokens["input_ids"].shape[0])
        return real(self, tokens)

    monkeypatch.setattr(ToyEncoder, "text_tower", counting)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))  # nothing on disk yet
    emb = toy_embeddings(enc, data)
    seen.clear()
    config = _config(tmp_path, data="cached", steps=12, checkpoint_every=0, eval_every=0)
    run = train(config, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    bank = run.method.bank
    distinct = {n for negs in bank.negatives.values() for n in negs}
    assert 0 < len(seen) <= len(distinct)  # one tower row per distinct negative, not B·K per step
    assert 12 * 16 * 4 > len(distinct)  # ...which is fewer than embedding them every step
    shards = list((tmp_path / "cache" / "text_tower").rglob("*.safetensors"))
    assert shards  # and kept on disk for the next run on the same tower
    seen.clear()
    train(config, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    assert seen == []


def test_cached_negatives_give_the_same_loss_as_running_the_tower(tmp_path):
    from workbench.encoders.text_cache import TextTowerCache
    from workbench.train.batch import hard_negatives

    enc = ToyEncoder()
    m = DeGLA()
    batch = {"captions": ["a small red cube 1", "a large blue ball 2"], "attributes": [{}, {}]}
    plain, _, texts = hard_negatives(enc, m, batch, torch.device("cpu"), False)
    cached, tower, texts2 = hard_negatives(
        enc, m, batch, torch.device("cpu"), False, TextTowerCache(enc, persist=False)
    )
    assert texts == texts2 and tower.shape == (2, 4, 20)
    torch.testing.assert_close(plain, cached)


def test_whole_encoder_teacher_reuses_frozen_towers_and_equals_the_heads_teacher():
    enc, data = ToyEncoder(), ToyDataset(40)
    emb = toy_embeddings(enc, data)
    g = torch.Generator().manual_seed(3)
    negs = torch.randn(8, 4, 20, generator=g)
    it, tt = torch.as_tensor(emb.image_tower[:8]), torch.as_tensor(emb.text_tower[:8])
    losses = []
    for teacher in ("heads", "encoder"):
        m = methods.get("degla", teacher=teacher)
        m.attach(enc)
        zi, zt, zn = enc.image_head(it), enc.text_head(tt), enc.text_head(negs)
        out = BatchOutputs(
            F.normalize(zi, dim=-1), F.normalize(zt, dim=-1), enc.logit_scale.exp(), zi, zt,
            hard_negatives=F.normalize(zn, dim=-1), hard_negative_tower=negs,
            image_tower=it, text_tower=tt,
        )  # fmt: skip
        losses.append(m(out, StepState.standalone()))
    heads, whole = losses
    assert heads.terms.keys() == whole.terms.keys()
    for name in heads.terms:
        torch.testing.assert_close(heads.terms[name], whole.terms[name], rtol=0, atol=0)
