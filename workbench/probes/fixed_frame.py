"""Fixed-frame modality-gap theory (ReAlign, arXiv 2602.07026 v3, §3; spec ``methods-geometry.md`` §2.1).

A frame U ⊕ V is frozen once from a probe set: Σ̂ = Cov(e_x) + Cov(e_y) = QΛQᵀ, U = span of the
top-r eigenvectors (r from an energy threshold), V = U⊥. The per-pair gap Δ = e_x − e_y then
splits as (Eq. 1)

    Δ = β + γ + δ + ζ,   β = P_U m,  γ = P_V m,  δ = P_U(Δ − m),  ζ = P_V(Δ − m),  m = E[Δ]

β is the principal mean bias (PMB), γ the passive orthogonal bias (POB), δ and ζ the zero-mean
residuals in U and V. Also here: POB drift between checkpoints, the phantom-drift estimate of
Thm B.14 with its Monte-Carlo check, κ_eff, and App. C's ridge estimate of U→V coupling.

e_x, e_y are L2-normalised image and text embeddings of *paired* items, (n, d) each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError

from workbench._validate import (
    as_float,
    as_int,
    as_matrix,
    as_vector,
    check_paired,
    l2_normalize,
    roundoff,
    spectral_floor,
)

__all__ = [
    "Decomposition",
    "FixedFrame",
    "PhantomDrift",
    "PobDrift",
    "UVCoupling",
    "kappa_eff",
    "phantom_drift",
    "phantom_drift_monte_carlo",
    "pob_drift",
    "uv_coupling",
]


_EPS = float(np.finfo(np.float64).eps)


def _paired_normed(
    image: Any, text: Any, names: tuple[str, str] = ("image", "text")
) -> tuple[np.ndarray, np.ndarray]:
    X = l2_normalize(as_matrix(image, names[0]), names[0])
    Y = l2_normalize(as_matrix(text, names[1]), names[1])
    check_paired(X, Y, names)
    return X, Y


def _symmetric_psd(matrix: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a symmetric PSD (d, d) matrix; return it with its eigenvalues (descending,
    round-off clipped to 0) and eigenvectors (columns).

    Symmetry and non-negativity are judged to round-off of the matrix's own scale.
    """
    M = as_matrix(matrix, name, min_rows=1)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be square (d, d), got {M.shape}")
    scale = float(np.abs(M).max())
    d = M.shape[0]
    asym = float(np.abs(M - M.T).max())
    if asym > roundoff(scale, d * d):
        raise ValueError(f"{name} must be symmetric (a covariance), got max |M − Mᵀ| = {asym:.3g}")
    evals, evecs = np.linalg.eigh((M + M.T) / 2)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    tol = max(abs(float(evals[0])), scale) * d * _EPS
    if evals[-1] < -tol:
        raise ValueError(
            f"{name} must be positive semi-definite; its smallest eigenvalue is {evals[-1]:.3g}"
        )
    return M, np.where(evals > tol, evals, 0.0), evecs


@dataclass(frozen=True)
class Decomposition:
    """Eq. 1 of ReAlign on n pairs: Δ_i = β + γ + δ_i + ζ_i (holds to float64 round-off).

    Attributes:
        gap: (n, d) per-pair gaps Δ_i = e_x,i − e_y,i.
        mean: (d,) m = mean_i Δ_i.
        beta: (d,) β = P_U m, principal mean bias.
        gamma: (d,) γ = P_V m, passive orthogonal bias.
        delta: (n, d) δ_i = P_U(Δ_i − m).
        zeta: (n, d) ζ_i = P_V(Δ_i − m).
        beta_norm, gamma_norm: ‖β‖, ‖γ‖.
        delta_norms, zeta_norms: (n,) ‖δ_i‖, ‖ζ_i‖.
    """

    gap: np.ndarray
    mean: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    delta: np.ndarray
    zeta: np.ndarray
    beta_norm: float
    gamma_norm: float
    delta_norms: np.ndarray
    zeta_norms: np.ndarray

    def reconstruction_error(self) -> float:
        """max_i ‖Δ_i − (β + γ + δ_i + ζ_i)‖ — round-off only."""
        rebuilt = self.beta + self.gamma + self.delta + self.zeta
        return float(np.linalg.norm(self.gap - rebuilt, axis=1).max())

    def summary(self) -> dict[str, float]:
        return {
            "beta_norm": self.beta_norm,
            "gamma_norm": self.gamma_norm,
            "mean_delta_norm": float(self.delta_norms.mean()),
            "mean_zeta_norm": float(self.zeta_norms.mean()),
            "kappa_eff_delta": kappa_eff(np.cov(self.delta, rowvar=False)),
            "kappa_eff_zeta": kappa_eff(np.cov(self.zeta, rowvar=False)),
        }


class FixedFrame:
    """The frozen U ⊕ V frame of ReAlign §3.1, scikit-learn style.

    Args:
        energy: keep the fewest top eigenvectors of Σ̂ whose eigenvalues hold at least this
            fraction of tr Σ̂ (the paper sets r "by an energy threshold" without a value
            [our reading: 0.9]).
        rank: fix r directly instead (overrides ``energy``).

    Fitted attributes:
        eigenvalues_: (d,) eigenvalues of Σ̂, descending.
        U_: (d, r) orthonormal basis of U.   V_: (d, d − r) basis of V = U⊥.
        rank_: r.   n_features_in_: d.
    """

    def __init__(self, energy: float = 0.9, rank: int | None = None) -> None:
        self.energy = energy
        self.rank = rank

    def fit(self, probe_image: Any, probe_text: Any, *, group: Any = None) -> FixedFrame:
        """Freeze U, V from Σ̂ = Cov(e_x) + Cov(e_y) of a probe set ((n, d) raw, paired or not).

        Eigenvalues of Σ̂ at or below round-off of the data's scale
        (:func:`~workbench._validate.spectral_floor`, or the eigensolver's ``λ₁·d·ε``) are zero:
        they never enter the energy threshold, and a frame is refused when nothing is above
        them (identical rows) or when ``rank`` asks for more directions than there are.

        ``group``: ``None`` (this process), ``"auto"`` or a ``ProcessGroup``: the inputs are
        this rank's rows (at least 2 of each), the covariances are streamed and all-reduced
        (:func:`~workbench.probes.spectra.spectrum`'s accumulator), and every rank freezes the
        frame of all ranks' rows. Call on every rank.
        """
        energy = as_float(self.energy, "energy", lo=0.0, hi=1.0, lo_open=True)
        X = l2_normalize(as_matrix(probe_image, "probe_image"), "probe_image")
        Y = l2_normalize(as_matrix(probe_text, "probe_text"), "probe_text")
        if X.shape[1] != Y.shape[1]:
            raise ValueError(
                f"probe_image has dimension {X.shape[1]} but probe_text has {Y.shape[1]}"
            )
        d = X.shape[1]
        rank = as_int(self.rank, "rank", lo=1, hi=d, none_ok=True)
        (cov_x, n_x), (cov_y, n_y) = _covariance(X, group), _covariance(Y, group)
        sigma = cov_x + cov_y  # (d, d)
        evals, evecs = np.linalg.eigh(sigma)
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
        # raw scale of Σ̂'s square root: ‖[X/√(n_x−1); Y/√(n_y−1)]‖_F
        fro = float(np.sqrt(n_x / (n_x - 1) + n_y / (n_y - 1)))
        floor = spectral_floor(np.sqrt(evals[0]), fro, (n_x + n_y, d), _EPS) ** 2
        evals = np.where(evals > max(floor, evals[0] * d * _EPS), evals, 0.0)
        k = int(np.count_nonzero(evals))
        if k == 0:
            raise ValueError(
                "probe_image and probe_text have zero covariance (identical rows, up to "
                "round-off); there is no frame to fit"
            )
        if rank is not None:
            if rank > k:
                raise ValueError(
                    f"rank={rank} exceeds the {k} directions of Σ̂ above round-off (the others "
                    f"would be fitted to rounding noise); choose rank ≤ {k}"
                )
            r = rank
        else:
            total = evals.sum()
            r = int(np.searchsorted(np.cumsum(evals) / total, energy - 1e-12) + 1)
            r = min(r, k)
        self.eigenvalues_ = evals
        self.U_ = evecs[:, :r]
        self.V_ = evecs[:, r:]
        self.rank_ = r
        self.n_features_in_ = d
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "U_"):
            raise NotFittedError(
                "FixedFrame is not fitted; call fit(probe_image, probe_text) first"
            )

    def project_u(self, V: np.ndarray) -> np.ndarray:
        """P_U v for rows ``V`` (m, d), or a single vector (d,)."""
        self._check_fitted()
        single = np.ndim(V) == 1
        A = as_vector(V, "V")[None, :] if single else as_matrix(V, "V", min_rows=1)
        if A.shape[1] != self.n_features_in_:
            raise ValueError(
                f"V has dimension {A.shape[1]}, the frame was fitted on {self.n_features_in_}"
            )
        out = self._project(A)
        return out[0] if single else out

    def _project(self, A: np.ndarray) -> np.ndarray:
        return (A @ self.U_) @ self.U_.T

    def decompose(
        self, image: Any, text: Any, *, names: tuple[str, str] = ("image", "text")
    ) -> Decomposition:
        """Split the per-pair gaps of paired (n, d) raw embeddings into β, γ, δ, ζ (Eq. 1).

        P_V is applied as I − P_U (exactly complementary), so Δ = β + γ + δ + ζ to round-off.
        ``names`` are the arguments' names in error messages.
        """
        self._check_fitted()
        X, Y = _paired_normed(image, text, names)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{names[0]} and {names[1]} have dimension {X.shape[1]}, the frame was fitted "
                f"on {self.n_features_in_}"
            )
        gap = X - Y  # (n, d)
        m = gap.mean(axis=0)
        beta = self._project(m[None, :])[0]
        gamma = m - beta
        resid = gap - m
        delta = self._project(resid)
        zeta = resid - delta
        return Decomposition(
            gap=gap,
            mean=m,
            beta=beta,
            gamma=gamma,
            delta=delta,
            zeta=zeta,
            beta_norm=float(np.linalg.norm(beta)),
            gamma_norm=float(np.linalg.norm(gamma)),
            delta_norms=np.linalg.norm(delta, axis=1),
            zeta_norms=np.linalg.norm(zeta, axis=1),
        )


def _covariance(X: np.ndarray, group: Any) -> tuple[np.ndarray, int]:
    """``(cov, n)``: the (d, d) sample covariance of the rows of ``X`` (n, d) and their count —
    of every rank's rows under ``group``."""
    from workbench.distributed import resolve_group
    from workbench.probes._gram import _accumulate

    pg = resolve_group(group)
    if pg is None:
        return np.cov(X, rowvar=False), X.shape[0]
    acc = _accumulate(X, "probe embeddings", group=pg)
    return acc.second_moment(center=True) / (acc.n - 1), acc.n


@dataclass(frozen=True)
class PobDrift:
    """POB drift between a reference checkpoint t0 and a later one t (ReAlign Fig. 1b).

    Attributes:
        relative_drift: ‖γ(t) − γ(t0)‖ / ‖γ(t0)‖.
        cosine: cos(γ(t), γ(t0)).
        gamma_ref, gamma: (d,) the two POB vectors.
    """

    relative_drift: float
    cosine: float
    gamma_ref: np.ndarray
    gamma: np.ndarray


def pob_drift(frame: FixedFrame, reference: tuple[Any, Any], current: tuple[Any, Any]) -> PobDrift:
    """POB drift of paired (image, text) embeddings at two checkpoints in one frozen frame.

    Args:
        frame: a fitted :class:`FixedFrame` (frozen at t0).
        reference: (image, text) (n, d) raw embeddings of the probe set at t0.
        current: (image, text) of the same probe items at a later checkpoint t.

    A γ no larger than round-off of the mean gap (:func:`~workbench._validate.roundoff` of
    ‖m‖; e.g. every γ when ``rank = d`` leaves V empty) is zero: a zero γ(t0) raises, a zero
    γ(t) gives ``cosine = nan`` and drift 1.

    Raises:
        ValueError: γ(t0) is zero (the mean gap lies entirely in U), and every bad-input case
            of :meth:`FixedFrame.decompose` (named ``reference[0]`` ... ``current[1]``).
    """
    for name, pair in (("reference", reference), ("current", current)):
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise TypeError(f"{name} must be an (image, text) pair of (n, d) arrays")
    frame._check_fitted()
    d0 = frame.decompose(*reference, names=("reference[0] (image)", "reference[1] (text)"))
    d1 = frame.decompose(*current, names=("current[0] (image)", "current[1] (text)"))
    g0, g1 = d0.gamma, d1.gamma
    n0, n1 = np.linalg.norm(g0), np.linalg.norm(g1)
    d = frame.n_features_in_
    if n0 <= roundoff(np.linalg.norm(d0.mean), d):
        raise ValueError(
            "reference: γ(t0) is zero up to round-off (the mean gap lies entirely in U"
            + ("; rank = d leaves V empty" if frame.V_.shape[1] == 0 else "")
            + "); the relative drift is undefined"
        )
    if n1 <= roundoff(np.linalg.norm(d1.mean), d):
        g1, n1 = np.zeros_like(g1), 0.0
    cos = float(g0 @ g1 / (n0 * n1)) if n1 > 0 else float("nan")
    return PobDrift(float(np.linalg.norm(g1 - g0) / n0), cos, g0, g1)


def kappa_eff(matrix: Any, mass: float = 0.99) -> float:
    """Effective condition number λ_1 / λ_k of a symmetric PSD (d, d) matrix (e.g. Cov(δ)).

    k is the fewest leading eigenvalues holding ``mass`` of the trace. ReAlign uses κ_eff without
    defining it [our reading: mass = 0.99, exposed as a parameter].
    """
    mass = as_float(mass, "mass", lo=0.0, hi=1.0, lo_open=True)
    _, evals, _ = _symmetric_psd(matrix, "matrix")
    total = evals.sum()
    if total <= 0:
        raise ValueError("matrix is zero up to round-off (zero trace); κ_eff is undefined")
    k = int(np.searchsorted(np.cumsum(evals) / total, mass - 1e-12))
    return float(evals[0] / evals[min(k, len(evals) - 1)])


@dataclass(frozen=True)
class PhantomDrift:
    """Thm B.14: Δπ = E[π(µ + ϵ)] − π(µ) to second order, split along and across a = µ/‖µ‖.

    Attributes:
        total: (d,) −(1/r²)Σa − (1/2r²)a·tr Σ + (3/2r²)a(aᵀΣa).
        tangential: (d,) −(1/r²)(I − aaᵀ)Σa (zero for isotropic Σ).
        radial: (d,) total − tangential (parallel to a).
    """

    total: np.ndarray
    tangential: np.ndarray
    radial: np.ndarray


def phantom_drift(mu: Any, cov: Any) -> PhantomDrift:
    """Second-order shift of the normalised mean caused by spread alone (ReAlign Thm B.14).

    For z = µ + ϵ with Cov ϵ = Σ and π(z) = z/‖z‖: r = ‖µ‖, a = µ/r. Valid while the spread is
    small relative to r (tr Σ ≪ r²); compare with :func:`phantom_drift_monte_carlo`.

    Args:
        mu: (d,) mean µ (non-zero).
        cov: (d, d) covariance Σ (symmetric positive semi-definite).
    """
    m, S, _ = _mean_and_cov(mu, cov)
    r = float(np.linalg.norm(m))
    a = m / r
    Sa = S @ a
    tangential = -(Sa - a * (a @ Sa)) / r**2
    total = -Sa / r**2 - a * np.trace(S) / (2 * r**2) + 1.5 * a * (a @ Sa) / r**2
    return PhantomDrift(total=total, tangential=tangential, radial=total - tangential)


def phantom_drift_monte_carlo(
    mu: Any, cov: Any, n_samples: int = 200_000, seed: int = 0
) -> np.ndarray:
    """(d,) Monte-Carlo E[π(µ + ϵ)] − π(µ) with ϵ ~ N(0, Σ): the check for :func:`phantom_drift`.

    ``n_samples`` ≥ 1 draws (seeded by ``seed``); Σ may be singular (ϵ = Q√Λ z).
    """
    m, _, (evals, evecs) = _mean_and_cov(mu, cov)
    n_samples = as_int(n_samples, "n_samples", lo=1)
    rng = np.random.default_rng(as_int(seed, "seed", lo=0))
    L = evecs * np.sqrt(evals)  # (d, d): L Lᵀ = Σ, exact for semi-definite Σ too
    acc = np.zeros_like(m)
    done = 0
    while done < n_samples:
        b = min(50_000, n_samples - done)
        z = m + rng.standard_normal((b, m.size)) @ L.T
        acc += (z / np.linalg.norm(z, axis=1, keepdims=True)).sum(axis=0)
        done += b
    return acc / n_samples - m / np.linalg.norm(m)


def _mean_and_cov(
    mu: Any, cov: Any
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    m = as_vector(mu, "mu")
    S, evals, evecs = _symmetric_psd(cov, "cov")
    if S.shape != (m.size, m.size):
        raise ValueError(f"mu must be (d,) and cov (d, d); got {m.shape} and {S.shape}")
    if not np.any(m):
        raise ValueError("mu is the zero vector; π(µ) is undefined")
    return m, S, (evals, evecs)


@dataclass(frozen=True)
class UVCoupling:
    """App. C: ridge regression ζ ≈ δ W, in U / V coordinates.

    Attributes:
        weights: (r, d − r) W mapping δ's U-coordinates to ζ's V-coordinates.
        spectral_norm: ‖W‖₂ (basis-independent).
        r2: 1 − ‖ζ − δW‖² / ‖ζ‖² (ζ is zero-mean), pooled over all coordinates.
        alpha: ridge penalty used.
    """

    weights: np.ndarray
    spectral_norm: float
    r2: float
    alpha: float


def uv_coupling(frame: FixedFrame, decomposition: Decomposition, alpha: float = 1e-3) -> UVCoupling:
    """Estimate U→V coupling by ridge regression of ζ on δ (ReAlign App. C).

    W = (DᵀD/n + αI)⁻¹ DᵀZ/n with D = δ U (n, r), Z = ζ V (n, d − r). The penalty is not given in
    the paper [our reading: α relative to the per-sample Gram matrix, default 1e-3].
    """
    frame._check_fitted()
    if frame.V_.shape[1] == 0:
        raise ValueError("V is empty (rank = d): there is no orthogonal complement to couple into")
    alpha = as_float(alpha, "alpha", lo=0.0)
    D = decomposition.delta @ frame.U_  # (n, r)
    Z = decomposition.zeta @ frame.V_  # (n, d − r)
    n = D.shape[0]
    W = np.linalg.solve(D.T @ D / n + alpha * np.eye(D.shape[1]), D.T @ Z / n)
    ss_tot = float(np.square(Z).sum())
    r2 = 1.0 - float(np.square(Z - D @ W).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return UVCoupling(W, float(np.linalg.norm(W, 2)), r2, float(alpha))
