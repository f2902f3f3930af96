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

from workbench._validate import as_matrix, check_paired, l2_normalize

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


def _paired_normed(image: Any, text: Any) -> tuple[np.ndarray, np.ndarray]:
    X = l2_normalize(as_matrix(image, "image"), "image")
    Y = l2_normalize(as_matrix(text, "text"), "text")
    check_paired(X, Y, ("image", "text"))
    return X, Y


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

        ``group``: ``None`` (this process), ``"auto"`` or a ``ProcessGroup``: the inputs are
        this rank's rows (at least 2 of each), the covariances are streamed and all-reduced
        (:func:`~workbench.probes.spectra.spectrum`'s accumulator), and every rank freezes the
        frame of all ranks' rows. Call on every rank.
        """
        if not 0 < self.energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        X = l2_normalize(as_matrix(probe_image, "probe_image"), "probe_image")
        Y = l2_normalize(as_matrix(probe_text, "probe_text"), "probe_text")
        if X.shape[1] != Y.shape[1]:
            raise ValueError(
                f"probe_image has dimension {X.shape[1]} but probe_text has {Y.shape[1]}"
            )
        d = X.shape[1]
        sigma = _covariance(X, group) + _covariance(Y, group)  # (d, d)
        evals, evecs = np.linalg.eigh(sigma)
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
        if self.rank is not None:
            r = int(self.rank)
            if not 1 <= r <= d:
                raise ValueError(f"rank must be in [1, {d}], got {self.rank}")
        else:
            total = evals.sum()
            if total <= 0:
                raise ValueError("probe embeddings have zero covariance; cannot choose a frame")
            r = int(np.searchsorted(np.cumsum(evals) / total, self.energy - 1e-12) + 1)
            r = min(r, d)
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
        """P_U v for rows (or a single vector) ``V`` (…, d)."""
        self._check_fitted()
        return (V @ self.U_) @ self.U_.T

    def decompose(self, image: Any, text: Any) -> Decomposition:
        """Split the per-pair gaps of paired (n, d) raw embeddings into β, γ, δ, ζ (Eq. 1).

        P_V is applied as I − P_U (exactly complementary), so Δ = β + γ + δ + ζ to round-off.
        """
        self._check_fitted()
        X, Y = _paired_normed(image, text)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"embeddings have dimension {X.shape[1]}, frame was fitted on {self.n_features_in_}"
            )
        gap = X - Y  # (n, d)
        m = gap.mean(axis=0)
        beta = self.project_u(m)
        gamma = m - beta
        resid = gap - m
        delta = self.project_u(resid)
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


def _covariance(X: np.ndarray, group: Any) -> np.ndarray:
    """(d, d) sample covariance of the rows of ``X`` (n, d) — of every rank's rows under ``group``."""
    from workbench.distributed import resolve_group
    from workbench.probes.spectra import _accumulate

    pg = resolve_group(group)
    if pg is None:
        return np.cov(X, rowvar=False)
    acc = _accumulate(X, "probe embeddings", group=pg)
    return acc.second_moment(center=True) / (acc.n - 1)


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
    """
    g0 = frame.decompose(*reference).gamma
    g1 = frame.decompose(*current).gamma
    n0, n1 = np.linalg.norm(g0), np.linalg.norm(g1)
    if n0 == 0:
        raise ValueError(
            "γ(t0) is zero (the mean gap lies entirely in U); relative drift is undefined"
        )
    cos = float(g0 @ g1 / (n0 * n1)) if n1 > 0 else float("nan")
    return PobDrift(float(np.linalg.norm(g1 - g0) / n0), cos, g0, g1)


def kappa_eff(matrix: Any, mass: float = 0.99) -> float:
    """Effective condition number λ_1 / λ_k of a symmetric PSD (d, d) matrix (e.g. Cov(δ)).

    k is the fewest leading eigenvalues holding ``mass`` of the trace. ReAlign uses κ_eff without
    defining it [our reading: mass = 0.99, exposed as a parameter].
    """
    M = as_matrix(matrix, "matrix", min_rows=1)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"matrix must be square (d, d), got {M.shape}")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    evals = np.clip(np.linalg.eigvalsh((M + M.T) / 2)[::-1], 0.0, None)
    total = evals.sum()
    if total <= 0:
        raise ValueError("matrix has zero trace; κ_eff is undefined")
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
        cov: (d, d) covariance Σ.
    """
    m = np.asarray(mu, dtype=np.float64)
    S = as_matrix(cov, "cov", min_rows=1)
    if m.ndim != 1 or S.shape != (m.size, m.size):
        raise ValueError(f"mu must be (d,) and cov (d, d); got {m.shape} and {S.shape}")
    r = float(np.linalg.norm(m))
    if r == 0:
        raise ValueError("mu is the zero vector; π(µ) is undefined")
    a = m / r
    Sa = S @ a
    tangential = -(Sa - a * (a @ Sa)) / r**2
    total = -Sa / r**2 - a * np.trace(S) / (2 * r**2) + 1.5 * a * (a @ Sa) / r**2
    return PhantomDrift(total=total, tangential=tangential, radial=total - tangential)


def phantom_drift_monte_carlo(
    mu: Any, cov: Any, n_samples: int = 200_000, seed: int = 0
) -> np.ndarray:
    """(d,) Monte-Carlo E[π(µ + ϵ)] − π(µ) with ϵ ~ N(0, Σ): the check for :func:`phantom_drift`."""
    m = np.asarray(mu, dtype=np.float64)
    S = as_matrix(cov, "cov", min_rows=1)
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(S + 1e-15 * np.eye(m.size))
    acc = np.zeros_like(m)
    done = 0
    while done < n_samples:
        b = min(50_000, n_samples - done)
        z = m + rng.standard_normal((b, m.size)) @ L.T
        acc += (z / np.linalg.norm(z, axis=1, keepdims=True)).sum(axis=0)
        done += b
    return acc / n_samples - m / np.linalg.norm(m)


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
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    D = decomposition.delta @ frame.U_  # (n, r)
    Z = decomposition.zeta @ frame.V_  # (n, d − r)
    n = D.shape[0]
    W = np.linalg.solve(D.T @ D / n + alpha * np.eye(D.shape[1]), D.T @ Z / n)
    ss_tot = float(np.square(Z).sum())
    r2 = 1.0 - float(np.square(Z - D @ W).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return UVCoupling(W, float(np.linalg.norm(W, 2)), r2, float(alpha))
