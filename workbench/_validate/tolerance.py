"""The one tolerance for degenerate data: when is a norm, variance or singular value zero?

Every probe that decides "this spectrum / scatter / variance is round-off" asks these two
functions, relative to the data's own scale and dtype resolution, so the in-memory and the
streaming (Gram) route of a probe decide alike.
"""

from __future__ import annotations

import math

import numpy as np


def roundoff(scale: float, n_terms: int, eps: float = float(np.finfo(np.float64).eps)) -> float:
    """Largest size that computing a norm of data of size ``scale`` can produce from round-off.

    ``4·√n_terms·ε·scale``: a sum of ``n_terms`` rounded terms, each off by a few ε of
    ``scale``, errs by about ``√n_terms`` of them (centring identical rows leaves exactly such a
    residue). Norms, standard deviations and singular values at or below it are zero [our
    reading: the factor 4 covers pairwise summation's log-depth growth for the sizes used here].
    """
    return 4.0 * math.sqrt(max(1, int(n_terms))) * eps * float(scale)


def spectral_floor(sigma_max: float, fro_norm: float, shape: tuple[int, int], eps: float) -> float:
    """Singular values at or below this are round-off, for a matrix of ``shape`` (m, d).

    The larger of numpy's ``matrix_rank`` default ``σ₁·max(m, d)·ε`` (the SVD's own error) and
    :func:`roundoff` of the raw data's Frobenius norm (what centring leaves of identical rows).
    ``eps`` is the resolution of the data's dtype. Every probe decides "this spectrum is
    all zero" with it, so the in-memory and the Gram route agree.
    """
    m = max(shape)
    return max(float(sigma_max) * m * eps, roundoff(fro_norm, m, eps))
