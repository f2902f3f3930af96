"""Effective ranks (a registry of named variants) and power-law α of a spectrum.

Each variant reads a :class:`~workbench.probes.spectra.Spectrum`'s eigenvalues; the registry id
names the paper it comes from (``rankme``, ``erank-cov``, ``participation-ratio``,
``stable-rank``, ``numerical-rank``). Specs: ``methods-geometry.md`` §2.3 (power-law α of
ReAlign Fig. 4a, effective rank of Fig. 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._registry import Registry
from workbench._validate import as_bool, as_float, as_int, as_vector, to_numpy

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

from workbench.probes.spectra import Spectrum, spectrum

__all__ = ["EFFECTIVE_RANKS", "PowerLawFit", "effective_rank", "power_law_alpha"]


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
    p = s.energy_fraction  # (Σλ)²/Σλ² = 1/Σp²: no λ² that could overflow
    return float(1.0 / np.sum(p**2))


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
        ValueError: unknown variant, wrong centring for the variant, all-zero (degenerate)
            spectrum — on either route: :attr:`Spectrum.degenerate` decides.
    """
    try:
        entry = EFFECTIVE_RANKS.get(variant)
    except KeyError as err:
        raise ValueError(f"variant: {err.args[0]}") from None
    tol = as_float(tol, "tol", lo=0.0, none_ok=True, finite=False)
    if center is not None:
        center = as_bool(center, "center")
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
        s = spectrum(X_or_spectrum, center=True if want is None else want, name="X_or_spectrum")
    if s.degenerate:
        raise ValueError(
            "the spectrum of X_or_spectrum is all zero (identical rows, or nothing above "
            "round-off of its scale); the effective rank is undefined"
        )
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
    name = "spectrum_or_X"
    if isinstance(spectrum_or_X, Spectrum):
        lam = spectrum_or_X.energy
        floor = spectrum_or_X.resolution**2
    else:
        arr = to_numpy(spectrum_or_X, name)
        if arr.ndim == 1:
            lam = np.sort(as_vector(arr, f"{name} (eigenvalues)", min_len=2))[::-1]
            if (lam < 0).any():
                raise ValueError(f"{name} (eigenvalues) must be non-negative")
            floor = 0.0
        else:
            s = spectrum(spectrum_or_X, center=as_bool(center, "center"), name=name)
            lam, floor = s.energy, s.resolution**2
    total = lam.sum()
    if total <= 0:
        raise ValueError(f"{name} has an all-zero spectrum (e.g. identical rows); α is undefined")
    p = lam / total
    usable = int(np.count_nonzero(lam > floor))
    if k_range is not None and (isinstance(k_range, (str, bytes)) or len(k_range) != 2):
        raise TypeError(f"k_range must be a (k_min, k_max) pair or None, got {k_range!r}")
    k_min, k_max = (1, None) if k_range is None else k_range
    k_max = usable if k_max is None else as_int(k_max, "k_range[1] (k_max)")
    k_min = as_int(k_min, "k_range[0] (k_min)")
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
