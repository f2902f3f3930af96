"""The "two abilities" trade-off scatter: one point per model, mean ± std over seeds on each axis.

DeGLA Fig. 5 (compositional average vs zero-shot average) and DCR Fig. 1(d) plot the same kind
of figure (``methods-geometry.md`` §7): a fine-tuning method should move right without moving
down. :func:`tradeoff_figure` takes plain records, so any study can draw one.

>>> fig = tradeoff_figure([{"label": "a", "x": 0.5, "y": 0.6}], x_title="x", y_title="y")
>>> [t.name for t in fig.data]
['a']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["tradeoff_figure"]


def tradeoff_figure(
    points: Sequence[Mapping[str, Any]],
    *,
    x_title: str,
    y_title: str,
    title: str = "Trade-off",
    scale: float = 100.0,
) -> Any:
    """Scatter of ``points``: each ``{"label", "x", "y"}`` with optional ``"x_err"``/``"y_err"``
    (one std), values multiplied by ``scale`` (fractions → percent by default)."""
    import math

    import plotly.graph_objects as go

    if not points:
        raise ValueError("tradeoff_figure needs at least one point")
    fig = go.Figure()
    for p in points:
        missing = {"label", "x", "y"} - set(p)
        if missing:
            raise ValueError(f"tradeoff_figure: point {p!r} lacks {sorted(missing)}")
        err = {}
        for axis in ("x", "y"):
            e = p.get(f"{axis}_err")
            if e is not None and not math.isnan(e):
                err[f"error_{axis}"] = {"type": "data", "array": [scale * e]}
        fig.add_trace(
            go.Scatter(
                x=[scale * p["x"]], y=[scale * p["y"]], mode="markers+text", name=str(p["label"]),
                text=[str(p["label"])], textposition="top center", marker={"size": 12}, **err,
            )
        )  # fmt: skip
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    return fig
