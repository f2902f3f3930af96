"""Row-chunk plumbing shared by the streaming probes: one pass over (n, d) rows, any container.

Numpy arrays, ``np.memmap`` (pages released behind the pass, so resident memory stays
O(one chunk)), torch tensors on any device (fp16/bf16 upcast chunk by chunk, never copied whole
to host float32) and iterables of (n_i, d) row chunks all come out as ``(start_row, float chunk)``
pairs from :func:`_iter_chunks`, validated (finite, same width) as they stream.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from workbench._validate import as_matrix, to_numpy

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__: list[str] = []

# Rows per chunk are chosen so a chunk is about this many bytes: big enough that per-call BLAS
# overhead vanishes next to the syrk itself, small enough to keep well inside a 64 MB budget.
_CHUNK_BYTES = 16 * 2**20


def _is_chunk_iterable(X: Any) -> bool:
    """True for an iterable of 2-D row chunks (generator, list/tuple of 2-D arrays)."""
    if isinstance(X, np.ndarray) or (torch is not None and isinstance(X, torch.Tensor)):
        return False
    if isinstance(X, Iterator):
        return True
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(getattr(c, "ndim", None) == 2 for c in X)
    return isinstance(X, Iterable) and not isinstance(X, (str, bytes, Sequence))


def _compute_dtype(dtype: np.dtype) -> type:
    """float32 data is multiplied in float32 (exact-enough, 2× faster); anything else in float64."""
    return np.float32 if dtype in (np.float16, np.float32) else np.float64


def _release_pages(A: np.ndarray, start: int, stop: int) -> None:
    """Drop rows [start, stop) of a memory-mapped ``A`` from this process's resident set.

    The page cache keeps them; only the mapping is cleared (``MADV_DONTNEED``), so a streaming
    pass over a file much larger than RAM keeps its RSS at about one chunk. Private
    (copy-on-write, mode ``"c"``) maps are left alone: dropping them would discard edits.
    """
    mm = getattr(A, "_mmap", None)
    if mm is None or getattr(A, "mode", "c") == "c" or not hasattr(mm, "madvise"):
        return
    if A.strides[0] < A.itemsize * A.shape[1]:  # rows interleaved in the file (e.g. a transpose)
        return
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    lo = A[start:stop].ctypes.data - base
    hi = lo + (stop - start) * A.strides[0]
    lo -= lo % mmap.PAGESIZE
    try:
        mm.madvise(getattr(mmap, "MADV_DONTNEED", 4), lo, hi - lo)
    except (OSError, ValueError):  # pragma: no cover - best effort; correctness unaffected
        pass


def _array_chunks(A: np.ndarray, chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    n, d = A.shape
    rows = chunk_rows or max(256, _CHUNK_BYTES // max(1, d * max(4, A.itemsize)))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        yield start, A[start:stop]
        if isinstance(A, np.memmap):
            _release_pages(A, start, stop)


def _is_tensor(X: Any) -> bool:
    return torch is not None and isinstance(X, torch.Tensor)


def _check_header(X: Any, name: str) -> None:
    """Shape/dtype checks of an ndarray or tensor without converting or reading its data."""
    if _is_tensor(X):
        try:
            np_dtype = torch.empty(0, dtype=X.dtype).numpy().dtype
        except TypeError:  # bfloat16 has no numpy twin; it is upcast to float32 anyway
            np_dtype = np.dtype(np.float32)
        X = np.broadcast_to(np.zeros((), dtype=np_dtype), tuple(X.shape))  # no memory
    as_matrix(X, name, min_rows=2, dtype=X.dtype, check_finite=False)


def _tensor_chunks(T: Any, chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """Row chunks of a torch tensor, each detached, upcast and moved to host on its own."""
    n, d = T.shape
    rows = chunk_rows or max(256, _CHUNK_BYTES // max(1, d * max(4, T.element_size())))
    for start in range(0, n, rows):
        yield start, to_numpy(T[start : start + rows])


def _iter_chunks(X: Any, name: str, chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """Iterator of (row_offset, chunk) over an array or an iterable of chunks.

    Arrays are validated up front (dtype, 2-D, non-empty, ≥ 2 rows); chunks of an iterable are
    validated as they arrive (same width, float dtype). NaN/Inf are found by the accumulator.
    """
    if _is_tensor(X):
        _check_header(X, name)
        return _tensor_chunks(X, chunk_rows)
    if not _is_chunk_iterable(X):
        A = to_numpy(X, name)
        as_matrix(A, name, min_rows=2, dtype=A.dtype, check_finite=False)  # header checks only
        return _array_chunks(A, chunk_rows)

    def gen() -> Iterator[tuple[int, np.ndarray]]:
        offset, width = 0, None
        for i, chunk in enumerate(X):
            C = to_numpy(chunk, f"{name} chunk {i}")
            label = f"{name} chunk {i} (rows from {offset})"
            if C.ndim != 2:
                raise ValueError(f"{label} must be 2-D (rows, d), got shape {C.shape}")
            if C.shape[0] == 0:
                continue
            as_matrix(C, label, min_rows=1, dtype=C.dtype, check_finite=False)
            if width is None:
                width = C.shape[1]
            elif C.shape[1] != width:
                raise ValueError(
                    f"{label} has {C.shape[1]} columns but earlier chunks have {width}; "
                    f"every chunk must have the same width d"
                )
            for start, sub in _array_chunks(C, chunk_rows):
                yield offset + start, sub
            offset += C.shape[0]

    return gen()
