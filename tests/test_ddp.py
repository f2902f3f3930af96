"""Distributed training on CPU: 2 gloo processes reproduce one process on the same global batch.

The workers get torchrun's environment variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT), so this
exercises the same code path as ``torchrun --nproc_per_node 2``.
"""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings

from workbench.distributed import DistInfo, gather_features
from workbench.methods import METHODS, LossOutput, Method
from workbench.methods.feature_loss import info_nce
from workbench.train import RunDir, TrainConfig, train

pytestmark = pytest.mark.slow


class _Spectral(Method):
    """InfoNCE plus a penalty on the top singular value of the batch — wrong unless the SVD
    sees the gathered global batch."""

    name = "test-spectral"

    def compute(self, out, state):
        loss = info_nce(out.image_features, out.text_features, out.logit_scale)
        top = torch.linalg.svdvals(out.image_features)[0] / out.batch_size**0.5
        return LossOutput(loss + 0.1 * top, {"infonce": loss, "top_sv": top})


def _register() -> None:
    if "test-spectral" not in METHODS:
        METHODS.register("test-spectral")(_Spectral)


def _config(root: str, **kw) -> TrainConfig:
    base = dict(
        encoder=None,
        dataset=None,
        method="test-spectral",
        steps=4,
        batch_size=16,
        holdout=16,
        warmup=1,
        lr=1e-2,
        snapshot_every=2,
        checkpoint_every=2,
        run_root=root,
    )
    base.update(kw)
    return TrainConfig(**base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, out: str, kw: dict) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    _register()
    enc = ToyEncoder()
    data = ToyDataset(80)
    data_kw = (
        {"dataset": data}
        if kw.get("data") == "items"
        else {"embeddings": toy_embeddings(enc, data)}
    )
    run = train(_config(root, **kw), encoder=enc, progress=False, **data_kw)
    torch.save({"state": run.encoder.state_dict(), "run_dir": str(run.run_dir)}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_two_processes_match_one_on_the_global_batch(tmp_path):
    # Towers running on items + gradient accumulation: the widest path (heads-only on cached
    # features shares every distributed step with it).
    kw = {"data": "items", "trainable": "heads+image_blocks:1", "grad_accum": 2}
    _register()
    enc = ToyEncoder()
    data = ToyDataset(80)
    data_kw = (
        {"dataset": data}
        if kw.get("data") == "items"
        else {"embeddings": toy_embeddings(enc, data)}
    )
    single = train(
        _config(str(tmp_path / "single"), **kw),
        encoder=copy.deepcopy(enc),
        progress=False,
        **data_kw,
    )
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out, kw), nprocs=2, join=True)
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    for name, p in single.encoder.state_dict().items():
        torch.testing.assert_close(r0["state"][name], p, rtol=0, atol=1e-6, msg=name)
        assert torch.equal(r0["state"][name], r1["state"][name]), f"ranks diverged on {name}"
    ddp_run, single_run = RunDir(r0["run_dir"]), RunDir(single.run_dir)
    assert ddp_run.meta["world_size"] == 2
    for a, b in zip(single_run.log(), ddp_run.log(), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["terms"]["top_sv"] == pytest.approx(b["terms"]["top_sv"], abs=1e-6)
    for a, b in zip(single_run.snapshots(), ddp_run.snapshots(), strict=True):
        micro = 16 // 2  # the snapshot sees the whole global micro-batch, not a rank's half
        assert len(a["image"]["singular_values"]) == len(b["image"]["singular_values"]) == micro
        torch.testing.assert_close(
            torch.tensor(a["image"]["singular_values"]),
            torch.tensor(b["image"]["singular_values"]),
            rtol=0,
            atol=1e-5,
        )
    # only rank 0 wrote a run directory
    assert len(list((tmp_path / "ddp").iterdir())) == 1


def test_gather_is_identity_without_distribution():
    x = F.normalize(torch.randn(4, 3), dim=-1)
    assert gather_features(x, DistInfo()) is x


def test_degla_two_processes_match_one(tmp_path):
    # DeGLA's hard negatives and EMA-teacher features are gathered like the features: the
    # global softmax sees every rank's negatives, TGC and the distillation every rank's rows.
    kw = {"method": "degla", "data": "cached", "trainable": "heads+logit_scale",
          "method_config": {"ema_decay": 0.5}, "snapshot_every": 0}  # fmt: skip
    enc = ToyEncoder()
    single = train(
        _config(str(tmp_path / "single"), **kw),
        encoder=copy.deepcopy(enc),
        embeddings=toy_embeddings(enc, ToyDataset(80)),
        progress=False,
    )
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out, kw), nprocs=2, join=True)
    r0 = torch.load(f"{out}.0")
    for name, p in single.encoder.state_dict().items():
        torch.testing.assert_close(r0["state"][name], p, rtol=0, atol=1e-6, msg=name)
    for a, b in zip(RunDir(single.run_dir).log(), RunDir(r0["run_dir"]).log(), strict=True):
        assert set(a["terms"]) == {"base", "igc", "tgc", "distill"}
        for term, value in a["terms"].items():
            assert value == pytest.approx(b["terms"][term], rel=1e-5, abs=1e-6), term
