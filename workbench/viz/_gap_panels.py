"""The three panels of :class:`~workbench.viz.gap_explorer.GapController` (the clouds in a fixed
PCA frame, gap/loss/accuracy over λ, the ReAlign-steps ablation): their styled empty figures and
the per-trace updates computed from the controller's analysis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

REALIGN_CHOICES = ("none", "anchor", "anchor+trace", "full")
"""ReAlign prefixes: none, Anchor, Anchor+Trace, Anchor+Trace+Centroid (the method)."""

_IMAGE, _TEXT = "#1f77b4", "#ff7f0e"


class _GapPanels:
    """How the controller's figures are drawn: empty styled figures and per-trace updates.

    Mixed into the controller, which supplies ``settings`` and the analysis methods.
    """

    def _updates(self) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
        """Per figure: one update dict per trace (fixed count and order) and a layout update."""
        s = self.settings
        c = self.clouds()
        cur, ref = self.sweep(s.realign), self.sweep("none")
        at = self.metrics_at()
        ab = self.ablation()
        lam_x = [s.lam]
        ic, tc = c["image_centroid"], c["text_centroid"]
        step_name = {
            "none": "no ReAlign",
            "anchor": "Anchor",
            "anchor+trace": "+Trace",
            "full": "+Centroid",
        }
        clouds = [
            {"x": c["image"][:, 0], "y": c["image"][:, 1]},
            {"x": c["text"][:, 0], "y": c["text"][:, 1]},
            {"x": [ic[0]], "y": [ic[1]]},
            {"x": [tc[0]], "y": [tc[1]]},
            {"x": [ic[0], tc[0]], "y": [ic[1], tc[1]]},
        ]
        clouds_layout = {
            "title.text": (
                f"Clouds after {step_name[s.realign]}, shifted by λ = {s.lam:+.3g} · "
                f"remaining gap {at['signed_gap']:+.3f}"
            )
        }
        acc = lambda r: 0.5 * (r.i2t + r.t2i)  # noqa: E731
        metrics = [
            {"x": cur.lambdas, "y": cur.signed_gap},
            {"x": ref.lambdas, "y": ref.signed_gap},
            {"x": cur.lambdas, "y": cur.loss},
            {"x": ref.lambdas, "y": ref.loss},
            {"x": cur.lambdas, "y": acc(cur)},
            {"x": ref.lambdas, "y": acc(ref)},
            {
                "x": cur.lambdas,
                "y": cur.zero_shot,
                "visible": bool(np.isfinite(cur.zero_shot).any()),
            },
            {"x": lam_x, "y": [at["signed_gap"]]},
            {"x": lam_x, "y": [at["loss"]]},
            {"x": lam_x * 2, "y": [0.5 * (at["i2t_r1"] + at["t2i_r1"]), at["zero_shot"]]},
        ]
        metrics_layout = {
            "shapes": [
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": s.lam,
                    "x1": s.lam,
                    "y0": 0,
                    "y1": 1,
                    "line": {"dash": "dot", "color": "grey", "width": 1},
                }
            ],
            "title.text": (
                f"λ = {s.lam:+.3g}: gap {at['signed_gap']:+.3f}, loss {at['loss']:.3f}, "
                f"R@1 {0.5 * (at['i2t_r1'] + at['t2i_r1']):.2f}"
                + (f", zero-shot {at['zero_shot']:.2f}" if np.isfinite(at["zero_shot"]) else "")
            ),
        }
        names = list(REALIGN_CHOICES)
        labels = [step_name[k] for k in names]
        width = [3 if k == s.realign else 0 for k in names]
        bar = lambda key: {  # noqa: E731
            "x": labels,
            "y": [ab[k][key] for k in names],
            "marker.line.width": width,
        }
        steps_traces = [
            bar("gap"),
            bar("loss"),
            {
                "x": labels,
                "y": [0.5 * (ab[k]["i2t_r1"] + ab[k]["t2i_r1"]) for k in names],
                "marker.line.width": width,
            },
            {**bar("zero_shot"), "visible": bool(np.isfinite(ab["none"]["zero_shot"]))},
        ]
        return {
            "gap_clouds": (clouds, clouds_layout),
            "gap_metrics": (metrics, metrics_layout),
            "realign_steps": (steps_traces, {}),
        }

    @staticmethod
    def _empty_figures() -> dict[str, Any]:
        """Figures with every trace in place and styled, but no data."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        clouds = go.Figure(
            [
                go.Scatter(
                    name="image",
                    mode="markers",
                    marker={"color": _IMAGE, "size": 5, "opacity": 0.6},
                ),
                go.Scatter(
                    name="text", mode="markers", marker={"color": _TEXT, "size": 5, "opacity": 0.6}
                ),
                go.Scatter(
                    name="image centroid",
                    mode="markers",
                    marker={"color": _IMAGE, "size": 16, "symbol": "x", "line": {"width": 2}},
                ),
                go.Scatter(
                    name="text centroid",
                    mode="markers",
                    marker={"color": _TEXT, "size": 16, "symbol": "x", "line": {"width": 2}},
                ),
                go.Scatter(name="gap", mode="lines", line={"color": "black", "width": 2}),
            ],
        )
        clouds.update_layout(
            height=560,
            width=460,
            title_font_size=13,
            xaxis_title="PC 1 (fixed frame)",
            yaxis_title="PC 2",
            yaxis={"scaleanchor": "x"},
            margin={"t": 50, "b": 40},
        )
        metrics = make_subplots(
            rows=3,
            cols=1,
            shared_xaxes=True,
            vertical_spacing=0.06,
            subplot_titles=("signed remaining gap", "CLIP loss at τ", "accuracy"),
        )
        line = lambda name, color, dash, row, legend=True: metrics.add_trace(  # noqa: E731
            go.Scatter(
                name=name, mode="lines", line={"color": color, "dash": dash}, showlegend=legend
            ),
            row=row,
            col=1,
        )
        line("gap", "#2ca02c", "solid", 1)
        line("gap, no ReAlign", "#2ca02c", "dot", 1)
        line("loss", "#d62728", "solid", 2)
        line("loss, no ReAlign", "#d62728", "dot", 2)
        line("R@1 (mean i2t, t2i)", "#9467bd", "solid", 3)
        line("R@1, no ReAlign", "#9467bd", "dot", 3)
        line("zero-shot", "#8c564b", "solid", 3)
        for row in (1, 2, 3):
            metrics.add_trace(
                go.Scatter(
                    name="at λ",
                    mode="markers",
                    marker={"size": 10, "color": "black"},
                    showlegend=row == 1,
                ),
                row=row,
                col=1,
            )
        metrics.update_layout(height=560, width=580, title_font_size=13, margin={"t": 60, "b": 40})
        metrics.update_xaxes(title_text="λ (shift along the gap)", row=3, col=1)
        steps = make_subplots(
            rows=1, cols=3, subplot_titles=("centroid gap ‖Δ‖", "CLIP loss", "accuracy")
        )
        bar = lambda name, color, col: steps.add_trace(  # noqa: E731
            go.Bar(name=name, marker={"color": color, "line": {"color": "black"}}), row=1, col=col
        )
        bar("gap", "#2ca02c", 1)
        bar("loss", "#d62728", 2)
        bar("R@1", "#9467bd", 3)
        bar("zero-shot", "#8c564b", 3)
        steps.update_layout(
            height=320,
            width=1040,
            title_text="ReAlign steps at λ = 0 (current outlined)",
            margin={"t": 70, "b": 40},
        )
        return {"gap_clouds": clouds, "gap_metrics": metrics, "realign_steps": steps}
