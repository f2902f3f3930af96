"""Cross-paper geometry diagnostics of paired embeddings, and the eval hook that logs them.

One snapshot holds what the seed papers each look at, measured the same way for every method
(issue 18, item 2): per modality the top singular values of the raw (n, E) embeddings, the
strong / weak / noise shares of those directions under the IQR + Marchenko–Pastur partition (SDE
spec ``methods-spectral.md`` §1.2 [our reading]), RankMe effective rank, cone width; between the
modalities the centroid gap ‖μ_x − μ_y‖ of the L2-normalised rows (Mind the Gap) and ReAlign's
Eq. 1 split of the mean gap into the principal bias β and the orthogonal bias γ in a
:class:`~workbench.probes.fixed_frame.FixedFrame` frozen once (at step 0), so β/γ of later steps
are read in the same directions.

:func:`diagnostics_hook` runs it inside :func:`workbench.train.train` (``eval_hooks=[...]``), at
the loop's ``eval_every`` cadence (step 0 included), on a fixed probe set of tower features; the
metrics land in the run's ``eval`` records under ``diag/...`` keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["DIAG_PREFIX", "diagnostics_hook", "fit_frame", "geometry_snapshot", "project_pairs"]

#: Key prefix of every diagnostic in a run's ``eval`` records.
DIAG_PREFIX = "diag/"


def fit_frame(image: Any, text: Any, *, energy: float = 0.9) -> Any:
    """The fixed U ⊕ V frame (ReAlign §3.1) of (n, E) raw image and text embeddings.

    ``energy``: share of tr Σ̂ that U keeps ([our reading: 0.9], as
    :class:`~workbench.probes.fixed_frame.FixedFrame`).
    """
    from workbench.probes.fixed_frame import FixedFrame

    return FixedFrame(energy=energy).fit(image, text)


def geometry_snapshot(
    image: Any, text: Any, frame: Any = None, *, n_sv: int = 32
) -> dict[str, float]:
    """Every diagnostic of one set of paired embeddings, as flat floats.

    Args:
        image: (n, E) raw image embeddings (n ≥ 4).
        text: (n, E) raw text embeddings of the same n pairs.
        frame: A fitted :class:`~workbench.probes.fixed_frame.FixedFrame` for β/γ (``None``:
            no β/γ keys).
        n_sv: Singular values kept per modality (the largest; trace-normalised, Σσ² = 1, so
            spectra of different methods compare).

    Returns:
        ``{"<side>/sv/<i>", "<side>/strong|weak|noise" (share of directions),
        "<side>/erank", "<side>/cone", "gap", "beta", "gamma"}`` — without the
        :data:`DIAG_PREFIX`.
    """
    from workbench._validate import as_int, as_matrix
    from workbench.probes.gap import modality_gap
    from workbench.probes.partitions import partition
    from workbench.probes.ranks import effective_rank
    from workbench.probes.spectra import spectrum

    X = as_matrix(image, "image", min_rows=4)
    Y = as_matrix(text, "text", min_rows=4)
    if X.shape != Y.shape:
        raise ValueError(f"image {X.shape} and text {Y.shape} must be the same n paired rows")
    n_sv = as_int(n_sv, "n_sv", lo=1)
    out: dict[str, float] = {}
    for side, Z in (("image", X), ("text", Y)):
        spec = spectrum(Z, center=False)
        s = np.asarray(spec.singular_values, dtype=np.float64)
        s_norm = s / max(float(np.sqrt((s**2).sum())), 1e-30)
        for i, v in enumerate(s_norm[:n_sv]):
            out[f"{side}/sv/{i}"] = float(v)
        part = partition(Z, "iqr-mp")
        r = max(len(part.singular_values), 1)
        for band in ("strong", "weak", "noise"):
            out[f"{side}/{band}"] = len(getattr(part, band)) / r
        out[f"{side}/erank"] = float(effective_rank(spec, "rankme"))
    gap = modality_gap(X, Y, with_spectra=False)
    out["image/cone"], out["text/cone"] = gap.cone_width_image, gap.cone_width_text
    out["gap"] = gap.gap_norm
    if frame is not None:
        dec = frame.decompose(X, Y)
        out["beta"], out["gamma"] = dec.beta_norm, dec.gamma_norm
    return out


def diagnostics_hook(
    image_tower: Any, text_tower: Any, *, frame: Any = None, n_sv: int = 32
) -> Callable[[Any, int], dict[str, float]]:
    """An eval hook logging :func:`geometry_snapshot` of a fixed probe set at every evaluation.

    Args:
        image_tower: (n, D_img) tower features of the probe pairs' images.
        text_tower: (n, D_txt) tower features of their texts (the hook applies the encoder's
            current heads, so it suits heads-only runs on cached towers).
        frame: The β/γ frame. ``None``: frozen from the probe set at the hook's first call,
            which is step 0 of a fresh run. Footgun: a *resumed* run's first call is a later
            step — pass the frame explicitly (e.g. :func:`fit_frame` of the starting heads)
            when runs may resume or must share one frame.
        n_sv: Singular values logged per modality.

    Returns:
        ``(encoder, step) -> {"diag/<key>": value}``.
    """
    from workbench._validate import as_matrix
    from workbench.encoders.heads import as_heads

    Xt = as_matrix(image_tower, "image_tower", min_rows=4)
    Yt = as_matrix(text_tower, "text_tower", min_rows=4)
    if len(Xt) != len(Yt):
        raise ValueError(f"image_tower has {len(Xt)} rows but text_tower has {len(Yt)}")
    state = {"frame": frame}

    def hook(encoder: Any, step: int) -> dict[str, float]:
        heads = as_heads(encoder)
        X, Y = project_pairs(heads, Xt, Yt)
        if state["frame"] is None:
            state["frame"] = fit_frame(X, Y)
        snap = geometry_snapshot(X, Y, state["frame"], n_sv=n_sv)
        return {DIAG_PREFIX + k: v for k, v in snap.items()}

    return hook


def project_pairs(heads: Any, image_tower: Any, text_tower: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n, E) raw image and text embeddings of tower features under ``heads``."""
    from workbench.encoders.heads import apply_head

    return (
        apply_head(heads.image_head, image_tower).astype(np.float64),
        apply_head(heads.text_head, text_tower).astype(np.float64),
    )
