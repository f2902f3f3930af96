"""open_clip and Hugging Face CLIP encoders, round-tripped through tiny random-init checkpoints.

The tests build small models, save them to ``tmp_path`` and load them back through the
registry: outputs must be identical to the original model's, and nothing may be downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.encoders import load_encoder

TINY_ARCH = "wb-test-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    # vocab_size must match open_clip's SimpleTokenizer (49408 BPE ids)
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TEXTS = ["a red circle", "two blue squares on the left", "a cat"]


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for _ in range(n)]


# -- open_clip ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory):
    """A registered tiny ViT open_clip arch, one seeded model and its checkpoint files."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("open_clip")
    (root / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(root / f"{TINY_ARCH}.json")
    torch.manual_seed(123)
    model, _, transform = open_clip.create_model_and_transforms(TINY_ARCH, pretrained_text=False)
    # frozen like the encoder's towers: nn.MultiheadAttention picks its fused kernel by
    # requires_grad, which changes the last bits of the text features
    model.eval().requires_grad_(False)
    save_file(model.state_dict(), root / "tiny.safetensors")
    torch.save(model.state_dict(), root / "tiny.pt")
    return model, transform, open_clip.get_tokenizer(TINY_ARCH), root


@pytest.mark.parametrize("filename", ["tiny.safetensors", "tiny.pt"])
def test_open_clip_checkpoint_round_trip_gives_identical_outputs(tiny_open_clip, filename) -> None:
    model, transform, tokenizer, root = tiny_open_clip
    enc = load_encoder(f"open_clip:{TINY_ARCH}:{root / filename}")
    images = _images()
    with torch.no_grad():
        expected_img = model.encode_image(torch.stack([transform(im) for im in images]))
        expected_txt = model.encode_text(tokenizer(TEXTS))
        assert torch.equal(enc.encode_images(images, normalize=False), expected_img)
        assert torch.equal(enc.encode_texts(TEXTS, normalize=False), expected_txt)
        normed = enc.encode_texts(TEXTS)
    torch.testing.assert_close(normed.norm(dim=-1), torch.ones(len(TEXTS)))
    assert enc.embed_dim == 16
    assert enc.identity.name == f"open_clip:{TINY_ARCH}:{(root / filename).resolve()}"


def test_open_clip_towers_stop_before_the_projection(tiny_open_clip) -> None:
    _, _, _, root = tiny_open_clip
    enc = load_encoder(f"open_clip:{TINY_ARCH}:{root / 'tiny.safetensors'}")
    with torch.no_grad():
        img_feat = enc.image_features(_images(2))
        txt_feat = enc.text_features(TEXTS)
    assert img_feat.shape == (2, 32)  # ViT width, not embed_dim
    assert txt_feat.shape == (3, 32)
    assert enc.image_head.weight.shape == (32, 16)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"logit_scale", "image_head.weight", "text_head.weight"}


def test_open_clip_random_init_is_seeded(tiny_open_clip) -> None:
    a = load_encoder(f"open_clip:{TINY_ARCH}")
    b = load_encoder(f"open_clip:{TINY_ARCH}")
    c = load_encoder(f"open_clip:{TINY_ARCH}", seed=1)
    assert a.identity == b.identity
    assert a.identity.weights_hash != c.identity.weights_hash


def test_open_clip_identity_tracks_preprocessing(tiny_open_clip) -> None:
    _, _, _, root = tiny_open_clip
    spec = f"open_clip:{TINY_ARCH}:{root / 'tiny.safetensors'}"
    base = load_encoder(spec)
    bilinear = load_encoder(spec, image_interpolation="bilinear")
    assert base.identity.weights_hash == bilinear.identity.weights_hash
    assert base.identity.preprocess["interpolation"] == "bicubic"
    assert base.identity != bilinear.identity


def test_open_clip_missing_tagged_weights_fail_offline_with_instructions(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_encoder("open_clip:ViT-B-32:laion2b_s34b_b79k", cache_dir=tmp_path)
    message = str(err.value)
    assert "laion2b_s34b_b79k" in message and "never downloads" in message
    assert "open_clip:ViT-B-32:/path/to/" in message


def test_open_clip_finds_tagged_weights_already_in_a_hub_cache(tmp_path) -> None:
    from workbench.encoders.openclip import cached_pretrained_file

    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"not opened here")
    found = cached_pretrained_file("ViT-B-32", "laion2b_s34b_b79k", tmp_path)
    assert found == snapshot / "open_clip_model.safetensors"


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("open_clip:", ValueError, "needs an architecture"),
        ("open_clip:no-such-arch", ValueError, "unknown open_clip architecture"),
        ("open_clip:ViT-B-32:no_such_tag", ValueError, "known tags: openai"),
        ("open_clip:ViT-B-32:/nowhere/model.safetensors", FileNotFoundError, "does not exist"),
    ],
)
def test_open_clip_bad_specs_are_explained(spec: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_encoder(spec)


def test_open_clip_checkpoints_never_unpickle_objects(tiny_open_clip, tmp_path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Unsafe()}, evil)
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_encoder(f"open_clip:{TINY_ARCH}:{evil}")


class _Unsafe:
    """An arbitrary class: ``weights_only=True`` loading must refuse to rebuild it."""


# -- Hugging Face CLIP --------------------------------------------------------------------------
def _tiny_clip_tokenizer():
    """A byte-level CLIP BPE tokenizer with a handful of merges, built without any download."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    merges = [("c", "a"), ("ca", "t</w>"), ("r", "e"), ("re", "d</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory: pytest.TempPathFactory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    root = tmp_path_factory.mktemp("hf_clip")
    tokenizer = _tiny_clip_tokenizer()
    special = {
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 24,
            **special,
        },
        vision_config={
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(7)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(root)
    model.save_pretrained(root)
    return model, processor, root


def test_hf_clip_round_trip_gives_identical_outputs(tiny_hf_clip) -> None:
    model, processor, root = tiny_hf_clip
    enc = load_encoder(f"hf-clip:{root}")
    images = _images()
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    tokens = processor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected_img = model.visual_projection(
            model.vision_model(pixel_values=pixels).pooler_output
        )
        expected_txt = model.text_projection(
            model.text_model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).pooler_output
        )
        assert torch.equal(enc.encode_images(images, normalize=False), expected_img)
        assert torch.equal(enc.encode_texts(TEXTS, normalize=False), expected_txt)
        assert enc.image_features(images).shape == (3, 24)  # vision hidden: pre-projection
        assert enc.text_features(TEXTS).shape == (3, 32)
        torch.testing.assert_close(enc.encode_images(images).norm(dim=-1), torch.ones(3))
    assert enc.embed_dim == 16
    assert enc.identity.name == f"hf-clip:{root.resolve()}"
    assert enc.identity.preprocess["crop_size"] == {"height": 32, "width": 32}
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {
        "logit_scale",
        "model.visual_projection.weight",
        "model.text_projection.weight",
    }


def test_hf_clip_reload_has_same_identity_and_weight_change_changes_it(tiny_hf_clip) -> None:
    _, _, root = tiny_hf_clip
    a, b = load_encoder(f"hf-clip:{root}"), load_encoder(f"hf-clip:{root}")
    assert a.identity == b.identity
    with torch.no_grad():
        b.text_head.weight.mul_(2.0)
    assert a.identity.weights_hash != b.identity.weights_hash


def test_hf_clip_missing_directory_is_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_encoder(f"hf-clip:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="local directory"):
        load_encoder("hf-clip:")


# -- the tower contract: blocks and tokens --------------------------------------------------------
VARIED = ["a cat", "two blue squares on the left of a big red circle", "x"]


def test_open_clip_tower_blocks_are_the_transformer_blocks(tiny_open_clip) -> None:
    _, _, _, root = tiny_open_clip
    enc = load_encoder(f"open_clip:{TINY_ARCH}:{root / 'tiny.safetensors'}")
    assert enc.tower_blocks("image") == list(enc.model.visual.transformer.resblocks)
    assert enc.tower_blocks("text") == list(enc.model.transformer.resblocks)
    with pytest.raises(ValueError, match="side"):
        enc.tower_blocks("audio")


def test_open_clip_last_tokens_pool_to_the_tower_features(tiny_open_clip) -> None:
    _, _, _, root = tiny_open_clip
    enc = load_encoder(f"open_clip:{TINY_ARCH}:{root / 'tiny.safetensors'}")
    images = _images(2)
    with torch.no_grad():
        img = enc.tower_tokens("image", images)
        txt = enc.tower_tokens("text", VARIED)
        tower_img, tower_txt = enc.image_features(images), enc.text_features(VARIED)
    assert img.tokens.shape == (2, 16, 32) and img.grid == (4, 4)  # 32 px / patch 8
    assert bool(img.mask.all())
    torch.testing.assert_close(img.cls, tower_img)  # ViT pools the class token after ln_post
    lengths = txt.mask.sum(dim=1)
    assert lengths.tolist()[0] < lengths.tolist()[1]  # padding is masked, per caption
    eot = torch.stack([txt.tokens[i, int(n) - 1] for i, n in enumerate(lengths)])
    torch.testing.assert_close(eot, tower_txt)  # CLIP pools the end-of-text token
    with pytest.raises(ValueError, match="layer"):
        enc.tower_tokens("image", images, layer=5)


def test_hf_clip_tower_blocks_and_tokens_match_the_pooled_features(tiny_hf_clip) -> None:
    _, _, root = tiny_hf_clip
    enc = load_encoder(f"hf-clip:{root}")
    assert enc.tower_blocks("image") == list(enc.model.vision_model.encoder.layers)
    assert len(enc.tower_blocks("text")) == 1
    images = _images(2)
    with torch.no_grad():
        img = enc.tower_tokens("image", images)
        txt = enc.tower_tokens("text", VARIED)
        pooled = enc.model.vision_model.post_layernorm(img.cls)
        torch.testing.assert_close(pooled, enc.image_features(images))
        tower_txt = enc.text_features(VARIED)
    assert img.tokens.shape == (2, 16, 24) and img.grid == (4, 4)
    lengths = txt.mask.sum(dim=1)
    eos = torch.stack([txt.tokens[i, int(n) - 1] for i, n in enumerate(lengths)])
    torch.testing.assert_close(eos, tower_txt)  # HF CLIP pools the EOS (last real) token
