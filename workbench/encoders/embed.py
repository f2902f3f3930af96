"""``embed(encoder, dataset)``: batched, cached extraction of paired image/text embeddings.

Row ``i`` of the result is item ``i`` of the (optionally subsetted) dataset: its image through
``encoder.preprocess → image_tower → image_head`` and its canonical caption (``captions[0]``)
through ``tokenize → text_tower → text_head``. Results are cached on disk by
:class:`~workbench.encoders.cache.EmbeddingCache`, keyed by everything that changes them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .base import Encoder
from .cache import EmbeddingCache, cache_key, jsonable
from .embeddings import Embeddings

if TYPE_CHECKING:
    from ..data.base import Dataset


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


def embedding_provenance(
    encoder: Encoder,
    dataset: Dataset,
    *,
    size: int | None,
    seed: int,
    n_rows: int,
    tower_features: bool,
) -> dict[str, Any]:
    """What identifies one embedding extraction (the cache key is its digest, minus ``created``).

    Computes ``encoder.identity`` once (a sha256 over every weight: about 0.2 s for the default
    encoder on a 2-core CPU).
    """
    from .. import __version__

    identity = encoder.identity
    return {
        "encoder": {
            "name": identity.name,
            "weights_hash": identity.weights_hash,
            "preprocess": jsonable(identity.preprocess),
            "embed_dim": int(encoder.embed_dim),
        },
        "dataset": {
            "name": dataset.name,
            "split": dataset.split,
            "config": jsonable(dataset.config),
            "size": size,
            "seed": seed,
            "n_rows": n_rows,
        },
        "tower_features": tower_features,
        "text": "captions[0]",
        "workbench_version": __version__,
    }


@torch.no_grad()
def _extract(
    encoder: Encoder,
    dataset: Dataset,
    indices: Sequence[int],
    *,
    batch_size: int,
    tower_features: bool,
    progress: bool,
) -> tuple[dict[str, np.ndarray], list[Any]]:
    """Run the encoder over ``dataset[indices]``; returns float32 arrays and the items' metadata."""
    from tqdm.auto import tqdm

    outs: dict[str, list[np.ndarray]] = {
        k: [] for k in ("image", "text", "image_tower", "text_tower")
    }
    rows = []
    bar = tqdm(total=len(indices), desc=f"embed {dataset.name}", unit="item", disable=not progress)
    try:
        for start in range(0, len(indices), batch_size):
            items = [dataset[int(i)] for i in indices[start : start + batch_size]]
            for item in items:
                if not item.captions:
                    raise ValueError(f"{dataset.name}: item {item.id!r} has no caption to embed")
            img_feat = encoder.image_features([it.image for it in items])  # (B, D_img)
            txt_feat = encoder.text_features([it.captions[0] for it in items])  # (B, D_txt)
            outs["image"].append(encoder.image_head(img_feat).float().cpu().numpy())  # (B, D)
            outs["text"].append(encoder.text_head(txt_feat).float().cpu().numpy())  # (B, D)
            if tower_features:
                outs["image_tower"].append(img_feat.float().cpu().numpy())
                outs["text_tower"].append(txt_feat.float().cpu().numpy())
            rows.extend((it.id, it.label, it.captions[0], it.attributes) for it in items)
            bar.update(len(items))
    finally:
        bar.close()
    arrays = {k: np.concatenate(v).astype(np.float32) for k, v in outs.items() if v}
    return arrays, rows


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
) -> Embeddings:
    """Embed every image and canonical caption of ``dataset`` with ``encoder`` (cached on disk).

    Args:
        encoder: An :class:`Encoder` or a registry id for :func:`~workbench.encoders.load_encoder`.
            It is run in eval mode (its previous mode is restored) and moved to ``device``.
        dataset: A :class:`~workbench.data.base.Dataset` or an id for ``workbench.load_dataset``.
        size: Embed a deterministic subset of this many items (``subset_indices(n, size, seed)``,
            sorted); ``None`` = all.
        seed: Seed of that subset.
        batch_size: Items per forward pass.
        tower_features: Also return the pre-projection tower features.
        cache: Read and write the on-disk cache; ``False`` always recomputes and writes nothing.
        cache_dir: Cache root; default ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``.
        progress: Show a tqdm bar; ``None`` = only when interactive (Jupyter or a terminal).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...

    Returns:
        :class:`Embeddings` with ``image``/``text`` (n, D) float32 *raw* projected embeddings
        (``image_normed``/``text_normed`` for the L2-normalised ones), optional
        ``image_tower`` (n, D_img) / ``text_tower`` (n, D_txt) float32, and ids, labels
        (-1 = none), captions, attributes (JSON-able values only), class names and provenance
        (encoder identity with preprocessing, dataset, subset, version, cache key, creation time).

    Raises:
        ValueError: Bad ``size``/``batch_size``, an empty dataset or an item without captions.
    """
    from ..data.base import subset_indices

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if size is not None and size < 1:
        raise ValueError(f"size must be ≥ 1 or None (all items), got {size}")
    if isinstance(encoder, str):
        from .registry import load_encoder

        encoder = load_encoder(encoder)
    if isinstance(dataset, str):
        from ..data import load_dataset

        dataset = load_dataset(dataset)
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty; nothing to embed")
    indices = list(subset_indices(len(dataset), size, seed))
    provenance = embedding_provenance(
        encoder, dataset, size=size, seed=seed, n_rows=len(indices), tower_features=tower_features
    )
    key = cache_key(provenance)
    store = EmbeddingCache(cache_dir)
    if cache:
        hit = store.get(key)
        if hit is not None:
            return hit

    target = _resolve_device(device)
    if encoder.device != target:
        encoder.to(target)
    was_training = encoder.training
    encoder.train(False)
    try:
        arrays, rows = _extract(
            encoder,
            dataset,
            indices,
            batch_size=batch_size,
            tower_features=tower_features,
            progress=_interactive() if progress is None else progress,
        )
    finally:
        encoder.train(was_training)
    provenance["cache_key"] = key
    provenance["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    emb = Embeddings(
        image=arrays["image"],
        text=arrays["text"],
        ids=[str(r[0]) for r in rows],
        labels=np.array([-1 if r[1] is None else int(r[1]) for r in rows], dtype=np.int64),
        captions=[r[2] for r in rows],
        attributes=jsonable([dict(r[3]) for r in rows]),
        class_names=None if dataset.class_names is None else list(dataset.class_names),
        image_tower=arrays.get("image_tower"),
        text_tower=arrays.get("text_tower"),
        provenance=provenance,
    )
    if cache:
        store.put(key, emb)
    return emb


__all__ = ["embed", "embedding_provenance"]
