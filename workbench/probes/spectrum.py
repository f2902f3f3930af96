"""Spectra of embedding matrices: singular values, energy, effective ranks and power-law α.

Everything here reduces an (n, d) matrix to its d×d float64 second-moment matrix in **one
streaming pass** (or, for small in-memory inputs, to an exact float64 SVD) and reads the rest off
its eigenvalues. Inputs may be numpy arrays, ``np.memmap`` (pages are released behind the pass,
so resident memory stays O(d² + one chunk)), torch tensors on any device (fp16/bf16 upcast), or an
iterable of (n_i, d) row chunks.

Conventions: singular values ``σ`` are those of the (optionally column-centred) data matrix
itself, descending; ``energy = σ²``; covariance eigenvalues are ``σ² / (n − 1)`` (centred) or
``σ² / n`` (uncentred second moment). Specs: ``methods-geometry.md`` §2.3 (power-law α,
effective rank) and ``methods-spectral.md`` §1.2 / §2.2.

The footgun: the Gram route squares the condition number, so singular values below about
``σ₁·sqrt(d·ε)`` (ε of the accumulation dtype) are not resolved; :attr:`Spectrum.resolution`
records that floor and ``numerical-rank`` never counts below it. Use ``method="svd"`` when the
tail of a small matrix matters.
"""

from __future__ import annotations

import math
import mmap
import sys
import types
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._registry import Registry
from workbench._validate import as_matrix, check_finite_rows, check_same_dim, l2_normalize, to_numpy

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__ = [
    "EFFECTIVE_RANKS",
    "PowerLawFit",
    "Spectrum",
    "effective_rank",
    "power_law_alpha",
    "spectra_by_group",
    "spectra_by_modality",
    "spectrum",
]

# Rows per chunk are chosen so a chunk is about this many bytes: big enough that per-call BLAS
# overhead vanishes next to the syrk itself, small enough to keep well inside a 64 MB budget.
_CHUNK_BYTES = 16 * 2**20
# In-memory inputs at most this many entries (16 MB in float64) get an exact float64 SVD.
_SVD_MAX_ENTRIES = 2**21


# -- result ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spectrum:
    """Singular-value spectrum of an (n, d) matrix (arrays are read-only).

    Attributes:
        singular_values: (r,) descending singular values of the (centred if ``center``) data,
            r = min(n, d).
        energy: (r,) ``σ²``.
        energy_fraction: (r,) ``σ² / Σσ²`` (all zeros for an all-zero spectrum).
        cumulative_energy: (r,) running sum of ``energy_fraction``; non-decreasing, ends at 1.
        center: whether column means were subtracted before the decomposition.
        n_samples: n.
        n_features: d.
        mean: (d,) column mean of the input (always computed, whether or not it was removed).
        method: ``"gram"`` (streamed d×d second moment + eigh) or ``"svd"`` (float64 SVD).
        resolution: singular values at or below this are numerically indistinguishable from 0
            (numpy ``matrix_rank`` default, raised to ``σ₁·sqrt(d·ε)`` on the Gram route).
        components: (r, d) right singular vectors (rows, orthonormal) when requested, else None.
    """

    singular_values: np.ndarray
    energy: np.ndarray
    energy_fraction: np.ndarray
    cumulative_energy: np.ndarray
    center: bool
    n_samples: int
    n_features: int
    mean: np.ndarray
    method: str
    resolution: float
    components: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("singular_values", "energy", "energy_fraction", "cumulative_energy", "mean"):
            getattr(self, name).flags.writeable = False
        if self.components is not None:
            self.components.flags.writeable = False

    @property
    def eigenvalues(self) -> np.ndarray:
        """(r,) covariance eigenvalues ``σ²/(n−1)`` (centred) or second-moment ``σ²/n``."""
        return self.energy / (self.n_samples - 1 if self.center else self.n_samples)

    @property
    def total_energy(self) -> float:
        """``Σσ² = ‖X‖_F²`` of the (centred) data."""
        return float(self.energy.sum())

    @property
    def rank(self) -> int:
        """Number of singular values above :attr:`resolution`."""
        return int(np.count_nonzero(self.singular_values > self.resolution))

    def __len__(self) -> int:
        return len(self.singular_values)

    @classmethod
    def from_singular_values(
        cls, singular_values: Any, n_samples: int, n_features: int, *, center: bool = False
    ) -> Spectrum:
        """A Spectrum from already computed singular values (e.g. logged by a training run).

        Values are sorted descending; ``mean`` is unknown (zeros) and ``resolution`` is numpy
        ``matrix_rank``'s float64 default.
        """
        sv = np.sort(np.asarray(to_numpy(singular_values), dtype=np.float64).ravel())[::-1]
        if not np.isfinite(sv).all() or (sv < 0).any():
            raise ValueError("singular_values must be finite and ≥ 0")
        if len(sv) == 0:
            raise ValueError("singular_values is empty")
        s1 = sv[0]
        return _make_spectrum(
            sv,
            center=center,
            n=int(n_samples),
            d=int(n_features),
            mean=np.zeros(int(n_features)),
            method="given",
            resolution=s1 * max(n_samples, n_features) * np.finfo(np.float64).eps,
            components=None,
        )


def _make_spectrum(
    sv: np.ndarray,
    *,
    center: bool,
    n: int,
    d: int,
    mean: np.ndarray,
    method: str,
    resolution: float,
    components: np.ndarray | None,
) -> Spectrum:
    sv = np.ascontiguousarray(sv, dtype=np.float64)
    energy = sv**2
    total = energy.sum()
    frac = energy / total if total > 0 else np.zeros_like(energy)
    cum = np.cumsum(frac)
    if total > 0:
        cum = np.minimum(cum, 1.0)
        cum[-1] = 1.0  # exact by definition; removes last-ulp drift of the running sum
    return Spectrum(
        singular_values=sv,
        energy=energy,
        energy_fraction=frac,
        cumulative_energy=cum,
        center=center,
        n_samples=n,
        n_features=d,
        mean=np.asarray(mean, dtype=np.float64),
        method=method,
        resolution=float(resolution),
        components=components,
    )


# -- input plumbing ----------------------------------------------------------------------------
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
        A = to_numpy(X)
        as_matrix(A, name, min_rows=2, dtype=A.dtype, check_finite=False)  # header checks only
        return _array_chunks(A, chunk_rows)

    def gen() -> Iterator[tuple[int, np.ndarray]]:
        offset, width = 0, None
        for i, chunk in enumerate(X):
            C = to_numpy(chunk)
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

    def add(self, offset: int, chunk: np.ndarray) -> None:
        rows = chunk.shape[0]
        if self.d is None:
            self.d, self.dtype = chunk.shape[1], chunk.dtype
            self._cdt = _compute_dtype(chunk.dtype)
            self.shift = chunk.mean(axis=0, dtype=np.float64)
            self._shift_c = self.shift.astype(self._cdt)
            self.G = np.zeros((self.d, self.d))
            self.S = np.zeros(self.d)
            self._buf = np.empty((0, self.d + 1), dtype=self._cdt)
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
    X: Any, name: str, chunk_rows: int | None = None, sample_rows: int = 0
) -> _GramAccumulator:
    acc = _GramAccumulator(name, sample_rows=sample_rows)
    for offset, chunk in _iter_chunks(X, name, chunk_rows):
        acc.add(offset, chunk)
    if acc.n == 0:
        raise ValueError(f"{name} is empty (no rows in any chunk); nothing to measure")
    if acc.n < 2:
        raise ValueError(f"{name} has {acc.n} row(s); this probe needs at least 2")
    return acc


def _spectrum_from_gram(acc: _GramAccumulator, center: bool, return_components: bool) -> Spectrum:
    M = acc.second_moment(center)
    d = M.shape[0]
    if return_components:
        lam, V = np.linalg.eigh(M)
        V = np.ascontiguousarray(V[:, ::-1].T)
    else:
        lam, V = np.linalg.eigvalsh(M), None
    lam = np.clip(lam[::-1], 0.0, None)
    r = min(acc.n, d)
    sv = np.sqrt(lam[:r])
    s1 = sv[0] if r else 0.0
    eps = np.finfo(acc._cdt).eps
    resolution = max(s1 * max(acc.n, d) * eps, s1 * math.sqrt(d * eps))
    return _make_spectrum(
        sv,
        center=center,
        n=acc.n,
        d=d,
        mean=acc.mean,
        method="gram",
        resolution=resolution,
        components=None if V is None else V[:r],
    )


def _spectrum_from_svd(
    A: np.ndarray, center: bool, return_components: bool, in_eps: float
) -> Spectrum:
    n, d = A.shape
    mean = A.mean(axis=0)
    B = A - mean if center else A
    if return_components:
        _, sv, Vt = np.linalg.svd(B, full_matrices=False)
    else:
        sv, Vt = np.linalg.svd(B, compute_uv=False), None
    s1 = sv[0] if len(sv) else 0.0
    return _make_spectrum(
        sv,
        center=center,
        n=n,
        d=d,
        mean=mean,
        method="svd",
        resolution=s1 * max(n, d) * in_eps,
        components=Vt,
    )


# -- public: spectrum --------------------------------------------------------------------------
def spectrum(
    X: Any,
    center: bool = True,
    *,
    method: str = "auto",
    chunk_rows: int | None = None,
    return_components: bool = False,
    name: str = "X",
) -> Spectrum:
    """Singular values, energy and cumulative energy of an (n, d) matrix, in float64.

    Args:
        X: (n, d) embeddings — raw or L2-normalised, as you want them measured — as a numpy
            array, ``np.memmap``, torch tensor (any device; fp16/bf16 upcast), or an iterable of
            (n_i, d) row chunks.
        center: subtract column means first (covariance spectrum). ``False`` gives the
            spectrum of the raw matrix (RankMe, SDE's batch SVD).
        method: ``"gram"`` — one streaming pass accumulating the d×d float64 second moment,
            memory O(d² + one chunk), then ``eigh``; ``"svd"`` — float64 LAPACK SVD of the
            whole matrix (in memory, exact to ε·σ₁); ``"auto"`` — ``"svd"`` for in-memory
            inputs with n < d or at most 2²¹ entries, else ``"gram"``.
        chunk_rows: rows per chunk on the Gram route (default: about 16 MB per chunk).
        return_components: also return the (r, d) right singular vectors.
        name: argument name used in error messages.

    Returns:
        :class:`Spectrum` with r = min(n, d) values, descending.

    Raises:
        ValueError: NaN/Inf (naming the first offending row), empty, 1-D, fewer than 2 rows,
            integer/bool dtype, chunks of different widths.
    """
    if method not in ("auto", "gram", "svd"):
        raise ValueError(f"method must be 'auto', 'gram' or 'svd', got {method!r}")
    chunked = _is_chunk_iterable(X)
    if method == "svd" and chunked:
        parts = [c for _, c in _iter_chunks(X, name, None)]  # validates widths and dtypes
        if not parts:
            raise ValueError(f"{name} is empty (no rows in any chunk); nothing to measure")
        X, chunked = np.concatenate(parts), False
    if not chunked:
        if not _is_tensor(X):
            X = to_numpy(X)
        _check_header(X, name)
        n, d = X.shape
        in_memory = not isinstance(X, np.memmap)
        if method == "svd" or (
            method == "auto" and in_memory and (n < d or n * d <= _SVD_MAX_ENTRIES)
        ):
            A = to_numpy(X)
            in_eps = float(np.finfo(np.float32 if A.itemsize <= 4 else np.float64).eps)
            return _spectrum_from_svd(as_matrix(A, name), center, return_components, in_eps)
    acc = _accumulate(X, name, chunk_rows)
    return _spectrum_from_gram(acc, center, return_components)


# -- effective rank ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _RankVariant:
    fn: Callable[[Spectrum, float | None], float]
    center: bool | None  # required centring (None: either, default centred)
    source: str


EFFECTIVE_RANKS: Registry[_RankVariant] = Registry("effective-rank variant")


def _exp_entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def _variant(
    name: str, aliases: tuple[str, ...], center: bool | None, source: str
) -> Callable[[Callable[[Spectrum, float | None], float]], Callable]:
    def deco(fn: Callable[[Spectrum, float | None], float]) -> Callable:
        EFFECTIVE_RANKS.register(name, aliases=aliases)(_RankVariant(fn, center, source))
        return fn

    return deco


@_variant(
    "erank/rankme",
    ("rankme",),
    center=False,
    source="Garrido et al. 2023 (RankMe): exp-entropy of σ/‖σ‖₁ of the uncentred embeddings",
)
def _rankme(s: Spectrum, tol: float | None) -> float:
    sv = s.singular_values
    return _exp_entropy(sv / sv.sum())


@_variant(
    "erank/cov",
    ("erank-cov", "erank"),
    center=True,
    source="Roy & Vetterli 2007 erank of the centred covariance: exp-entropy of λ/Σλ",
)
def _erank_cov(s: Spectrum, tol: float | None) -> float:
    return _exp_entropy(s.energy_fraction)


@_variant(
    "erank/participation-ratio",
    ("participation-ratio", "pr"),
    center=None,
    source="participation ratio (Σλ)²/Σλ² (e.g. Gao et al. 2017; Recanatesi et al. 2019)",
)
def _participation_ratio(s: Spectrum, tol: float | None) -> float:
    lam = s.energy
    return float(lam.sum() ** 2 / np.sum(lam**2))


@_variant(
    "erank/stable-rank",
    ("stable-rank",),
    center=None,
    source="stable rank ‖X‖_F²/‖X‖₂² (Rudelson & Vershynin 2007)",
)
def _stable_rank(s: Spectrum, tol: float | None) -> float:
    return float(s.energy.sum() / s.energy[0])


@_variant(
    "erank/numerical-rank",
    ("numerical-rank", "rank"),
    center=None,
    source="#σ > tol; default tol = numpy matrix_rank's σ₁·max(n,d)·ε, at least the resolution",
)
def _numerical_rank(s: Spectrum, tol: float | None) -> float:
    cut = s.resolution if tol is None else float(tol)
    return float(np.count_nonzero(s.singular_values > cut))


def effective_rank(
    X_or_spectrum: Any,
    variant: str = "rankme",
    *,
    tol: float | None = None,
    center: bool | None = None,
) -> float:
    """Effective rank of an (n, d) matrix or a precomputed :class:`Spectrum`.

    Variants (registry :data:`EFFECTIVE_RANKS`; ids ``erank/<name>`` or the short names):

    - ``"rankme"`` — Garrido et al. 2023, RankMe: ``exp(−Σ p log p)``, ``p = σ/‖σ‖₁`` of the
      **uncentred** embeddings (we take 0·log 0 = 0 instead of the paper's +1e-7).
    - ``"erank-cov"`` — Roy & Vetterli 2007 effective rank of the **centred** covariance:
      ``exp`` entropy of ``λ/Σλ``, ``λ = σ²`` (geometry spec §2.3 [our reading]).
    - ``"participation-ratio"`` — ``(Σλ)² / Σλ²``.
    - ``"stable-rank"`` — ``‖X‖_F² / ‖X‖₂² = Σσ²/σ₁²``.
    - ``"numerical-rank"`` — number of ``σ > tol``; default tol = numpy ``matrix_rank``'s
      (``σ₁·max(n, d)·ε``), raised to :attr:`Spectrum.resolution` on the Gram route.

    Every variant lies in [1, numerical rank] for a non-zero spectrum.

    Args:
        X_or_spectrum: (n, d) data (any input :func:`spectrum` takes) or a :class:`Spectrum`.
        variant: variant name.
        tol: singular-value tolerance for ``"numerical-rank"``.
        center: centring when computing from data; default: the variant's definition
            (uncentred for rankme, centred otherwise). For a :class:`Spectrum` input, rankme
            and erank-cov check that it was computed with the centring they are defined on.

    Raises:
        ValueError: unknown variant, wrong centring for the variant, all-zero spectrum.
    """
    try:
        entry = EFFECTIVE_RANKS.get(variant)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    if isinstance(X_or_spectrum, Spectrum):
        s = X_or_spectrum
        if entry.center is not None and s.center != entry.center:
            want = "center=True" if entry.center else "center=False"
            raise ValueError(
                f"{variant!r} is defined on the {'centred' if entry.center else 'uncentred'} "
                f"spectrum ({entry.source}) but this Spectrum has center={s.center}; "
                f"recompute with spectrum(X, {want}) or pass X itself"
            )
    else:
        if center is not None and entry.center is not None and center != entry.center:
            raise ValueError(
                f"{variant!r} is defined with center={entry.center} ({entry.source}); "
                f"leave center=None"
            )
        want = entry.center if center is None else center
        s = spectrum(X_or_spectrum, center=True if want is None else want)
    if s.total_energy <= 0:
        raise ValueError("the spectrum is all zero (constant data); effective rank is undefined")
    return entry.fn(s, tol)


# -- power law ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PowerLawFit:
    """Least-squares fit ``log λ_k = c − α log k`` of a trace-normalised spectrum.

    Attributes:
        alpha: decay exponent α (``λ_k ∝ k^−α``); ``float(fit)`` gives it.
        intercept: c (log of the fitted λ₁ share).
        k_min, k_max: 1-based rank range used (inclusive).
        r_squared: R² of the fit in log-log space.
        ranks: (m,) the ranks k used.
        eigenvalues: (m,) trace-normalised eigenvalues λ_k/Σλ at those ranks.
    """

    alpha: float
    intercept: float
    k_min: int
    k_max: int
    r_squared: float
    ranks: np.ndarray = field(repr=False)
    eigenvalues: np.ndarray = field(repr=False)

    def __float__(self) -> float:
        return self.alpha

    def predict(self, k: np.ndarray) -> np.ndarray:
        """Fitted trace-normalised eigenvalue at ranks ``k`` (1-based)."""
        return np.exp(self.intercept) * np.asarray(k, dtype=np.float64) ** (-self.alpha)


def power_law_alpha(
    spectrum_or_X: Any,
    k_range: tuple[int, int | None] | None = None,
    *,
    center: bool = True,
) -> PowerLawFit:
    """Fit ``λ_k ∝ k^−α`` to the trace-normalised eigen-spectrum (geometry spec §2.3, Fig. 4a).

    Args:
        spectrum_or_X: a :class:`Spectrum`, a 1-D array of eigenvalues/energies (any positive
            scale; sorted descending here), or (n, d) data (spectrum computed with ``center``).
        k_range: inclusive 1-based ranks ``(k_min, k_max)`` to fit; ``k_max=None`` or the
            default ``None`` means up to the last eigenvalue above the spectrum's resolution.
        center: centring when computing from data.

    Returns:
        :class:`PowerLawFit` (``float(fit)`` is α).

    Raises:
        ValueError: fewer than 2 positive eigenvalues in range, bad range, all-zero spectrum.
    """
    if isinstance(spectrum_or_X, Spectrum):
        lam = spectrum_or_X.energy
        floor = spectrum_or_X.resolution**2
    else:
        arr = to_numpy(spectrum_or_X)
        if arr.ndim == 1:
            lam = np.sort(as_matrix(arr[:, None], "eigenvalues", min_rows=2)[:, 0])[::-1]
            if (lam < 0).any():
                raise ValueError("eigenvalues must be non-negative")
            floor = 0.0
        else:
            s = spectrum(spectrum_or_X, center=center)
            lam, floor = s.energy, s.resolution**2
    total = lam.sum()
    if total <= 0:
        raise ValueError("the spectrum is all zero (constant data); α is undefined")
    p = lam / total
    usable = int(np.count_nonzero(lam > floor))
    k_min, k_max = (1, None) if k_range is None else k_range
    k_max = usable if k_max is None else int(k_max)
    k_min = int(k_min)
    if k_min < 1 or k_max < k_min:
        raise ValueError(f"k_range must satisfy 1 ≤ k_min ≤ k_max, got ({k_min}, {k_max})")
    if k_max > len(p):
        raise ValueError(f"k_max={k_max} exceeds the {len(p)} eigenvalues available")
    ks = np.arange(k_min, k_max + 1)
    vals = p[k_min - 1 : k_max]
    ok = vals > 0
    if np.count_nonzero(ok) < 2:
        raise ValueError(
            f"need ≥ 2 positive eigenvalues in ranks {k_min}..{k_max} to fit a power law"
        )
    ks, vals = ks[ok], vals[ok]
    x, y = np.log(ks), np.log(vals)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(
        alpha=float(-slope),
        intercept=float(intercept),
        k_min=int(ks[0]),
        k_max=int(ks[-1]),
        r_squared=float(r2),
        ranks=ks,
        eigenvalues=vals,
    )


# -- per-group spectra -------------------------------------------------------------------------
def spectra_by_group(
    X: Any,
    groups: Any,
    *,
    names: Mapping[Hashable, str] | Sequence[str] | None = None,
    ignore: Iterable[Hashable] = (-1,),
    min_count: int = 2,
    center: bool = True,
    prefix: str = "",
    **spectrum_kw: Any,
) -> dict[str, Spectrum]:
    """One :class:`Spectrum` per group of rows (e.g. per class label), in one call.

    Args:
        X: (n, d) embeddings (array, memmap or torch; rows of one group are gathered per group).
        groups: (n,) group id of each row (class labels, cluster ids, strings...).
        names: display names — a mapping id → name, or a sequence indexed by integer id (e.g.
            ``Embeddings.class_names``); default ``str(id)``.
        ignore: ids to skip (default ``-1``, the "no label" value of :class:`Embeddings`).
        min_count: groups with fewer rows are skipped (a spectrum needs ≥ 2 rows).
        center: passed to :func:`spectrum` (per-group centring: within-class spectra).
        prefix: prepended to each key (``spectra_by_modality`` uses ``"image/"``).
        **spectrum_kw: other :func:`spectrum` options.

    Returns:
        ``{key: Spectrum}`` in sorted group order.

    Raises:
        ValueError: ``groups`` not 1-D or of the wrong length, and every bad-input case of
            :func:`spectrum` (NaN rows are named by their row in ``X``).
    """
    A = to_numpy(X)
    as_matrix(A, "X", min_rows=2, dtype=A.dtype, check_finite=False)
    g = np.asarray(to_numpy(groups))
    if g.ndim != 1 or len(g) != A.shape[0]:
        raise ValueError(
            f"groups must be 1-D with one entry per row of X ({A.shape[0]}), got shape {g.shape}"
        )
    for offset, chunk in _array_chunks(A, None):  # name bad rows by their row in X
        check_finite_rows(np.asarray(chunk), "X", row_offset=offset)
    skip = set(ignore)
    out: dict[str, Spectrum] = {}
    for gid in np.unique(g):
        key = gid.item() if hasattr(gid, "item") else gid
        if key in skip:
            continue
        rows = np.flatnonzero(g == gid)
        if len(rows) < min_count or len(rows) < 2:
            continue
        if names is None:
            label = str(key)
        elif isinstance(names, Mapping):
            label = str(names.get(key, key))
        else:
            label = str(names[int(key)])
        out[f"{prefix}{label}"] = spectrum(A[rows], center=center, **spectrum_kw)
    return out


def spectra_by_modality(
    modalities: Any,
    *,
    labels: Any = None,
    class_names: Sequence[str] | Mapping[Hashable, str] | None = None,
    joint: bool = False,
    normalize: bool = False,
    center: bool = True,
    min_count: int = 2,
    **spectrum_kw: Any,
) -> dict[str, Spectrum]:
    """Spectra of each modality — and optionally of their union and of each class — in one call.

    Args:
        modalities: ``{"image": X, "text": Y, ...}`` of (n_m, d) matrices in one shared space,
            or an :class:`~workbench.encoders.embeddings.Embeddings` (its raw ``image`` and
            ``text`` projected embeddings).
        labels: (n,) class labels shared by every modality (paired rows), or ``None``. With an
            Embeddings input, pass ``emb.labels`` (and ``class_names=emb.class_names``).
        class_names: display names of the labels.
        joint: add ``"joint"``: the spectrum of all modalities' rows stacked (one streaming
            pass, nothing concatenated).
        normalize: L2-normalise rows first (CLIP similarity space); default: as given.
        center: passed to :func:`spectrum`.
        min_count: per-class groups with fewer rows are skipped.
        **spectrum_kw: other :func:`spectrum` options.

    Returns:
        ``{"image": ..., "text": ..., ["joint": ...], ["image/<class>": ...]}``.

    Raises:
        ValueError: modalities of different widths d, labels of the wrong length, and every
            bad-input case of :func:`spectrum`.
    """
    if hasattr(modalities, "image") and hasattr(modalities, "text"):
        mods = {"image": modalities.image, "text": modalities.text}
    elif isinstance(modalities, Mapping) and modalities:
        mods = dict(modalities)
    else:
        raise ValueError(
            "modalities must be a non-empty {name: (n, d) matrix} mapping or Embeddings"
        )
    arrays: dict[str, Any] = {}
    for name, M in mods.items():
        A = to_numpy(M)
        as_matrix(A, name, min_rows=2, dtype=A.dtype, check_finite=False)
        arrays[name] = l2_normalize(as_matrix(A, name), name) if normalize else A
    first = next(iter(arrays))
    for name, A in arrays.items():
        check_same_dim(arrays[first], A, (first, name))
    out = {name: spectrum(A, center=center, name=name, **spectrum_kw) for name, A in arrays.items()}
    if joint:
        out["joint"] = spectrum(list(arrays.values()), center=center, name="joint", **spectrum_kw)
    if labels is not None:
        for name, A in arrays.items():
            if len(to_numpy(labels)) != A.shape[0]:
                raise ValueError(
                    f"labels has {len(to_numpy(labels))} entries but {name} has {A.shape[0]} "
                    f"rows; per-class spectra need one label per row of every modality"
                )
            out.update(
                spectra_by_group(
                    A,
                    labels,
                    names=class_names,
                    min_count=min_count,
                    center=center,
                    prefix=f"{name}/",
                    **spectrum_kw,
                )
            )
    return out


# ``workbench.probes.spectrum`` names both this module and the function; once the module is
# imported Python binds the package attribute to the module, so make the module callable too.
class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Spectrum:
        return spectrum(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
