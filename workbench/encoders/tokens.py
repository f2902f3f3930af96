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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .cache import jsonable
from .heads import tower_fingerprint

if TYPE_CHECKING:
    from ..data.base import Dataset, Item
    from .base import Encoder

__all__ = ["TOKEN_DTYPES", "TokenFeatures", "embed_tokens", "token_provenance"]

FORMAT = 1  # bump when the file layout changes; part of every key
TOKEN_DTYPES = {"float16": np.float16, "float32": np.float32}
#: The arrays of a :class:`TokenFeatures`, as the cache stores them.
ARRAYS = ("image_tokens", "image_mask", "text_tokens", "text_mask", "caption_owner", "labels")


@dataclass
class TokenFeatures:
    """Patch tokens of ``n_img`` images and word tokens of their ``n_cap`` captions.

    Attributes:
        image_tokens: (n_img, P, C_img) patch tokens (row-major grid, class token excluded),
            float16 or float32.
        image_mask: (n_img, P) bool, ``True`` at real tokens (all ``True`` for a patch grid).
        text_tokens: (n_cap, L, C_txt) word tokens, zero at padding.
        text_mask: (n_cap, L) bool, ``True`` at real tokens, left-aligned (real tokens first,
            then padding); every caption has at least one.
        caption_owner: (n_cap,) int64, image row of each caption.
        ids: n_img item ids.
        captions: n_cap caption strings.
        labels: (n_img,) int64 class labels, ``-1`` where none.
        grid: (H, W) of the patch grid, or ``None``.
        class_names: Class names indexed by label, or ``None``.
        provenance: What produced the tokens (towers, dataset, layers, limits, version, key).
    """

    image_tokens: np.ndarray
    image_mask: np.ndarray
    text_tokens: np.ndarray
    text_mask: np.ndarray
    caption_owner: np.ndarray
    ids: list[str]
    captions: list[str]
    labels: np.ndarray
    grid: tuple[int, int] | None = None
    class_names: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, m = len(self.ids), len(self.captions)
        checks = (
            (self.image_tokens.ndim == 3 and self.image_tokens.shape[0] == n, "image_tokens", "(n_img, P, C)"),
            (self.image_mask.shape == self.image_tokens.shape[:2], "image_mask", "(n_img, P)"),
            (self.text_tokens.ndim == 3 and self.text_tokens.shape[0] == m, "text_tokens", "(n_cap, L, C)"),
            (self.text_mask.shape == self.text_tokens.shape[:2], "text_mask", "(n_cap, L)"),
            (self.caption_owner.shape == (m,), "caption_owner", "(n_cap,)"),
            (len(self.labels) == n, "labels", "(n_img,)"),
        )  # fmt: skip
        for ok, name, want in checks:
            if not ok:
                raise ValueError(
                    f"TokenFeatures.{name} must be {want} for {n} images, {m} captions"
                )
        if self.image_mask.dtype != np.bool_ or self.text_mask.dtype != np.bool_:
            raise ValueError("TokenFeatures masks must be bool arrays")
        lengths = self.text_mask.sum(axis=1)
        if not (self.text_mask == (np.arange(self.text_mask.shape[1]) < lengths[:, None])).all():
            raise ValueError("text_mask rows must be left-aligned: real tokens first, then padding")
        if m and not self.text_mask.any(axis=1).all():
            raise ValueError(
                "every caption needs at least one real token (text_mask row all False)"
            )
        if n and not self.image_mask.any(axis=1).all():
            raise ValueError("every image needs at least one real token (image_mask row all False)")
        if m and (self.caption_owner.min() < 0 or self.caption_owner.max() >= n):
            raise ValueError(f"caption_owner entries must index images in [0, {n})")

    @property
    def n_images(self) -> int:
        return len(self.ids)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    @property
    def dims(self) -> tuple[int, int]:
        """``(C_img, C_txt)``: token widths of the two towers."""
        return int(self.image_tokens.shape[2]), int(self.text_tokens.shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes held by the token arrays (what the cache stores, headers aside)."""
        return int(sum(getattr(self, a).nbytes for a in ARRAYS))

    def subset(self, image_rows: Sequence[int] | np.ndarray) -> TokenFeatures:
        """Images ``image_rows`` (in that order) with all their captions; ``caption_owner`` is
        re-indexed into the new rows."""
        rows = np.asarray(image_rows, dtype=np.int64)
        if rows.ndim != 1 or len(np.unique(rows)) != len(rows):
            raise ValueError("image_rows must be a 1-D sequence of distinct image indices")
        new_index = np.full(self.n_images, -1, dtype=np.int64)
        new_index[rows] = np.arange(len(rows))
        keep = np.flatnonzero(new_index[self.caption_owner] >= 0)
        keep = keep[np.argsort(new_index[self.caption_owner[keep]], kind="stable")]
        length = max(1, int(self.text_mask[keep].sum(axis=1).max())) if len(keep) else 1
        return replace(
            self,
            image_tokens=self.image_tokens[rows],
            image_mask=self.image_mask[rows],
            text_tokens=self.text_tokens[keep, :length],
            text_mask=self.text_mask[keep, :length],
            caption_owner=new_index[self.caption_owner[keep]],
            ids=[self.ids[i] for i in rows],
            captions=[self.captions[i] for i in keep],
            labels=self.labels[rows],
            provenance=dict(self.provenance),
        )

    @classmethod
    def concat(cls, parts: Sequence[TokenFeatures]) -> TokenFeatures:
        """Rows of every part in order (captions padded to the longest; ``caption_owner``
        shifted). Token widths, grids and storage dtypes must agree; class names are kept only
        when every part has the same ones. ``provenance`` lists the parts'."""
        parts = list(parts)
        if not parts:
            raise ValueError("concat needs at least one TokenFeatures")
        first = parts[0]
        for p in parts[1:]:
            if p.dims != first.dims or p.image_tokens.shape[1] != first.image_tokens.shape[1]:
                raise ValueError("concat: token widths or patch counts differ between parts")
            if p.image_tokens.dtype != first.image_tokens.dtype:
                raise ValueError("concat: storage dtypes differ between parts")
        length = max(p.text_tokens.shape[1] for p in parts)
        pad = lambda a, fill: np.pad(  # noqa: E731
            a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=fill
        )
        offsets = np.cumsum([0] + [p.n_images for p in parts[:-1]])
        names = {tuple(p.class_names) if p.class_names else None for p in parts}
        return cls(
            image_tokens=np.concatenate([p.image_tokens for p in parts]),
            image_mask=np.concatenate([p.image_mask for p in parts]),
            text_tokens=np.concatenate([pad(p.text_tokens, 0) for p in parts]),
            text_mask=np.concatenate([pad(p.text_mask, False) for p in parts]),
            caption_owner=np.concatenate([p.caption_owner + o for p, o in zip(parts, offsets)]),
            ids=[i for p in parts for i in p.ids],
            captions=[c for p in parts for c in p.captions],
            labels=np.concatenate([p.labels for p in parts]),
            grid=first.grid,
            class_names=first.class_names if len(names) == 1 else None,
            provenance={"concat": [p.provenance for p in parts]},
        )

    def image_batch(
        self, rows: np.ndarray, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (B, P, C_img) float32, mask (B, P) bool)`` of images ``rows`` on ``device``."""
        return _batch(self.image_tokens, self.image_mask, rows, device)

    def text_batch(
        self, rows: np.ndarray, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (B, L_b, C_txt) float32, mask (B, L_b) bool)`` of captions ``rows``, trimmed
        to the longest caption among them."""
        return _batch(self.text_tokens, self.text_mask, rows, device)

    def pooled(self, side: str) -> np.ndarray:
        """Masked mean of each row's tokens, (n, C) float32 (``"image"`` or ``"text"``)."""
        tokens, mask = {
            "image": (self.image_tokens, self.image_mask),
            "text": (self.text_tokens, self.text_mask),
        }[_side(side)]
        w = mask[..., None].astype(np.float32)  # (n, L, 1)
        return (tokens.astype(np.float32) * w).sum(1) / w.sum(1)


def _side(side: str) -> str:
    if side not in ("image", "text"):
        raise ValueError(f"side must be 'image' or 'text', got {side!r}")
    return side


def _batch(
    tokens: np.ndarray, mask: np.ndarray, rows: np.ndarray, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.asarray(rows, dtype=np.int64)
    m = mask[rows]  # (B, L)
    length = max(1, int(m.any(axis=0).nonzero()[0].max()) + 1) if m.any() else 1
    t = torch.from_numpy(np.ascontiguousarray(tokens[rows, :length])).to(device).float()
    return t, torch.from_numpy(np.ascontiguousarray(m[:, :length])).to(device)


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
        "dataset": {
            "name": dataset.name,
            "split": dataset.split,
            "config": jsonable(dataset.config),
            "size": size,
            "seed": seed,
            "n_rows": n_rows,
        },
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
    from .token_cache import TokenCache, token_key

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
