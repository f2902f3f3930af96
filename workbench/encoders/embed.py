"""``embed(encoder, dataset)``: batched, cached extraction of paired image/text embeddings.

Row ``i`` of the result is item ``i`` of the (optionally subsetted) dataset: its image through
``encoder.preprocess → image_tower`` and its canonical caption (``captions[0]``) through
``tokenize → text_tower``, then through the encoder's two heads. The *tower* features are what
is cached (:class:`~workbench.encoders.cache.EmbeddingCache`), keyed by the towers alone
(:func:`~workbench.encoders.heads.tower_fingerprint`) and the data: the heads are applied on
every call, so retraining heads never re-runs a tower. Extraction is written chunk by chunk, so
an interrupted run loses at most one chunk and the next call computes only what is missing.

Under ``torchrun``, ``embed(..., group="auto")`` on every rank shards the extraction by chunk
(:mod:`workbench.encoders.extract`) and returns the whole entry, memory-mapped, on every rank;
:meth:`Embeddings.shard` then gives each rank its rows for the distributed probes
(``spectrum(local.image, group="auto")``). :func:`open_embeddings` opens a finished entry from
its folder alone (a notebook reading what a cluster job wrote).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.distributed import resolve_group

from .base import Encoder, hash_state_dict
from .cache import EmbeddingCache, TowerRows, cache_key, dataset_provenance, jsonable
from .chunked import ChunkedRows
from .embeddings import Embeddings
from .extract import chunk_spans, extract_missing, extract_sharded
from .heads import HEAD_PREFIXES, Heads, apply_head, tower_fingerprint

if TYPE_CHECKING:
    from ..data.base import Dataset

#: Rows per cache chunk: what an interrupted extraction can lose at most (≈ 1 minute of the
#: default encoder on a 2-core CPU at 96 px).
CHUNK_ROWS = 1024


def _interactive() -> bool:
    """True in a Jupyter kernel or when stderr is a terminal (then a progress bar helps)."""
    shell = sys.modules.get("IPython")
    if shell is not None:
        ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
        if ip is not None and type(ip).__name__ == "ZMQInteractiveShell":
            return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun each process takes its own GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return torch.device(device)


def tower_provenance(
    encoder: Encoder, dataset: Dataset, *, size: int | None, seed: int, n_rows: int
) -> dict[str, Any]:
    """What identifies one tower-feature extraction (the cache key is its digest, minus ``created``).

    Hashes the towers once (:func:`~workbench.encoders.heads.tower_fingerprint`, about 0.2 s for
    the default encoder on a 2-core CPU); the heads do not enter it.
    """
    from .. import __version__

    return {
        "encoder": {
            "name": getattr(encoder, "name", type(encoder).__name__),
            "towers": tower_fingerprint(encoder),
            "preprocess": jsonable(getattr(encoder, "preprocess_config", {})),
        },
        "dataset": dataset_provenance(dataset, size, seed, n_rows),
        "text": "captions[0]",
        "workbench_version": __version__,
    }


def _stamped(provenance: dict[str, Any], key: str) -> dict[str, Any]:
    out = dict(provenance)
    out["cache_key"] = key
    out["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def embed(
    encoder: Encoder | str,
    dataset: Dataset | str,
    *,
    size: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    tower_features: bool = False,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    device: str = "auto",
    chunk_rows: int = CHUNK_ROWS,
    mmap: bool | None = None,
    group: Any = None,
    captions: str = "first",
) -> Embeddings:
    """Embed every image and canonical caption of ``dataset`` with ``encoder`` (towers cached on disk).

    Args:
        encoder: An :class:`Encoder` or a registry id for :func:`~workbench.encoders.load_encoder`.
            It is run in eval mode (its previous mode is restored) and moved to ``device``.
        dataset: A :class:`~workbench.data.base.Dataset` or an id for ``workbench.load_dataset``.
        size: Embed a deterministic subset of this many items (``subset_indices(n, size, seed)``,
            sorted); ``None`` = all. More than the dataset holds is an error (a generated data set
            such as synthetic-world takes its own ``size=``: ``load_dataset(name, size=...)``).
        seed: Seed of that subset.
        batch_size: Items per forward pass.
        tower_features: Also return the pre-projection tower features.
        cache: Read and write the on-disk cache; ``False`` always recomputes and writes nothing.
        cache_dir: Cache root; default ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``. Under a
            process group it must be one filesystem every rank sees.
        progress: Show a tqdm bar (rank 0 only, counting every rank's rows); ``None`` = only
            when interactive (Jupyter or a terminal).
        device: ``"auto"`` (CUDA when available; ``cuda:$LOCAL_RANK`` under torchrun),
            ``"cpu"``, ``"cuda:0"``, ...
        chunk_rows: Rows per cache chunk: the unit of caching, of resumption and of the work
            dealt to ranks.
        mmap: Return the features memory-mapped from the cache instead of in memory (see
            :meth:`EmbeddingCache.open`): ``image_tower``/``text_tower`` are an ``np.memmap``
            (one chunk) or a :class:`~workbench.encoders.chunked.ChunkedRows`, and with several
            chunks ``image``/``text`` are ``ChunkedRows`` applying (a frozen copy of) the heads
            chunk by chunk. ``None`` = memory-mapped exactly when distributed.
        group: ``None`` (one process), ``"auto"`` (the default group of an initialised
            ``torch.distributed``, else one process) or a ``ProcessGroup``: call on every rank;
            the missing chunks are dealt round-robin over the ranks and every rank returns the
            whole committed entry (take a rank's rows with :meth:`Embeddings.shard`). Not the
            default: inside DDP training only rank 0 may embed (an eval hook), and a collective
            there would wait forever for the others.
        captions: ``"first"`` — one row per item, its canonical ``captions[0]``; ``"all"`` — one
            row per (item, caption): the item's image row repeated for each of its captions, ids
            ``"<item id>#<k>"``, ``attributes["item_id"]``/``["caption_index"]`` set (so
            ``TrainConfig(holdout_by="id")`` keeps an image's captions together); returned in
            memory. The extra captions' text features come from
            :class:`~workbench.encoders.text_cache.TextTowerCache`.

    Returns:
        :class:`Embeddings` with ``image``/``text`` (n, D) float32 *raw* projected embeddings
        (``image_normed``/``text_normed`` for the L2-normalised ones), optional
        ``image_tower`` (n, D_img) / ``text_tower`` (n, D_txt) float32, and ids, labels
        (-1 = none), captions, attributes (JSON-able values only), class names and provenance
        (towers' fingerprint with preprocessing, the heads' hash, dataset, subset, version,
        cache key, creation time). Heads are applied chunk by chunk, so a row's embedding is
        bit-identical whichever way it is read.

    Raises:
        ValueError: Bad ``size``/``batch_size``/``chunk_rows``/``mmap``, an empty dataset, an
            item without captions, ``cache=False`` with ``mmap`` or a group, or ranks that
            disagree on what they embed.
    """
    from ..data.base import subset_indices

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int ≥ 1, got {chunk_rows!r}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be an int ≥ 1 or None (all items), got {size!r}")
    if captions not in ("first", "all"):
        raise ValueError(f"captions must be 'first' or 'all', got {captions!r}")
    if mmap is not None and not isinstance(mmap, bool):
        raise ValueError(f"mmap must be True, False or None (= when distributed), got {mmap!r}")
    pg = resolve_group(group)
    mmap = pg is not None if mmap is None else mmap
    if not cache and (mmap or pg is not None):
        raise ValueError(
            "cache=False keeps nothing on disk, so there is nothing to memory-map and no way for "
            "ranks to share their chunks; pass cache=True (and mmap=False) or no group"
        )
    if isinstance(encoder, str):
        from .registry import load_encoder

        encoder = load_encoder(encoder)
    if isinstance(dataset, str):
        dataset = _load_sized(dataset, size, seed)
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty; nothing to embed")
    if size is not None and size > len(dataset):
        raise ValueError(
            f"size={size} but {dataset.name!r} holds {len(dataset)} items; ask for at most "
            f"{len(dataset)}, or build a larger data set first (generated ones take a size: "
            f"workbench.load_dataset({dataset.name!r}, size={size}))"
        )
    indices = list(subset_indices(len(dataset), size, seed))
    provenance = tower_provenance(encoder, dataset, size=size, seed=seed, n_rows=len(indices))
    key = cache_key(provenance)
    store = EmbeddingCache(cache_dir) if cache else None
    hit = store.open(key) if store is not None and pg is None else None
    spans = chunk_spans(len(indices), chunk_rows)
    if hit is not None:
        rows, meta = hit
    else:
        rows, meta = _compute(
            encoder,
            dataset,
            indices,
            key,
            store,
            _stamped(provenance, key),
            batch_size=batch_size,
            chunk_rows=chunk_rows,
            progress=progress,
            device=device,
            group=pg,
        )
        if mmap and pg is None:
            rows, meta = store.open(key, verify=False) or (rows, meta)
    if captions == "all":
        rows = _all_captions(
            encoder, rows.loaded(), cache_dir if cache else None, cache, batch_size
        )
        spans, mmap, meta = (
            [(0, len(rows))],
            False,
            {k: v for k, v in meta.items() if k != "chunks"},
        )
    emb = _assemble(encoder, rows, meta, spans, tower_features=tower_features, mmap=mmap)
    emb.provenance["captions"] = captions
    return emb


def _compute(
    encoder: Encoder,
    dataset: Dataset,
    indices: list[int],
    key: str,
    store: EmbeddingCache | None,
    provenance: dict[str, Any],
    *,
    batch_size: int,
    chunk_rows: int,
    progress: bool | None,
    device: str,
    group: Any,
) -> tuple[TowerRows, dict[str, Any]]:
    """Extract (one process or sharded) with the encoder on ``device`` in eval mode."""
    target = _resolve_device(device)
    if encoder.device != target:
        encoder.to(target)
    was_training = encoder.training
    encoder.train(False)
    kw = {
        "batch_size": batch_size,
        "chunk_rows": chunk_rows,
        "progress": _interactive() if progress is None else progress,
    }
    try:
        if group is not None:
            return extract_sharded(
                encoder, dataset, indices, key, store, provenance, group=group, **kw
            )
        rows = extract_missing(encoder, dataset, indices, key, store, provenance, **kw)
        names = None if dataset.class_names is None else list(dataset.class_names)
        return rows, {"class_names": names, "provenance": provenance}
    finally:
        encoder.train(was_training)


def _project(head: Any, X: Any, spans: list[tuple[int, int]], mmap: bool) -> Any:
    """(n, E) head outputs of (n, D) tower features, computed chunk by chunk (``spans``) so a
    row's value does not depend on how the rows were read; lazy for a chunked ``X`` when mmap."""
    # np.array: a chunk copied out of its read-only map (torch warns on non-writable arrays)
    if isinstance(X, ChunkedRows):
        view = X.map(lambda A: apply_head(head, np.array(A)))
        return view if mmap else np.asarray(view)
    if len(spans) <= 1:
        return apply_head(head, np.array(X))
    return np.concatenate([apply_head(head, np.array(X[a:b])) for a, b in spans])  # (n, E)


def _assemble(
    encoder: Encoder,
    rows: TowerRows,
    meta: dict[str, Any],
    spans: list[tuple[int, int]],
    *,
    tower_features: bool,
    mmap: bool,
) -> Embeddings:
    """The :class:`Embeddings` of cached tower ``rows`` under ``encoder``'s current heads
    (applied per chunk of the entry, or of ``spans`` for rows that were never cached)."""
    if "chunks" in meta:
        spans = [(int(c["start"]), int(c["stop"])) for c in meta["chunks"]]
    if not mmap and not all(
        type(getattr(rows, name)) is np.ndarray for name in ("image_tower", "text_tower")
    ):
        rows = rows.loaded()
    lazy = mmap and isinstance(rows.image_tower, ChunkedRows)
    heads = Heads.of(encoder) if lazy else encoder  # a lazy view must not follow later training
    image = _project(heads.image_head, rows.image_tower, spans, mmap)  # (n, E)
    text = _project(heads.text_head, rows.text_tower, spans, mmap)  # (n, E)
    stored = meta.get("provenance", {})
    out_prov = dict(stored)
    out_prov["encoder"] = {
        **stored.get("encoder", {}),
        "heads": hash_state_dict(encoder, include=HEAD_PREFIXES),
        "embed_dim": int(image.shape[1]),
    }
    out_prov["tower_features"] = tower_features
    return Embeddings(
        image=image,
        text=text,
        ids=rows.ids,
        labels=rows.labels,
        captions=rows.captions,
        attributes=rows.attributes,
        class_names=meta.get("class_names"),
        image_tower=rows.image_tower if tower_features else None,
        text_tower=rows.text_tower if tower_features else None,
        provenance=out_prov,
    )


def open_embeddings(
    entry: str | Path,
    encoder: Encoder | str,
    *,
    tower_features: bool = False,
    mmap: bool = True,
    verify: bool = True,
) -> Embeddings:
    """The :class:`Embeddings` of a finished cache entry, from its folder alone.

    What a notebook calls on the output of ``torchrun ... -m workbench embed`` (which prints
    the folder): no dataset is needed, the rows' ids, captions, labels and attributes are in
    the entry.

    Args:
        entry: The entry folder ``<cache_dir>/towers/<key>``.
        encoder: An :class:`Encoder` or registry id whose heads project the cached tower
            features; its towers must be the ones that made them.
        tower_features: Also return the tower features.
        mmap: Memory-map the features (default) or load them (see :func:`embed`).
        verify: Check every chunk's sha256 first (reads every byte once, loads nothing).

    Raises:
        FileNotFoundError: ``entry`` is not a committed entry folder.
        ValueError: The encoder's towers are not the entry's, or the entry is damaged.
    """
    folder = Path(entry).expanduser()
    if not (folder / "entry.json").is_file() or folder.parent.name != "towers":
        raise FileNotFoundError(
            f"{folder} is not a finished embedding cache entry (want <cache_dir>/towers/<key> "
            f"holding entry.json; an extraction still running or interrupted has none yet)"
        )
    if isinstance(encoder, str):
        from .registry import load_encoder

        encoder = load_encoder(encoder)
    opened = EmbeddingCache(folder.parent.parent).open(folder.name, verify=verify)
    if opened is None:
        raise ValueError(f"the cache entry {folder} is damaged (see the warning); re-run embed")
    rows, meta = opened
    want = meta.get("provenance", {}).get("encoder", {}).get("towers")
    if want != tower_fingerprint(encoder):
        raise ValueError(
            f"{folder} holds tower features of other towers (fingerprint {str(want)[:12]}…) than "
            f"{getattr(encoder, 'name', type(encoder).__name__)}'s; pass the encoder that made it"
        )
    return _assemble(encoder, rows, meta, [], tower_features=tower_features, mmap=mmap)


def _load_sized(name: str, size: int | None, seed: int) -> Dataset:
    """``load_dataset(name)``, passing ``size``/``seed`` to a data set that generates its items
    (synthetic-world), so ``embed(enc, "synthetic-world", size=5000)`` embeds 5,000 items."""
    import inspect

    from ..data import DATASETS, load_dataset

    _, cls, _ = DATASETS.resolve(name)
    if size is not None and getattr(cls, "generated", False):
        accepted = inspect.signature(cls).parameters
        kw = {k: v for k, v in (("size", size), ("seed", seed)) if k in accepted}
        return load_dataset(name, **kw)
    return load_dataset(name)


def _all_captions(
    encoder: Encoder, rows: TowerRows, cache_dir: Any, persist: bool, batch_size: int
) -> TowerRows:
    """One row per (item, caption): image rows repeated, extra captions' text features cached
    by string (:class:`~workbench.encoders.text_cache.TextTowerCache`)."""
    from .text_cache import TextTowerCache

    more = rows.more_captions or [[] for _ in range(len(rows))]
    extra = [c for m in more for c in m]
    bank = TextTowerCache(encoder, cache_dir, persist=persist, batch_size=batch_size)
    extra_feats = bank.features(extra) if extra else None
    item = np.repeat(np.arange(len(rows)), [1 + len(m) for m in more])  # (n_rows,)
    text, pos = [], 0
    ids, caps, attrs = [], [], []
    for i, m in enumerate(more):
        text.append(rows.text_tower[i : i + 1])
        if m:
            text.append(extra_feats[pos : pos + len(m)])
            pos += len(m)
        for k, c in enumerate([rows.captions[i], *m]):
            ids.append(f"{rows.ids[i]}#{k}")
            caps.append(c)
            attrs.append({**rows.attributes[i], "item_id": rows.ids[i], "caption_index": k})
    return TowerRows(
        image_tower=rows.image_tower[item],
        text_tower=np.concatenate(text).astype(np.float32),
        labels=rows.labels[item],
        ids=ids,
        captions=caps,
        attributes=attrs,
    )


__all__ = ["CHUNK_ROWS", "embed", "open_embeddings", "tower_provenance"]
