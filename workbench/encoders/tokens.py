"""Token-level tower features, cached on disk: patch tokens per image, word tokens per caption.

:func:`embed_tokens` runs :meth:`Encoder.tower_tokens` over a dataset — every image once, and
up to ``max_captions`` captions per image (all of them by default, COCO/Flickr style) — and
returns :class:`TokenFeatures`: ``(n_img, P, C_img)`` image tokens and ``(n_cap, L, C_txt)``
word tokens padded to the longest caption with a ``(n_cap, L)`` mask, ``caption_owner[t]`` the
image row of caption ``t``. Token methods (CDDS, its VSE baseline) train on these without
running a tower.

Cache (:mod:`~workbench.encoders.token_cache`), under ``<cache_dir>/tokens/`` beside the
embedding cache and with its conventions::

    <key>.safetensors   image_tokens, image_mask, text_tokens, text_mask, caption_owner, labels;
                        ids / captions / grid / class names as JSON in the header
    <key>.json          {"format", "key", "sha256", "provenance"}

``key`` digests the *towers* (:func:`~workbench.encoders.heads.tower_fingerprint`: weights
without the heads, plus preprocessing), the dataset's config and subset, both layers, the
caption and token limits, the storage dtype and the workbench version — so re-training heads
never invalidates tokens. The JSON is written last and names the sha256 of the tensor file; an
entry that fails the check warns with :class:`~workbench.encoders.cache.CacheCorruptedWarning`
and is recomputed. Tokens are stored as float16 by default (half the bytes, ~3 decimal digits:
far below what a few hundred training steps resolve); :attr:`TokenFeatures.nbytes` measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .cache import dataset_provenance, jsonable
from .heads import tower_fingerprint
from .token_cache import TokenCache, token_key
from .token_features import FORMAT, TOKEN_DTYPES, TokenFeatures

if TYPE_CHECKING:
    from ..data.base import Dataset, Item
    from .base import Encoder

__all__ = ["TOKEN_DTYPES", "TokenFeatures", "embed_tokens", "token_provenance"]


# -- extraction ------------------------------------------------------------------------------
def _layer_index(encoder: Encoder, side: str, layer: int) -> int:
    n = len(encoder.tower_blocks(side))
    if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
        raise ValueError(f"{side}_layer must be an int in [-{n}, {n}), got {layer!r}")
    return layer % n


def token_provenance(
    encoder: Encoder,
    dataset: Dataset,
    *,
    size: int | None,
    seed: int,
    n_rows: int,
    image_layer: int,
    text_layer: int,
    max_captions: int | None,
    max_text_tokens: int,
    dtype: str,
) -> dict[str, Any]:
    """What identifies one token extraction (the cache key digests it, minus ``created``)."""
    from .. import __version__

    return {
        "format": FORMAT,
        "towers": {
            "name": encoder.name,
            "tower_fingerprint": tower_fingerprint(encoder),
            "preprocess": jsonable(getattr(encoder, "preprocess_config", {})),
        },
        "dataset": dataset_provenance(dataset, size, seed, n_rows),
        "image_layer": image_layer,
        "text_layer": text_layer,
        "max_captions": max_captions,
        "max_text_tokens": max_text_tokens,
        "dtype": dtype,
        "workbench_version": __version__,
    }


@torch.no_grad()
def _extract(
    encoder: Encoder,
    dataset: Dataset,
    indices: Sequence[int],
    *,
    image_layer: int,
    text_layer: int,
    max_captions: int | None,
    max_text_tokens: int,
    batch_size: int,
    dtype: type,
    progress: bool,
    skip_unreadable: bool,
) -> tuple[TokenFeatures, list[int]]:
    from tqdm.auto import tqdm

    def load(i: int) -> Item | None:
        try:
            return dataset[i]
        except Exception as err:  # PIL raises many types; only skipped when asked to
            if not skip_unreadable or isinstance(err, (IndexError, KeyboardInterrupt)):
                raise
            skipped.append(i)
            return None

    skipped: list[int] = []
    images, image_masks, texts, owners = [], [], [], []
    ids, captions, labels, grid = [], [], [], None
    bar = tqdm(total=len(indices), desc=f"tokens {dataset.name}", unit="item", disable=not progress)
    try:
        for start in range(0, len(indices), batch_size):
            loaded = (load(int(i)) for i in indices[start : start + batch_size])
            items = [it for it in loaded if it is not None]
            if not items:
                continue
            caps = []
            for item in items:
                if not item.captions:
                    raise ValueError(f"{dataset.name}: item {item.id!r} has no caption")
                own = list(item.captions)[:max_captions]
                owners.extend([len(ids)] * len(own))
                caps.extend(own)
                ids.append(str(item.id))
                labels.append(-1 if item.label is None else int(item.label))
            image = encoder.tower_tokens("image", [it.image for it in items], layer=image_layer)
            grid = image.grid
            images.append(image.tokens.float().cpu().numpy().astype(dtype))  # (B, P, C_img)
            image_masks.append(image.mask.cpu().numpy())
            text = encoder.tower_tokens("text", caps, layer=text_layer)
            tok = text.tokens[:, :max_text_tokens].float().cpu().numpy()  # (B_cap, L, C_txt)
            msk = text.mask[:, :max_text_tokens].cpu().numpy()
            texts.extend((t[: int(k.sum())], int(k.sum())) for t, k in zip(tok, msk))
            captions.extend(caps)
            bar.update(len(items))
    finally:
        bar.close()
    length = max(n for _, n in texts)
    width = texts[0][0].shape[1]
    text_tokens = np.zeros((len(texts), length, width), dtype=dtype)
    text_mask = np.zeros((len(texts), length), dtype=bool)
    for row, (t, n) in enumerate(texts):
        # real tokens first: the text towers' masks are left-aligned, padding at the end
        text_tokens[row, :n] = t
        text_mask[row, :n] = True
    features = TokenFeatures(
        image_tokens=np.concatenate(images),
        image_mask=np.concatenate(image_masks).astype(bool),
        text_tokens=text_tokens,
        text_mask=text_mask,
        caption_owner=np.asarray(owners, dtype=np.int64),
        ids=ids,
        captions=captions,
        labels=np.asarray(labels, dtype=np.int64),
        grid=None if grid is None else (int(grid[0]), int(grid[1])),
        class_names=None if dataset.class_names is None else list(dataset.class_names),
    )
    return features, skipped


def embed_tokens(
    encoder: Encoder | str,
    dataset: Dataset | str,
    *,
    size: int | None = None,
    seed: int = 0,
    image_layer: int = -1,
    text_layer: int = -1,
    max_captions: int | None = None,
    max_text_tokens: int = 64,
    dtype: str = "float16",
    skip_unreadable: bool = False,
    batch_size: int = 32,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    device: str = "auto",
) -> TokenFeatures:
    """Patch tokens of every image and word tokens of its captions (cached on disk).

    Args:
        encoder: An :class:`Encoder` (or registry id) exposing :meth:`Encoder.tower_tokens`.
        dataset: A :class:`~workbench.data.base.Dataset` or an id for ``workbench.load_dataset``.
        size: A deterministic subset of this many items (``subset_indices``); ``None`` = all.
        seed: Seed of that subset.
        image_layer: Image block whose output gives the patch tokens (``tower_blocks`` index;
            ``-1``: the last, after the final norm). Default encoder at 96 px: ``-1`` is a 3×3
            grid of 1280 channels, ``10`` a 6×6 grid of 112; at 128 px ``-1`` gives 4×4.
        text_layer: Text block whose output gives the word tokens (``-1``: the last).
        max_captions: Keep at most this many captions per image (``None``: all of them).
        max_text_tokens: Keep each caption's first this many tokens (64: MiniLM's special tokens
            and a full sentence; longer descriptions are cut — the text tower still runs on the
            whole caption, so the kept tokens see their full context).
        dtype: Storage dtype, ``"float16"`` (default: half the bytes) or ``"float32"``.
        skip_unreadable: Leave out items whose loading raises (e.g. an openclipart PNG that PIL
            refuses as a decompression bomb) instead of failing; their dataset indices are
            listed in ``provenance["skipped"]`` (deterministic, so cached like the rest).
        batch_size: Images per forward pass (their captions go through the text tower together).
        cache: Read and write the on-disk cache.
        cache_dir: Cache root (default ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``).
        progress: Show a tqdm bar (``None``: only when interactive).
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``, ...

    Returns:
        :class:`TokenFeatures`; its ``provenance`` holds the key and creation time.

    Raises:
        ValueError: Bad limits, layers or dtype, an empty dataset, an item without captions.
    """
    from ..data.base import subset_indices

    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
    if size is not None and not (isinstance(size, int) and size >= 1):
        raise ValueError(f"size must be an int ≥ 1 or None (all items), got {size!r}")
    if max_captions is not None and not (isinstance(max_captions, int) and max_captions >= 1):
        raise ValueError(f"max_captions must be an int ≥ 1 or None (all), got {max_captions!r}")
    if not (isinstance(max_text_tokens, int) and max_text_tokens >= 1):
        raise ValueError(f"max_text_tokens must be an int ≥ 1, got {max_text_tokens!r}")
    if dtype not in TOKEN_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(TOKEN_DTYPES)}, got {dtype!r}")
    if isinstance(encoder, str):
        from .registry import load_encoder

        encoder = load_encoder(encoder)
    if isinstance(dataset, str):
        from ..data import load_dataset

        dataset = load_dataset(dataset)
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty; nothing to embed")
    layers = _layer_index(encoder, "image", image_layer), _layer_index(encoder, "text", text_layer)
    indices = list(subset_indices(len(dataset), size, seed))
    provenance = token_provenance(
        encoder, dataset, size=size, seed=seed, n_rows=len(indices), image_layer=layers[0],
        text_layer=layers[1], max_captions=max_captions, max_text_tokens=max_text_tokens,
        dtype=dtype,
    )  # fmt: skip
    provenance["skip_unreadable"] = skip_unreadable
    key = token_key(provenance)
    store = TokenCache(cache_dir)
    if cache:
        hit = store.get(key)
        if hit is not None:
            return hit
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(auto if device == "auto" else device)
    if encoder.device != target:
        encoder.to(target)
    was_training = encoder.training
    encoder.train(False)
    try:
        features, skipped = _extract(
            encoder, dataset, indices, image_layer=layers[0], text_layer=layers[1],
            max_captions=max_captions, max_text_tokens=max_text_tokens, batch_size=batch_size,
            dtype=TOKEN_DTYPES[dtype], progress=_interactive() if progress is None else progress,
            skip_unreadable=skip_unreadable,
        )  # fmt: skip
    finally:
        encoder.train(was_training)
    provenance["skipped"] = skipped
    provenance["cache_key"] = key
    provenance["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    features.provenance = provenance
    if cache:
        store.put(key, features)
    return features


def _interactive() -> bool:
    """True in a Jupyter kernel or when stderr is a terminal (as :func:`workbench.embed`)."""
    import sys

    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    if ip is not None and type(ip).__name__ == "ZMQInteractiveShell":
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
