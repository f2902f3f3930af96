"""The trainable-parts registry: what each part selects, and that validation, errors and the
docs tables are derived from it."""

from __future__ import annotations

import copy

import pytest
import torch
from test_train_toy import ToyDataset, ToyEncoder, _Block
from torch import nn

import workbench.train
from workbench.methods import METHODS, LossOutput, Method, mark_adapter
from workbench.methods.feature_loss import info_nce
from workbench.train import RunDir, TrainConfig, load_encoder_from_run, parts, train
from workbench.train.params import prepare_model, select


class _Adapted(Method):
    """Appends one residual block to the image tower (identity at start), marked as an adapter,
    plus a trainable projector of its own — a toy Earth-Adapter."""

    name = "test-adapted"

    def attach(self, encoder):
        adapter = _Block(encoder.image_blocks[0].fc.in_features)
        nn.init.zeros_(adapter.fc.weight)
        nn.init.zeros_(adapter.fc.bias)
        encoder.image_blocks.append(mark_adapter(adapter))
        self.projector = nn.Linear(encoder.embed_dim, encoder.embed_dim)

    def compute(self, out, state):
        loss = info_nce(self.projector(out.image_features), out.text_features, out.logit_scale)
        return LossOutput(loss, {"infonce": loss})


@pytest.fixture(scope="module", autouse=True)
def _register():
    if "test-adapted" not in METHODS:
        METHODS.register("test-adapted")(_Adapted)


def _names(spec: str) -> set[str]:
    encoder, method = ToyEncoder(), _Adapted()
    own = prepare_model(encoder, method, TrainConfig(trainable=spec))
    chosen = select(spec.split("+"), encoder, own)
    named = {id(p): f"encoder.{n}" for n, p in encoder.named_parameters()}
    named.update({id(p): f"method.{n}" for n, p in method.named_parameters()})
    return {named[id(p)] for p in chosen}


HEADS = {"encoder.image_head.weight", "encoder.text_head.weight"}
BLOCK = "encoder.{side}_blocks.{i}.fc.{w}"


def _block(side: str, *idx: int) -> set[str]:
    return {BLOCK.format(side=side, i=i, w=w) for i in idx for w in ("weight", "bias")}


#: part → (spec, exactly the parameters it must select); every registered part needs a row.
EXPECTED = {
    "heads": ("heads", HEADS),
    "image_head": ("image_head", {"encoder.image_head.weight"}),
    "text_head": ("text_head", {"encoder.text_head.weight"}),
    "logit_scale": ("logit_scale", {"encoder.logit_scale"}),
    "method": ("method", {"method.projector.weight", "method.projector.bias"}),
    # the adapter appended by attach is the image tower's last block now
    "image_blocks": ("image_blocks:2", _block("image", 2, 3)),
    "text_blocks": ("text_blocks:2", _block("text", 1, 2)),
    "last_n_blocks": ("last_n_blocks:1", _block("image", 3) | _block("text", 2)),
    "adapters": ("adapters", _block("image", 3)),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_part_selects_exactly_its_parameters(name):
    spec, expected = EXPECTED[name]
    assert _names(spec) == expected


def test_lora_all_and_dedup():
    lora = _names("lora:r=2,targets=fc")
    # A, B × the 6 tower fc layers; the adapter is attached after LoRA is injected
    assert all("lora_" in n for n in lora) and len(lora) == 2 * 6
    everything = _names("all+heads")  # heads repeated: selected once
    enc = ToyEncoder()
    assert len(everything) == len(list(enc.parameters())) + 2 + 2  # + adapter + projector


def test_every_registered_part_is_tested():
    assert set(parts.PARTS.names()) == {*EXPECTED, "lora", "all"}


def test_docs_tables_are_the_registry():
    assert parts.table(" " * 4) in workbench.train.__doc__
    assert parts.table(" " * 16) in TrainConfig.__doc__
    for name in parts.PARTS.names():
        assert parts.PARTS.get(name).syntax in parts.table()


@pytest.mark.parametrize(
    "spec,match",
    [
        ("heads+towers", "unknown trainable part 'towers'"),
        ("head", "did you mean 'heads'"),
        ("image_blocks", "needs an argument: image_blocks:N"),
        ("image_blocks:two", "block count"),
        ("lora:r=4", "LoRA needs targets"),
    ],
)
def test_config_rejects_bad_parts_listing_the_registry(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        TrainConfig(trainable=spec)
    if "unknown" in match:
        for name in parts.PARTS.names():
            assert parts.PARTS.get(name).syntax in str(err.value)


def test_tower_blocks_errors_name_the_fix():
    class NoBlocks(nn.Module):
        image_head = text_head = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="give the encoder a tower_blocks"):
        parts.tower_blocks(NoBlocks(), "image")

    class Refuses(NoBlocks):
        def tower_blocks(self, side):
            raise NotImplementedError

    with pytest.raises(ValueError, match="does not expose its text tower"):
        parts.tower_blocks(Refuses(), "text")
    with pytest.raises(ValueError, match="only 3 blocks"):
        _names("text_blocks:4")


def test_adapters_train_alone_and_reload_from_the_run(tmp_path):
    enc, data = ToyEncoder(), ToyDataset(48)
    config = TrainConfig(
        method="test-adapted", encoder=None, dataset=None, steps=3, batch_size=16, holdout=16,
        trainable="adapters", snapshot_every=0, run_root=str(tmp_path),
    )  # fmt: skip
    run = train(config, dataset=data, encoder=copy.deepcopy(enc), progress=False)
    assert RunDir(run.run_dir).meta["data"]["mode"] == "items"  # adapters sit inside a tower
    before = dict(enc.named_parameters())
    changed = {n for n, p in run.encoder.named_parameters() if n not in before}
    changed |= {
        n
        for n, p in run.encoder.named_parameters()
        if n in before and not torch.equal(p, before[n])
    }
    assert changed == {"image_blocks.3.fc.weight", "image_blocks.3.fc.bias"}
    assert run.encoder.image_blocks[3].fc.weight.abs().sum() > 0
    loaded = load_encoder_from_run(run.run_dir, encoder=copy.deepcopy(enc))
    images = [data[i].image for i in range(4)]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(images), run.encoder.encode_images(images))
