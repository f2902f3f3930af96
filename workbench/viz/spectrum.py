"""Plotly figures for spectra, partitions and effective ranks (SDE Fig. 3, FANoise Figs. 3–4).

Builders take result objects of :mod:`workbench.probes.spectra`, :mod:`~.partitions` and
:mod:`~.subspace`, or run logs (lists of dicts with a ``step``), and return ``go.Figure``s with
labelled axes; nothing is measured here. Save them with :func:`workbench.viz.save.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "cosine_distribution_figure",
    "cumulative_energy_figure",
    "effective_rank_figure",
    "partition_proportions_figure",
    "power_law_figure",
    "singular_vector_alignment_figure",
    "spectrum_figure",
]

_BAND_COLOURS = {"strong": "#1f77b4", "weak": "#ff7f0e", "noise": "#7f7f7f"}
_QUANTITIES = {
    "singular_values": ("singular value σ_k", lambda s: s.singular_values),
    "normalized": ("σ_k / σ_1", lambda s: s.singular_values / s.singular_values[0]),
    "energy_fraction": ("energy share σ_k² / Σσ²", lambda s: s.energy_fraction),
    "eigenvalues": ("covariance eigenvalue λ_k", lambda s: s.eigenvalues),
}


def _named_spectra(spectra: Any) -> dict[str, Any]:
    """``{name: Spectrum}`` from a Spectrum, a 1-D array of σ, a mapping or a sequence of them."""
    from workbench.probes.spectra import Spectrum

    def one(s: Any) -> Spectrum:
        if isinstance(s, Spectrum):
            return s
        sv = np.asarray(s, dtype=np.float64)
        if sv.ndim != 1:
            raise ValueError(f"expected a Spectrum or 1-D singular values, got shape {sv.shape}")
        return Spectrum.from_singular_values(sv, len(sv), len(sv))

    if isinstance(spectra, Mapping):
        items = {str(k): one(v) for k, v in spectra.items()}
    elif isinstance(spectra, Spectrum) or (isinstance(spectra, np.ndarray) and spectra.ndim == 1):
        items = {"spectrum": one(spectra)}
    elif isinstance(spectra, Sequence) and not isinstance(spectra, str):
        items = {f"spectrum {i}": one(s) for i, s in enumerate(spectra)}
    else:
        raise ValueError("spectra must be a Spectrum, a mapping name → Spectrum, or a sequence")
    if not items:
        raise ValueError("no spectra to plot")
    return items


def spectrum_figure(
    spectra: Any,
    *,
    quantity: str = "singular_values",
    top_k: int | None = None,
    log_x: bool = False,
    title: str | None = None,
) -> Any:
    """Sorted spectra, log-y, several overlaid (e.g. before/after; SDE Fig. 3b).

    Args:
        spectra: a Spectrum, ``{name: Spectrum}`` (e.g. ``{"baseline": a, "SDE": b}``), a
            sequence of them, or 1-D arrays of singular values.
        quantity: ``"singular_values"``, ``"normalized"`` (σ/σ₁, compares scales),
            ``"energy_fraction"`` or ``"eigenvalues"``.
        top_k: plot only the first k ranks.
        log_x: log-scaled rank axis too (a power law is then a straight line).
    """
    import plotly.graph_objects as go

    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {sorted(_QUANTITIES)}, got {quantity!r}")
    label, get = _QUANTITIES[quantity]
    fig = go.Figure()
    for name, s in _named_spectra(spectra).items():
        y = np.asarray(get(s))[:top_k]
        k = np.arange(1, len(y) + 1)
        pos = y > 0  # zeros cannot sit on a log axis
        fig.add_trace(
            go.Scatter(x=k[pos], y=y[pos], mode="lines+markers", name=name, marker={"size": 3})
        )
    fig.update_layout(
        title=title or "Sorted spectrum",
        xaxis_title="rank k",
        yaxis_title=label,
        yaxis_type="log",
        xaxis_type="log" if log_x else "linear",
        legend_title="spectrum",
    )
    return fig


def cumulative_energy_figure(
    spectra: Any,
    *,
    top_k: int | None = None,
    marks: Sequence[float] = (0.9, 0.99),
    title: str | None = None,
) -> Any:
    """Cumulative energy ``Σ_{i≤k} σ_i² / Σσ²`` vs k, several overlaid (SDE Fig. 3c).

    Args:
        spectra: as for :func:`spectrum_figure`.
        top_k: plot only the first k ranks.
        marks: horizontal guide lines (e.g. the energy partition's thresholds).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, s in _named_spectra(spectra).items():
        y = s.cumulative_energy[:top_k]
        fig.add_trace(go.Scatter(x=np.arange(1, len(y) + 1), y=y, mode="lines", name=name))
    for m in marks:
        fig.add_hline(y=m, line_dash="dot", line_color="grey", annotation_text=f"{m:.0%}")
    fig.update_layout(
        title=title or "Cumulative energy",
        xaxis_title="rank k",
        yaxis_title="cumulative energy fraction",
        yaxis_range=[0, 1.02],
        legend_title="spectrum",
    )
    return fig


def _band_record(rec: Any, side: str | None, energy: bool) -> tuple[float, dict[str, float]]:
    """(step, {band: proportion}) from one log record or a (step, Partition) pair."""
    if isinstance(rec, tuple) and len(rec) == 2:
        step, part = rec
        props = part.energy_proportions if energy else part.proportions
        return float(step), dict(props)
    if not isinstance(rec, Mapping) or "step" not in rec:
        raise ValueError(
            f"each log record must be a dict with a 'step' (or (step, Partition)), got {rec!r:.80}"
        )
    body = rec[side] if side is not None else rec
    if body is None:
        return float(rec["step"]), {}
    if hasattr(body, "proportions"):  # a Partition stored in the log
        return float(rec["step"]), dict(body.energy_proportions if energy else body.proportions)
    src = body.get("partition") if isinstance(body.get("partition"), Mapping) else body
    keys = [f"energy_{b}" for b in _BAND_COLOURS] if energy else list(_BAND_COLOURS)
    return float(rec["step"]), {b: src[k] for b, k in zip(_BAND_COLOURS, keys) if k in src}


def partition_proportions_figure(
    log: Sequence[Any],
    *,
    side: str | None = None,
    energy: bool = False,
    title: str | None = None,
) -> Any:
    """Strong / weak / noise proportions vs training step as a stacked area (SDE Fig. 3a).

    Args:
        log: records ``{"step": t, "strong": p_s, "weak": p_w, "noise": p_n}`` (or with the
            proportions under ``"partition"``, as the training loop's snapshots, or
            ``Partition.to_dict()`` merged with a step), or ``(step, Partition)`` pairs.
        side: read each record's ``record[side]`` first (e.g. ``"image"`` / ``"text"``).
        energy: plot each band's share of energy instead of its share of directions.
    """
    import plotly.graph_objects as go

    rows = sorted((_band_record(r, side, energy) for r in log), key=lambda t: t[0])
    rows = [(s, p) for s, p in rows if p]
    if not rows:
        raise ValueError("the log holds no strong/weak/noise proportions to plot")
    steps = [s for s, _ in rows]
    fig = go.Figure()
    for band, colour in _BAND_COLOURS.items():
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[p.get(band, np.nan) for _, p in rows],
                mode="lines",
                name=band,
                stackgroup="bands",
                line={"color": colour},
            )
        )
    what = "energy share" if energy else "share of directions"
    fig.update_layout(
        title=title or f"Strong / weak / noise {what} over training",
        xaxis_title="training step",
        yaxis_title=what,
        yaxis_range=[0, 1],
        legend_title="band",
    )
    return fig


def effective_rank_figure(
    log: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    keys: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Effective rank(s) vs training step, one line per key (and per run).

    Args:
        log: records ``{"step": t, "rankme": r, "erank-cov": r', ...}``, or ``{run_name:
            records}`` to overlay runs.
        keys: record keys to plot; default every numeric key with "rank" in its name.
    """
    import plotly.graph_objects as go

    runs = dict(log) if isinstance(log, Mapping) else {"": log}
    fig = go.Figure()
    for run, records in runs.items():
        records = sorted(records, key=lambda r: r["step"])
        use = keys or sorted(
            {k for r in records for k, v in r.items() if "rank" in k and np.isscalar(v)}
        )
        if not use:
            raise ValueError("no effective-rank keys found; pass keys=[...]")
        for k in use:
            pts = [(r["step"], r[k]) for r in records if k in r and r[k] is not None]
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="lines+markers",
                    name=f"{run} {k}".strip(),
                )
            )
    fig.update_layout(
        title=title or "Effective rank over training",
        xaxis_title="training step",
        yaxis_title="effective rank",
        legend_title="measure",
    )
    return fig


def power_law_figure(fits: Any, *, title: str | None = None) -> Any:
    """Trace-normalised eigenvalues and their fitted ``λ_k ∝ k^−α`` lines, log-log (ReAlign 4a).

    Args:
        fits: a :class:`~workbench.probes.ranks.PowerLawFit` or ``{name: fit}``.
    """
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS

    named = dict(fits) if isinstance(fits, Mapping) else {"spectrum": fits}
    fig = go.Figure()
    for i, (name, fit) in enumerate(named.items()):
        colour = DEFAULT_PLOTLY_COLORS[i % len(DEFAULT_PLOTLY_COLORS)]
        fig.add_trace(
            go.Scatter(
                x=fit.ranks,
                y=fit.eigenvalues,
                mode="markers",
                name=name,
                marker={"size": 4, "color": colour},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=fit.ranks,
                y=fit.predict(fit.ranks),
                mode="lines",
                name=f"{name}: α = {fit.alpha:.2f}",
                line={"dash": "dash", "color": colour},
            )
        )
    fig.update_layout(
        title=title or "Power-law fit of the eigen-spectrum",
        xaxis_title="rank k",
        yaxis_title="λ_k / Σλ",
        xaxis_type="log",
        yaxis_type="log",
    )
    return fig


def singular_vector_alignment_figure(result: Any, *, title: str | None = None) -> Any:
    """Clean vs perturbed singular vectors (FANoise Figs. 3–4 [our reading]).

    Left: heat-map ``|V_kᵀ V'_k|``; right: per-direction ``|⟨v_i, v'_i⟩|``, captured share and
    relative change of σ.

    Args:
        result: a :class:`~workbench.probes.subspace.SingularVectorAlignment`.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    k = result.k
    idx = np.arange(1, k + 1)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("|⟨v_i, v′_j⟩| (clean rows, perturbed columns)", "per direction"),
    )
    fig.add_trace(
        go.Heatmap(
            z=result.overlap_matrix,
            x=idx,
            y=idx,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"x": 0.45, "title": "|cos|"},
        ),
        row=1,
        col=1,
    )
    for name, y in (
        ("|⟨v_i, v′_i⟩|", result.cosines),
        ("‖V′ᵀ v_i‖ (captured)", result.captured),
        ("(σ′_i − σ_i)/σ_i", result.relative_change[:k]),
    ):
        fig.add_trace(go.Scatter(x=idx, y=y, mode="lines+markers", name=name), row=1, col=2)
    fig.update_xaxes(title_text="perturbed direction j", row=1, col=1)
    fig.update_yaxes(title_text="clean direction i", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="direction i", row=1, col=2)
    fig.update_yaxes(title_text="value", row=1, col=2)
    fig.update_layout(title=title or "Singular vectors: clean vs perturbed")
    return fig


def cosine_distribution_figure(distributions: Any, *, title: str | None = None) -> Any:
    """Histograms (as densities) of pairwise cosines, overlaid, with each mean marked.

    Args:
        distributions: a :class:`~workbench.probes.geometry.CosineDistribution` or
            ``{name: distribution}``.
    """
    import plotly.graph_objects as go

    named = (
        dict(distributions) if isinstance(distributions, Mapping) else {"cosines": distributions}
    )
    fig = go.Figure()
    for name, dist in named.items():
        width = np.diff(dist.edges)
        density = dist.counts / max(1, dist.counts.sum()) / width
        centres = 0.5 * (dist.edges[1:] + dist.edges[:-1])
        fig.add_trace(
            go.Scatter(
                x=centres,
                y=density,
                mode="lines",
                line_shape="hvh",
                name=f"{name} (mean {dist.mean:.3f})",
            )
        )
    fig.update_layout(
        title=title or "Pairwise cosine similarity",
        xaxis_title="cosine similarity",
        yaxis_title="density",
        xaxis_range=[-1, 1],
    )
    return fig
