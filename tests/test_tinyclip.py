"""``"tinyclip"`` (the ProCLIP study's CLIP) and the long synthetic-world captions it truncates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.data.synthetic import caption, sample_attributes
from workbench.data.synthetic_long import PREAMBLE, long_caption, long_captions


@pytest.fixture(scope="module")
def tiny():
    return wb.load_encoder("tinyclip", random_init=True)


def _attrs(i: int) -> dict:
    return sample_attributes(np.random.default_rng([0, 0, i]))


def test_long_captions_state_every_factor_past_clip_context(tiny):
    for i in range(20):
        a = _attrs(i)
        text = long_caption(a)
        assert text.startswith(PREAMBLE) and text == long_caption(a)
        for key in ("shape", "colour", "size", "view"):
            assert str(a[key]) in text, (key, text)
        ids = tiny.tokenize([text])["input_ids"][0]
        assert len(tiny._tokenizer.encode(text)) > 77 and int(ids.argmax()) == 76  # truncated
        assert len(tiny._tokenizer.encode(caption(a))) + 2 <= 77  # the canonical one fits
    assert long_caption(_attrs(0), seed=1) != long_caption(_attrs(0))  # seed moves the order
    with pytest.raises(TypeError, match="sequence"):
        long_captions(_attrs(0))


def test_text_head_trims_to_the_batch_without_changing_the_embedding(tiny):
    tokens = tiny.tokenize(["a red circle", "two small outlined blue squares in a row"])
    ids = tokens["input_ids"]
    full = tiny.text_head.net(ids)  # open_clip's forward over all 77 positions
    trimmed = tiny.text_head(tiny.text_tower(tokens))
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)
    tt = tiny.tower_tokens("text", ["a red circle"])
    assert tt.tokens.shape[1] == 5 and bool(tt.mask.all())  # <start> a red circle <end>


def test_image_side_is_the_default_encoders(tiny):
    default = wb.load_encoder("default")
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(tiny.image_tower(pixels), default.image_tower(pixels))
    assert len(tiny.tower_blocks("image")) == 16 and len(tiny.tower_blocks("text")) == 2


def test_missing_weights_name_the_recipe(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_tinyclip_weights"):
        wb.load_encoder("tinyclip", cache_dir=tmp_path)


def test_recipe_trains_caches_and_reloads(tmp_path, tiny):
    from workbench.encoders.embeddings import Embeddings
    from workbench.experiments.tinyclip import TinyCLIPRecipe, build_tinyclip_weights

    n = 24
    rng = np.random.default_rng(0)
    attrs = [_attrs(i) for i in range(n)]
    emb = Embeddings(
        image=np.zeros((n, 4), np.float32), text=np.zeros((n, 4), np.float32),
        ids=[str(i) for i in range(n)], labels=np.zeros(n, np.int64),
        captions=[caption(a) for a in attrs], attributes=attrs,
        image_tower=rng.standard_normal((n, 1280)).astype(np.float32),
    )  # fmt: skip
    recipe = TinyCLIPRecipe(config={"width": 32, "layers": 1}, steps=3, batch_size=8, warmup=1)
    path = build_tinyclip_weights(recipe, emb, cache_dir=tmp_path)
    assert path.exists() and path.with_suffix(".json").exists()
    mtime = path.stat().st_mtime_ns
    assert build_tinyclip_weights(recipe, emb, cache_dir=tmp_path) == path  # cached
    assert path.stat().st_mtime_ns == mtime
    loaded = wb.load_encoder(f"tinyclip:{path.stem}", cache_dir=tmp_path)
    assert loaded.config.width == 32 and loaded.name == f"tinyclip:{path.stem}"
    untrained = wb.load_encoder("tinyclip", random_init=True, width=32, layers=1)
    with torch.no_grad():
        a = loaded.encode_texts(["a red circle"])
        b = untrained.encode_texts(["a red circle"])
    assert not torch.allclose(a, b)  # the trained weights were loaded
    with pytest.raises(ValueError, match="model card"):
        wb.load_encoder(f"tinyclip:{path.stem}", cache_dir=tmp_path, width=64)
