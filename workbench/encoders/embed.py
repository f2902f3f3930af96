"""``embed(encoder, dataset)``: batched, cached extraction of paired image/text embeddings.

Row ``i`` of the result is item ``i`` of the (optionally subsetted) dataset: its image through
``encoder.preprocess → image_tower`` and its canonical caption (``captions[0]``) through
``tokenize → text_tower``, then through the encoder's two heads. The *tower* features are what
is cached (:class:`~workbench.encoders.cache.EmbeddingCache`), keyed by the towers alone
(:func:`~workbench.encoders.heads.tower_fingerprint`) and the data: the heads are applied on
every call, so retraining heads never re-runs a tower. Extraction is written chunk by chunk, so
an interrupted run loses at most one chunk and the next call computes only what is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .base import Encoder, hash_state_dict
from .cache import EmbeddingCache, TowerRows, cache_key, jsonable
from .embeddings import Embeddings
from .heads import HEAD_PREFIXES, apply_head, tower_fingerprint

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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
        "dataset": {
            "name": dataset.name,
            "split": dataset.split,
            "config": jsonable(dataset.config),
            "size": size,
            "seed": seed,
            "n_rows": n_rows,
        },
        "text": "captions[0]",
        "workbench_version": __version__,
    }


@torch.no_grad()
def _extract_chunk(
    encoder: Encoder, dataset: Dataset, indices: Sequence[int], *, batch_size: int, bar: Any
) -> TowerRows:
    """Tower features and row metadata of ``dataset[indices]``."""
    img, txt, rows = [], [], []
    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start : start + batch_size]]
        for item in items:
            if not item.captions:
                raise ValueError(f"{dataset.name}: item {item.id!r} has no caption to embed")
        img.append(encoder.image_features([it.image for it in items]).float().cpu().numpy())
        txt.append(encoder.text_features([it.captions[0] for it in items]).float().cpu().numpy())
        rows.extend(items)
        bar.update(len(items))
    return TowerRows(
        image_tower=np.concatenate(img).astype(np.float32),  # (n, D_img)
        text_tower=np.concatenate(txt).astype(np.float32),  # (n, D_txt)
        labels=np.array([-1 if it.label is None else int(it.label) for it in rows], np.int64),
        ids=[str(it.id) for it in rows],
        captions=[it.captions[0] for it in rows],
        attributes=jsonable([dict(it.attributes) for it in rows]),
    )


def _towers(
    encoder: Encoder,
    dataset: Dataset,
    indices: Sequence[int],
    key: str,
    store: EmbeddingCache | None,
    provenance: dict[str, Any],
    *,
    batch_size: int,
    chunk_rows: int,
    progress: bool,
) -> TowerRows:
    """Every row's tower features: cached chunks reused, missing chunks computed (and written),
    then the entry committed with ``provenance`` (already stamped with key and time)."""
    from tqdm.auto import tqdm

    spans = [(a, min(a + chunk_rows, len(indices))) for a in range(0, len(indices), chunk_rows)]
    done = store.done_chunks(key) if store is not None else {}
    parts: dict[tuple[int, int], TowerRows] = {}
    for span, sha in done.items():
        if span in spans:
            part = store.read_chunk(key, *span, sha256=sha)
            if part is not None:
                parts[span] = part
    todo = [s for s in spans if s not in parts]
    n_todo = sum(b - a for a, b in todo)
    bar = tqdm(
        total=n_todo, desc=f"embed {dataset.name}", unit="item", disable=not progress or not n_todo
    )
    shas = {s: done[s] for s in parts}
    try:
        for a, b in todo:
            part = _extract_chunk(encoder, dataset, indices[a:b], batch_size=batch_size, bar=bar)
            parts[(a, b)] = part
            if store is not None:
                shas[(a, b)] = store.put_chunk(key, a, part)
    finally:
        bar.close()
    if store is not None:
        store.commit(
            key,
            shas,
            n_rows=len(indices),
            class_names=None if dataset.class_names is None else list(dataset.class_names),
            provenance=provenance,
        )
    return TowerRows.concat([parts[s] for s in spans])


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
        cache_dir: Cache root; default ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``.
        progress: Show a tqdm bar; ``None`` = only when interactive (Jupyter or a terminal).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        chunk_rows: Rows per cache chunk (what an interrupted extraction can lose at most).

    Returns:
        :class:`Embeddings` with ``image``/``text`` (n, D) float32 *raw* projected embeddings
        (``image_normed``/``text_normed`` for the L2-normalised ones), optional
        ``image_tower`` (n, D_img) / ``text_tower`` (n, D_txt) float32, and ids, labels
        (-1 = none), captions, attributes (JSON-able values only), class names and provenance
        (towers' fingerprint with preprocessing, the heads' hash, dataset, subset, version,
        cache key, creation time).

    Raises:
        ValueError: Bad ``size``/``batch_size``/``chunk_rows``, an empty dataset or an item
            without captions.
    """
    from ..data.base import subset_indices

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int ≥ 1, got {chunk_rows!r}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be an int ≥ 1 or None (all items), got {size!r}")
    if isinstance(encoder, str):
        from .registry import load_encoder

        encoder = load_encoder(encoder)
    if isinstance(dataset, str):
        from ..data import load_dataset

        dataset = load_dataset(dataset)
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
    hit = store.get(key) if store is not None else None
    if hit is not None:
        rows, meta = hit
        class_names, stored = meta.get("class_names"), meta.get("provenance", {})
    else:
        stored = _stamped(provenance, key)
        rows = _compute(
            encoder, dataset, indices, key, store, stored, batch_size, chunk_rows, progress, device
        )
        class_names = None if dataset.class_names is None else list(dataset.class_names)
    image = apply_head(encoder.image_head, rows.image_tower)  # (n, E)
    text = apply_head(encoder.text_head, rows.text_tower)  # (n, E)
    out_prov = dict(stored)
    out_prov["encoder"] = {
        **stored.get("encoder", provenance["encoder"]),
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
        class_names=class_names,
        image_tower=rows.image_tower if tower_features else None,
        text_tower=rows.text_tower if tower_features else None,
        provenance=out_prov,
    )


def _compute(
    encoder: Encoder,
    dataset: Dataset,
    indices: list[int],
    key: str,
    store: EmbeddingCache | None,
    provenance: dict[str, Any],
    batch_size: int,
    chunk_rows: int,
    progress: bool | None,
    device: str,
) -> TowerRows:
    target = _resolve_device(device)
    if encoder.device != target:
        encoder.to(target)
    was_training = encoder.training
    encoder.train(False)
    try:
        return _towers(
            encoder,
            dataset,
            indices,
            key,
            store,
            provenance,
            batch_size=batch_size,
            chunk_rows=chunk_rows,
            progress=_interactive() if progress is None else progress,
        )
    finally:
        encoder.train(was_training)


__all__ = ["CHUNK_ROWS", "embed", "tower_provenance"]
