"""Tower-feature extraction into the chunked cache, in one process or sharded over ranks.

Rows ``[0, n)`` of an extraction are cut into chunks of ``chunk_rows``
(:func:`chunk_spans`); a chunk is the unit of work, of caching and of resumption. Batches start
at each chunk's first row, so a row's features never depend on who computed its chunk: one
process, or rank ``r`` of ``W`` under ``torchrun``, gives bit-identical rows (same weights,
device and thread count).

:func:`extract_missing` runs in one process. :func:`extract_sharded` runs on every rank of a
process group: rank 0 surveys the cache (a verified, committed entry is a hit; otherwise which
chunks are already done), the missing chunks are dealt round-robin (the ``j``-th missing chunk
to rank ``j mod W``: deterministic, disjoint, balanced even when resuming), each rank writes its
chunks into the one entry, and rank 0 commits the entry once every chunk is present and its
sha256 verified. A failure on any rank raises on every rank (finished chunks stay on disk for
the next run); a rank killed outright ends the job under ``torchrun``, and the rerun computes
only the chunks that are missing. Rank 0 shows one bar counting every rank's rows.

The cache directory must be one filesystem that every rank sees (a shared disk across nodes):
rank 0 verifies and commits the chunks the others wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.distributed import all_gather_checked, barrier_polling, group_info

from .base import Encoder
from .cache import EmbeddingCache, TowerRows, jsonable

if TYPE_CHECKING:
    from ..data.base import Dataset

Span = tuple[int, int]


def chunk_spans(n_rows: int, chunk_rows: int) -> list[Span]:
    """``[start, stop)`` of every chunk of ``n_rows`` rows cut every ``chunk_rows``.

    >>> chunk_spans(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(a, min(a + chunk_rows, n_rows)) for a in range(0, n_rows, chunk_rows)]


@torch.no_grad()
def extract_chunk(
    encoder: Encoder,
    dataset: Dataset,
    indices: Sequence[int],
    *,
    batch_size: int,
    on_rows: Callable[[int], None] = lambda k: None,
) -> TowerRows:
    """Tower features and row metadata of ``dataset[indices]`` (batches from ``indices[0]``).

    ``on_rows(k)`` is called after each batch of ``k`` items (a progress bar's ``update``).
    """
    img, txt, rows = [], [], []
    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start : start + batch_size]]
        for item in items:
            if not item.captions:
                raise ValueError(f"{dataset.name}: item {item.id!r} has no caption to embed")
        img.append(encoder.image_features([it.image for it in items]).float().cpu().numpy())
        txt.append(encoder.text_features([it.captions[0] for it in items]).float().cpu().numpy())
        rows.extend(items)
        on_rows(len(items))
    return TowerRows(
        image_tower=np.concatenate(img).astype(np.float32),  # (n, D_img)
        text_tower=np.concatenate(txt).astype(np.float32),  # (n, D_txt)
        labels=np.array([-1 if it.label is None else int(it.label) for it in rows], np.int64),
        ids=[str(it.id) for it in rows],
        captions=[it.captions[0] for it in rows],
        attributes=jsonable([dict(it.attributes) for it in rows]),
        more_captions=[[str(c) for c in it.captions[1:]] for it in rows],
    )


def _class_names(dataset: Dataset) -> list[str] | None:
    return None if dataset.class_names is None else list(dataset.class_names)


def extract_missing(
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
    """Every row's tower features in one process: cached chunks reused, missing chunks computed
    (and written), then the entry committed with ``provenance`` (stamped with key and time)."""
    from tqdm.auto import tqdm

    spans = chunk_spans(len(indices), chunk_rows)
    done = store.done_chunks(key) if store is not None else {}
    parts: dict[Span, TowerRows] = {}
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
            part = extract_chunk(
                encoder, dataset, indices[a:b], batch_size=batch_size, on_rows=bar.update
            )
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
            class_names=_class_names(dataset),
            provenance=provenance,
        )
    return TowerRows.concat([parts[s] for s in spans])


class _GlobalBar:
    """Rank 0's bar over every rank's rows: its own after each batch, the other ranks' when
    their chunks' sidecars appear (read from the directory listing, at most once a second)."""

    def __init__(self, bar: Any, store: EmbeddingCache, key: str, others: list[Span]) -> None:
        self.bar, self.store, self.key, self.others = bar, store, key, others
        self.own, self.last = 0, 0.0

    def update(self, k: int) -> None:
        self.own += k
        self.poll(throttle=True)

    def poll(self, throttle: bool = False) -> None:
        now = time.monotonic()
        if throttle and now - self.last < 1.0:
            return
        self.last = now
        finished = self.store.finished_spans(self.key)
        self.bar.n = self.own + sum(b - a for a, b in self.others if (a, b) in finished)
        self.bar.refresh()


def extract_sharded(
    encoder: Encoder,
    dataset: Dataset,
    indices: Sequence[int],
    key: str,
    store: EmbeddingCache,
    provenance: dict[str, Any],
    *,
    batch_size: int,
    chunk_rows: int,
    progress: bool,
    group: Any,
) -> tuple[TowerRows, dict[str, Any]]:
    """Every rank's part of one extraction; returns the committed entry, memory-mapped, on all.

    Call on every rank of ``group`` with the same arguments (the cache keys are compared
    first: ranks with different towers, data or subsets raise ``ValueError`` together).

    Returns:
        ``(rows, entry)`` as :meth:`EmbeddingCache.open` gives them.

    Raises:
        RuntimeError: Another rank failed (its error is named), or chunks other ranks wrote are
            not visible to rank 0 (the cache is not on a shared filesystem).
    """
    from tqdm.auto import tqdm

    info = group_info(group)
    keys = all_gather_checked(lambda: key, group, "embed")
    if len(set(keys)) > 1:
        raise ValueError(
            f"ranks disagree on the cache key ({sorted(set(keys))}): every rank must embed the "
            f"same towers, dataset, subset and chunking (check seeds and dataset roots)"
        )
    spans = chunk_spans(len(indices), chunk_rows)

    def survey() -> str | list[Span] | None:  # rank 0 reads the cache once for everyone
        if not info.is_main:
            return None
        if store.open(key) is not None:
            return "hit"
        return sorted(store.done_chunks(key))

    state = all_gather_checked(survey, group, "reading the embedding cache")[0]
    if state != "hit":
        done = {tuple(s) for s in state}
        todo = [s for s in spans if s not in done]
        mine = todo[info.rank :: info.world_size]
        bar = None
        if info.is_main:
            total = tqdm(
                total=sum(b - a for a, b in todo),
                desc=f"embed {dataset.name} ×{info.world_size}",
                unit="item",
                disable=not progress or not todo,
            )
            bar = _GlobalBar(total, store, key, [s for s in todo if s not in mine])
        error: Exception | None = None
        try:
            for a, b in mine:
                part = extract_chunk(
                    encoder,
                    dataset,
                    indices[a:b],
                    batch_size=batch_size,
                    on_rows=bar.update if bar is not None else (lambda k: None),
                )
                store.put_chunk(key, a, part)
        except Exception as e:  # raised on every rank just below, after the barrier
            error = e
        barrier_polling(group, bar.poll if bar is not None else (lambda: None))
        if bar is not None:
            bar.bar.close()

        def check() -> None:
            if error is not None:
                raise error

        all_gather_checked(check, group, "embedding extraction")

        def commit() -> None:
            if not info.is_main:
                return
            found = store.done_chunks(key)  # hashes every chunk against its sidecar
            missing = [s for s in spans if s not in found]
            if missing:
                raise RuntimeError(
                    f"{len(missing)} chunk(s) of {store.path_for(key)} (first: rows "
                    f"{list(missing[0])}) are missing or damaged after every rank finished; "
                    f"cache_dir must be one filesystem every rank sees (a shared disk across "
                    f"nodes). Rerun to recompute them."
                )
            store.commit(
                key,
                {s: found[s] for s in spans},
                n_rows=len(indices),
                class_names=_class_names(dataset),
                provenance=provenance,
            )

        all_gather_checked(commit, group, "committing the embedding cache entry")
    opened = store.open(key, verify=False)  # rank 0 verified every chunk a moment ago
    if opened is None:
        raise RuntimeError(f"the committed entry {store.path_for(key)} cannot be read here")
    return opened


__all__ = ["chunk_spans", "extract_chunk", "extract_missing", "extract_sharded"]
