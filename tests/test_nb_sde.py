"""Smoke runs of the SDE notebooks (tiny data, few steps) and their parameter checks."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "datasets": ["synthetic-world"],
    "n_per_dataset": 24,
    "mmvp_pairs_per_category": 1,
    "steps": 3,
    "batch_size": 8,
    "seeds": [0, 1],
}


def test_sde_ablation_smoke_writes_table_figure_and_summary(tmp_path):
    out = tmp_path / "out"
    run_notebook(
        "sde_ablation.ipynb",
        {**SMOKE, "rows": ["full", "no_kl"], "output_dir": str(out)},
        tmp_path,
    )
    summary = json.loads((out / "summary.json").read_text())
    arms = {r["arm"] for r in summary["table"]}
    assert arms == {"infonce", "sde/full", "sde/no_kl"}
    overall = [r for r in summary["table"] if r["column"] == "overall"]
    assert len(overall) == 3 and all(r["n_seeds"] == 2 for r in overall)
    assert all(0.0 <= r["mean"] <= 1.0 for r in summary["table"])
    assert "synthetic-world" in summary["datasets_used"]
    assert summary["runtime_seconds"]["total"] > 0
    assert (out / "ablation.html").exists()


def test_sde_ablation_rejects_unknown_rows_before_any_work(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="unknown ablation rows"):
        run_notebook("sde_ablation.ipynb", {"rows": ["full", "no_curriculum"]}, tmp_path)


def test_sde_figures_smoke_writes_every_figure(tmp_path):
    out = tmp_path / "out"
    run_notebook(
        "sde_figures.ipynb",
        {**SMOKE, "cross_task_seeds": [0], "spectrum_rows": 16, "output_dir": str(out)},
        tmp_path,
    )
    for stem in (
        "fig3a_proportions_image",
        "fig3a_proportions_text",
        "fig3b_enhancement",
        "fig3c_cumulative_energy",
        "fig4a_alpha",
        "fig4b_lambda",
        "fig2_cross_task",
    ):
        assert (out / f"{stem}.html").exists(), stem
    summary = json.loads((out / "summary.json").read_text())
    cross = summary["fig2_cross_task"]
    assert set(cross) == {"infonce", "sde/full"}
    alphas = [r["alpha"] for r in summary["fig4"]]
    assert alphas == sorted(alphas, reverse=True)
    assert len(summary["fig3b"]["before"]) == len(summary["fig3b"]["after"])
