"""The training loop: config validation, run directories, logs, NaN handling, trainable specs,
stages and the method hooks (extra modules, EMA teachers, hard negatives, gradient probes)."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings
from torch import nn

from workbench.methods import METHODS, LossOutput, Method, Stage
from workbench.methods.feature_loss import info_nce
from workbench.train import NonFiniteLossError, RunDir, TrainConfig, train
from workbench.train.parts import parse_lora
from workbench.train.schedules import lr_factor


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        encoder=None,
        dataset=None,
        steps=6,
        batch_size=16,
        holdout=16,
        warmup=2,
        lr=1e-2,
        snapshot_every=3,
        run_root=str(tmp_path / "runs"),
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def toy():
    enc = ToyEncoder()
    data = ToyDataset(80)
    return enc, data, toy_embeddings(enc, data)


def _run(tmp_path, toy, cached=True, **kw):
    enc, data, emb = toy
    enc = copy.deepcopy(enc)
    if cached:
        return train(_cfg(tmp_path, **kw), embeddings=emb, encoder=enc, progress=False)
    return train(_cfg(tmp_path, **kw), dataset=data, encoder=enc, progress=False)


# -- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value,match",
    [
        ("steps", 0, "steps"),
        ("batch_size", 10, "divisible"),
        ("schedule", "step", "schedule"),
        ("precision", "fp8", "precision"),
        ("trainable", "heads+towers", "unknown trainable part"),
        ("device", "gpu", "device"),
        ("holdout", 1.5, "holdout"),
        ("run_name", "a/b", "run_name"),
    ],
)
def test_config_rejects_bad_fields_naming_them(field, value, match):
    kw = {"grad_accum": 4} if field == "batch_size" else {}
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value}, **kw)


def test_config_round_trips_through_dict():
    c = TrainConfig(method="infonce", method_config={"temperature": 0.02}, trainable="heads")
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"stepz": 3})


def test_parse_lora():
    assert parse_lora("lora:r=4,alpha=8,targets=fc|proj") == {
        "r": 4,
        "alpha": 8.0,
        "dropout": 0.0,
        "targets": ["fc", "proj"],
    }
    with pytest.raises(ValueError, match="targets"):
        parse_lora("lora:r=4")


def test_lr_schedule_shapes():
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 5)] == [0.5, 1.0, 1.0]
    cos = [lr_factor(s, 10, 0, "cosine") for s in range(10)]
    assert cos[0] == 1.0 and all(a > b for a, b in itertools.pairwise(cos)) and cos[-1] > 0
    lin = [lr_factor(s, 10, 0, "linear") for s in range(10)]
    assert lin[5] == pytest.approx(0.5)


# -- run directory -----------------------------------------------------------------------------
def test_run_directory_format(tmp_path, toy):
    run = _run(tmp_path, toy, checkpoint_every=3)
    rd = RunDir(run.run_dir)
    assert run.run_dir.parent == tmp_path / "runs" and run.run_dir.name.startswith("infonce-")
    assert rd.config == run.config
    assert rd.meta["method"] == {
        "name": "infonce",
        "config": {
            "temperature": None,
            "symmetric": True,
            "query": "image",
            "caption_positives": False,
        },
    }
    steps = rd.log()
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert {"loss", "lr", "terms", "logs", "schedule", "grad_norm", "stage"} <= set(steps[0])
    assert steps[0]["lr"] == pytest.approx(0.5e-2)  # warm-up (step+1)/warmup
    snaps = rd.snapshots()
    assert [s["step"] for s in snaps] == [1, 3, 6]
    for side in ("image", "text"):
        sv = snaps[0][side]["singular_values"]
        assert len(sv) == min(16, 16) and sv == sorted(sv, reverse=True)
        assert "partition" in snaps[0][side]
    evals = rd.evals()
    assert [e["step"] for e in evals] == [0, 6]
    assert {"heldout/infonce", "heldout/i2t_r1", "heldout/t2i_r1"} <= set(evals[0]["metrics"])
    assert rd.checkpoint_steps() == [3, 6]
    assert (run.run_dir / "checkpoints" / "latest").read_text() == "step_0000006"
    assert not [p for p in (run.run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert rd.summary["status"] == "finished"
    events = [r["event"] for r in rd.records("event")]
    assert events == ["start", "end"]


def test_runs_never_share_a_directory(tmp_path, toy):
    a = _run(tmp_path, toy, steps=2, run_name="same")
    b = _run(tmp_path, toy, steps=2, run_name="same")
    assert a.run_dir != b.run_dir
    assert RunDir(a.run_dir).log() and RunDir(b.run_dir).log()


def test_keep_checkpoints_prunes_old_ones(tmp_path, toy):
    run = _run(tmp_path, toy, checkpoint_every=1, keep_checkpoints=2)
    assert RunDir(run.run_dir).checkpoint_steps() == [5, 6]


def test_training_lowers_heldout_loss_on_toy(tmp_path, toy):
    run = _run(tmp_path, toy, steps=30, batch_size=32)
    ev = RunDir(run.run_dir).evals()
    assert ev[-1]["metrics"]["heldout/infonce"] < ev[0]["metrics"]["heldout/infonce"]


def test_eval_hooks_receive_encoder_and_step(tmp_path, toy):
    seen = []

    def hook(encoder, step):
        seen.append((step, encoder.training))
        return {"custom/score": step * 2.0}

    enc, _, emb = toy
    run = train(
        _cfg(tmp_path, eval_every=3),
        embeddings=emb,
        encoder=copy.deepcopy(enc),
        eval_hooks=[hook],
        progress=False,
    )
    assert seen == [(0, False), (3, False), (6, False)]
    assert run.metrics["custom/score"] == 12.0
    assert [e["metrics"]["custom/score"] for e in RunDir(run.run_dir).evals()] == [0, 6, 12]


# -- which parameters train --------------------------------------------------------------------
def _changed(before: nn.Module, after: nn.Module) -> set[str]:
    a = dict(before.named_parameters())
    return {n for n, p in after.named_parameters() if n in a and not torch.equal(a[n], p)}


def test_heads_only_leaves_towers_untouched(tmp_path, toy):
    enc = toy[0]
    run = _run(tmp_path, toy, trainable="heads")
    changed = _changed(enc, run.encoder)
    assert changed == {"image_head.weight", "text_head.weight"}
    assert RunDir(run.run_dir).meta["data"]["mode"] == "cached"


def test_image_blocks_trains_only_the_last_image_block_on_items(tmp_path, toy):
    enc = toy[0]
    run = _run(tmp_path, toy, cached=False, trainable="image_blocks:1", steps=3)
    assert _changed(enc, run.encoder) == {"image_blocks.2.fc.weight", "image_blocks.2.fc.bias"}
    assert RunDir(run.run_dir).meta["data"]["mode"] == "items"


def test_tower_training_refuses_cached_features(tmp_path, toy):
    with pytest.raises(ValueError, match="cached"):
        _run(tmp_path, toy, trainable="image_blocks:1", data="cached")


def test_lora_trains_adapters_only(tmp_path, toy):
    enc = toy[0]
    run = _run(tmp_path, toy, cached=False, trainable="lora:r=2,alpha=4,targets=fc", steps=3)
    names = {n for n, p in run.encoder.named_parameters() if "lora_" in n}
    assert names, "LoRA adapters were injected"
    assert _changed(enc, run.encoder) == set()  # base weights frozen
    lora_b = [p for n, p in run.encoder.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at 0, so it moved


# -- NaN handling ------------------------------------------------------------------------------
class _ExplodesAt(Method):
    """InfoNCE that returns NaN from step ``at`` (0-based) on."""

    name = "test-explodes"

    def __init__(self, at: int = 4) -> None:
        super().__init__()
        self.at = at

    def compute(self, out, state):
        loss = info_nce(out.image_features, out.text_features, out.logit_scale)
        if state.step >= self.at:
            loss = loss * float("nan")
        return LossOutput(loss, {"infonce": loss})


@pytest.fixture(scope="module", autouse=True)
def _test_methods():
    for name, cls in [
        ("test-explodes", _ExplodesAt),
        ("test-hooks", _HookedMethod),
        ("test-staged", _Staged),
    ]:
        if name not in METHODS:
            METHODS.register(name)(cls)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, toy):
    with pytest.raises(NonFiniteLossError, match="step 5") as err:
        _run(tmp_path, toy, method="test-explodes", checkpoint_every=2)
    assert err.value.step == 5 and "infonce" in err.value.terms
    rd = RunDir(err.value.run_dir)
    assert rd.checkpoint_steps() == [2, 4]
    assert rd.summary["status"] == "failed"
    assert rd.records("event")[-1]["event"] == "error"
    assert max(r["step"] for r in rd.log()) == 4


# -- method hooks ------------------------------------------------------------------------------
class _HookedMethod(Method):
    """Uses every hook: a trainable projector, an EMA teacher head, hard negatives,
    schedules, spectral extras and a gradient probe between two terms."""

    name = "test-hooks"
    grad_probe = ("align", "teacher")

    def __init__(self, ema: float = 0.5) -> None:
        super().__init__()
        self.ema = ema
        self.calls = {"attach": 0, "step_end": 0}

    def attach(self, encoder):
        self.calls["attach"] += 1
        d = encoder.embed_dim
        self.projector = nn.Linear(d, d)
        self.teacher = copy.deepcopy(encoder.image_head).requires_grad_(False)

    def hard_negative_texts(self, captions, attributes):
        return [[c + " not", "no " + c] for c in captions]

    def compute(self, out, state):
        assert out.hard_negatives.shape == (*out.image_features.shape[:1], 2, 16)
        align = info_nce(
            F.normalize(self.projector(out.image_features), dim=-1), out.text_features, 10.0
        )
        with torch.no_grad():
            t = F.normalize(self.teacher(out.image_tower), dim=-1)
        teacher = ((out.image_features - t) ** 2).sum(-1).mean()
        neg = (out.image_features[:, None] * out.hard_negatives).sum(-1).mean()
        return LossOutput(align + teacher + 0.1 * neg, {"align": align, "teacher": teacher})

    def on_step_end(self, encoder, state):
        self.calls["step_end"] += 1
        with torch.no_grad():
            for pt, ps in zip(self.teacher.parameters(), encoder.image_head.parameters()):
                pt.mul_(self.ema).add_(ps, alpha=1 - self.ema)

    def schedule_values(self, state):
        return {"alpha": 1 - state.progress}

    def spectral_snapshot(self, out, state):
        return {"n": out.batch_size}


def test_method_hooks_are_honoured(tmp_path, toy):
    enc = toy[0]
    run = _run(tmp_path, toy, method="test-hooks", grad_probe_every=2)
    m = run.method
    assert m.calls == {"attach": 1, "step_end": 6}
    # the projector trained, the EMA teacher followed the head
    assert not torch.equal(m.projector.weight, nn.Linear(16, 16).weight)
    assert not torch.equal(m.teacher.weight, enc.image_head.weight)
    log = RunDir(run.run_dir).log()
    assert [("grad_cos" in r) for r in log] == [True, False, True, False, True, False]
    cos = log[0]["grad_cos"]["align~teacher"]
    assert -1.0 <= cos <= 1.0
    assert [r["schedule"]["alpha"] for r in log][:2] == [1.0, pytest.approx(5 / 6)]
    assert RunDir(run.run_dir).snapshots()[0]["method"] == {"n": 16}


class _Staged(Method):
    """Two stages: image head only, then text head only (ProCLIP-style distill → tune)."""

    name = "test-staged"

    def stages(self, total_steps):
        first = total_steps // 2
        return [
            Stage("distill", first, trainable="image_head", lr=0.05),
            Stage("tune", total_steps - first, trainable="text_head"),
        ]

    def compute(self, out, state):
        loss = info_nce(out.image_features, out.text_features, out.logit_scale)
        return LossOutput(loss, {"infonce": loss})


def test_stages_switch_trainable_parameters_and_lr(tmp_path, toy):
    enc, _, emb = toy
    snapshots = []

    def hook(encoder, step):
        snapshots.append((step, copy.deepcopy(encoder)))
        return {}

    run = train(
        _cfg(tmp_path, method="test-staged", eval_every=3, warmup=0, schedule="constant"),
        embeddings=emb,
        encoder=copy.deepcopy(enc),
        eval_hooks=[hook],
        progress=False,
    )
    mid = dict(snapshots)[3]
    assert _changed(enc, mid) == {"image_head.weight"}
    assert _changed(mid, run.encoder) == {"text_head.weight"}
    log = RunDir(run.run_dir).log()
    assert [r["stage"] for r in log] == ["distill"] * 3 + ["tune"] * 3
    assert [r["lr"] for r in log] == [0.05] * 3 + [1e-2] * 3
    assert [s["name"] for s in RunDir(run.run_dir).meta["stages"]] == ["distill", "tune"]


def test_suite_hook_flattens_the_suite_table(monkeypatch):
    import pandas as pd

    from workbench.evals import dp_suite as suite_mod
    from workbench.evals.hooks import suite_hook

    calls = []

    def fake_score(encoder, suite=None, *, label=None, tower_source=None):
        calls.append((label, tower_source))
        return pd.DataFrame(
            [
                ("e", "digits", "knn_acc", 0.5, 0),
                ("e", "digits", "knn_acc", 0.7, 1),
                ("e", "synthetic-mmvp", "mmvp_mean", 0.25, 0),
            ],
            columns=["encoder", "dataset", "metric", "value", "seed"],
        )

    monkeypatch.setattr(suite_mod, "score_encoder", fake_score)
    assert suite_hook()(nn.Linear(1, 1), 7) == {
        "digits/knn_acc": pytest.approx(0.6),
        "synthetic-mmvp/mmvp_mean": 0.25,
    }
    assert suite_hook(metrics=("mmvp_mean",), tower_source="t")(nn.Linear(1, 1), 3) == {
        "synthetic-mmvp/mmvp_mean": 0.25
    }
    assert calls == [("step 7", None), ("step 3", "t")]


def test_snapshot_partition_is_the_probe_partition_of_the_batch():
    from workbench.probes import partition
    from workbench.train.snapshot import spectral_snapshot

    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(64, 32, generator=g) * torch.linspace(3, 0.1, 32), dim=-1)
    snap = spectral_snapshot(x, max_sv=8)
    probe = partition(x.numpy().astype("float64"))
    assert snap["partition"] == pytest.approx(probe.proportions)
    assert snap["counts"] == probe.counts
    assert len(snap["singular_values"]) == 8
    torch.testing.assert_close(
        torch.tensor(snap["singular_values"]), torch.linalg.svdvals(x.double())[:8].float()
    )


# -- hold-out by id, frozen temperature -----------------------------------------------------------
def test_holdout_by_id_is_fixed_by_the_ids_and_keeps_items_together():
    from workbench.data.splits import id_unit
    from workbench.train.source import split_rows

    ids = [f"item-{i}" for i in range(200)]
    train_a, held_a = split_rows(200, 0.25, seed=0, by="id", ids=ids)
    _, held_b = split_rows(200, 0.25, seed=7, by="id", ids=ids)
    np.testing.assert_array_equal(held_a, held_b)  # the seed does not move it
    assert {ids[i] for i in held_a} == {i for i in ids if id_unit(i, "val") < 0.25}
    assert len(set(train_a) | set(held_a)) == 200 and not set(train_a) & set(held_a)
    # the same rows subset from a reversed order hold out the same ids
    _, held_rev = split_rows(200, 0.25, seed=0, by="id", ids=ids[::-1])
    assert {ids[::-1][i] for i in held_rev} == {ids[i] for i in held_a}
    # two captions of one image (rows sharing attributes["item_id"]) land on the same side
    rows = [f"img-{i // 2}#{i % 2}" for i in range(100)]
    attrs = [{"item_id": f"img-{i // 2}"} for i in range(100)]
    _, held = split_rows(100, 0.3, seed=0, by="id", ids=rows, attributes=attrs)
    assert all((i ^ 1) in set(held) for i in held)
    with pytest.raises(ValueError, match="fraction"):
        split_rows(100, 16, seed=0, by="id", ids=rows)


def test_train_holds_out_by_id_when_asked(tmp_path, toy):
    run = _run(tmp_path, toy, holdout=0.25, holdout_by="id")
    meta = RunDir(run.run_dir).meta["data"]
    assert meta["holdout"] + meta["train"] == 80 and 0 < meta["holdout"] < 80
    with pytest.raises(ValueError, match="holdout_by"):
        _cfg(tmp_path, holdout_by="hash")


def test_a_frozen_learnable_temperature_is_reported(tmp_path, toy):
    with pytest.warns(UserWarning, match=r"logit_scale does not train.*\+logit_scale"):
        _run(tmp_path, toy, trainable="heads")
