"""The FANoise study behind ``fanoise_figures.ipynb``: Fig. 2 (score vs α), Figs. 3–4 (spectra and
singular-vector alignment of clean vs perturbed features), Fig. 5 / Table 2 (scalings at one α);
spec ``methods-spectral.md`` §2.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.experiments.grid import Arm, SuiteRunConfig, check_arms
from workbench.experiments.tables import OVERALL

__all__ = [
    "FANoiseFiguresConfig",
    "fanoise_alpha_arms",
    "fanoise_scaling_arms",
    "noise_spectra",
    "sweep_figure",
]


def fanoise_alpha_arms(
    alphas: Iterable[float],
    scaling: str = "sublinear",
    *,
    temperature: float | None = 0.02,
    symmetric: bool = False,
    fanoise_config: dict[str, Any] | None = None,
) -> list[Arm]:
    """One FANoise arm per α (FANoise Fig. 2); α = 0 is the InfoNCE baseline by construction."""
    feat = {"temperature": temperature, "symmetric": symmetric, **(fanoise_config or {})}
    return [
        Arm(f"alpha={a:g}", "fanoise", {**feat, "alpha": float(a), "scaling": scaling})
        for a in alphas
    ]


def fanoise_scaling_arms(
    alpha: float = 0.1,
    scalings: Sequence[str] = ("uniform", "linear", "sublinear"),
    *,
    temperature: float | None = 0.02,
    symmetric: bool = False,
    baseline: str = "infonce",
) -> list[Arm]:
    """InfoNCE baseline plus FANoise with each scaling at the same α (FANoise Fig. 5, Table 2)."""
    feat = {"temperature": temperature, "symmetric": symmetric}
    arms = [Arm(baseline, "infonce", dict(feat))]
    arms += [Arm(s, "fanoise", {**feat, "alpha": alpha, "scaling": s}) for s in scalings]
    return arms


@dataclass
class FANoiseFiguresConfig(SuiteRunConfig):
    """``notebooks/fanoise_figures.ipynb``: FANoise Fig. 2, Figs. 3–4, Fig. 5 and Table 2.

    Attributes:
        alphas: α sweep of Fig. 2 (α = 0 is the InfoNCE baseline).
        sweep_scaling: Scaling used in the sweep (sublinear, the paper's default).
        alpha: α of the scaling comparison (Fig. 5, Table 2) and of the spectra (0.1).
        scalings: Scalings compared.
        spectrum_rows: Rows of the feature matrix of Figs. 3–4 (the paper: 1000).
        alignment_k: Leading singular directions compared in Fig. 4.
    """

    alphas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    sweep_scaling: str = "sublinear"
    alpha: float = 0.1
    scalings: tuple[str, ...] = ("uniform", "linear", "sublinear")
    spectrum_rows: int = 1000
    alignment_k: int = 32
    output_dir: str = "figures/fanoise_figures"

    def __post_init__(self) -> None:
        from workbench._validate import as_float, as_float_tuple, as_int, as_names
        from workbench.methods.fanoise import SCALINGS

        own = "FANoiseFiguresConfig"
        self.alphas = as_float_tuple(self.alphas, "alphas", owner=own, lo=0.0)
        self.scalings = as_names(self.scalings, "scalings", owner=own, unique=True)
        super().__post_init__()
        self.alpha = as_float(self.alpha, f"{own}: alpha", lo=0.0)
        for s in (self.sweep_scaling, *self.scalings):
            if s not in SCALINGS:
                raise ValueError(f"{own}: scaling {s!r} is not one of {SCALINGS}")
        self.spectrum_rows = as_int(self.spectrum_rows, f"{own}: spectrum_rows", lo=2)
        self.alignment_k = as_int(self.alignment_k, f"{own}: alignment_k", lo=1)
        check_arms(self.sweep_arms() + self.scaling_arms())

    def sweep_arms(self) -> list[Arm]:
        return fanoise_alpha_arms(self.alphas, self.sweep_scaling, **self.feat)

    def scaling_arms(self) -> list[Arm]:
        return fanoise_scaling_arms(self.alpha, self.scalings, **self.feat)


def noise_spectra(
    features: np.ndarray, alpha: float, scaling: str = "sublinear", seed: int = 0
) -> dict[str, np.ndarray]:
    """Singular values of clean, FANoise-perturbed and pure-noise matrices (FANoise Fig. 3).

    Args:
        features: (B, n) L2-normalised embeddings.
        alpha: Noise strength.
        scaling: FANoise scaling.
        seed: Noise draw.

    Returns:
        ``{"clean", "noisy", "noise"}`` → (r,) singular values, descending, plus
        ``"noisy_features"`` (B, n) for the singular-vector alignment.
    """
    import torch

    from workbench.methods.fanoise import fanoise

    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    noise = fanoise(x, alpha, scaling, generator=torch.Generator().manual_seed(seed))
    noisy = x + noise
    sv = lambda a: torch.linalg.svdvals(a).numpy()  # noqa: E731
    return {
        "clean": sv(x),
        "noisy": sv(noisy),
        "noise": sv(noise),
        "noisy_features": noisy.numpy(),
    }


def sweep_figure(table: Any, values: Sequence[float], *, x_title: str = "α") -> Any:
    """Score vs a swept value, mean ± std over seeds, one line per column (FANoise Fig. 2)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    arms = list(dict.fromkeys(table["arm"]))
    for col, sub in table.groupby("column", sort=False):
        sub = sub.set_index("arm").loc[arms]
        fig.add_trace(
            go.Scatter(
                x=[f"{v:g}" for v in values],
                y=100 * sub["mean"],
                error_y={"type": "data", "array": 100 * sub["std"].fillna(0)},
                mode="lines+markers",
                name=col,
                line={"width": 4 if col == OVERALL else 1.5},
            )
        )
    fig.update_layout(
        title="Held-out Precision@1 vs noise strength",
        xaxis_title=x_title,
        xaxis_type="category",
        yaxis_title="Precision@1 (%)",
        legend_title="meta-task",
    )
    return fig
