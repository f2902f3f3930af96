"""CDDS — Constrained Decoupling and Distribution Sampling (AAAI 2026, arXiv 2603.05566).

No official code exists; every equation is our reading of ``methods-spectral.md`` §3. One
concept per module:

* :mod:`.network` — the dual-path UNet decoupling network (§3.2);
* :mod:`.semantics` — column distributions, the Gaussian KL matrix, the adaptive soft threshold
  and distribution sampling by quantile mapping (§3.3–3.4);
* :mod:`.loss` — ``cdds_loss_terms``, the four losses and Eq. 15 (§3.5);
* :mod:`.method` — the ``"cdds"`` :class:`~workbench.methods.tokens.TokenMethod` and its
  Table 3 / Table 5 switches (``ABLATIONS``, ``IDENTIFICATION``).

Its like-for-like baseline is ``"vse"`` (:mod:`workbench.methods.vse`).
"""

from workbench.methods.base import METHODS
from workbench.methods.cdds.loss import Components, cdds_loss_terms
from workbench.methods.cdds.method import ABLATIONS, CDDS, IDENTIFICATION, SCORES
from workbench.methods.cdds.semantics import (
    column_stats,
    gaussian_kl_matrix,
    quantile_grid,
    quantile_map,
    related_weights,
)

METHODS.register("cdds")(CDDS)

__all__ = [
    "ABLATIONS",
    "CDDS",
    "IDENTIFICATION",
    "SCORES",
    "Components",
    "cdds_loss_terms",
    "column_stats",
    "gaussian_kl_matrix",
    "quantile_grid",
    "quantile_map",
    "related_weights",
]
