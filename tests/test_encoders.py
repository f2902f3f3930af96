"""The embedded default encoder and the encoder registry.

Real-tower tests (ImageNet top-5 of ``chelsea``, MiniLM's ranking) share one pretrained encoder
per module and are marked ``slow``; the fast tier uses seeded random-init towers.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from workbench.encoders import ENCODERS, Encoder, load_encoder
from workbench.encoders.default import (
    DefaultEncoderConfig,
    image_transform,
    load_state_dict_by_position,
)

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def pretrained() -> Encoder:
    return load_encoder("default")


@pytest.fixture(scope="module")
def random_init() -> Encoder:
    return load_encoder("default", pretrained=False)


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(n)]


# -- real towers --------------------------------------------------------------------------------
@pytest.mark.slow
def test_efficientnet_top5_of_chelsea_contains_a_cat(pretrained: Encoder) -> None:
    from skimage import data

    # EfficientNet-Lite0's native evaluation: 224 px after resizing the short side to 256
    native = image_transform(DefaultEncoderConfig(heads="random", resolution=224, crop_pct=0.875))
    pixels = native(Image.fromarray(data.chelsea())).unsqueeze(0)
    with torch.no_grad():
        top5 = pretrained.image_net(pixels).topk(5).indices[0].tolist()
    assert CAT_CLASSES & set(top5), f"top-5 ImageNet classes {top5} contain no cat"


@pytest.mark.slow
def test_minilm_ranks_kitten_above_soup_for_a_cat(pretrained: Encoder) -> None:
    texts = ["a photo of a cat", "a picture of a kitten", "a bowl of soup"]
    with torch.no_grad():
        feats = nn.functional.normalize(pretrained.text_features(texts), dim=-1)  # (3, 384)
    sims = feats[0] @ feats[1:].T
    assert sims[0] > sims[1]


@pytest.mark.slow
def test_default_embeddings_have_configured_width_and_unit_norm(pretrained: Encoder) -> None:
    with torch.no_grad():
        text = pretrained.encode_texts(["a cat"])
        image = pretrained.encode_images(_images(3))
        raw = pretrained.encode_images(_images(3), normalize=False)
    assert text.shape == (1, 256)
    assert image.shape == (3, 256)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(1))
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(image, nn.functional.normalize(raw, dim=-1))


@pytest.mark.slow
def test_alias_loads_the_same_weights(pretrained: Encoder) -> None:
    alias = load_encoder("lit-effnet-minilm")
    assert alias.identity == pretrained.identity
    assert alias.identity.name == "default"


# -- by-position loading ------------------------------------------------------------------------
def _two_layer(widths: tuple[int, int]) -> nn.Module:
    return nn.Sequential(nn.Linear(4, widths[0]), nn.Linear(widths[0], widths[1]))


def test_by_position_load_copies_tensors_across_different_names() -> None:
    target = _two_layer((3, 2))
    source_model = _two_layer((3, 2))
    renamed = OrderedDict(
        (f"_other.{i}", t.clone()) for i, t in enumerate(source_model.state_dict().values())
    )
    load_state_dict_by_position(target, renamed)
    for a, b in zip(target.state_dict().values(), source_model.state_dict().values()):
        assert torch.equal(a, b)


def test_by_position_load_names_the_first_mismatching_pair_and_changes_nothing() -> None:
    target = _two_layer((3, 2))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    source = OrderedDict(
        (f"src{i}", t) for i, t in enumerate(_two_layer((5, 2)).state_dict().values())
    )
    with pytest.raises(ValueError, match=r"'src0' \(5, 4\).*'0.weight' \(3, 4\)"):
        load_state_dict_by_position(target, source)
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k])


def test_by_position_load_rejects_a_different_number_of_tensors() -> None:
    source = OrderedDict(list(_two_layer((3, 2)).state_dict().items())[:3])
    with pytest.raises(ValueError, match="3 tensors but the model expects 4"):
        load_state_dict_by_position(_two_layer((3, 2)), source)


# -- identity, seeding, freezing (random-init towers: no weight files needed) --------------------
@pytest.mark.slow  # builds another default encoder
def test_same_seed_same_weights_and_identity(random_init: Encoder) -> None:
    again = load_encoder("default", pretrained=False)
    assert again.identity == random_init.identity


@pytest.mark.slow  # builds another default encoder
def test_identity_changes_with_preprocessing_but_not_weights(random_init: Encoder) -> None:
    smaller = load_encoder("default", pretrained=False, resolution=64)
    assert smaller.identity.weights_hash == random_init.identity.weights_hash
    assert smaller.identity != random_init.identity
    assert smaller.identity.key() != random_init.identity.key()
    assert smaller.preprocess(_images(1)).shape == (1, 3, 64, 64)


def test_identity_changes_when_weights_change(random_init: Encoder) -> None:
    before = random_init.identity
    saved = random_init.image_head.weight.detach().clone()
    with torch.no_grad():
        random_init.image_head.weight[0, 0] += 1.0
    try:
        assert random_init.identity.weights_hash != before.weights_hash
    finally:
        with torch.no_grad():
            random_init.image_head.weight.copy_(saved)
    assert random_init.identity == before


@pytest.mark.slow  # builds another default encoder
def test_head_seed_changes_heads_only(random_init: Encoder) -> None:
    other = load_encoder("default", pretrained=False, seed=1)
    assert not torch.equal(other.image_head.weight, random_init.image_head.weight)
    assert other.identity.weights_hash != random_init.identity.weights_hash


def test_towers_frozen_by_default_and_only_heads_train(random_init: Encoder) -> None:
    trainable = {n for n, p in random_init.named_parameters() if p.requires_grad}
    assert trainable == {"logit_scale", "image_head.weight", "text_head.weight"}
    random_init.train()
    try:
        assert not random_init.image_net.training and not random_init.text_net.training
        assert random_init.image_head.training
    finally:
        random_init.train(False)


@pytest.mark.slow  # builds another default encoder
def test_unfreeze_last_opens_exactly_the_last_blocks() -> None:
    enc = load_encoder(
        "default", pretrained=False, unfreeze_last=2, head="mlp", embed_dim=32, mlp_hidden=16
    )
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    image_blocks = {n.split(".")[2] + "." + n.split(".")[3] for n in trainable if ".blocks." in n}
    assert image_blocks == {"5.3", "6.0"}  # last 2 of the 16 inverted-residual blocks
    assert any(n.startswith("image_net.conv_head") for n in trainable)
    text_layers = {n.split(".")[3] for n in trainable if "text_net.encoder.layer." in n}
    assert text_layers == {"4", "5"}
    assert not any("embeddings" in n or "conv_stem" in n for n in trainable)
    enc.train()
    assert enc.text_net.encoder.layer[5].training and not enc.text_net.encoder.layer[0].training
    assert not enc.image_net.training  # BatchNorm statistics stay frozen
    assert len(enc.tower_blocks("image")) == 16 and len(enc.tower_blocks("text")) == 6
    assert enc.image_head[0].out_features == 16
    with torch.no_grad():
        assert enc.encode_texts(["a cat", "a dog"]).shape == (2, 32)
        assert enc.encode_images(_images(2), normalize=False).shape == (2, 32)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("embed_dim", 0, "embed_dim"),
        ("head", "conv", "head must be"),
        ("unfreeze_last", 17, "unfreeze_last"),
        ("resolution", 8, "resolution"),
        ("crop_pct", 1.5, "crop_pct"),
        ("interpolation", "lanczos", "interpolation"),
        ("std", (0.2, 0.0, 0.2), "std"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DefaultEncoderConfig(**{field: value})


def test_unknown_default_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="resolutoin"):
        load_encoder("default", resolutoin=64)


def test_encode_rejects_single_items_and_empty_lists(random_init: Encoder) -> None:
    with pytest.raises(ValueError, match="list of strings"):
        random_init.encode_texts("a cat")
    with pytest.raises(ValueError, match="empty"):
        random_init.encode_images([])


# -- registry -----------------------------------------------------------------------------------
def test_registry_lists_every_family() -> None:
    assert {"default", "open_clip", "hf-clip", "run"} <= set(ENCODERS.names())
    assert ENCODERS.resolve("lit-effnet-minilm")[0] == "default"


def test_unknown_encoder_suggests_close_names() -> None:
    with pytest.raises(KeyError, match="default"):
        load_encoder("defualt")


def test_run_prefix_needs_a_directory() -> None:
    with pytest.raises(ValueError, match="run directory"):
        load_encoder("run:")


def test_config_object_and_loose_fields_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either config"):
        load_encoder("default", config=DefaultEncoderConfig(), embed_dim=8)


# -- the tower contract: blocks and tokens --------------------------------------------------------
def test_default_tower_tokens_pool_to_the_tower_features(random_init: Encoder) -> None:
    images = _images(2)
    texts = ["a cat", "two blue squares on the left of a big red circle"]
    with torch.no_grad():
        img = random_init.tower_tokens("image", images)
        txt = random_init.tower_tokens("text", texts)
        torch.testing.assert_close(img.tokens.mean(dim=1), random_init.image_features(images))
        m = txt.mask.unsqueeze(-1).float()
        pooled = (txt.tokens * m).sum(1) / m.sum(1)
        torch.testing.assert_close(pooled, random_init.text_features(texts))
    assert img.grid == (3, 3) and img.tokens.shape == (2, 9, 1280)  # stride 32 at 96 px
    assert txt.mask.sum(dim=1).tolist()[0] < txt.mask.sum(dim=1).tolist()[1]


def test_default_tower_tokens_at_an_earlier_block_give_a_finer_grid(random_init: Encoder) -> None:
    with torch.no_grad():
        img = random_init.tower_tokens("image", _images(1), layer=10)
        txt = random_init.tower_tokens("text", ["a cat"], layer=2)
    assert img.grid == (6, 6) and img.tokens.shape == (1, 36, 112)  # stage 5, stride 16
    assert txt.tokens.shape[-1] == 384 and txt.layer == 2
    assert len(random_init.tower_blocks("image")) == 16
    assert len(random_init.tower_blocks("text")) == 6
    with pytest.raises(ValueError, match="layer"):
        random_init.tower_tokens("text", ["a cat"], layer=6)
    with pytest.raises(ValueError, match="side"):
        random_init.tower_tokens("audio", ["a cat"])
