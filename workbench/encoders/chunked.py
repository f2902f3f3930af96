"""``ChunkedRows``: one (n, d) matrix kept as row chunks on disk, read one chunk at a time.

A cache entry of many chunk files (:mod:`workbench.encoders.cache`) cannot be one ``np.memmap``:
its rows live in separate files. :class:`ChunkedRows` presents them as one matrix without
loading it: ``shape``/``dtype``/``len`` come from the chunk headers, iterating yields the chunks
(each memory-mapped only while it is in use, so a pass over millions of rows holds one chunk and
no file descriptors), and row indexing gathers just the rows asked for. Every streaming probe
(``spectrum``, ``ReAlign.fit``, ``cone_width``, ...) takes it as an iterable of row chunks.

The footgun: ``np.asarray(rows)`` (and any numpy function that converts its input) loads the
whole matrix into memory. That is what it is for when the matrix fits; when it does not, pass
the object itself to the probes, or :meth:`ChunkedRows.map` a per-row function over it.

>>> import numpy as np
>>> parts = [np.arange(6.0).reshape(3, 2), np.arange(6.0, 10.0).reshape(2, 2)]
>>> X = ChunkedRows.from_arrays(parts)
>>> X.shape, X.spans, X[[4, 0]].tolist()
((5, 2), [(0, 3), (3, 5)], [[8.0, 9.0], [0.0, 1.0]])
>>> X.map(lambda A: 2 * A)[1:4, 0].tolist()
[4.0, 8.0, 12.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

Loader = Callable[[], np.ndarray]
RowMap = Callable[[np.ndarray], np.ndarray]


class ChunkedRows:
    """An (n, d) matrix made of row chunks, each produced on demand by a loader.

    Args:
        loaders: One zero-argument callable per chunk returning its (n_i, d_in) rows (e.g. a
            memory map of a chunk file), in row order.
        sizes: n_i of each chunk (known without loading it).
        width: d_in, the loaders' column count.
        dtype: the loaders' dtype.
        transform: Optional per-chunk map (n_i, d_in) → (n_i, d) applied on every read (a
            projection head, L2-normalisation); it must act row by row.

    Row order is the chunks' order; ``spans`` lists each chunk's ``[start, stop)``.
    """

    def __init__(
        self,
        loaders: Sequence[Loader],
        sizes: Sequence[int],
        width: int,
        dtype: Any,
        transform: RowMap | None = None,
    ) -> None:
        if len(loaders) != len(sizes) or not loaders:
            raise ValueError(
                f"ChunkedRows needs one size per loader and at least one chunk, got "
                f"{len(loaders)} loaders and {len(sizes)} sizes"
            )
        if any(int(s) < 0 for s in sizes):
            raise ValueError(f"chunk sizes must be ≥ 0, got {list(sizes)}")
        self._loaders = list(loaders)
        self._sizes = [int(s) for s in sizes]
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
        self._in_width, self._in_dtype = int(width), np.dtype(dtype)
        self._transform = transform
        if transform is None:
            self._width, self._dtype = self._in_width, self._in_dtype
        else:  # the output width and dtype of a row-wise map, from one row of ones
            probe = np.asarray(transform(np.ones((1, self._in_width), self._in_dtype)))
            if probe.ndim != 2 or probe.shape[0] != 1:
                raise ValueError(f"transform must map rows to rows; one row gave {probe.shape}")
            self._width, self._dtype = int(probe.shape[1]), probe.dtype

    @classmethod
    def from_arrays(cls, arrays: Sequence[Any]) -> ChunkedRows:
        """Chunks that are already arrays (in memory or memory-mapped), all (n_i, d)."""
        arrays = [np.asarray(a) for a in arrays]
        if not arrays or any(a.ndim != 2 for a in arrays):
            raise ValueError("from_arrays needs at least one 2-D (n_i, d) array")
        if len({a.shape[1] for a in arrays}) > 1 or len({a.dtype for a in arrays}) > 1:
            raise ValueError("every chunk must have the same width and dtype")
        return cls(
            [lambda a=a: a for a in arrays],
            [a.shape[0] for a in arrays],
            arrays[0].shape[1],
            arrays[0].dtype,
        )

    # -- what it is ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return int(self._starts[-1]), self._width

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def n_chunks(self) -> int:
        return len(self._loaders)

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``[start, stop)`` rows of each chunk."""
        return [(int(a), int(b)) for a, b in zip(self._starts[:-1], self._starts[1:])]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ChunkedRows(shape={self.shape}, dtype={self.dtype}, chunks={self.n_chunks})"

    # -- reading -------------------------------------------------------------------------------
    def chunk(self, i: int) -> np.ndarray:
        """(n_i, d) rows of chunk ``i`` (transformed when a transform is set)."""
        A = self._loaders[i]()
        if A.shape != (self._sizes[i], self._in_width):
            raise ValueError(
                f"chunk {i} has shape {A.shape}, expected {(self._sizes[i], self._in_width)}"
            )
        return A if self._transform is None else np.asarray(self._transform(A))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_chunks):
            if self._sizes[i]:
                yield self.chunk(i)

    def map(self, fn: RowMap) -> ChunkedRows:
        """A lazy view with ``fn`` applied row-wise to every chunk on read (nothing computed now)."""
        inner = self._transform
        composed = fn if inner is None else (lambda A: fn(inner(A)))
        return ChunkedRows(self._loaders, self._sizes, self._in_width, self._in_dtype, composed)

    def select_chunks(self, chunks: Sequence[int]) -> ChunkedRows:
        """The rows of ``chunks`` (indices into :attr:`spans`), in that order, still lazy."""
        picked = [int(c) for c in chunks]
        if not picked:
            return ChunkedRows(
                [lambda: self._empty_in()], [0], self._in_width, self._in_dtype, self._transform
            )
        return ChunkedRows(
            [self._loaders[c] for c in picked],
            [self._sizes[c] for c in picked],
            self._in_width,
            self._in_dtype,
            self._transform,
        )

    def _empty_in(self) -> np.ndarray:
        return np.zeros((0, self._in_width), self._in_dtype)

    def _rows(self, key: Any) -> np.ndarray:
        """Row indices (int64, any order) selected by an int, slice, index array or mask."""
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} is out of range for {n} rows")
            return np.array([i])
        if isinstance(key, slice):
            return np.arange(n)[key]
        idx = np.asarray(key)
        if idx.dtype == np.bool_:
            if idx.shape != (n,):
                raise IndexError(f"a boolean row mask needs shape ({n},), got {idx.shape}")
            return np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"rows must be an int, slice, 1-D int array or mask, got {key!r}")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row indices out of range for {n} rows")
        return np.where(idx < 0, idx + n, idx).astype(np.int64)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self._width), self._dtype)
        which = np.searchsorted(self._starts, rows, side="right") - 1  # chunk of each row
        for c in np.unique(which):
            at = np.flatnonzero(which == c)
            out[at] = self.chunk(int(c))[rows[at] - self._starts[c]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows (and optionally columns: ``X[rows, cols]``) as an in-memory array."""
        cols = None
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError(f"ChunkedRows is 2-D; got an index with {len(key)} parts")
            key, cols = key
        single = isinstance(key, (int, np.integer))
        out = self._gather(self._rows(key))
        if cols is not None:
            out = out[:, cols]
        return out[0] if single else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole matrix in memory (the explicit "load it all")."""
        out = np.empty(self.shape, self._dtype if dtype is None else dtype)
        for (a, b), i in zip(self.spans, range(self.n_chunks)):
            if b > a:
                out[a:b] = self.chunk(i)
        return out

    def astype(self, dtype: Any) -> np.ndarray:
        """The whole matrix in memory as ``dtype`` (as ``ndarray.astype``)."""
        return self.__array__(dtype)


__all__ = ["ChunkedRows"]
