"""Spectra of embedding matrices: singular values, energy and cumulative energy, per group too.

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

Degenerate data (identical rows, centred): centring leaves only round-off of the size of
``ε·‖X‖_F``. Both routes compare the spectrum with one scale-relative floor
(:func:`workbench._validate.spectral_floor`, in :attr:`Spectrum.resolution`); a spectrum
entirely at or below it is reported as exactly zero (:attr:`Spectrum.degenerate`), so every
effective rank refuses it the same way on either route.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._validate import (
    as_bool,
    as_choice,
    as_int,
    as_matrix,
    as_vector,
    spectral_floor,
    to_numpy,
)

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

from workbench.probes._gram import _accumulate, _GramAccumulator
from workbench.probes._rows import (
    _check_header,
    _is_chunk_iterable,
    _is_tensor,
    _iter_chunks,
)

__all__ = [
    "Spectrum",
    "cumulative_energy",
    "spectrum",
]

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
        resolution: singular values at or below this are numerically indistinguishable from 0:
            :func:`~workbench._validate.spectral_floor` (numpy ``matrix_rank``'s default, at least
            the round-off centring leaves of ``‖X‖_F``), raised to ``σ₁·sqrt(d·ε)`` on the Gram
            route. A spectrum entirely below it is stored as zeros (:attr:`degenerate`).
        components: (r, d) right singular vectors (rows, orthonormal) when requested, else None;
            each signed so that its largest-magnitude entry is positive (the same vectors on
            either route).
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

    @property
    def degenerate(self) -> bool:
        """No singular value above :attr:`resolution` (e.g. identical rows, centred): all zero."""
        return self.rank == 0

    def __len__(self) -> int:
        return len(self.singular_values)

    @classmethod
    def from_singular_values(
        cls, singular_values: Any, n_samples: int, n_features: int, *, center: bool = False
    ) -> Spectrum:
        """A Spectrum from already computed singular values (e.g. logged by a training run).

        Args:
            singular_values: (r,) non-negative singular values, any order (sorted descending
                here), r ≤ min(n_samples, n_features).
            n_samples, n_features: n and d of the matrix they came from.
            center: whether they are of the centred matrix (then n_samples ≥ 2).

        ``mean`` is unknown (zeros) and ``resolution`` is numpy ``matrix_rank``'s float64
        default.
        """
        sv = _singular_values(singular_values)
        center = as_bool(center, "center")
        n = as_int(n_samples, "n_samples", lo=2 if center else 1)
        d = as_int(n_features, "n_features", lo=1)
        if len(sv) > min(n, d):
            raise ValueError(
                f"singular_values has {len(sv)} entries but an {n}×{d} matrix has at most "
                f"min(n_samples, n_features) = {min(n, d)}; check n_samples and n_features"
            )
        s1 = sv[0]
        return _make_spectrum(
            sv,
            center=center,
            n=n,
            d=d,
            mean=np.zeros(d),
            method="given",
            resolution=s1 * max(n, d) * np.finfo(np.float64).eps,
            components=None,
        )


def _singular_values(singular_values: Any, name: str = "singular_values") -> np.ndarray:
    """Validated (r,) non-negative float64 singular values, sorted descending."""
    sv = as_vector(singular_values, name)
    if (sv < 0).any():
        raise ValueError(
            f"{name} must be ≥ 0 (singular values); first negative at index "
            f"{int(np.argmax(sv < 0))}"
        )
    return np.sort(sv)[::-1].copy()


def cumulative_energy(singular_values: Any) -> np.ndarray:
    """``Σ_{i≤k} σ_i² / Σ σ²`` for k = 1..r (SDE Fig. 3c), ordered by rank.

    Args:
        singular_values: (r,) singular values in any order (signs ignored).

    Returns:
        (r,) float64, non-decreasing, last entry exactly 1.

    >>> cumulative_energy([1.0, 3.0]).round(3).tolist()
    [0.9, 1.0]
    """
    s = np.sort(np.abs(as_vector(singular_values, "singular_values", check_scale=False)))[::-1]
    e = np.cumsum((s / s[0]) ** 2) if s[0] > 0 else np.zeros_like(s)  # scaled: no overflow
    if e[-1] <= 0:
        raise ValueError(
            "singular_values are all zero; the cumulative energy of an all-zero spectrum is "
            "undefined"
        )
    cum = np.minimum(e / e[-1], 1.0)
    cum[-1] = 1.0  # exact by definition; removes last-ulp drift of the running sum
    return cum


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
    if len(sv) and sv[0] <= resolution:  # nothing but round-off: report the zero spectrum
        sv = np.zeros_like(sv)
    if components is not None:  # one sign convention, so both routes return the same vectors
        lead = np.take_along_axis(components, np.abs(components).argmax(axis=1)[:, None], 1)
        components = components * np.where(lead < 0, -1.0, 1.0)
    energy = sv**2
    rel = (sv / sv[0]) ** 2 if len(sv) and sv[0] > 0 else np.zeros_like(sv)  # overflow-free
    frac = rel / rel.sum() if rel.sum() > 0 else np.zeros_like(energy)
    cum = cumulative_energy(sv) if rel.sum() > 0 else np.zeros_like(energy)
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
    eps = float(np.finfo(acc._cdt).eps)
    floor = spectral_floor(s1, acc.frobenius, (acc.n, d), eps)
    resolution = max(floor, s1 * math.sqrt(d * eps))
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
        resolution=spectral_floor(s1, float(np.linalg.norm(A)), (n, d), in_eps),
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
    group: Any = None,
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
        group: ``None`` (this process's rows), ``"auto"`` or a ``torch.distributed``
            ``ProcessGroup``: ``X`` is then this rank's rows (any number, none included), the
            d×d accumulators are summed over the ranks and every rank returns the spectrum of
            all ranks' rows together, on the Gram route (:func:`workbench.distributed.
            resolve_group`). Equal to one process streaming the same chunks to float64
            round-off when ranks stream the chunks that process would
            (:meth:`~workbench.encoders.embeddings.Embeddings.shard`); call it on every rank.

    Returns:
        :class:`Spectrum` with r = min(n, d) values, descending.

    Raises:
        ValueError: NaN/Inf (naming the first offending row), empty, 1-D, fewer than 2 rows,
            integer/bool dtype, chunks of different widths, magnitudes outside float64's
            square range.
        TypeError: ``X`` is None, a flag that is not a bool.
    """
    method = as_choice(method, "method", ("auto", "gram", "svd"))
    center = as_bool(center, "center")
    return_components = as_bool(return_components, "return_components")
    chunk_rows = as_int(chunk_rows, "chunk_rows", lo=1, none_ok=True)
    from workbench.distributed import resolve_group

    pg = resolve_group(group)
    if pg is not None:
        if method == "svd":
            raise ValueError(
                "method='svd' needs every row in one process; across ranks the spectrum is "
                "streamed through the Gram route (method='auto' or 'gram')"
            )
        acc = _accumulate(X, name, chunk_rows, group=pg)
        return _spectrum_from_gram(acc, center, return_components)
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
