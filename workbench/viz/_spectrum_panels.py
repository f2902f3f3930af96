"""The four panels of :class:`~workbench.viz.spectrum_explorer.SpectrumController` (spectrum,
cumulative energy, band proportions over training, 2-D projection): their styled empty figures
and the per-trace updates computed from the controller's analysis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BAND_COLOURS = {"strong": "#2ca02c", "weak": "#ff7f0e", "noise": "#7f7f7f"}
_MODALITY_COLOURS = {"image": "#1f77b4", "text": "#d62728"}
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)  # fmt: skip


class _SpectrumPanels:
    """How the controller's figures are drawn: empty styled figures and per-trace updates.

    Mixed into the controller, which supplies ``settings`` and the analysis methods.
    """

    def _updates(self) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
        """Per figure: one update dict per trace (fixed count and order) and a layout update."""
        s = self.settings
        a = self.analysis()
        spec, part = a["spectrum"], a["partition"]
        sv = np.asarray(spec.singular_values)
        r = len(sv)
        k = np.arange(1, r + 1)
        counts = part.counts
        n_s, n_w = counts["strong"], counts["weak"]
        thr = part.thresholds
        iqr = "tau_noise" in thr
        logged_sv = self.logged_spectrum()
        emb = self.embeddings()
        M_rows = self.matrix().shape[0]
        centring = "centred" if s.center else "uncentred"

        # bands as shaded x-ranges over component indices (1-based, half-integer edges)
        edges = {"strong": (0.5, n_s + 0.5), "weak": (n_s + 0.5, n_s + n_w + 0.5)}
        edges["noise"] = (n_s + n_w + 0.5, r + 0.5)
        shapes = [
            {
                "type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0,
                "y1": 1, "fillcolor": BAND_COLOURS[b], "opacity": 0.12, "line": {"width": 0},
                "layer": "below",
            }
            for b, (x0, x1) in edges.items()
        ]  # fmt: skip
        spectrum_traces = [
            {"x": k, "y": sv},
            {
                "x": np.arange(1, len(logged_sv) + 1) if logged_sv is not None else [],
                "y": logged_sv if logged_sv is not None else [],
                "visible": logged_sv is not None,
            },
            {"x": [1, r], "y": [thr.get("tau_strong", np.nan)] * 2, "visible": iqr},
            {"x": [1, r], "y": [thr.get("tau_noise", np.nan)] * 2, "visible": iqr},
        ]
        spectrum_layout = {
            "shapes": shapes,
            "yaxis.type": "log" if s.log_scale else "linear",
            "title.text": (
                f"Sorted spectrum ({s.modality}, {centring}, {M_rows}×{spec.n_features}) · "
                f"{part.method}: strong {n_s} · weak {n_w} · noise {counts['noise']}"
            ),
        }

        cum = np.asarray(spec.cumulative_energy)
        er = a["erank"]
        vline = lambda x: {"x": [x, x], "y": [0, 1]}  # noqa: E731
        energy_traces = [
            {"x": k, "y": cum},
            vline(n_s + 0.5),
            vline(n_s + n_w + 0.5),
            vline(er),
        ]
        short = s.erank.split("/", 1)[-1]
        energy_layout = {
            "title.text": (
                f"Cumulative energy · {short} = {er:.1f}"
                + (" (on its own centring)" if a["erank_own"] else "")
            ),
            "xaxis.type": "log" if s.log_scale else "linear",
        }

        logged = self.logged()
        steps = logged["steps"]
        show_img = s.modality in ("image", "both")
        show_txt = s.modality in ("text", "both")
        prop_traces = []
        for side, on in (("image", show_img), ("text", show_txt)):
            for j in range(3):
                prop_traces.append({"x": steps, "y": logged[side][:, j], "visible": on})
        current = part.proportions
        prop_traces.append(
            {
                "x": [s.step] * 3,
                "y": [current["strong"], current["weak"], current["noise"]],
                "marker.color": [BAND_COLOURS[b] for b in ("strong", "weak", "noise")],
            }
        )
        prop_layout = {
            "shapes": [
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": s.step,
                    "x1": s.step,
                    "y0": 0,
                    "y1": 1,
                    "line": {"dash": "dot", "color": "grey", "width": 1},
                }
            ],
            "title.text": (
                f"Partition proportions over steps ({part.method})"
                if len(steps)
                else f"Partition proportions ({part.method}; no training run)"
            ),
        }

        proj = self.projection()
        rows = proj["rows"]
        labels = np.asarray(emb.labels)[rows]
        names = emb.class_names or []
        hover = [emb.captions[i] for i in rows]

        def colours(modality: str) -> Any:
            if s.colour_by == "modality" or not (labels >= 0).any():
                return _MODALITY_COLOURS[modality]
            return [_PALETTE[int(c) % len(_PALETTE)] if c >= 0 else "#cccccc" for c in labels]

        def label_text() -> list[str]:
            return [
                f"{names[c] if 0 <= c < len(names) else c}: {h}"
                for c, h in zip(labels.tolist(), hover)
            ]

        proj_traces = [
            {
                "x": proj["image"][:, 0], "y": proj["image"][:, 1],
                "marker.color": colours("image"), "text": label_text() if show_img else [],
            },
            {
                "x": proj["text"][:, 0], "y": proj["text"][:, 1],
                "marker.color": colours("text"), "text": label_text() if show_txt else [],
            },
        ]  # fmt: skip
        proj_layout = {
            "title.text": (
                f"{s.projection.upper()} of {s.modality} rows, coloured by {s.colour_by} "
                f"({len(rows)} items; ● image, ◆ text)"
            )
        }
        return {
            "spectrum": (spectrum_traces, spectrum_layout),
            "energy": (energy_traces, energy_layout),
            "proportions": (prop_traces, prop_layout),
            "projection": (proj_traces, proj_layout),
        }

    @staticmethod
    def _empty_figures() -> dict[str, Any]:
        """Figures with every trace in place and styled, but no data."""
        import plotly.graph_objects as go

        spec = go.Figure(
            [
                go.Scatter(name="σ_i (these embeddings)", mode="lines+markers", marker={"size": 4}, line={"color": "#1f77b4"}),
                go.Scatter(name="σ_i (training batch, logged)", mode="lines", line={"color": "black", "dash": "dash", "width": 1}),
                go.Scatter(name="τ_strong", mode="lines", line={"color": BAND_COLOURS["strong"], "dash": "dot"}),
                go.Scatter(name="τ_noise", mode="lines", line={"color": BAND_COLOURS["noise"], "dash": "dot"}),
            ]
        )  # fmt: skip
        spec.update_layout(
            height=380, width=520, title_font_size=13, xaxis_title="component i", yaxis_title="singular value σ_i",
            margin={"t": 50, "b": 40}, legend={"x": 0.99, "xanchor": "right", "y": 0.99},
        )  # fmt: skip
        energy = go.Figure(
            [
                go.Scatter(name="cumulative energy", mode="lines", line={"color": "#1f77b4"}),
                go.Scatter(name="strong | weak", mode="lines", line={"color": BAND_COLOURS["strong"], "dash": "dot"}),
                go.Scatter(name="weak | noise", mode="lines", line={"color": BAND_COLOURS["weak"], "dash": "dot"}),
                go.Scatter(name="effective rank", mode="lines", line={"color": "black", "dash": "dash"}),
            ]
        )  # fmt: skip
        energy.update_layout(
            height=380, width=520, title_font_size=13, xaxis_title="k", yaxis_title="Σ_{j≤k} σ_j² / Σσ²",
            yaxis_range=[0, 1.02], margin={"t": 50, "b": 40},
            legend={"x": 0.99, "xanchor": "right", "y": 0.05, "yanchor": "bottom"},
        )  # fmt: skip
        props = go.Figure()
        for side, dash in (("image", "solid"), ("text", "dash")):
            for band in ("strong", "weak", "noise"):
                props.add_trace(
                    go.Scatter(
                        name=f"{band} ({side}, logged batch)", mode="lines+markers",
                        line={"color": BAND_COLOURS[band], "dash": dash}, marker={"size": 4},
                    )
                )  # fmt: skip
        props.add_trace(
            go.Scatter(
                name="these embeddings", mode="markers", marker={"size": 12, "symbol": "star"}
            )
        )
        props.update_layout(
            height=380, width=520, title_font_size=13, xaxis_title="training step", yaxis_title="proportion of directions",
            yaxis_range=[0, 1], margin={"t": 50, "b": 40},
        )  # fmt: skip
        proj = go.Figure(
            [
                go.Scatter(name="image", mode="markers", marker={"size": 6, "symbol": "circle", "opacity": 0.7}, hoverinfo="text"),
                go.Scatter(name="text", mode="markers", marker={"size": 7, "symbol": "diamond", "opacity": 0.7}, hoverinfo="text"),
            ]
        )  # fmt: skip
        proj.update_layout(
            height=380,
            width=520,
            title_font_size=13,
            margin={"t": 50, "b": 40},
            xaxis_title="1",
            yaxis_title="2",
        )
        return {"spectrum": spec, "energy": energy, "proportions": props, "projection": proj}
