"""DCR Theorem 1 checked empirically, and Fig. 5 (t-SNE of digits before/after DCR).

Theorem 1 [secondary, quoting the paper]: ``S_inner ≤ S_inner^ε(t) / m²`` and
``S_inter ≥ κ·S_inter^ε(t) − η·S_inner^ε(t)``, where S^ε are the scatters of the *predicted
noises* at timestep t. The constants' definitions were not recovered (spec §1.5); **our
reading**, derived here: let ``g_t(z) = ε_θ(x_t^ref, h_ω(z), t)`` (flattened) be bi-Lipschitz on
the data, ``m‖z_i − z_j‖ ≤ ‖g(z_i) − g(z_j)‖ ≤ M‖z_i − z_j‖``. With balanced classes the total
scatter is ``S_tot = S_inner + S_inter = (1/2n²) Σ_ij ‖z_i − z_j‖²`` in both spaces, so

* ``S_inner ≤ S_inner^ε / m²`` (within-class pairs), and
* ``S_inter = S_tot − S_inner ≥ S_tot^ε / M² − S_inner^ε / m²``, i.e. ``κ = 1/M²`` and
  ``η = 1/m² − 1/M²``.

With m, M the exact extremes over every pair of a set, both hold on that set by construction
(the check then verifies the algebra); the informative check estimates m, M on one half of the
samples and tests the inequalities on the other half, and reports the distortion M/m and how
tight each bound is. The map fixes one shared noisy input ``x_t^ref`` (the noise of a grey
image) so that g depends on z alone [our reading].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.probes.separability import class_scatter

__all__ = [
    "balanced_digits",
    "bounds_check",
    "dcr_tsne_figure",
    "lipschitz_range",
    "noise_predictions",
    "projector_at",
    "theorem1_check",
    "theorem1_figure",
]


def balanced_digits(per_class: int, seed: int = 0, split: str = "test") -> Any:
    """Digits ``split`` with ``per_class`` items of every class (seeded)."""
    from workbench.data import load_dataset

    ds = load_dataset("digits", split=split)
    rng = np.random.default_rng(seed)
    labels = np.asarray([ds._labels[i] for i in range(len(ds))])
    rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                           for c in range(10)])  # fmt: skip
    return [ds[int(i)] for i in np.sort(rows)]


@torch.no_grad()
def noise_predictions(
    encoder: Any, method: Any, items: Sequence[Any], t: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(z (n, D) raw post-head features, ε̂ (n, P) predicted noises)`` with every prediction
    made for the same noisy input x_t^ref (grey image + seeded noise at timestep t)."""
    den = method.denoiser
    px = encoder.preprocess([it.image for it in items])
    z = torch.cat(
        [encoder.image_head(encoder.image_tower(px[i : i + 64])) for i in range(0, len(px), 64)]
    )
    g = torch.Generator().manual_seed(seed)
    x0 = den.encode(torch.full((1, 3, 8, 8), 0.5))  # (1, C, h, w) grey
    noise = torch.randn(x0.shape, generator=g)
    tt = torch.tensor([t])
    x_t = den.add_noise(x0, noise, tt)
    preds = []
    for i in range(0, len(z), 64):
        c = den.condition(method.projector(z[i : i + 64]).float())
        n = c.shape[0]
        preds.append(den.predict(x_t.expand(n, -1, -1, -1), tt.expand(n), c).float().flatten(1))
    return z.float().numpy(), torch.cat(preds).numpy()


def lipschitz_range(z: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    """``(m, M)``: min and max of ‖e_i − e_j‖ / ‖z_i − z_j‖ over all pairs i < j."""
    dz = np.sqrt(np.maximum(((z[:, None] - z[None]) ** 2).sum(-1), 0))  # (n, n)
    de = np.sqrt(np.maximum(((e[:, None] - e[None]) ** 2).sum(-1), 0))
    iu = np.triu_indices(len(z), 1)
    keep = dz[iu] > 1e-12
    r = de[iu][keep] / dz[iu][keep]
    return float(r.min()), float(r.max())


def bounds_check(
    z: np.ndarray, e: np.ndarray, y: np.ndarray, m: float, M: float
) -> dict[str, float | bool]:
    """Both inequalities of Theorem 1 on (z, e, y) with constants (m, M): the four sides, whether
    each holds, and its tightness (smaller side / larger side, 1 = equality)."""
    sz, se = class_scatter(z, y, normalize=False), class_scatter(e, y, normalize=False)
    kappa, eta = 1 / M**2, 1 / m**2 - 1 / M**2
    inner_rhs = se.s_inner / m**2
    inter_rhs = kappa * se.s_inter - eta * se.s_inner
    return {
        "s_inner": sz.s_inner, "s_inter": sz.s_inter, "fisher": sz.fisher,
        "s_inner_eps": se.s_inner, "s_inter_eps": se.s_inter, "fisher_eps": se.fisher,
        "m": m, "M": M, "distortion": M / m, "kappa": kappa, "eta": eta,
        "inner_bound": inner_rhs, "inner_holds": bool(sz.s_inner <= inner_rhs * (1 + 1e-9)),
        "inner_tightness": sz.s_inner / inner_rhs,
        "inter_bound": inter_rhs, "inter_holds": bool(sz.s_inter >= inter_rhs - 1e-12 * abs(inter_rhs)),
        "inter_bound_informative": bool(inter_rhs > 0),
    }  # fmt: skip


def theorem1_check(
    encoder: Any,
    method: Any,
    items: Sequence[Any],
    timesteps: Sequence[int],
    *,
    label: str,
    seed: int = 0,
) -> Any:
    """Per timestep: constants estimated on half A of ``items`` (stratified), the inequalities
    checked on half B (``split="held-out"``) and, as the algebra's sanity check, with B's own
    constants (``split="in-sample"``). Returns a DataFrame, one row per (t, split)."""
    import pandas as pd

    y = np.asarray([it.label for it in items])
    rng = np.random.default_rng(seed)
    a = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        a[rng.choice(idx, len(idx) // 2, replace=False)] = True
    rows = []
    for t in timesteps:
        z, e = noise_predictions(encoder, method, items, int(t), seed=seed)
        m_a, M_a = lipschitz_range(z[a], e[a])
        m_b, M_b = lipschitz_range(z[~a], e[~a])
        for split, (m, M) in (("held-out", (m_a, M_a)), ("in-sample", (m_b, M_b))):
            rows.append({"encoder": label, "t": int(t), "split": split,
                         **bounds_check(z[~a], e[~a], y[~a], m, M)})  # fmt: skip
    return pd.DataFrame(rows)


def projector_at(run_dir: Any, step: int, method: Any) -> Any:
    """``method``'s denoiser with the projector of checkpoint ``step`` (e.g. the end of Stage 1:
    the aligned projector on the unchanged starting encoder), as an object with ``denoiser`` and
    ``projector`` (what :func:`noise_predictions` reads)."""
    import copy
    from types import SimpleNamespace

    from safetensors.torch import load_file

    from workbench.train import RunDir

    sd = load_file(str(RunDir(run_dir).checkpoint_path(step) / "model.safetensors"))
    prefix = "method.projector."
    proj = copy.deepcopy(method.projector)
    proj.load_state_dict({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)})
    return SimpleNamespace(denoiser=method.denoiser, projector=proj.eval())


def theorem1_figure(table: Any) -> Any:
    """Bounds vs measured scatters per timestep (held-out constants): S_inner against its upper
    bound and S_inter against its lower bound, one line per encoder; log-scale y."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    t = table[table["split"] == "held-out"]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=(
        "(a) S_inner ≤ S_inner^ε/m²", "(b) S_inter ≥ κS_inter^ε − ηS_inner^ε",
        "(c) distortion M/m"))  # fmt: skip
    for i, (name, g) in enumerate(t.groupby("encoder", sort=False)):
        color = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")[i % 4]
        kw = {"mode": "lines+markers", "legendgroup": name, "line": {"color": color}}
        fig.add_trace(go.Scatter(x=g["t"], y=g["s_inner"], name=name, **kw), 1, 1)
        fig.add_trace(go.Scatter(x=g["t"], y=g["inner_bound"], showlegend=False,
                                 **{**kw, "line": {"color": color, "dash": "dash"}}), 1, 1)  # fmt: skip
        fig.add_trace(go.Scatter(x=g["t"], y=g["s_inter"], showlegend=False, **kw), 1, 2)
        fig.add_trace(go.Scatter(x=g["t"], y=g["inter_bound"], showlegend=False,
                                 **{**kw, "line": {"color": color, "dash": "dash"}}), 1, 2)  # fmt: skip
        fig.add_trace(go.Scatter(x=g["t"], y=g["distortion"], showlegend=False, **kw), 1, 3)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_xaxes(title_text="timestep t")
    fig.update_layout(template="plotly_white", title="Theorem 1 on digits: measured (solid) vs "
                      "bound (dashed); constants from one half, checked on the other")  # fmt: skip
    return fig


def dcr_tsne_figure(before: Any, after: Any, labels: Any, class_names: Sequence[str], *,
                seed: int = 0) -> Any:  # fmt: skip
    """Fig. 5: t-SNE of digits test embeddings (n, D) before and after DCR, side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from workbench.viz.dp import embedding_map

    y = np.asarray(labels)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("pretrained default", "after DCR"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip
    for col, X in enumerate((before, after), start=1):
        C = embedding_map(np.asarray(X), method="tsne", seed=seed, key="dcr-fig5")
        for c in np.unique(y):
            sel = y == c
            fig.add_trace(go.Scattergl(x=C[sel, 0], y=C[sel, 1], mode="markers",
                                       name=class_names[int(c)], legendgroup=str(c),
                                       showlegend=col == 1, marker={"size": 4,
                                       "color": palette[int(c) % 10]}), 1, col)  # fmt: skip
    fig.update_layout(template="plotly_white", title="Fig. 5: t-SNE of digits test embeddings")
    return fig
