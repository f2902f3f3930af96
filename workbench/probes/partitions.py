"""Strong / weak / noise partitions of a spectrum (SDE spectral disentanglement, spec §1.2).

The SDE paper names the ingredients (IQR, Marchenko–Pastur bound) but not the formulas; the
default method is our reading in ``methods-spectral.md`` §1.2 [our reading]:

- noise scale ``ŝ = IQR(entries of F − colmean) / 1.349`` (the IQR of a Gaussian is 1.349 σ);
- noise edge ``τ_noise = ŝ(√m + √n)`` — the Marchenko–Pastur upper edge in singular-value units
  for an m×n matrix of i.i.d. entries with standard deviation ŝ;
- strong edge ``τ_strong = max(Q3(s) + k·IQR(s), τ_noise)`` — a Tukey fence on the spectrum;
- S = {σ > τ_strong}, W = {τ_noise < σ ≤ τ_strong}, N = {σ ≤ τ_noise}; at least
  ``min_strong`` strong components (the largest ones are promoted when the fence leaves none).

:func:`iqr_mp_partition` is the pure kernel for callers that already hold singular values (the
SDE method runs it inside a training step); :func:`partition` computes everything from data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._registry import Registry
from workbench._validate import as_bool, as_float, as_int, as_matrix, as_vector
from workbench.probes._gram import _accumulate
from workbench.probes._rows import _is_chunk_iterable, _is_tensor
from workbench.probes.spectra import Spectrum, _spectrum_from_gram, spectrum

__all__ = [
    "PARTITIONS",
    "Partition",
    "iqr_mp_partition",
    "iqr_noise_scale",
    "partition",
]

STRONG, WEAK, NOISE = 0, 1, 2
_BANDS = ("strong", "weak", "noise")
# IQR of a standard Gaussian: 2·Φ⁻¹(0.75).
_GAUSSIAN_IQR = 1.3489795003921634
# Entries used for the IQR noise scale before rows are subsampled (exact below this).
_IQR_MAX_ENTRIES = 2**22
# Rows kept (uniformly at random) from a streamed matrix for its IQR noise scale.
_IQR_SAMPLE_ROWS = 2048


@dataclass(frozen=True)
class Partition:
    """Strong / weak / noise split of r singular directions.

    Attributes:
        strong, weak, noise: int64 index arrays into ``singular_values`` (disjoint, together
            covering 0..r−1, each ascending).
        singular_values: (r,) the singular values that were partitioned (order as given).
        method: canonical method name (``"iqr-mp"``, ``"energy"``, ``"fixed"``).
        thresholds: the method's cut-offs, e.g. ``tau_noise``, ``tau_strong``,
            ``tukey_fence``, ``noise_scale`` (iqr-mp) — singular-value units unless named
            ``*_energy`` / ``*_fraction``.
        forced_strong: how many components were promoted to strong by ``min_strong``.
    """

    strong: np.ndarray
    weak: np.ndarray
    noise: np.ndarray
    singular_values: np.ndarray = field(repr=False)
    method: str
    thresholds: dict[str, float]
    forced_strong: int = 0

    def __post_init__(self) -> None:
        for name in ("strong", "weak", "noise", "singular_values"):
            getattr(self, name).flags.writeable = False

    @property
    def labels(self) -> np.ndarray:
        """(r,) int64 band of each direction: 0 strong, 1 weak, 2 noise."""
        out = np.full(len(self.singular_values), NOISE, dtype=np.int64)
        out[self.weak] = WEAK
        out[self.strong] = STRONG
        return out

    def mask(self, band: str) -> np.ndarray:
        """(r,) boolean mask of ``band`` ∈ {"strong", "weak", "noise"}."""
        if band not in _BANDS:
            raise ValueError(f"band must be one of {_BANDS}, got {band!r}")
        m = np.zeros(len(self.singular_values), dtype=bool)
        m[getattr(self, band)] = True
        return m

    @property
    def counts(self) -> dict[str, int]:
        """|S|, |W|, |N|."""
        return {b: len(getattr(self, b)) for b in _BANDS}

    @property
    def proportions(self) -> dict[str, float]:
        """|S|/r, |W|/r, |N|/r (sum to 1) — the quantity of SDE's proportions-over-training plot."""
        r = len(self.singular_values)
        return {b: len(getattr(self, b)) / r for b in _BANDS}

    @property
    def energy_proportions(self) -> dict[str, float]:
        """Share of ``Σσ²`` in each band (all 0 for an all-zero spectrum)."""
        s = self.singular_values
        e = (s / s.max()) ** 2 if len(s) and s.max() > 0 else np.zeros_like(s)  # no overflow
        total = e.sum()
        return {b: float(e[getattr(self, b)].sum() / total) if total > 0 else 0.0 for b in _BANDS}

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready record (counts, proportions, energy shares, thresholds) for run logs."""
        out: dict[str, Any] = {"method": self.method, "rank": len(self.singular_values)}
        out.update({f"n_{b}": v for b, v in self.counts.items()})
        out.update(self.proportions)
        out.update({f"energy_{b}": v for b, v in self.energy_proportions.items()})
        out.update(self.thresholds)
        return out


def _as_values(singular_values: Any) -> np.ndarray:
    s = as_vector(singular_values, "singular_values", check_scale=False)  # compared, not squared
    if (s < 0).any():
        raise ValueError(
            f"singular_values must be ≥ 0; first negative at index {int(np.argmax(s < 0))}"
        )
    return s


def _build(
    s: np.ndarray, labels: np.ndarray, method: str, thresholds: dict[str, float], min_strong: int
) -> Partition:
    """Promote the largest values to strong until ``min_strong`` are, then freeze."""
    min_strong = as_int(min_strong, "min_strong", lo=0)
    forced = 0
    need = min(min_strong, len(s)) - int(np.count_nonzero(labels == STRONG))
    if need > 0:
        for i in np.argsort(-s, kind="stable"):
            if need == 0:
                break
            if labels[i] != STRONG:
                labels[i] = STRONG
                forced += 1
                need -= 1
    idx = [np.flatnonzero(labels == b).astype(np.int64) for b in (STRONG, WEAK, NOISE)]
    return Partition(
        strong=idx[0],
        weak=idx[1],
        noise=idx[2],
        singular_values=s,
        method=method,
        thresholds={k: float(v) for k, v in thresholds.items()},
        forced_strong=forced,
    )


def _is_large(X: Any) -> bool:
    """Memory-mapped, or too big to copy to float64 for an exact IQR."""
    if isinstance(X, np.memmap):
        return True
    size = X.numel() if _is_tensor(X) else getattr(X, "size", 0)
    return size > _IQR_MAX_ENTRIES


# -- the pure kernels --------------------------------------------------------------------------
def iqr_noise_scale(X: Any, *, center: bool = True, seed: int = 0) -> float:
    """Robust noise standard deviation ``ŝ = IQR(entries) / 1.349`` (spec §1.2 [our reading]).

    Args:
        X: (m, n) batch/feature matrix (numpy or torch, any device). Column means are removed
            first when ``center`` (idempotent on an already centred matrix).
        center: subtract column means before taking the IQR of the entries.
        seed: rows are subsampled (seeded) when X has more than 2²² entries.

    Returns:
        ŝ as a float (0 for a matrix whose entries' quartiles coincide).
    """
    A = as_matrix(X, "X")
    center = as_bool(center, "center")
    if A.size > _IQR_MAX_ENTRIES:
        rows = np.random.default_rng(seed).choice(
            A.shape[0], size=max(2, _IQR_MAX_ENTRIES // A.shape[1]), replace=False
        )
        mean = A.mean(axis=0) if center else 0.0
        A = A[np.sort(rows)] - mean
    elif center:
        A = A - A.mean(axis=0)
    q1, q3 = np.percentile(A, [25.0, 75.0])
    return float((q3 - q1) / _GAUSSIAN_IQR)


def iqr_mp_partition(
    singular_values: Any,
    noise_scale: float,
    n_rows: int,
    n_cols: int,
    *,
    tukey_k: float = 1.5,
    min_strong: int = 1,
) -> Partition:
    """SDE partition from precomputed singular values (spec §1.2 step 1 [our reading]).

    Args:
        singular_values: (r,) singular values of the m×n matrix (numpy or torch; any order —
            index sets refer to positions in the given order).
        noise_scale: ŝ, e.g. from :func:`iqr_noise_scale`.
        n_rows, n_cols: m and n of the matrix (for the MP edge ``ŝ(√m + √n)``).
        tukey_k: Tukey fence multiplier in ``Q3(s) + k·IQR(s)`` [our reading: 1.5].
        min_strong: keep at least this many strong components [our reading: 1].

    Returns:
        :class:`Partition` with thresholds ``tau_noise``, ``tau_strong``, ``tukey_fence``,
        ``noise_scale``.
    """
    s = _as_values(singular_values)
    noise_scale = as_float(noise_scale, "noise_scale", lo=0.0)
    n_rows, n_cols = as_int(n_rows, "n_rows", lo=1), as_int(n_cols, "n_cols", lo=1)
    tukey_k = as_float(tukey_k, "tukey_k", lo=0.0)
    tau_noise = noise_scale * (math.sqrt(n_rows) + math.sqrt(n_cols))
    q1, q3 = np.percentile(s, [25.0, 75.0])
    fence = q3 + tukey_k * (q3 - q1)
    tau_strong = max(fence, tau_noise)
    labels = np.full(len(s), WEAK, dtype=np.int64)
    labels[s > tau_strong] = STRONG
    labels[s <= tau_noise] = NOISE
    thresholds = {
        "tau_noise": tau_noise,
        "tau_strong": tau_strong,
        "tukey_fence": fence,
        "noise_scale": noise_scale,
    }
    return _build(s, labels, "iqr-mp", thresholds, min_strong)


# -- registry of methods -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Method:
    fn: Callable[..., Partition]
    needs_noise_scale: bool
    source: str


PARTITIONS: Registry[_Method] = Registry("partition method")


def _iqr_mp(
    s: Spectrum, noise_scale: float, *, tukey_k: float = 1.5, min_strong: int = 1
) -> Partition:
    return iqr_mp_partition(
        s.singular_values,
        noise_scale,
        s.n_samples,
        s.n_features,
        tukey_k=tukey_k,
        min_strong=min_strong,
    )


def _by_counts(
    s: Spectrum, n_strong: int, n_weak: int, method: str, thr: dict, min_strong: int
) -> Partition:
    r = len(s.singular_values)
    labels = np.full(r, NOISE, dtype=np.int64)
    labels[: min(n_strong + n_weak, r)] = WEAK
    labels[:n_strong] = STRONG
    return _build(np.asarray(s.singular_values), labels, method, thr, min_strong)


def _energy(
    s: Spectrum,
    noise_scale: float | None = None,
    *,
    strong_energy: float = 0.9,
    weak_energy: float = 0.99,
    min_strong: int = 1,
) -> Partition:
    strong_energy = as_float(strong_energy, "strong_energy", lo=0.0, hi=1.0, lo_open=True)
    weak_energy = as_float(weak_energy, "weak_energy", lo=0.0, hi=1.0, lo_open=True)
    if not strong_energy <= weak_energy:
        raise ValueError(
            f"need 0 < strong_energy ≤ weak_energy ≤ 1, got {strong_energy}, {weak_energy}"
        )
    if s.degenerate:
        raise ValueError(
            "X_or_spectrum has an all-zero spectrum (e.g. identical rows); an energy partition "
            "is undefined"
        )
    cum = s.cumulative_energy
    r = len(cum)
    # smallest k with cumulative energy ≥ threshold (1e-12 absorbs the running sum's rounding)
    n_strong = min(r, int(np.searchsorted(cum, strong_energy - 1e-12)) + 1)
    n_sw = min(r, int(np.searchsorted(cum, weak_energy - 1e-12)) + 1)
    thr = {"strong_energy": strong_energy, "weak_energy": weak_energy}
    return _by_counts(s, n_strong, n_sw - n_strong, "energy", thr, min_strong)


def _fixed(
    s: Spectrum,
    noise_scale: float | None = None,
    *,
    strong_fraction: float = 0.1,
    weak_fraction: float = 0.4,
    min_strong: int = 1,
) -> Partition:
    strong_fraction = as_float(strong_fraction, "strong_fraction", lo=0.0, hi=1.0)
    weak_fraction = as_float(weak_fraction, "weak_fraction", lo=0.0, hi=1.0)
    if strong_fraction + weak_fraction > 1:
        raise ValueError(
            "need strong_fraction, weak_fraction ≥ 0 with sum ≤ 1, "
            f"got {strong_fraction}, {weak_fraction}"
        )
    r = len(s.singular_values)
    n_strong = round(strong_fraction * r)
    n_weak = round((strong_fraction + weak_fraction) * r) - n_strong
    thr = {"strong_fraction": strong_fraction, "weak_fraction": weak_fraction}
    return _by_counts(s, n_strong, n_weak, "fixed", thr, min_strong)


PARTITIONS.register("iqr-mp", aliases=("sde", "partition/iqr-mp"))(
    _Method(_iqr_mp, True, "SDE spec §1.2 [our reading]: IQR noise scale, MP edge, Tukey fence")
)
PARTITIONS.register("energy", aliases=("partition/energy",))(
    _Method(_energy, False, "cumulative-energy cut-offs: strong to 90%, weak to 99% (defaults)")
)
PARTITIONS.register("fixed", aliases=("partition/fixed",))(
    _Method(_fixed, False, "fixed fractions of the r directions: 10% strong, 40% weak (defaults)")
)


def partition(
    X_or_spectrum: Any,
    method: str = "iqr-mp",
    *,
    center: bool = False,
    noise_scale: float | None = None,
    **params: Any,
) -> Partition:
    """Strong / weak / noise partition of the singular directions of an (m, n) matrix.

    Args:
        X_or_spectrum: (m, n) data (numpy, torch, memmap, or iterable of row chunks) or a
            :class:`~workbench.probes.spectra.Spectrum`.
        method: ``"iqr-mp"`` (SDE spec §1.2 [our reading]; see module doc), ``"energy"``
            (``strong_energy=0.9``, ``weak_energy=0.99`` cumulative-energy cut-offs) or
            ``"fixed"`` (``strong_fraction=0.1``, ``weak_fraction=0.4`` of the r directions).
        center: partition the spectrum of the column-centred matrix. Default ``False``: SDE
            decomposes the raw batch matrix F (the noise scale is always taken on F − colmean).
        noise_scale: ŝ for ``"iqr-mp"``; computed from X when omitted (streaming inputs use a
            seeded uniform sample of rows). Required when passing a Spectrum to ``"iqr-mp"``.
        **params: method parameters (``tukey_k``, ``min_strong``, ``strong_energy``, ...).

    Returns:
        :class:`Partition`.
    """
    try:
        entry = PARTITIONS.get(method)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    if isinstance(X_or_spectrum, Spectrum):
        s = X_or_spectrum
        if entry.needs_noise_scale and noise_scale is None:
            raise ValueError(
                f"method {method!r} needs the matrix entries for its IQR noise scale; pass the "
                f"data X instead of a Spectrum, or give noise_scale= (e.g. iqr_noise_scale(X))"
            )
    elif not entry.needs_noise_scale or noise_scale is not None:
        s = spectrum(X_or_spectrum, center=center, name="X_or_spectrum")
    elif _is_chunk_iterable(X_or_spectrum) or _is_large(X_or_spectrum):
        acc = _accumulate(X_or_spectrum, "X_or_spectrum", sample_rows=_IQR_SAMPLE_ROWS)
        s = _spectrum_from_gram(acc, center, return_components=False)
        sample = acc.sample - acc.mean
        q1, q3 = np.percentile(sample, [25.0, 75.0])
        noise_scale = float((q3 - q1) / _GAUSSIAN_IQR)
    else:
        A = as_matrix(X_or_spectrum, "X_or_spectrum")
        s = spectrum(A, center=center, name="X_or_spectrum")
        noise_scale = iqr_noise_scale(A)
    return entry.fn(s, noise_scale, **params)
