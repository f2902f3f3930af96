"""Smoke run of ``notebooks/methods_leaderboard.ipynb`` at tiny parameters, one own data path
(DCR on pixels through its denoiser) included."""

from __future__ import annotations

import json

import pytest
from test_leaderboard import TINY


@pytest.mark.notebooks
def test_notebook_smoke_writes_table_figures_and_summary(tmp_path):
    from nbutil import run_notebook

    out = tmp_path / "out"
    methods = ["start", "infonce", "realign", "dcr", "no-such-method"]
    params = {**TINY, "methods": methods, "run_root": str(tmp_path / "runs"),
              "output_dir": str(out)}  # fmt: skip
    run_notebook("methods_leaderboard.ipynb", params, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["row"]: r for r in summary["rows"]}
    assert rows["no-such-method"]["run"] is False and rows["no-such-method"]["reason"]
    assert rows["dcr"]["run"] is True and "denoiser" in rows["dcr"]["budget"]
    assert {r["row"] for r in summary["table"]} == set(methods)
    assert {r["row"] for r in summary["runs"]} == set(methods[:4])
    dcr = {r["column"]: r for r in summary["table"] if r["row"] == "dcr"}
    assert dcr["compositional"]["n_seeds"] == 2 and dcr["step_ratio"]["mean"] > 0
    for stem in ("trajectories", "spectra", "dp_scatter", "tradeoff_scatter"):
        assert (out / f"{stem}.html").exists(), stem
    assert summary["runtime_seconds"]["total"] > 0
