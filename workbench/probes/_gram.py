"""The streaming Gram accumulator behind the spectra: one float64 pass over (n, d) rows.

:func:`_accumulate` reduces any row container (array, memmap, tensor, chunk iterable) to the
d×d shifted second moment and column sums, in this process or summed over ranks; the spectra
(:mod:`workbench.probes.spectra`), the partitions' streamed IQR sample and the fixed frame's
sharded covariance read it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from workbench._validate import MAX_ABS, check_finite_rows, to_numpy
from workbench.probes._rows import _compute_dtype, _is_chunk_iterable, _is_tensor, _iter_chunks

__all__: list[str] = []


class _GramAccumulator:
    """One pass of float64 ``Σ (x−s)(x−s)ᵀ`` and ``Σ (x−s)`` with ``s`` = first chunk's mean.

    Shifting by an early estimate of the mean before multiplying keeps the products small, so
    float32 GEMMs on shifted chunks (summed into float64 per chunk) lose nothing that matters
    and the final centring does not cancel catastrophically (cone-shaped CLIP embeddings have a
    mean much larger than their spread).
    """

    def __init__(self, name: str, sample_rows: int = 0, seed: int = 0) -> None:
        self.name = name
        self.n = 0
        self.d: int | None = None
        self.dtype: np.dtype | None = None
        self.shift: np.ndarray | None = None
        self.G: np.ndarray | None = None
        self.S: np.ndarray | None = None
        self.sample_rows = sample_rows
        self._rng = np.random.default_rng(seed)
        self._sample: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        self.amax = 0.0  # largest |entry| seen: the scale check of the whole stream

    def start(self, d: int, dtype: np.dtype, shift: np.ndarray) -> None:
        """Fix width, dtype and shift before any row (ranks agree on rank 0's first chunk)."""
        self.d, self.dtype = d, dtype
        self._cdt = _compute_dtype(dtype)
        self.shift = shift
        self._shift_c = self.shift.astype(self._cdt)
        self.G = np.zeros((self.d, self.d))
        self.S = np.zeros(self.d)
        self._buf = np.empty((0, self.d + 1), dtype=self._cdt)

    def add(self, offset: int, chunk: np.ndarray) -> None:
        rows = chunk.shape[0]
        if self.d is None:
            self.start(chunk.shape[1], chunk.dtype, chunk.mean(axis=0, dtype=np.float64))
        if len(self._buf) < rows:
            # [x − s, 1]: one syrk yields the shifted Gram and, in its last row, the column sums
            self._buf = np.empty((rows, self.d + 1), dtype=self._cdt)
            self._buf[:, -1] = 1.0
        Y = self._buf[:rows]  # (rows, d + 1), C-contiguous
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf are reported just below
            np.subtract(chunk, self._shift_c, out=Y[:, :-1], casting="unsafe")
            P = Y.T @ Y  # syrk in the compute dtype; summed into float64 below
        if not np.isfinite(P[-1]).all():
            check_finite_rows(np.asarray(chunk), self.name, row_offset=offset)
            raise ValueError(f"{self.name} overflows near row {offset}; rescale the data")
        self.amax = max(self.amax, float(np.max(np.abs(chunk))))
        self.G += P[:-1, :-1]
        self.S += P[-1, :-1]
        self.n += rows
        if self.sample_rows:
            self._keep_sample(chunk)

    def _keep_sample(self, chunk: np.ndarray) -> None:
        """Bottom-k sampling: a uniform random subset of rows, for unknown stream length."""
        keys = self._rng.random(chunk.shape[0])
        rows = np.asarray(chunk, dtype=np.float64)
        if self._sample is not None:
            keys = np.concatenate([self._keys, keys])
            rows = np.concatenate([self._sample, rows])
        if len(keys) > self.sample_rows:
            keep = np.argpartition(keys, self.sample_rows)[: self.sample_rows]
            keys, rows = keys[keep], rows[keep]
        self._keys, self._sample = keys, rows

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.S / self.n

    @property
    def sample(self) -> np.ndarray:
        """(≤ sample_rows, d) float64 uniformly sampled raw rows."""
        return self._sample

    @property
    def frobenius(self) -> float:
        """‖X‖_F of the raw (unshifted, uncentred) rows."""
        sq = float(np.trace(self.G) + 2.0 * self.shift @ self.S + self.n * self.shift @ self.shift)
        return math.sqrt(max(sq, 0.0))

    def second_moment(self, center: bool) -> np.ndarray:
        """d×d ``XcᵀXc`` (centred) or ``XᵀX`` (uncentred), float64."""
        if center:
            M = self.G - np.outer(self.S, self.S / self.n)
        else:
            sS = np.outer(self.shift, self.S)
            M = self.G + sS + sS.T + self.n * np.outer(self.shift, self.shift)
        M = 0.5 * (M + M.T)
        if not np.isfinite(M).all():
            raise ValueError(f"{self.name} overflows the second moment; rescale the data")
        return M


def _accumulate(
    X: Any, name: str, chunk_rows: int | None = None, sample_rows: int = 0, group: Any = None
) -> _GramAccumulator:
    acc = _GramAccumulator(name, sample_rows=sample_rows)
    if group is not None:
        _accumulate_over_ranks(acc, X, name, chunk_rows, group)
    else:
        for offset, chunk in _iter_chunks(X, name, chunk_rows):
            acc.add(offset, chunk)
    if acc.n == 0:
        raise ValueError(f"{name} is empty (no rows in any chunk); nothing to measure")
    if acc.n < 2:
        raise ValueError(f"{name} has {acc.n} row(s); this probe needs at least 2")
    if 0 < acc.amax < 1 / MAX_ABS:
        raise ValueError(
            f"{name} has entries no larger than {acc.amax:.3g}, below float64's square range "
            f"(their products underflow to zero); rescale {name}"
        )
    return acc


def _local_rows(X: Any) -> Any:
    """A rank's rows as a chunk stream that may hold fewer than 2 rows (or none): the
    minimum applies to the rows of all ranks together."""
    if _is_chunk_iterable(X):
        return X
    A = X if _is_tensor(X) else to_numpy(X)
    return [to_numpy(A)] if A.ndim == 2 and A.shape[0] < 2 else A


def _accumulate_over_ranks(
    acc: _GramAccumulator, X: Any, name: str, chunk_rows: int | None, group: Any
) -> None:
    """Stream this rank's rows into ``acc`` and sum every rank's accumulator into it.

    Every rank shifts by the mean of the first chunk of the lowest rank holding rows (rank 0's
    first chunk when it has rows, which is what one process streaming the same chunks uses),
    so the per-chunk products are the single process's and only their float64 summation order
    differs. Errors on any rank (NaN rows, widths) raise on every rank.
    """
    from workbench.distributed import all_gather_checked, all_reduce_sums

    if acc.sample_rows:
        raise ValueError("row sampling (sample_rows) is not available across ranks")
    stream: list[Any] = [iter(())]
    first: list[tuple[int, np.ndarray] | None] = [None]

    def peek() -> tuple[int, str, np.ndarray] | None:
        stream[0] = iter(_iter_chunks(_local_rows(X), name, chunk_rows))
        first[0] = next(stream[0], None)
        if first[0] is None:
            return None
        chunk = first[0][1]
        return chunk.shape[1], chunk.dtype.str, chunk.mean(axis=0, dtype=np.float64)

    starts = [s for s in all_gather_checked(peek, group, f"spectrum of {name}") if s is not None]
    if not starts:
        return  # no rank has rows: the caller's emptiness check raises on every rank
    widths = sorted({s[0] for s in starts})
    if len(widths) > 1:
        raise ValueError(f"{name} has different widths on different ranks: {widths}")
    d, dtype, shift = starts[0]
    acc.start(d, np.dtype(dtype), shift)

    def local() -> list[np.ndarray]:
        if first[0] is not None:
            acc.add(*first[0])
            for offset, chunk in stream[0]:
                acc.add(offset, chunk)
        return [acc.G, acc.S, [acc.n], [acc.amax]]

    G, S, n, amax = all_reduce_sums(local, group, f"spectrum of {name}")
    # the sum of the ranks' largest |entry|: zero, tiny or not exactly when their maximum is
    acc.G, acc.S, acc.n, acc.amax = G, S, int(n[0]), float(amax[0])
