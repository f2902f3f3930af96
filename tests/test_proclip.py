"""ProCLIP (spec ``methods-geometry.md`` §4, §8): the two pure term functions on hand-computed
cases, the adapter's shape, and the two stages in the one training loop (stage 1 leaves the
image side bit-identical, the teacher never gets a gradient, a resume across the stage boundary
is bit-identical)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings

from workbench import methods
from workbench.methods import BatchOutputs, StepState
from workbench.methods.proclip import (
    ProCLIPAdapter,
    proclip_distill_terms,
    proclip_reg_terms,
    write_distill_targets,
)
from workbench.train import RunDir, TrainConfig, train

E1, E2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
DIAG = F.normalize(E1 + E2, dim=0)


# -- the pure functions, by hand -------------------------------------------------------------------
def test_distill_terms_two_rows_by_hand():
    # row 0 agrees; row 1 is e2 vs e1: ‖(−1, 1)‖² = 2. Distances √2 (student) vs 0 (teacher):
    # |Δd| = √2 > 1, so smooth-L1 = √2 − ½ [code]; the paper's square gives 2.
    s, t = torch.stack([E1, E2]), torch.stack([E1, E1])
    terms = proclip_distill_terms(s, t)
    assert terms["ins"].item() == pytest.approx(2.0)
    assert terms["struct"].item() == pytest.approx(math.sqrt(2) - 0.5, rel=1e-6)
    squared = proclip_distill_terms(s, t, struct_form="squared")
    assert squared["struct"].item() == pytest.approx(2.0, rel=1e-6)


def test_long_rows_add_to_ins_only():
    s, t = torch.stack([E1, E2]), torch.stack([E1, E1])
    terms = proclip_distill_terms(s, t, E2[None], -E2[None])  # ‖(0, 2)‖² = 4
    assert terms["ins"].item() == pytest.approx(6.0)
    assert terms["struct"].item() == pytest.approx(math.sqrt(2) - 0.5, rel=1e-6)


def test_smooth_l1_is_half_the_square_below_one():
    # Δd = √2 − ‖e1 − diag‖ = 0.6488 on pairs (0, 1) and (1, 2); pair (0, 2) is 0 on both sides
    s, t = torch.stack([E1, E2, E1]), torch.stack([E1, DIAG, E1])
    delta = math.sqrt(2) - float((E1 - DIAG).norm())
    smooth = proclip_distill_terms(s, t)["struct"].item()
    square = proclip_distill_terms(s, t, struct_form="squared")["struct"].item()
    assert smooth == pytest.approx(2 * 0.5 * delta**2, rel=1e-5)
    assert square == pytest.approx(2 * delta**2, rel=1e-5) and smooth == pytest.approx(square / 2)


def test_reg_terms_by_hand_and_in_float32():
    v, w = torch.stack([E1, E2]), torch.stack([E1, E1])
    terms = proclip_reg_terms(v.bfloat16(), w.bfloat16())
    assert terms["ins"].dtype == torch.float32
    assert terms["ins"].item() == pytest.approx(2.0)
    assert terms["struct"].item() == pytest.approx(math.sqrt(2) - 0.5, rel=1e-2)  # bf16 inputs
    one = proclip_reg_terms(E1[None], E2[None])
    assert one["struct"].item() == 0.0 and one["ins"].item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: proclip_distill_terms(torch.eye(2), torch.eye(3)), "same width"),
        (lambda: proclip_distill_terms(torch.eye(2), torch.eye(2)[:1]), "same rows"),
        (lambda: proclip_distill_terms(torch.eye(2), torch.eye(2), torch.eye(2)), "or neither"),
        (lambda: proclip_distill_terms(torch.eye(2), torch.full((2, 2), math.nan)), "NaN"),
        (
            lambda: proclip_distill_terms(torch.eye(2), torch.eye(2), struct_form="l2"),
            "struct_form",
        ),
        (lambda: proclip_reg_terms(torch.ones(2), torch.ones(2)), r"\(n, D\)"),
    ],
)
def test_bad_inputs_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_adapter_layers_follow_the_count():
    def linears(m):
        return sum(isinstance(x, torch.nn.Linear) for x in m.modules())

    assert linears(ProCLIPAdapter(8, 4)) == 4  # paper appendix
    assert linears(ProCLIPAdapter(8, 4, linear_layers=3)) == 3  # the released TextProj
    a = ProCLIPAdapter(8, 4, linear_layers=3)
    x = torch.randn(5, 8)
    assert torch.allclose(a(x), a(3.0 * x), atol=1e-6)  # the input is L2-normalised first
    with pytest.raises(ValueError, match="linear_layers"):
        ProCLIPAdapter(8, 4, linear_layers=0)


def test_configuration_is_validated():
    for bad in ({"stage1_fraction": 1.5}, {"lambda_reg": -1.0}, {"teacher": "mean"},
                {"struct_form": "l1"}, {"teacher_scope": "text"}, {"linear_layers": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            methods.get("proclip", **bad)
    with pytest.raises(TypeError, match="targets"):
        methods.get("proclip", targets=3)


def test_plain_call_says_what_it_needs():
    m = methods.get("proclip")
    x = F.normalize(torch.randn(4, 3), dim=-1)
    with pytest.raises(ValueError, match="stage"):
        m(x, x, torch.tensor(10.0))
    out = BatchOutputs(x, x, torch.tensor(10.0), captions=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="targets"):
        m(out, StepState(0, 2, stage="distill"))


def test_stages_split_the_run():
    full = methods.get("proclip")
    assert [(s.name, s.steps, s.trainable) for s in full.stages(10)] == [
        ("distill", 5, "text_head"),
        ("tune", 5, "image_head+text_head+logit_scale"),
    ]
    assert [s.name for s in methods.get("proclip/direct").stages(10)] == ["tune"]
    assert [s.name for s in methods.get("proclip", stage1_fraction=1.0).stages(10)] == ["distill"]


# -- in the loop ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    enc, data = ToyEncoder(), ToyDataset(80)
    emb = toy_embeddings(enc, data)
    g = torch.Generator().manual_seed(0)
    n = len(emb)
    long_in = torch.randn(n, 20, generator=g)
    long_in[::2] = math.nan  # every other caption has no long caption
    path = tmp_path_factory.mktemp("proclip") / "targets.safetensors"
    write_distill_targets(
        path,
        emb.captions,
        torch.randn(n, 16, generator=g),
        long_in,
        torch.randn(n, 16, generator=g),
    )
    return enc, emb, str(path)


def _config(root, targets, **kw):
    base = dict(
        method="proclip", method_config={"targets": targets, "expansion": 2, **kw.pop("mc", {})},
        encoder=None, dataset=None, steps=6, batch_size=16, holdout=16, warmup=1, lr=1e-2,
        snapshot_every=0, trainable="image_head+text_head+logit_scale", run_root=str(root),
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _image_side(enc):
    return {k: v.clone() for k, v in enc.state_dict().items() if k.startswith(("image_", "logit"))}


def test_stage1_leaves_the_image_side_bit_identical(tmp_path, toy):
    enc, emb, targets = toy
    before = _image_side(enc)
    run = train(_config(tmp_path, targets, mc={"stage1_fraction": 1.0}), embeddings=emb,
                encoder=copy.deepcopy(enc), progress=False)  # fmt: skip
    after = _image_side(run.encoder)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    log = [r for r in RunDir(run.run_dir).log() if r["kind"] == "step"]
    assert {r["stage"] for r in log} == {"distill"} and set(log[0]["terms"]) == {"ins", "struct"}
    assert all(r["logs"]["long_rows"] > 0 for r in log)  # the long captions' rows are in ins
    assert log[-1]["terms"]["ins"] < log[0]["terms"]["ins"]  # the adapter learns


@pytest.mark.parametrize("teacher", ["ema", "frozen"])
def test_teacher_gets_no_gradient_and_follows_its_mode(tmp_path, toy, teacher):
    enc, emb, targets = toy
    run = train(_config(tmp_path, targets, mc={"teacher": teacher, "ema_decay": 0.5}),
                embeddings=emb, encoder=copy.deepcopy(enc), progress=False)  # fmt: skip
    t = run.method.teacher
    assert all(p.grad is None and not p.requires_grad for p in t.parameters())
    log = [r for r in RunDir(run.run_dir).log() if r["kind"] == "step"]
    assert [r["stage"] for r in log] == ["distill"] * 3 + ["tune"] * 3
    assert set(log[-1]["terms"]) == {"info", "reg_ins", "reg_struct"}
    assert int(t.updates) == (3 if teacher == "ema" else 0)  # EMA steps in "tune" only
    start = enc.image_head.weight
    if teacher == "frozen":
        assert torch.equal(t.module.weight, start)
    else:
        assert not torch.equal(t.module.weight, start)
        assert not torch.equal(t.module.weight, run.encoder.image_head.weight)


def test_resume_across_the_stage_boundary_is_bit_identical(tmp_path, toy):
    enc, emb, targets = toy

    class Crash(Exception):
        pass

    def crash_at(step):
        def hook(encoder, s):
            if s == step:
                raise Crash
            return {}

        return hook

    cfg = _config(tmp_path, targets, checkpoint_every=2, eval_every=2)
    full = train(cfg, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    # stops in step 4's eval, which runs before step 4's checkpoint: the resume starts from
    # step 2's checkpoint and crosses the stage boundary (between steps 3 and 4)
    with pytest.raises(Crash):
        train(cfg, embeddings=emb, encoder=copy.deepcopy(enc), eval_hooks=[crash_at(4)],
              progress=False)  # fmt: skip
    (crashed,) = [p for p in tmp_path.iterdir() if p != full.run_dir]
    resumed = train(resume=crashed, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    for (name, a), (_, b) in zip(
        full.encoder.state_dict().items(), resumed.encoder.state_dict().items()
    ):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(
        full.method.state_dict().items(), resumed.method.state_dict().items()
    ):
        assert torch.equal(a, b), name  # the EMA teacher too

    def steps(d):
        return [(r["stage"], r["loss"], r["terms"]) for r in RunDir(d).log() if r["kind"] == "step"]

    assert steps(full.run_dir) == steps(crashed)


def test_direct_replacement_has_no_teacher_and_one_stage(tmp_path, toy):
    enc, emb, targets = toy
    cfg = _config(tmp_path, targets, method="proclip/direct", steps=3)
    run = train(cfg, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    assert run.method.teacher is None
    log = [r for r in RunDir(run.run_dir).log() if r["kind"] == "step"]
    assert {r["stage"] for r in log} == {"tune"} and set(log[0]["terms"]) == {"info"}
    assert not torch.equal(run.encoder.image_head.weight, enc.image_head.weight)
