"""Reading the chunked cache without loading it: memory-mapped chunks presented as one matrix.

What a user relies on: ``embed(..., mmap=True)`` and ``open_embeddings`` give the same rows,
bit for bit, as the in-memory ``embed``; the probes stream a several-chunk entry chunk by chunk
instead of loading it; ``Embeddings.shard`` splits rows into disjoint blocks that cover them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_embed_cache import CountingEncoder, TinyDataset

from workbench.distributed import group_info, resolve_group
from workbench.encoders.cache import EmbeddingCache
from workbench.encoders.chunked import ChunkedRows
from workbench.encoders.embed import embed, open_embeddings
from workbench.encoders.embeddings import Embeddings
from workbench.probes import C3, ReAlign, cone_width, spectrum


def _chunked(
    n: int = 23, d: int = 4, size: int = 5, seed: int = 0
) -> tuple[np.ndarray, ChunkedRows]:
    A = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return A, ChunkedRows.from_arrays([A[s : s + size] for s in range(0, n, size)])


@pytest.mark.parametrize(
    "key",
    [3, -1, slice(None), slice(4, 17), slice(None, None, -3), [5, 0, 22, 5], np.array([], int)],
    ids=["int", "negative", "all", "slice", "step", "list", "empty"],
)
def test_chunked_rows_index_like_the_array(key) -> None:
    A, X = _chunked()
    np.testing.assert_array_equal(X[key], A[key])
    np.testing.assert_array_equal(X[key, 1:3], A[key, 1:3])


def test_chunked_rows_masks_map_and_select() -> None:
    A, X = _chunked()
    mask = A[:, 0] > 0
    np.testing.assert_array_equal(X[mask], A[mask])
    assert X.shape == A.shape and X.dtype == A.dtype and len(X) == 23 and X.n_chunks == 5
    np.testing.assert_array_equal(np.asarray(X), A)
    doubled = X.map(lambda B: np.concatenate([B, 2 * B], axis=1))
    assert doubled.shape == (23, 8)
    np.testing.assert_array_equal(np.asarray(doubled)[:, 4:], 2 * A)
    picked = X.select_chunks([3, 1])
    np.testing.assert_array_equal(np.asarray(picked), np.concatenate([A[15:20], A[5:10]]))
    assert len(X.select_chunks([])) == 0 and list(X.select_chunks([])) == []
    with pytest.raises(IndexError, match="out of range"):
        X[23]
    with pytest.raises(IndexError, match="mask"):
        X[np.ones(3, bool)]


class _NoLoad(ChunkedRows):
    """Fails if anything converts the whole matrix."""

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole matrix was loaded")


def test_streaming_probes_never_load_a_chunked_matrix() -> None:
    A, X = _chunked(n=60, d=5, size=7)
    X = _NoLoad(X._loaders, X._sizes, 5, np.float32)
    B = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32) + 2
    Y = _NoLoad.from_arrays([B[s : s + 7] for s in range(0, 60, 7)])
    Y = _NoLoad(Y._loaders, Y._sizes, 5, np.float32)
    got = spectrum(X)
    want = spectrum(A, method="gram", chunk_rows=7)  # the same chunks streamed from an array
    np.testing.assert_allclose(got.singular_values, want.singular_values, rtol=1e-12)
    ra, ref = ReAlign().fit(X, Y), ReAlign().fit(A, B)
    np.testing.assert_allclose(ra.mu_y_prime_, ref.mu_y_prime_, rtol=1e-12, atol=1e-15)
    assert ra.scale_ == pytest.approx(ref.scale_, rel=1e-12)
    np.testing.assert_allclose(C3().fit(X, Y).mu_x_, C3().fit(A, B).mu_x_, rtol=1e-12)
    assert cone_width(X) == pytest.approx(cone_width(A), rel=1e-12)


def _entry_dir(cache_dir: Path, emb: Embeddings) -> Path:
    return EmbeddingCache(cache_dir).path_for(emb.provenance["cache_key"])


@pytest.mark.parametrize("chunk_rows", [100, 6], ids=["one-chunk", "four-chunks"])
def test_memory_mapped_embeddings_equal_the_loaded_ones(tmp_path: Path, chunk_rows: int) -> None:
    enc, data = CountingEncoder(), TinyDataset(20)
    kw = {"chunk_rows": chunk_rows, "cache_dir": tmp_path, "progress": False}
    loaded = embed(enc, data, tower_features=True, **kw)
    mapped = embed(enc, data, tower_features=True, mmap=True, **kw)
    if chunk_rows == 100:  # one chunk: a plain read-only memmap of the safetensors bytes
        assert isinstance(mapped.image_tower, np.memmap) and not mapped.image_tower.flags.writeable
    else:
        assert isinstance(mapped.image, ChunkedRows) and mapped.image.n_chunks == 4
        assert isinstance(mapped.image_normed, ChunkedRows)
    for name in ("image", "text", "image_tower", "text_tower", "image_normed"):
        np.testing.assert_array_equal(np.asarray(getattr(mapped, name)), getattr(loaded, name))
    assert mapped.ids == loaded.ids and mapped.captions == loaded.captions
    assert mapped.attributes == loaded.attributes and mapped.class_names == loaded.class_names
    np.testing.assert_array_equal(mapped.labels, loaded.labels)
    sub = mapped.subset([7, 2])  # a subset is in memory
    np.testing.assert_array_equal(sub.image, loaded.image[[7, 2]])


def test_a_lazy_view_keeps_the_heads_it_was_made_with(tmp_path: Path) -> None:
    enc = CountingEncoder()
    kw = {"chunk_rows": 6, "cache_dir": tmp_path, "progress": False}
    mapped = embed(enc, TinyDataset(20), mmap=True, **kw)
    before = np.asarray(mapped.image)
    with torch.no_grad():
        enc.image_head.bias.add_(1.0)
    np.testing.assert_array_equal(np.asarray(mapped.image), before)
    assert not np.array_equal(np.asarray(embed(enc, TinyDataset(20), **kw).image), before)


def test_open_embeddings_reads_an_entry_from_its_folder(tmp_path: Path) -> None:
    enc = CountingEncoder()
    made = embed(enc, TinyDataset(20), chunk_rows=6, cache_dir=tmp_path, progress=False)
    folder = _entry_dir(tmp_path, made)
    calls = enc.calls
    import workbench as wb

    opened = wb.open_embeddings(folder, enc, tower_features=True)  # the README's recipe
    assert enc.calls == calls
    np.testing.assert_array_equal(np.asarray(opened.image), made.image)
    assert opened.ids == made.ids and opened.class_names == made.class_names
    assert isinstance(opened.image_tower, ChunkedRows)
    with pytest.raises(ValueError, match="other towers"):
        open_embeddings(folder, CountingEncoder(seed=1))
    with pytest.raises(FileNotFoundError, match=r"entry\.json"):
        open_embeddings(tmp_path, enc)


def test_a_damaged_chunk_is_refused_when_memory_mapping(tmp_path: Path) -> None:
    enc = CountingEncoder()
    good = embed(enc, TinyDataset(20), chunk_rows=6, cache_dir=tmp_path, progress=False)
    folder = _entry_dir(tmp_path, good)
    chunk = sorted(folder.glob("chunk-*.safetensors"))[1]
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="sha256"), pytest.raises(ValueError, match="damaged"):
        open_embeddings(folder, enc)
    with pytest.warns(UserWarning, match="recomputing"):
        again = embed(enc, TinyDataset(20), chunk_rows=6, cache_dir=tmp_path, mmap=True)
    np.testing.assert_array_equal(np.asarray(again.image), good.image)
    meta = json.loads((folder / "entry.json").read_text())
    assert [c["stop"] - c["start"] for c in meta["chunks"]] == [6, 6, 6, 2]


def test_shards_are_disjoint_cover_every_row_and_follow_chunks(tmp_path: Path) -> None:
    emb = embed(CountingEncoder(), TinyDataset(20), chunk_rows=6, cache_dir=tmp_path, mmap=True)
    for world in (1, 2, 3, 5):
        shards = [emb.shard(r, world) for r in range(world)]
        assert [i for s in shards for i in s.ids] == emb.ids
        for s in shards:
            assert isinstance(s.image, ChunkedRows)
            assert all((b - a) in (6, 2, 0) for a, b in s.image.spans)  # whole chunks
        if world == 5:  # 4 chunks for 5 ranks: one rank holds none
            assert len(shards[-1]) == 0
    plain = Embeddings(np.eye(7), np.eye(7), list("abcdefg"), np.zeros(7, int), list("abcdefg"))
    assert [len(plain.shard(r, 3)) for r in range(3)] == [3, 2, 2]
    with pytest.raises(ValueError, match="rank"):
        plain.shard(3, 3)


def test_groups_resolve_to_local_without_torch_distributed() -> None:
    assert resolve_group(None) is None and resolve_group("auto") is None
    assert group_info("auto").world_size == 1
    with pytest.raises(ValueError, match="'auto'"):
        resolve_group("world")
    with pytest.raises(TypeError, match="ProcessGroup"):
        resolve_group(3)
    X = np.random.default_rng(0).normal(size=(50, 4))
    a, b = spectrum(X, group="auto"), spectrum(X)
    np.testing.assert_array_equal(a.singular_values, b.singular_values)


def test_embed_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mmap"):
        embed(CountingEncoder(), TinyDataset(4), mmap="yes", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cache=False"):
        embed(CountingEncoder(), TinyDataset(4), mmap=True, cache=False)
