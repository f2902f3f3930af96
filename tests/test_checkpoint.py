"""Checkpoints: exact resume after a crash, atomic writes, RNG capture, reloading encoders."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings

from workbench.methods import METHODS, LossOutput, Method
from workbench.methods.feature_loss import info_nce
from workbench.train import RunDir, TrainConfig, load_encoder_from_run, train
from workbench.train.rng import rng_state, set_rng_state


class _Noisy(Method):
    """InfoNCE on features perturbed with torch and python randomness (like FANoise), so an
    exact resume needs the RNG states restored."""

    name = "test-noisy"

    def compute(self, out, state):
        noise = 0.05 * torch.randn_like(out.image_features) * random.random()
        loss = info_nce(out.image_features + noise, out.text_features, out.logit_scale)
        return LossOutput(loss, {"infonce": loss})


class _Crash(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def _register():
    if "test-noisy" not in METHODS:
        METHODS.register("test-noisy")(_Noisy)


@pytest.fixture(scope="module")
def toy():
    enc = ToyEncoder()
    data = ToyDataset(80)
    return enc, data, toy_embeddings(enc, data)


def _rng_eating_hook(crash_at: int | None = None):
    def hook(encoder, step):
        torch.randn(100)  # evaluation must not shift the training RNG
        np.random.rand(3)  # noqa: NPY002 - the global RNG is what must stay untouched
        random.random()
        if step == crash_at:
            raise _Crash(f"simulated crash after step {step}")
        return {}

    return hook


CASES = {
    "cached+noise+accum": dict(method="test-noisy", grad_accum=2, steps=10, batch_size=32),
    "towers": dict(trainable="image_blocks:1+heads", steps=6),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_after_crash_is_bit_identical(tmp_path, toy, case):
    enc, data, emb = toy
    kw = dict(
        encoder=None,
        dataset=None,
        batch_size=16,
        holdout=16,
        warmup=2,
        lr=1e-2,
        snapshot_every=2,
        eval_every=2,
        checkpoint_every=2,
        run_root=str(tmp_path),
    )
    kw.update(CASES[case])
    config = TrainConfig(**kw)
    data_kw = {"embeddings": emb} if "towers" not in case else {"dataset": data}
    full = train(
        config,
        encoder=copy.deepcopy(enc),
        eval_hooks=[_rng_eating_hook()],
        progress=False,
        **data_kw,
    )
    crash_step = 4
    with pytest.raises(_Crash):
        train(
            config,
            encoder=copy.deepcopy(enc),
            eval_hooks=[_rng_eating_hook(crash_at=crash_step)],
            progress=False,
            **data_kw,
        )
    (crashed,) = [p for p in tmp_path.iterdir() if p != full.run_dir]
    # the eval at step 4 runs before step 4's checkpoint: the crash inside it leaves [2]
    assert RunDir(crashed).checkpoint_steps() == [2]
    resumed = train(
        resume=crashed,
        encoder=copy.deepcopy(enc),
        eval_hooks=[_rng_eating_hook()],
        progress=False,
        **data_kw,
    )
    assert resumed.run_dir == crashed
    for (name, a), (_, b) in zip(
        full.encoder.state_dict().items(), resumed.encoder.state_dict().items()
    ):
        assert torch.equal(a, b), name
    log_full, log_res = RunDir(full.run_dir).log(), RunDir(crashed).log()
    assert [r["step"] for r in log_res] == list(range(1, config.steps + 1))
    assert [r["loss"] for r in log_full] == [r["loss"] for r in log_res]
    assert [r["terms"] for r in log_full] == [r["terms"] for r in log_res]
    snaps_full = RunDir(full.run_dir).snapshots()
    snaps_res = RunDir(crashed).snapshots()
    assert [s["image"]["singular_values"] for s in snaps_full] == [
        s["image"]["singular_values"] for s in snaps_res
    ]
    events = [r["event"] for r in RunDir(crashed).records("event")]
    assert events == ["start", "resume", "end"]
    evals_full, evals_res = RunDir(full.run_dir).evals(), RunDir(crashed).evals()
    assert [r["step"] for r in evals_res] == [0, 2, 4, 6, 8, 10][: len(evals_full)]
    assert evals_res == evals_full  # the eval the crash interrupted was re-run, not lost
    assert RunDir(crashed).summary == RunDir(full.run_dir).summary


def test_resume_refuses_a_changed_config(tmp_path, toy):
    enc, _, emb = toy
    cfg = TrainConfig(
        encoder=None, dataset=None, steps=2, batch_size=16, holdout=16, run_root=str(tmp_path)
    )
    run = train(cfg, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(cfg.replace(lr=0.5), resume=run.run_dir, embeddings=emb, encoder=copy.deepcopy(enc))


def test_resume_without_checkpoint_says_so(tmp_path, toy):
    enc, _, emb = toy
    cfg = TrainConfig(
        encoder=None, dataset=None, steps=4, batch_size=16, holdout=16, run_root=str(tmp_path)
    )
    with pytest.raises(_Crash):
        train(
            cfg,
            embeddings=emb,
            encoder=copy.deepcopy(enc),
            eval_hooks=[_rng_eating_hook(crash_at=0)],
            progress=False,
        )
    (crashed,) = list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(resume=crashed, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)


def test_interrupted_checkpoint_write_is_invisible(tmp_path, toy):
    enc, _, emb = toy
    cfg = TrainConfig(
        encoder=None, dataset=None, steps=4, batch_size=16, holdout=16,
        checkpoint_every=2, run_root=str(tmp_path),
    )  # fmt: skip
    run = train(cfg, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    ck = run.run_dir / "checkpoints"
    half = ck / ".tmp-step_0000006-123"  # what a crash mid-write leaves behind
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"truncated")
    rd = RunDir(run.run_dir)
    assert rd.checkpoint_steps() == [2, 4]
    assert rd.checkpoint_path().name == "step_0000004"


def test_load_encoder_from_run_reproduces_trained_encoder(tmp_path, toy):
    enc, data, _emb = toy
    cfg = TrainConfig(
        encoder=None, dataset=None, steps=3, batch_size=16, holdout=16,
        checkpoint_every=1, trainable="heads+lora:r=2,targets=fc", data="items",
        run_root=str(tmp_path),
    )  # fmt: skip
    run = train(cfg, dataset=data, encoder=copy.deepcopy(enc), progress=False)
    images = [data[i].image for i in range(5)]
    loaded = load_encoder_from_run(run.run_dir, encoder=copy.deepcopy(enc))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(images), run.encoder.encode_images(images))
    assert loaded.name == f"run:{run.run_dir}"
    at1 = load_encoder_from_run(run.run_dir, step=1, encoder=copy.deepcopy(enc))
    with torch.no_grad():
        assert not torch.equal(at1.encode_images(images), loaded.encode_images(images))
    with pytest.raises(ValueError, match="encoder object"):
        load_encoder_from_run(run.run_dir)
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 7"):
        load_encoder_from_run(run.run_dir, step=7, encoder=copy.deepcopy(enc))


def test_rng_state_round_trip():
    state = rng_state()
    a = (torch.rand(3), np.random.rand(2), random.random())  # noqa: NPY002
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(2), random.random())  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
