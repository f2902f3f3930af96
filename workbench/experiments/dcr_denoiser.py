"""The tiny denoiser's one-off pretraining and its samples figure (``methods.dcr.tiny``).

Kept apart from :mod:`workbench.experiments.dcr` (the study): the shipped weights are built once,
the study only loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_tiny_denoiser", "denoiser_samples_figure"]


def build_tiny_denoiser(
    recipe: Any = None,
    *,
    out: str | Path | None = None,
    log=None,
    figure_dir: str | Path | None = None,
) -> Path:
    """Pretrain the tiny denoiser with ``recipe`` (default: the shipped recipe) and save it:
    the shipped recipe into the package's ``weights/``, others into the cache
    (:func:`~workbench.methods.dcr.tiny.cache_path`). With ``figure_dir`` the card's samples
    figure is written there as ``tiny_denoiser_samples.png``/``.html``. Returns the weights path.

    The shipped weights are rebuilt (and re-timed) by ``build_tiny_denoiser(figure_dir=
    "figures/dcr")``; a re-timing that leaves them alone passes ``out="/tmp/tiny-denoiser"``.
    """
    from workbench.methods.dcr.tiny import SHIPPED, TinyDenoiserRecipe, cache_path, save_tiny
    from workbench.methods.dcr.tiny_pretrain import pretrain_tiny_denoiser

    recipe = recipe or TinyDenoiserRecipe()
    result = pretrain_tiny_denoiser(recipe, log=log)
    default = recipe.key() == TinyDenoiserRecipe().key()
    path = Path(out) if out is not None else (SHIPPED if default else cache_path(recipe))
    weights = save_tiny(result, path)
    if figure_dir is not None:
        from workbench.viz.save import save_figure

        fig = denoiser_samples_figure(result.samples, result.sample_captions, cols=3)
        save_figure(fig, figure_dir, "tiny_denoiser_samples", height=fig.layout.height or 900)
    return weights


def denoiser_samples_figure(samples: Any, captions: Sequence[str], cols: int = 4) -> Any:
    """Grid of DDIM samples (n, 3, s, s) in [0, 1] titled by their conditioning captions."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = np.asarray(samples)
    n = x.shape[0]
    rows = -(-n // cols)
    short = [c if len(c) <= 44 else c[:41] + "…" for c in captions]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=short, vertical_spacing=0.08)
    for i in range(n):
        img = (x[i].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        fig.add_trace(go.Image(z=img), i // cols + 1, i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(template="plotly_white", title="tiny denoiser: DDIM-50 samples (32 px)",
                      font={"size": 9}, height=220 * rows)  # fmt: skip
    return fig
