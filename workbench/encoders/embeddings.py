"""The :class:`Embeddings` container returned by :func:`workbench.embed` and consumed by every probe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .chunked import ChunkedRows


def _normed(X: Any) -> np.ndarray | ChunkedRows:
    """Rows of ``X`` (n, D) divided by their L2 norms; lazily, chunk by chunk, when chunked."""
    if isinstance(X, ChunkedRows):
        return X.map(lambda A: A / np.linalg.norm(A, axis=1, keepdims=True))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@dataclass
class Embeddings:
    """Paired image/text embeddings of one dataset under one encoder, with row metadata.

    Row ``i`` of every array describes item ``i`` of the dataset: ``image[i]`` embeds its image,
    ``text[i]`` its canonical caption (``captions[i]``).

    Attributes:
        image: (n, D) float32 *raw* (un-normalised) image embeddings after the projection head:
            an array, or a :class:`~workbench.encoders.chunked.ChunkedRows` (rows read chunk by
            chunk from the cache; every probe streams it) from ``embed(..., mmap=True)``.
        text: (n, D) float32 raw text embeddings after the projection head (likewise).
        ids: n item ids.
        labels: (n,) int64 class labels, ``-1`` where the item has none.
        captions: n canonical captions (the ones embedded in ``text``).
        attributes: n attribute dicts (synthetic-world factors, paths, keywords...).
        class_names: class names indexed by label, or ``None`` for unlabelled data.
        image_tower: (n, D_img) pre-projection image features, when extracted.
        text_tower: (n, D_txt) pre-projection text features, when extracted.
        provenance: encoder identity, dataset config, workbench version, creation time.
    """

    image: np.ndarray | ChunkedRows
    text: np.ndarray | ChunkedRows
    ids: list[str]
    labels: np.ndarray
    captions: list[str]
    attributes: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] | None = None
    image_tower: np.ndarray | ChunkedRows | None = None
    text_tower: np.ndarray | ChunkedRows | None = None
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
    def image_normed(self) -> np.ndarray | ChunkedRows:
        """(n, D) L2-normalised image embeddings (a lazy view when ``image`` is chunked)."""
        return _normed(self.image)

    @property
    def text_normed(self) -> np.ndarray | ChunkedRows:
        """(n, D) L2-normalised text embeddings (a lazy view when ``text`` is chunked)."""
        return _normed(self.text)

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

    def shard(self, rank: int, world_size: int) -> Embeddings:
        """Rank ``rank``'s rows of ``world_size``: the input of a distributed probe.

        The rows are cut into ``world_size`` contiguous, near-equal blocks — at chunk boundaries
        when the arrays are :class:`~workbench.encoders.chunked.ChunkedRows` (``embed(...,
        mmap=True)`` of a several-chunk entry; the block stays lazy), else at any row. Blocks
        are disjoint and together hold every row once, rank 0's first. With chunked arrays each
        rank streams exactly the chunks one process would, so a probe given ``group=`` adds
        the same per-chunk partial sums in another order: the single-process result to float64
        round-off (with plain arrays, to the float32 round-off of a chunk's Gram product).

        >>> import numpy as np
        >>> e = Embeddings(np.eye(5), np.eye(5), list("abcde"), np.zeros(5, int), list("abcde"))
        >>> e.shard(0, 2).ids, e.shard(1, 2).ids
        (['a', 'b', 'c'], ['d', 'e'])
        """
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an int ≥ 1, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        arrays = [self.image, self.text, self.image_tower, self.text_tower]
        chunked = [a for a in arrays if isinstance(a, ChunkedRows)]
        if chunked:
            spans = chunked[0].spans
            if any(a.spans != spans for a in chunked):
                raise ValueError("Embeddings.shard: chunked arrays with different chunk spans")
            mine = np.array_split(np.arange(len(spans)), world_size)[rank]
            rows = np.concatenate(
                [np.arange(*spans[c]) for c in mine] or [np.zeros(0, np.int64)]
            ).astype(np.int64)
        else:
            rows = np.array_split(np.arange(len(self)), world_size)[rank]

        def pick(a: Any) -> Any:
            if a is None:
                return None
            if isinstance(a, ChunkedRows):
                return a.select_chunks(mine)
            return a[rows]

        return Embeddings(
            image=pick(self.image),
            text=pick(self.text),
            ids=[self.ids[i] for i in rows],
            labels=np.asarray(self.labels)[rows],
            captions=[self.captions[i] for i in rows],
            attributes=[self.attributes[i] for i in rows] if self.attributes else [],
            class_names=self.class_names,
            image_tower=pick(self.image_tower),
            text_tower=pick(self.text_tower),
            provenance={**self.provenance, "shard": {"rank": rank, "world_size": world_size}},
        )

    @classmethod
    def concat(
        cls, parts: Sequence[Embeddings], *, names: Sequence[str] | None = None
    ) -> Embeddings:
        """Rows of several :class:`Embeddings` (a data mixture) one after another.

        Args:
            parts: Embeddings of the same encoder (same widths), e.g. one per dataset.
            names: One name per part, prefixed to its ids (``"<name>:<id>"``) so ids stay unique
                and say where a row came from; default each part's dataset name from its
                provenance (or ``"part<i>"``).

        Returns:
            Embeddings whose labels index the concatenated ``class_names`` (each part's labels are
            offset by the classes before it; ``-1`` stays ``-1``), each row's ``attributes`` gain
            ``"source": name``, tower features are kept when every part has them, and
            ``provenance = {"concat": [part provenances], "names": names}``.

        Raises:
            ValueError: No parts, different widths, duplicate names, or tower features in some
                parts but not others.

        >>> import numpy as np
        >>> a = Embeddings(np.ones((2, 3)), np.ones((2, 3)), ["x", "y"], np.array([0, 1]), ["a", "b"],
        ...                class_names=["cat", "dog"])
        >>> b = Embeddings(np.ones((1, 3)), np.ones((1, 3)), ["x"], np.array([0]), ["c"],
        ...                class_names=["car"])
        >>> m = Embeddings.concat([a, b], names=["pets", "cars"])
        >>> m.ids, m.labels.tolist(), m.class_names
        (['pets:x', 'pets:y', 'cars:x'], [0, 1, 2], ['cat', 'dog', 'car'])
        """
        parts = list(parts)
        if not parts:
            raise ValueError("Embeddings.concat needs at least one part")
        if names is None:
            names = [
                str(p.provenance.get("dataset", {}).get("name", f"part{i}"))
                for i, p in enumerate(parts)
            ]
        names = list(names)
        if len(names) != len(parts) or len(set(names)) != len(names):
            raise ValueError(f"names must be one distinct name per part, got {names}")
        for attr in ("image", "text", "image_tower", "text_tower"):
            arrays = [getattr(p, attr) for p in parts]
            if any(a is None for a in arrays) and not all(a is None for a in arrays):
                raise ValueError(f"Embeddings.concat: some parts have {attr} and others do not")
            widths = {a.shape[1] for a in arrays if a is not None}
            if len(widths) > 1:
                raise ValueError(
                    f"Embeddings.concat: parts' {attr} widths differ: {sorted(widths)}"
                )
        labels, class_names, offset = [], [], 0
        for name, p in zip(names, parts):
            lab = np.asarray(p.labels, dtype=np.int64)
            labels.append(np.where(lab >= 0, lab + offset, -1))
            own = list(p.class_names or [])
            if not own and (lab >= 0).any():  # labelled without names: name them by index
                own = [f"{name}:{c}" for c in range(int(lab.max()) + 1)]
            class_names.extend(own)
            offset += len(own)

        def cat(attr: str) -> np.ndarray | None:
            arrays = [getattr(p, attr) for p in parts]
            return None if arrays[0] is None else np.concatenate([np.asarray(a) for a in arrays])

        return cls(
            image=cat("image"),
            text=cat("text"),
            ids=[f"{n}:{i}" for n, p in zip(names, parts) for i in p.ids],
            labels=np.concatenate(labels),
            captions=[c for p in parts for c in p.captions],
            attributes=[
                {**(p.attributes[i] if p.attributes else {}), "source": n}
                for n, p in zip(names, parts)
                for i in range(len(p))
            ],
            class_names=class_names or None,
            image_tower=cat("image_tower"),
            text_tower=cat("text_tower"),
            provenance={"concat": [p.provenance for p in parts], "names": names},
        )
