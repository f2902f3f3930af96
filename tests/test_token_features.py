"""The token cache (``encoders/tokens.py``), the token trainer and the encoder view of a token
method, on a toy encoder that exposes patch and word tokens."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_train_toy import ToyDataset, ToyEncoder

from workbench.data.base import Dataset, Item
from workbench.encoders.base import TowerTokens
from workbench.encoders.cache import CacheCorruptedWarning
from workbench.encoders.tokens import TokenFeatures, embed_tokens
from workbench.experiments.token_training import (
    TokenTraining,
    check_token_features,
    encode_token_features,
    token_retrieval,
    train_token_method,
)


class TokenToy(ToyEncoder):
    """The toy with tokens: four 4×4-pixel patches per image, one token per character."""

    def _image_tokens(self, pixels, layer):
        b = pixels.shape[0]
        patches = pixels.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 3, 2, 2, 4, 4)
        x = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, 4, 48)  # (B, 4, 48)
        x = self.image_in(x.repeat(1, 1, 4))  # the toy's 192 → d_img input map
        for block in self.image_blocks[: layer + 1]:
            x = block(x)
        return TowerTokens(x, torch.ones(b, 4, dtype=torch.bool), grid=(2, 2), layer=layer)

    def _text_tokens(self, tokens, layer):
        ids, lengths = tokens["input_ids"], tokens["lengths"]
        mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
        x = self.text_in(ids)
        for block in self.text_blocks[: layer + 1]:
            x = block(x)
        return TowerTokens(x, mask, layer=layer)


class ManyCaptions(Dataset):
    """The toy dataset with three captions of different lengths per image."""

    name = "toy-captions"

    def __init__(self, n: int = 24) -> None:
        self.base = ToyDataset(n)

    def __len__(self) -> int:
        return len(self.base)

    def _get(self, i: int) -> Item:
        item = self.base[i]
        words = item.captions[0].split()
        caps = [item.captions[0], " ".join(words[1:3]), words[2]]
        return Item(item.id, item.image, caps, item.label)


@pytest.fixture
def toy():
    return TokenToy(), ManyCaptions(24)


def test_tokens_shapes_masks_and_owners(toy, tmp_path):
    enc, data = toy
    f = embed_tokens(enc, data, cache_dir=tmp_path, max_captions=2)
    assert f.image_tokens.shape == (24, 4, 24) and f.grid == (2, 2)
    assert f.n_captions == 48 and f.caption_owner.tolist() == np.repeat(np.arange(24), 2).tolist()
    assert f.image_tokens.dtype == np.float16
    lengths = f.text_mask.sum(1)
    assert lengths.tolist() == [len(c) for c in f.captions]
    assert not f.text_tokens[~f.text_mask].any()  # padding stored as zeros
    assert f.nbytes == sum(a.nbytes for a in (f.image_tokens, f.image_mask, f.text_tokens,
                                               f.text_mask, f.caption_owner, f.labels))  # fmt: skip
    # the stored tokens are the tower's, to float16 precision
    with torch.no_grad():
        t = enc.tower_tokens("text", [data[3].captions[1]])
    np.testing.assert_allclose(f.text_tokens[7, : len(data[3].captions[1])],
                               t.tokens[0].numpy(), rtol=1e-2, atol=1e-3)  # fmt: skip


def test_cache_hits_misses_and_corruption(toy, tmp_path, monkeypatch):
    enc, data = toy
    first = embed_tokens(enc, data, cache_dir=tmp_path)
    import workbench.encoders.tokens as T

    monkeypatch.setattr(T, "_extract", lambda *a, **k: pytest.fail("should be a cache hit"))
    hit = embed_tokens(enc, data, cache_dir=tmp_path)
    np.testing.assert_array_equal(hit.text_tokens, first.text_tokens)
    assert hit.captions == first.captions and hit.provenance["cache_key"]
    monkeypatch.undo()
    other = embed_tokens(enc, data, cache_dir=tmp_path, image_layer=0)  # another layer: a miss
    assert other.provenance["cache_key"] != first.provenance["cache_key"]
    tensor_file = next((tmp_path / "tokens").glob(f"{first.provenance['cache_key']}*.safetensors"))
    tensor_file.write_bytes(tensor_file.read_bytes()[:-10])
    with pytest.warns(CacheCorruptedWarning, match="sha256"):
        again = embed_tokens(enc, data, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.image_tokens, first.image_tokens)


def test_heads_do_not_invalidate_tokens(toy, tmp_path):
    enc, data = toy
    a = embed_tokens(enc, data, cache_dir=tmp_path)
    with torch.no_grad():
        enc.image_head.weight.mul_(2)
    b = embed_tokens(enc, data, cache_dir=tmp_path)
    assert a.provenance["cache_key"] == b.provenance["cache_key"]


@pytest.mark.parametrize(
    "kw, match",
    [({"image_layer": 3}, "image_layer"), ({"max_captions": 0}, "max_captions"),
     ({"dtype": "bfloat16"}, "dtype"), ({"max_text_tokens": 0}, "max_text_tokens")],
)  # fmt: skip
def test_bad_arguments_are_named(toy, tmp_path, kw, match):
    enc, data = toy
    with pytest.raises(ValueError, match=match):
        embed_tokens(enc, data, cache_dir=tmp_path, **kw)


def test_subset_and_concat_keep_captions_with_their_images(toy, tmp_path):
    enc, data = toy
    f = embed_tokens(enc, data, cache_dir=tmp_path, dtype="float32")
    sub = f.subset([5, 2])
    assert sub.ids == [f.ids[5], f.ids[2]] and sub.caption_owner.tolist() == [0, 0, 0, 1, 1, 1]
    assert sub.captions[:3] == f.captions[15:18]
    both = TokenFeatures.concat([sub, f.subset([0])])
    assert both.n_images == 3 and both.caption_owner.tolist()[-3:] == [2, 2, 2]
    np.testing.assert_array_equal(both.pooled("image")[2], f.pooled("image")[0])
    with pytest.raises(ValueError, match="distinct"):
        f.subset([1, 1])


def test_features_reject_misaligned_masks_and_nan_tokens(toy, tmp_path):
    enc, data = toy
    f = embed_tokens(enc, data, cache_dir=tmp_path, dtype="float32")
    bad = f.text_mask.copy()
    bad[0, 0] = False
    with pytest.raises(ValueError, match="left-aligned"):
        TokenFeatures(f.image_tokens, f.image_mask, f.text_tokens, bad, f.caption_owner, f.ids,
                      f.captions, f.labels)  # fmt: skip
    nan = f.subset(range(4))
    nan.text_tokens[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_token_features(nan)
    nan.text_tokens[0, 0, 0] = 0.0
    nan.text_tokens[~nan.text_mask] = np.nan  # padding may hold anything
    check_token_features(nan)


def test_trainer_is_seeded_learns_and_scores(toy, tmp_path):
    enc, data = toy
    f = embed_tokens(enc, data, cache_dir=tmp_path, dtype="float32")
    training = TokenTraining(steps=30, batch_size=12, lr=3e-3)
    cfg = {"dim": 16}
    a = train_token_method("vse", f, 0, training, method_config=cfg)
    b = train_token_method("vse", f, 0, training, method_config=cfg)
    assert [r["loss"] for r in a.log] == [r["loss"] for r in b.log]
    assert a.log[-1]["loss"] < a.log[0]["loss"]
    assert a.step_ms > 0
    r = token_retrieval(a.method, f)
    assert set(r) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"rsum"}
    assert r["rsum"] > 150  # chance at 24 images / 72 captions is ~ 60
    pre = train_token_method("cdds", f, 0, TokenTraining(steps=4, batch_size=12, refresh_every=2),
                             method_config={"dim": 16, "heads": 2, "identification": "precomputed",
                                            "perturbations": 2})  # fmt: skip
    assert pre.refresh_seconds > 0
    assert not torch.equal(
        pre.method.statistics[:, 1], torch.ones_like(pre.method.statistics[:, 1])
    )


def test_token_method_scores_like_any_encoder(toy, tmp_path, monkeypatch):
    import workbench as wb
    from workbench.methods.tokens import TokenMethodEncoder

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    enc, data = toy
    f = embed_tokens(enc, data, dtype="float32", max_captions=1)
    run = train_token_method("cdds", f, 0, TokenTraining(steps=3, batch_size=8),
                             method_config={"dim": 16, "heads": 2, "perturbations": 2})  # fmt: skip
    view = TokenMethodEncoder(enc, run.method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = wb.embed(view, data, cache=False)
    image, text = encode_token_features(run.method, f)
    np.testing.assert_allclose(emb.image, image, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb.text, text, rtol=1e-4, atol=1e-5)
    assert view.identity.weights_hash != enc.identity.weights_hash


class Broken(ManyCaptions):
    def _get(self, i: int) -> Item:
        if i == 3:
            raise OSError("image file is truncated")
        return super()._get(i)


def test_unreadable_items_fail_unless_skipped(tmp_path):
    enc = TokenToy()
    with pytest.raises(OSError, match="truncated"):
        embed_tokens(enc, Broken(8), cache_dir=tmp_path)
    f = embed_tokens(enc, Broken(8), cache_dir=tmp_path, skip_unreadable=True)
    assert f.n_images == 7 and "3" not in f.ids and f.provenance["skipped"] == [3]
    assert embed_tokens(enc, Broken(8), cache_dir=tmp_path, skip_unreadable=True).ids == f.ids


@pytest.mark.slow
def test_default_encoder_tokens_pool_to_its_tower_features(tmp_path):
    """The study's choice (last block at 128 px: a 4×4 grid) sees exactly what the pooled
    default sees: the mean of the patch tokens is the image tower feature, the masked mean of
    the word tokens the text tower feature."""
    import workbench as wb
    from workbench.data.synthetic import SyntheticWorld

    enc = wb.load_encoder("default", resolution=128, heads="random")  # towers only
    data = SyntheticWorld(size=4)
    f = embed_tokens(enc, data, cache_dir=tmp_path, dtype="float32", max_captions=1)
    assert f.grid == (4, 4) and f.dims == (1280, 384)
    with torch.no_grad():
        image = enc.image_features([it.image for it in data]).numpy()
        text = enc.text_features([it.captions[0] for it in data]).numpy()
    np.testing.assert_allclose(f.pooled("image"), image, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f.pooled("text"), text, rtol=1e-4, atol=1e-4)


def test_on_step_is_called_at_step_zero_and_after_every_step_in_eval_mode_and_is_off_by_default(
    toy, tmp_path
):
    enc, data = toy
    f = embed_tokens(enc, data, cache_dir=tmp_path, dtype="float32")
    training = TokenTraining(steps=5, batch_size=12, lr=3e-3)
    cfg = {"dim": 16, "heads": 2, "perturbations": 2}
    calls = []

    def on_step(step, model):
        calls.append((step, model.training, torch.is_grad_enabled()))
        return {"m": float(step)} if step % 2 == 0 else None

    plain = train_token_method("cdds", f, 0, training, method_config=cfg)
    watched = train_token_method("cdds", f, 0, training, method_config=cfg, on_step=on_step)
    assert calls == [(s, False, False) for s in range(6)], "step 0, then after every step"
    assert [e["step"] for e in watched.evals] == [0, 2, 4] and watched.evals[1]["metrics"] == {
        "m": 2.0
    }
    assert plain.evals == [], "off by default"
    assert [r["loss"] for r in plain.log] == [r["loss"] for r in watched.log], "run unchanged"
    with pytest.raises(TypeError, match="on_step"):
        train_token_method("cdds", f, 0, training, method_config=cfg, on_step="every 2")
    with pytest.raises(TypeError, match="on_step must return"):
        train_token_method("cdds", f, 0, training, method_config=cfg, on_step=lambda s, m: 1.0)
