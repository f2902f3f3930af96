"""``embed`` and the embedding cache: hits equal misses, any change or damage is a miss.

Uses a tiny deterministic encoder (counting its forward calls) and an in-test dataset, so these
tests need no weights and run in well under a second each.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from workbench.data.base import Dataset, Item, subset_indices
from workbench.encoders.base import Encoder
from workbench.encoders.cache import CacheCorruptedWarning, EmbeddingCache, jsonable
from workbench.encoders.embed import embed


class CountingEncoder(Encoder):
    """Pixels mean-pooled to 8×8 → linear; characters bag → linear. Counts tower calls."""

    name = "test-counting"

    def __init__(self, resolution: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.resolution = resolution
        self.embed_dim = 6
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.image_net = nn.Linear(3 * resolution * resolution, 10)
            self.text_net = nn.EmbeddingBag(128, 7)
            self.image_head = nn.Linear(10, 6)
            self.text_head = nn.Linear(7, 6)
        self.calls = 0

    @property
    def preprocess_config(self) -> dict:
        return {"resolution": self.resolution}

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        size = (self.resolution, self.resolution)
        arrays = [
            np.asarray(im.convert("RGB").resize(size), dtype=np.float32) / 255 for im in images
        ]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, r, r)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        length = max(len(t) for t in texts)
        ids = [[ord(c) % 128 for c in t] + [0] * (length - len(t)) for t in texts]
        return {"input_ids": torch.tensor(ids)}

    def image_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.image_net(pixels.flatten(1))  # (B, 10)

    def text_tower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        return self.text_net(tokens["input_ids"])  # (B, 7)


class TinyDataset(Dataset):
    """``n`` coloured squares with captions, labels and attribute dicts."""

    name = "tiny-squares"
    split = "test"

    def __init__(self, n: int = 20) -> None:
        self.n = n
        self.class_names = ["dark", "light"]

    @property
    def config(self) -> dict:
        return {"name": self.name, "split": self.split, "n": self.n}

    def __len__(self) -> int:
        return self.n

    def _get(self, i: int) -> Item:
        shade = int(255 * i / max(self.n - 1, 1))
        image = Image.new("RGB", (12, 10), (shade, 255 - shade, (7 * i) % 256))
        return Item(
            id=f"sq{i:03d}",
            image=image,
            captions=[f"square number {i}", "a square"],
            label=int(shade > 127),
            attributes={"shade": shade, "tags": ["square", str(i)], "big": np.int64(i)},
        )


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.text, b.text)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.ids == b.ids and a.captions == b.captions and a.attributes == b.attributes
    assert a.class_names == b.class_names
    for name in ("image_tower", "text_tower"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert a.provenance == b.provenance


def test_embeddings_match_the_encoder_and_carry_row_metadata(cache_dir: Path) -> None:
    enc, data = CountingEncoder(), TinyDataset(10)
    emb = embed(enc, data, batch_size=4, tower_features=True, cache_dir=cache_dir, progress=False)
    items = list(data)
    with torch.no_grad():
        image = enc.encode_images([it.image for it in items], normalize=False).numpy()
        text = enc.encode_texts([it.captions[0] for it in items], normalize=False).numpy()
    np.testing.assert_allclose(emb.image, image, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(emb.text, text, rtol=1e-6, atol=1e-6)
    assert emb.image.dtype == np.float32 and emb.image.shape == (10, 6)
    assert emb.image_tower.shape == (10, 10) and emb.text_tower.shape == (10, 7)
    assert emb.ids == [it.id for it in items]
    assert emb.captions == [it.captions[0] for it in items]
    assert emb.labels.dtype == np.int64 and emb.labels.tolist() == [it.label for it in items]
    assert emb.attributes[3] == {
        "shade": items[3].attributes["shade"],
        "tags": ["square", "3"],
        "big": 3,
    }
    assert emb.class_names == ["dark", "light"]
    np.testing.assert_allclose(np.linalg.norm(emb.image_normed, axis=1), 1.0, rtol=1e-5)


def test_cache_hit_equals_miss_and_skips_the_encoder(cache_dir: Path) -> None:
    enc, data = CountingEncoder(), TinyDataset()
    first = embed(enc, data, tower_features=True, cache_dir=cache_dir, progress=False)
    calls = enc.calls
    assert calls > 0
    second = embed(enc, data, tower_features=True, cache_dir=cache_dir, progress=False)
    assert enc.calls == calls  # served from disk: no forward pass
    _same(first, second)


def test_provenance_records_what_made_the_embeddings(cache_dir: Path) -> None:
    import workbench
    from workbench.encoders.heads import tower_fingerprint

    enc = CountingEncoder()
    emb = embed(enc, TinyDataset(), size=5, seed=3, cache_dir=cache_dir, progress=False)
    entry_dir = EmbeddingCache(cache_dir).path_for(emb.provenance["cache_key"])
    meta = json.loads((entry_dir / "entry.json").read_text())
    prov = meta["provenance"]
    assert prov["encoder"]["name"] == "test-counting"
    assert prov["encoder"]["towers"] == tower_fingerprint(enc)  # the towers alone, not the heads
    assert prov["encoder"]["preprocess"] == {"resolution": 8}
    assert prov["dataset"]["name"] == "tiny-squares" and prov["dataset"]["split"] == "test"
    assert (prov["dataset"]["size"], prov["dataset"]["seed"]) == (5, 3)
    assert prov["workbench_version"] == workbench.__version__
    assert "created" in prov and meta["n_rows"] == 5
    assert all(len(c["sha256"]) == 64 for c in meta["chunks"])
    assert len(emb.provenance["encoder"]["heads"]) == 64  # returned embeddings name their heads
    assert emb.provenance["tower_features"] is False


@pytest.mark.parametrize(
    "change",
    [
        {"encoder": CountingEncoder(resolution=4)},  # preprocessing
        {"encoder": CountingEncoder(seed=1)},  # tower weights
        {"size": 7},
        {"seed": 1, "size": 12},
    ],
    ids=["preprocessing", "weights", "size", "subset-seed"],
)
def test_any_change_in_the_key_is_a_miss(cache_dir: Path, change: dict) -> None:
    base = {"encoder": CountingEncoder(), "size": 12, "seed": 0, "tower_features": False}
    embed(base["encoder"], TinyDataset(), **_kw(base), cache_dir=cache_dir)
    changed = {**base, **change}
    enc = changed["encoder"]
    enc.calls = 0
    embed(enc, TinyDataset(), **_kw(changed), cache_dir=cache_dir)
    assert enc.calls > 0


def _kw(d: dict) -> dict:
    return {
        "size": d["size"],
        "seed": d["seed"],
        "tower_features": d["tower_features"],
        "progress": False,
    }


def test_new_heads_reuse_the_cached_towers(cache_dir: Path) -> None:
    """Heads are applied on every call: training them never re-runs a tower, and the result is
    what the encoder with its new heads computes."""
    enc = CountingEncoder()
    before = embed(enc, TinyDataset(), tower_features=True, cache_dir=cache_dir, progress=False)
    with torch.no_grad():
        enc.image_head.bias.add_(1.0)
    calls = enc.calls
    after = embed(enc, TinyDataset(), cache_dir=cache_dir, progress=False)
    assert enc.calls == calls  # towers served from disk
    assert not np.array_equal(before.image, after.image)
    with torch.no_grad():
        want = enc.image_head(torch.from_numpy(before.image_tower)).numpy()
    np.testing.assert_array_equal(after.image, want)
    np.testing.assert_array_equal(after.text, before.text)
    assert after.image_tower is None  # tower_features=False: not returned, still cached
    assert after.provenance["encoder"]["heads"] != before.provenance["encoder"]["heads"]


def test_trained_tower_weights_are_a_miss(cache_dir: Path) -> None:
    enc = CountingEncoder()
    before = embed(enc, TinyDataset(), cache_dir=cache_dir, progress=False)
    with torch.no_grad():
        enc.image_net.bias.add_(1.0)
    calls = enc.calls
    after = embed(enc, TinyDataset(), cache_dir=cache_dir, progress=False)
    assert enc.calls > calls
    assert not np.array_equal(before.image, after.image)


class _FailingAfter(TinyDataset):
    """Raises once ``limit`` items have been read (a crash mid-extraction)."""

    def __init__(self, n: int, limit: int) -> None:
        super().__init__(n)
        self.limit, self.reads = limit, 0

    def _get(self, i: int) -> Item:
        self.reads += 1
        if self.reads > self.limit:
            raise RuntimeError("simulated crash")
        return super()._get(i)


def test_an_interrupted_extraction_resumes_with_only_the_missing_chunks(cache_dir: Path) -> None:
    enc = CountingEncoder()
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed(
            enc,
            _FailingAfter(20, limit=13),
            chunk_rows=6,
            batch_size=3,
            cache_dir=cache_dir,
            progress=False,
        )  # chunks [0, 6) and [6, 12) written, [12, 18) in flight
    entry_dir = next((cache_dir / "towers").iterdir())
    assert not (entry_dir / "entry.json").exists()  # not committed
    assert len(list(entry_dir.glob("chunk-*.json"))) == 2
    resumed = _FailingAfter(20, limit=10**6)
    emb = embed(enc, resumed, chunk_rows=6, batch_size=3, cache_dir=cache_dir, progress=False)
    assert resumed.reads == 8  # rows 12..19 only
    whole = embed(
        CountingEncoder(), TinyDataset(20), chunk_rows=6, batch_size=3, cache=False, progress=False
    )
    np.testing.assert_array_equal(emb.image, whole.image)
    assert emb.ids == whole.ids
    assert (entry_dir / "entry.json").exists()


def test_size_beyond_the_dataset_is_an_error(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"holds 5 items.*load_dataset"):
        embed(CountingEncoder(), TinyDataset(5), size=6, cache_dir=cache_dir, progress=False)


def test_an_entry_json_that_is_not_an_object_is_recomputed(cache_dir: Path) -> None:
    enc = CountingEncoder()
    good = embed(enc, TinyDataset(), cache_dir=cache_dir, progress=False)
    entry = EmbeddingCache(cache_dir).path_for(good.provenance["cache_key"]) / "entry.json"
    entry.write_text("[1, 2, 3]")
    calls = enc.calls
    with pytest.warns(CacheCorruptedWarning, match="not an object"):
        again = embed(enc, TinyDataset(), cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(again.image, good.image)
    assert enc.calls == calls  # its chunks were intact: nothing to recompute


def _damage_truncate(chunk: Path, sidecar: Path, entry: Path) -> None:
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])


def _damage_flip_byte(chunk: Path, sidecar: Path, entry: Path) -> None:
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor payload: header still parses
    chunk.write_bytes(bytes(data))


def _damage_header(chunk: Path, sidecar: Path, entry: Path) -> None:
    import hashlib

    data = bytearray(chunk.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")  # absurd header length
    chunk.write_bytes(bytes(data))
    sha = hashlib.sha256(bytes(data)).hexdigest()  # checksums agree: parsing must fail
    for path in (sidecar, entry):
        meta = json.loads(path.read_text())
        if "chunks" in meta:
            meta["chunks"][0]["sha256"] = sha
        else:
            meta["sha256"] = sha
        path.write_text(json.dumps(meta))


def _damage_entry_missing(chunk: Path, sidecar: Path, entry: Path) -> None:
    entry.unlink()  # chunks intact: they are reused, the entry is committed again


def _damage_entry_garbled(chunk: Path, sidecar: Path, entry: Path) -> None:
    entry.write_text(entry.read_text()[:40])


def _damage_chunk_missing(chunk: Path, sidecar: Path, entry: Path) -> None:
    chunk.unlink()


def _damage_sidecar_garbled(chunk: Path, sidecar: Path, entry: Path) -> None:
    chunk.unlink()
    sidecar.write_text("{")


@pytest.mark.parametrize(
    ("damage", "recomputes", "warns"),
    [
        (_damage_truncate, True, True),
        (_damage_flip_byte, True, True),
        (_damage_header, True, True),
        (_damage_entry_missing, False, False),
        (_damage_entry_garbled, False, True),
        (_damage_chunk_missing, True, True),
        (_damage_sidecar_garbled, True, True),
    ],
)
def test_damaged_entries_are_reported_and_recomputed(
    cache_dir: Path, damage, recomputes: bool, warns: bool
) -> None:
    enc, data = CountingEncoder(), TinyDataset()
    good = embed(enc, data, cache_dir=cache_dir, progress=False)
    entry_dir = EmbeddingCache(cache_dir).path_for(good.provenance["cache_key"])
    chunk = next(entry_dir.glob("chunk-*.safetensors"))
    damage(chunk, chunk.with_suffix(".json"), entry_dir / "entry.json")
    calls = enc.calls
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", CacheCorruptedWarning)
        again = embed(enc, data, cache_dir=cache_dir, progress=False)
    reported = [w for w in seen if issubclass(w.category, CacheCorruptedWarning)]
    assert bool(reported) == warns and all("recomputing" in str(w.message) for w in reported)
    assert (enc.calls > calls) == recomputes
    np.testing.assert_array_equal(again.image, good.image)
    np.testing.assert_array_equal(again.text, good.text)
    # the repaired entry is served cleanly next time
    calls = enc.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptedWarning)
        embed(enc, data, cache_dir=cache_dir, progress=False)
    assert enc.calls == calls


def test_cache_false_neither_reads_nor_writes(cache_dir: Path) -> None:
    enc = CountingEncoder()
    embed(enc, TinyDataset(), cache=False, cache_dir=cache_dir, progress=False)
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.safetensors"))
    embed(enc, TinyDataset(), cache_dir=cache_dir, progress=False)
    calls = enc.calls
    embed(enc, TinyDataset(), cache=False, cache_dir=cache_dir, progress=False)
    assert enc.calls > calls


def test_no_temporary_files_are_left_behind(cache_dir: Path) -> None:
    embed(CountingEncoder(), TinyDataset(), chunk_rows=8, cache_dir=cache_dir, progress=False)
    (entry_dir,) = (cache_dir / "towers").iterdir()
    names = sorted(p.name for p in entry_dir.iterdir())
    assert len(names) == 1 + 2 * 3 and not any(n.endswith(".tmp") for n in names)  # 20 rows / 8


def test_default_cache_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "env-cache"))
    emb = embed(CountingEncoder(), TinyDataset(4), progress=False)
    entry_dir = EmbeddingCache().path_for(emb.provenance["cache_key"])
    assert (entry_dir / "entry.json").is_file() and entry_dir.is_relative_to(tmp_path / "env-cache")


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 30), size=st.integers(1, 40), seed=st.integers(0, 5))
def test_subset_rows_are_the_selected_items_in_order(n: int, size: int, seed: int) -> None:
    if size > n:  # asking for more items than exist is refused, never silently shortened
        with pytest.raises(ValueError, match=f"holds {n} items"):
            embed(CountingEncoder(), TinyDataset(n), size=size, cache=False, progress=False)
        return
    emb = embed(
        CountingEncoder(), TinyDataset(n), size=size, seed=seed, cache=False, progress=False
    )
    expected = [f"sq{i:03d}" for i in subset_indices(n, size, seed)]
    assert emb.ids == expected
    assert len(emb) == size


def test_batch_size_does_not_change_results(cache_dir: Path) -> None:
    a = embed(CountingEncoder(), TinyDataset(9), batch_size=2, cache=False, progress=False)
    b = embed(CountingEncoder(), TinyDataset(9), batch_size=64, cache=False, progress=False)
    # The property a user relies on: batching changes nothing beyond float32 rounding of the
    # towers' and heads' matmuls. BLAS blocks a batch of 2 and one of 64 differently, so the sums
    # run in another order; 8 ulps (float32 eps) of each output's scale bounds that reordering
    # for these shallow (≤ 192-term) dot products, where 1e-7 absolute did not (1.3e-7 seen).
    for got, want in ((a.image, b.image), (a.text, b.text)):
        atol = 8 * np.finfo(np.float32).eps * float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_encoder_mode_is_restored(cache_dir: Path) -> None:
    enc = CountingEncoder().train()
    embed(enc, TinyDataset(3), cache=False, progress=False)
    assert enc.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"batch_size": 0}, "batch_size"), ({"size": 0}, "size")],
)
def test_bad_arguments_are_explained(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        embed(CountingEncoder(), TinyDataset(3), cache=False, progress=False, **kwargs)


def test_jsonable_keeps_plain_values_and_drops_images() -> None:
    value = {"a": np.float32(0.5), "b": (1, 2), "img": Image.new("RGB", (2, 2)), "p": Path("/x")}
    assert jsonable(value) == {"a": 0.5, "b": [1, 2], "p": "/x"}


def test_dataset_ids_are_resolved_through_the_registry(cache_dir: Path) -> None:
    emb = embed(CountingEncoder(), "digits", size=6, cache_dir=cache_dir, progress=False)
    assert len(emb) == 6 and emb.has_labels
    assert emb.provenance["dataset"]["name"] == "digits"


@pytest.mark.slow
def test_default_encoder_on_the_synthetic_world_by_id(cache_dir: Path) -> None:
    emb = embed(
        "default",
        "synthetic-world",
        size=16,
        tower_features=True,
        cache_dir=cache_dir,
        progress=False,
    )
    assert emb.image.shape == (16, 256) and emb.text.shape == (16, 256)
    assert emb.image_tower.shape == (16, 1280) and emb.text_tower.shape == (16, 384)
    assert emb.provenance["encoder"]["name"] == "default"
    assert emb.provenance["encoder"]["preprocess"]["resolution"] == 96


def test_progress_bar_only_when_asked_or_interactive(capsys: pytest.CaptureFixture[str]) -> None:
    embed(CountingEncoder(), TinyDataset(3), cache=False, progress=True)
    assert "embed tiny-squares" in capsys.readouterr().err
    embed(CountingEncoder(), TinyDataset(3), cache=False)  # pytest's stderr is not a terminal
    assert "embed tiny-squares" not in capsys.readouterr().err


class _MultiCaption(TinyDataset):
    """Items with one to three captions."""

    def _get(self, i: int) -> Item:
        item = super()._get(i)
        extra = [f"{item.captions[0]}, version {k}" for k in range(i % 3)]
        return Item(item.id, item.image, [item.captions[0], *extra], item.label, item.attributes)


def test_all_captions_give_one_row_per_caption_with_the_item_image(cache_dir: Path) -> None:
    enc, data = CountingEncoder(), _MultiCaption(7)
    first = embed(enc, data, tower_features=True, cache_dir=cache_dir, progress=False)
    every = embed(
        enc, data, captions="all", tower_features=True, cache_dir=cache_dir, progress=False
    )
    items = list(data)
    assert len(every) == sum(len(it.captions) for it in items)  # 1 + 2 + 3 + 1 + 2 + 3 + 1
    assert every.captions == [c for it in items for c in it.captions]
    assert every.ids[:3] == ["sq000#0", "sq001#0", "sq001#1"]
    assert [a["item_id"] for a in every.attributes[:3]] == ["sq000", "sq001", "sq001"]
    row = every.ids.index("sq002#2")
    np.testing.assert_array_equal(every.image_tower[row], first.image_tower[2])
    with torch.no_grad():
        want = enc.text_features([every.captions[row]]).numpy()[0]
    np.testing.assert_allclose(every.text_tower[row], want, rtol=1e-6, atol=1e-6)
    calls = enc.calls
    embed(enc, data, captions="all", cache_dir=cache_dir, progress=False)
    assert enc.calls == calls  # the extra captions' text features are cached by string
    with pytest.raises(ValueError, match="captions"):
        embed(enc, data, captions="random", cache_dir=cache_dir, progress=False)


def test_a_generated_data_set_named_by_id_takes_the_size(cache_dir: Path) -> None:
    emb = embed(
        CountingEncoder(), "synthetic-world", size=1200, cache_dir=cache_dir, progress=False
    )
    assert len(emb) == 1200  # not the default-size world's 1,000 rows


def test_text_cache_computes_each_string_once_and_survives_damage(cache_dir: Path) -> None:
    from workbench.encoders.text_cache import TextTowerCache

    enc = CountingEncoder()
    bank = TextTowerCache(enc, cache_dir)
    a = bank.features(["a cat", "a dog", "a cat"])
    assert a.shape == (3, 7) and np.array_equal(a[0], a[2]) and enc.calls == 1
    again = TextTowerCache(enc, cache_dir)  # a new process reads the shard back
    np.testing.assert_array_equal(again.features(["a dog"]), a[1:2])
    assert enc.calls == 1
    (shard,) = (cache_dir / "text_tower").rglob("*.safetensors")
    shard.write_bytes(shard.read_bytes()[:-8])
    damaged = TextTowerCache(enc, cache_dir)
    with pytest.warns(CacheCorruptedWarning, match="recomputing"):
        np.testing.assert_allclose(damaged.features(["a dog"]), a[1:2], rtol=1e-6)
    assert enc.calls == 2
    with pytest.raises(ValueError, match="list of strings"):
        bank.features("a cat")


def test_text_cache_shard_appears_only_after_its_sidecar(cache_dir: Path, monkeypatch) -> None:
    """Another process reading the cache must never meet a shard without its checksum sidecar
    (it would take it for damage and recompute): the shard is moved into place last."""
    import os

    from workbench.encoders.text_cache import TextTowerCache

    real_replace, seen = os.replace, []

    def replace(src, dst):
        dst = Path(dst)
        if dst.suffix == ".safetensors":
            seen.append(dst.with_suffix(".json").is_file())
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    TextTowerCache(CountingEncoder(), cache_dir).features(["a cat", "a dog"])
    assert seen == [True]
    assert not list((cache_dir / "text_tower").rglob("*.tmp"))
