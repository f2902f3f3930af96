"""The frame each ReVision row feeds its projector: none / C3 / ReAlign's step prefixes, in torch.

The statistics are fitted once, outside training, by the probes' estimators
(:class:`~workbench.probes.realign.ReAlign`, :class:`~workbench.probes.realign.C3`) on an
*unpaired* image set and text set; :func:`fit_alignment` returns them as a JSON-able dict (a
method hyper-parameter, so every run's ``config.json`` records exactly the transform it used).
:func:`aligned` then applies them to a batch on any device (spec ``methods-geometry.md`` §2.2):

=================  ===========================================  ============================
kind               text (Stage 1 input)                         image (test / Stage 2 input)
=================  ===========================================  ============================
``none``           ê_y (L2-normalised; "No-Align")               x̂
``c3``             ê_y − µ_y (+ σ·N(0, I) while training)        x̂ − µ_x
``anchor``         ê_y − µ_y + µ_x                               x̂
``anchor+trace``   norm(µ_x + s(ê_y − µ_y))                      x̂
``full``           norm(norm(µ_x + s(ê_y − µ_y)) − µ'_y + µ_x)   x̂  (ReAlign)
=================  ===========================================  ============================

The torch arithmetic repeats :meth:`ReAlign.transform`'s three lines on purpose (the estimator is
float64 numpy, the method runs on the training device); ``tests/test_revision.py`` checks the
two agree to float32 precision so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workbench.probes.realign import C3, ReAlign

__all__ = ["ALIGNMENTS", "aligned", "check_alignment", "fit_alignment"]

#: Alignment kinds, in the order of ReVision's Tab. 1 / Tab. 5 rows.
ALIGNMENTS: tuple[str, ...] = ("none", "c3", "anchor", "anchor+trace", "full")


def fit_alignment(
    kind: str, image_emb: Any, text_emb: Any, *, c3_sigma: float = 0.02
) -> dict[str, Any] | None:
    """Fit ``kind``'s statistics on an unpaired image set and text set.

    Only per-modality moments are formed (means, total variances), so the rows of ``image_emb``
    and ``text_emb`` need not correspond — pass sets of different items, in any order.

    Args:
        kind: One of :data:`ALIGNMENTS`; ``"none"`` fits nothing and returns ``None``.
        image_emb: (n_x, d) raw image embeddings (L2-normalised inside).
        text_emb: (n_y, d) raw text embeddings.
        c3_sigma: C3's per-coordinate noise std (our reading; see :class:`C3`).

    Returns:
        ``{"kind", "mu_x", "mu_y", "scale", "mu_y_prime", "c3_sigma", "n_image", "n_text"}`` with
        vectors as float lists (``scale``/``mu_y_prime`` only for the ReAlign kinds).
    """
    check_kind(kind)
    if kind == "none":
        return None
    if kind == "c3":
        c3 = C3(sigma=c3_sigma).fit(image_emb, text_emb)
        return {
            "kind": kind, "mu_x": c3.mu_x_.tolist(), "mu_y": c3.mu_y_.tolist(),
            "c3_sigma": float(c3_sigma), "n_image": c3.n_image_, "n_text": c3.n_text_,
        }  # fmt: skip
    ra = ReAlign(steps=kind).fit(image_emb, text_emb)
    return {
        "kind": kind, "mu_x": ra.mu_x_.tolist(), "mu_y": ra.mu_y_.tolist(),
        "scale": float(ra.scale_), "mu_y_prime": ra.mu_y_prime_.tolist(),
        "n_image": ra.n_image_, "n_text": ra.n_text_,
    }  # fmt: skip


def check_kind(kind: str) -> str:
    if kind not in ALIGNMENTS:
        raise ValueError(f"alignment kind must be one of {ALIGNMENTS}, got {kind!r}")
    return kind


def check_alignment(kind: str, stats: dict[str, Any] | None) -> None:
    """``ValueError`` unless ``stats`` are :func:`fit_alignment`'s output for ``kind``."""
    check_kind(kind)
    if kind == "none":
        if stats is not None:
            raise ValueError("align='none' takes no fitted statistics (alignment must be None)")
        return
    if not isinstance(stats, dict) or stats.get("kind") != kind:
        got = stats.get("kind") if isinstance(stats, dict) else stats
        raise ValueError(
            f"align={kind!r} needs its fitted statistics: pass alignment=fit_alignment({kind!r}, "
            f"unpaired_images, unpaired_texts) (got {got!r})"
        )
    need = ("mu_x", "mu_y", "c3_sigma") if kind == "c3" else ("mu_x", "mu_y", "scale", "mu_y_prime")
    missing = [k for k in need if k not in stats]
    if missing:
        raise ValueError(f"alignment statistics lack {missing}")
    d = len(stats["mu_x"])
    if any(len(stats[k]) != d for k in ("mu_x", "mu_y", "mu_y_prime") if k in stats):
        raise ValueError("alignment statistics have vectors of different lengths")
    if not all(np.isfinite(np.asarray(stats[k], dtype=np.float64)).all() for k in need):
        raise ValueError("alignment statistics hold NaN/Inf")


def aligned(
    x: torch.Tensor,
    side: str,
    kind: str,
    stats: dict[str, torch.Tensor],
    *,
    noise: bool = False,
) -> torch.Tensor:
    """The projector's input for (B, d) L2-normalised features ``x`` of ``side`` (see the table).

    Args:
        x: (B, d) L2-normalised embeddings (post-head).
        side: ``"text"`` or ``"image"``.
        kind: One of :data:`ALIGNMENTS`.
        stats: ``{"mu_x", "mu_y", "mu_y_prime"}`` (d,) tensors and ``"scale"``, ``"sigma"``
            scalars on ``x``'s device (the method's buffers).
        noise: Add C3's Gaussian noise (text side, training only), from torch's global RNG.

    Returns:
        (B, d) float tensor (not unit-norm for ``c3`` and ``anchor``, as in spec §2.2).
    """
    if side == "image":
        return x - stats["mu_x"] if kind == "c3" else x
    if kind == "none":
        return x
    if kind == "c3":
        out = x - stats["mu_y"]
        return out + stats["sigma"] * torch.randn_like(out) if noise else out
    if kind == "anchor":
        return x - stats["mu_y"] + stats["mu_x"]  # ė_y
    e1 = F.normalize(stats["mu_x"] + stats["scale"] * (x - stats["mu_y"]), dim=-1)  # e'_y
    if kind == "anchor+trace":
        return e1
    return F.normalize(e1 - stats["mu_y_prime"] + stats["mu_x"], dim=-1)  # ê_y
