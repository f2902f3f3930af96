"""End to end on the embedded default encoder (heads only, cached tower features): a short run
lowers the held-out InfoNCE loss and the log shows the spectral partition evolving."""

from __future__ import annotations

import copy

import pytest
import torch

import workbench as wb
from workbench.train import RunDir, TrainConfig, load_encoder_from_run, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_setup():
    # untrained heads: the loop must lower a held-out loss the pretrained heads already minimise
    encoder = wb.load_encoder("default", heads="random")
    data = wb.load_dataset("synthetic-world", size=192)
    emb = wb.embed(encoder, data, tower_features=True, progress=False)
    return encoder, emb


@pytest.mark.parametrize("method", ["infonce"])
def test_short_run_lowers_heldout_loss_and_partition_evolves(tmp_path, default_setup, method):
    encoder, emb = default_setup
    config = TrainConfig(
        method=method,
        encoder="default",
        dataset=None,
        steps=40,
        batch_size=64,
        holdout=64,
        lr=2e-3,
        warmup=4,
        snapshot_every=10,
        checkpoint_every=20,
        run_root=str(tmp_path),
    )
    run = train(config, embeddings=emb, encoder=copy.deepcopy(encoder), progress=False)
    rd = RunDir(run.run_dir)
    assert rd.meta["data"]["mode"] == "cached"
    first, last = rd.evals()[0]["metrics"], rd.evals()[-1]["metrics"]
    assert last["heldout/infonce"] < first["heldout/infonce"]

    snaps = rd.snapshots()
    assert [s["step"] for s in snaps] == [1, 10, 20, 30, 40]
    for s in snaps:
        for side in ("image", "text"):
            p = s[side]["partition"]
            assert p is not None, s[side].get("partition_error")
            assert sum(p.values()) == pytest.approx(1.0)
    trajectory = [
        (tuple(s["image"]["partition"].values()), tuple(s["text"]["partition"].values()))
        for s in snaps
    ]
    assert len(set(trajectory)) > 1, "partition proportions never changed during training"

    # The run directory reloads into the trained encoder (what the "run:<dir>" entry calls).
    reloaded = load_encoder_from_run(run.run_dir, encoder=copy.deepcopy(encoder))
    captions = emb.captions[:4]
    assert (reloaded.encode_texts(captions) - run.encoder.encode_texts(captions)).abs().max() < 1e-5
    assert reloaded.identity.weights_hash != encoder.identity.weights_hash


def test_lora_targets_minilm_attention_of_the_default_encoder(default_setup):
    from workbench import methods
    from workbench.train.params import prepare_model, select

    encoder = copy.deepcopy(default_setup[0])
    config = TrainConfig(trainable="lora:r=4,alpha=8,targets=query|value", encoder="default")
    method = methods.get("infonce")
    own = prepare_model(encoder, method, config)
    params = select(config.trainable_parts(), encoder, own)
    names = {n for n, p in encoder.named_parameters() if any(p is q for q in params)}
    assert len(names) == 6 * 2 * 2  # 6 MiniLM layers × (query, value) × (A, B)
    assert all(".attention.self." in n and "lora_" in n for n in names)
    # LoRA starts as the identity update: embeddings are unchanged before training.
    captions = default_setup[1].captions[:3]
    with torch.no_grad():
        before = default_setup[0].encode_texts(captions)
        after = encoder.encode_texts(captions)
    torch.testing.assert_close(after, before)
