"""Where a run's rows come from: cached tower features or dataset items, the seeded hold-out
split, and the order in which training rows are visited.

Two sources, one interface: :meth:`Source.batch` gathers rows by index and
:meth:`Source.towers` turns such a batch into (B, D_img) / (B, D_txt) tower features — read
from the cache (:class:`CachedSource`, heads-only training) or computed by running the towers
on images and tokens (:class:`ItemSource`). Row order is a pure function of the seed and the
micro-batch index, which is what makes a resumed run visit the same rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from workbench.train.config import TrainConfig


class Source:
    """Rows of the training data, addressed by index.

    Attributes:
        n: Number of rows (pairs).
        cached: ``True`` when tower features are read from a cache, not computed.
    """

    n: int
    cached: bool

    def batch(self, rows: np.ndarray) -> dict[str, Any]:
        """The rows ``rows`` (int array) as a dict with ``captions``, ``attributes``, ``labels``
        ((B,) int64, -1 where none), ``indices`` ((B,) int64) and the tower inputs."""
        raise NotImplementedError

    def towers(
        self, encoder: nn.Module, batch: dict[str, Any], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``(image_tower (B, D_img), text_tower (B, D_txt), extra)`` for a :meth:`batch`;
        ``extra`` holds ``pixels``/``tokens`` when the towers ran."""
        raise NotImplementedError


class CachedSource(Source):
    """Cached tower features of :class:`~workbench.encoders.embeddings.Embeddings`, on ``device``."""

    cached = True

    def __init__(self, emb: Any, device: torch.device) -> None:
        if emb.image_tower is None or emb.text_tower is None:
            raise ValueError(
                "cached (heads-only) training needs Embeddings with image_tower and text_tower; "
                "embed with tower_features=True, or set TrainConfig.data='items'"
            )
        self.n = len(emb)
        self.image_tower = torch.as_tensor(np.asarray(emb.image_tower), dtype=torch.float32).to(
            device
        )
        self.text_tower = torch.as_tensor(np.asarray(emb.text_tower), dtype=torch.float32).to(
            device
        )
        self.captions = list(emb.captions)
        self.attributes = list(emb.attributes) if emb.attributes else [{}] * self.n
        self.labels = torch.as_tensor(np.asarray(emb.labels), dtype=torch.long)
        self.ids = list(emb.ids)

    def batch(self, rows: np.ndarray) -> dict[str, Any]:
        idx = torch.as_tensor(rows, dtype=torch.long)
        dev = idx.to(self.image_tower.device)
        return {
            "image_tower": self.image_tower[dev],
            "text_tower": self.text_tower[dev],
            "captions": [self.captions[i] for i in rows],
            "attributes": [self.attributes[i] for i in rows],
            "labels": self.labels[idx],
            "indices": idx,
        }

    def towers(self, encoder, batch, device):
        return batch["image_tower"], batch["text_tower"], {}


class ItemSource(Source):
    """Dataset items (PIL images and captions); the towers run on every batch."""

    cached = False

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.n = len(dataset)

    @property
    def ids(self) -> list[str]:
        """Item ids (reads each item once; only the id-hash hold-out split needs them)."""
        return [str(self.dataset[i].id) for i in range(self.n)]

    def batch(self, rows: np.ndarray) -> dict[str, Any]:
        items = [self.dataset[int(i)] for i in rows]
        return {
            "images": [it.image for it in items],
            "captions": [it.captions[0] for it in items],
            "attributes": [it.attributes for it in items],
            "labels": torch.tensor([-1 if it.label is None else it.label for it in items]),
            "indices": torch.as_tensor(rows, dtype=torch.long),
        }

    def towers(self, encoder, batch, device):
        pixels = encoder.preprocess(batch["images"]).to(device)
        tokens = {k: v.to(device) for k, v in encoder.tokenize(batch["captions"]).items()}
        extra = {"pixels": pixels, "tokens": tokens}
        return encoder.image_tower(pixels), encoder.text_tower(tokens), extra


def make_source(
    cached: bool,
    embeddings: Any,
    dataset: Any,
    config: TrainConfig,
    encoder: nn.Module,
    device: torch.device,
) -> Source:
    """The run's source: ``embeddings`` when cached and given; else the dataset (``dataset`` or
    ``load_dataset(config.dataset)``) as items, or embedded once with tower features."""
    if cached and embeddings is not None:
        return CachedSource(embeddings, device)
    if dataset is None:
        from workbench.data import load_dataset

        dataset = load_dataset(config.dataset, **config.dataset_kwargs)
    if not cached:
        return ItemSource(dataset)
    from workbench.encoders.embed import embed

    emb = embed(encoder, dataset, tower_features=True, progress=False, device=str(device))
    return CachedSource(emb, device)


def split_rows(
    n: int,
    holdout: float,
    seed: int,
    *,
    by: str = "row",
    ids: list[str] | None = None,
    attributes: list[dict[str, Any]] | None = None,
    salt: str = "val",
) -> tuple[np.ndarray, np.ndarray]:
    """``(train rows, hold-out rows)``, each sorted.

    ``by="row"``: a seeded random choice of ``holdout`` rows (a count or a fraction). ``by="id"``:
    the rows whose id hashes below ``holdout`` (a fraction) with ``salt``
    (:func:`workbench.data.splits.id_unit`) — independent of order, subset and seed, and rows of
    one item (``attributes["item_id"]``, e.g. several captions of an image) stay together.
    """
    if by == "id":
        if ids is None or len(ids) != n:
            raise ValueError("holdout_by='id' needs one id per row")
        if not 0 < holdout < 1:
            raise ValueError(
                f"holdout_by='id' needs holdout as a fraction in (0, 1), got {holdout}"
            )
        from workbench.data.splits import id_unit

        attrs = attributes or [{}] * n
        groups = [
            str(a.get("item_id", i)) if isinstance(a, dict) else i for i, a in zip(ids, attrs)
        ]
        held = np.array([id_unit(g, salt) < holdout for g in groups])
        if n - int(held.sum()) < 2:
            raise ValueError(f"holdout={holdout} by id leaves {n - int(held.sum())} training pairs")
        return np.flatnonzero(~held), np.flatnonzero(held)
    if by != "row":
        raise ValueError(f"holdout_by must be 'row' or 'id', got {by!r}")
    h = round(holdout * n) if holdout < 1 else int(holdout)
    if n - h < 2:
        raise ValueError(f"holdout={holdout} leaves {n - h} training pairs out of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[h:]), np.sort(perm[:h])


def holdout_split(source: Source, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_rows` of ``source`` as ``config`` asks (``holdout``, ``holdout_by``, seed)."""
    by_id = config.holdout_by == "id"
    return split_rows(
        source.n,
        config.holdout,
        config.seed,
        by=config.holdout_by,
        ids=source.ids if by_id else None,
        attributes=getattr(source, "attributes", None) if by_id else None,
    )


def global_rows(train_rows: np.ndarray, micro: int, k: int, seed: int) -> np.ndarray:
    """Rows of the ``k``-th global micro-batch: epochs of seeded permutations, last partial batch
    of each epoch dropped (a repeated pair would be its own negative)."""
    per_epoch = len(train_rows) // micro
    if per_epoch == 0:
        raise ValueError(
            f"the global micro-batch ({micro}) is larger than the training set "
            f"({len(train_rows)} pairs); lower batch_size or holdout"
        )
    epoch, pos = divmod(k, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(len(train_rows))
    return train_rows[perm[pos * micro : (pos + 1) * micro]]
