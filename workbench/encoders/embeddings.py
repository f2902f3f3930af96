"""The :class:`Embeddings` container returned by :func:`workbench.embed` and consumed by every probe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Embeddings:
    """Paired image/text embeddings of one dataset under one encoder, with row metadata.

    Row ``i`` of every array describes item ``i`` of the dataset: ``image[i]`` embeds its image,
    ``text[i]`` its canonical caption (``captions[i]``).

    Attributes:
        image: (n, D) float32 *raw* (un-normalised) image embeddings after the projection head.
        text: (n, D) float32 raw text embeddings after the projection head.
        ids: n item ids.
        labels: (n,) int64 class labels, ``-1`` where the item has none.
        captions: n canonical captions (the ones embedded in ``text``).
        attributes: n attribute dicts (synthetic-world factors, paths, keywords...).
        class_names: class names indexed by label, or ``None`` for unlabelled data.
        image_tower: (n, D_img) pre-projection image features, when extracted.
        text_tower: (n, D_txt) pre-projection text features, when extracted.
        provenance: encoder identity, dataset config, workbench version, creation time.
    """

    image: np.ndarray
    text: np.ndarray
    ids: list[str]
    labels: np.ndarray
    captions: list[str]
    attributes: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] | None = None
    image_tower: np.ndarray | None = None
    text_tower: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("image", "text", "image_tower", "text_tower"):
            arr = getattr(self, name)
            if arr is not None and arr.shape[0] != n:
                raise ValueError(f"Embeddings.{name} has {arr.shape[0]} rows but there are {n} ids")
        if len(self.labels) != n or len(self.captions) != n:
            raise ValueError("Embeddings: labels and captions must have one entry per id")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def image_normed(self) -> np.ndarray:
        """(n, D) L2-normalised image embeddings."""
        return self.image / np.linalg.norm(self.image, axis=1, keepdims=True)

    @property
    def text_normed(self) -> np.ndarray:
        """(n, D) L2-normalised text embeddings."""
        return self.text / np.linalg.norm(self.text, axis=1, keepdims=True)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    def subset(self, idx: np.ndarray | list[int]) -> Embeddings:
        """Rows ``idx`` as a new :class:`Embeddings` (arrays are copied)."""
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Embeddings(
            image=self.image[idx],
            text=self.text[idx],
            ids=[self.ids[i] for i in idx],
            labels=self.labels[idx],
            captions=[self.captions[i] for i in idx],
            attributes=[self.attributes[i] for i in idx] if self.attributes else [],
            class_names=self.class_names,
            image_tower=pick(self.image_tower),
            text_tower=pick(self.text_tower),
            provenance=dict(self.provenance),
        )
