"""Figures are saved as HTML (always) and PNG (with a browser); summaries merge and stay valid JSON."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.viz.save import browser_path, save_figure, write_summary


def test_summary_merges_and_converts_numpy(tmp_path) -> None:
    write_summary(tmp_path, {"a": np.float32(1.5), "arr": np.arange(3)})
    write_summary(
        tmp_path, {"b": {"nested": np.int64(2)}, "nan": float("nan"), "npnan": np.float64("nan")}
    )
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data == {"a": 1.5, "arr": [0, 1, 2], "b": {"nested": 2}, "nan": None, "npnan": None}


def test_bad_figure_name_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="figure name"):
        save_figure(go.Figure(), tmp_path, "bad/name")
    with pytest.raises(TypeError, match="plotly Figure"):
        save_figure({"data": []}, tmp_path, "x")


@pytest.mark.slow
def test_html_always_png_with_browser(tmp_path) -> None:
    fig = go.Figure(go.Scatter(y=[1, 3, 2], name="trace"))
    written = save_figure(fig, tmp_path, "spectrum")
    html = written["html"].read_text()
    assert "plotly" in html.lower() and '"trace"' in html
    if browser_path() is None:
        pytest.skip("no chromium: PNG export is skipped by design")
    png = written["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
