"""Smoke run of the FANoise notebook (tiny data, few steps) and its parameter checks."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks


def test_fanoise_figures_smoke_writes_every_figure(tmp_path):
    out = tmp_path / "out"
    run_notebook(
        "fanoise_figures.ipynb",
        {
            "datasets": ["synthetic-world"],
            "n_per_dataset": 24,
            "mmvp_pairs_per_category": 1,
            "steps": 3,
            "batch_size": 8,
            "seeds": [0, 1],
            "alphas": [0.0, 0.5],
            "spectrum_rows": 16,
            "alignment_k": 4,
            "output_dir": str(out),
        },
        tmp_path,
    )
    for stem in (
        "fig2_alpha_sweep",
        "fig3_singular_values",
        "fig4_singular_vector_alignment",
        "fig5_scalings",
    ):
        assert (out / f"{stem}.html").exists(), stem
    summary = json.loads((out / "summary.json").read_text())
    assert {r["arm"] for r in summary["fig2_alpha_sweep"]} == {"alpha=0", "alpha=0.5"}
    assert {r["arm"] for r in summary["table2_scalings"]} == {
        "infonce",
        "uniform",
        "linear",
        "sublinear",
    }
    sv = summary["fig3_singular_values"]
    assert len(sv["clean"]) == len(sv["noisy"]) == len(sv["noise"])
    assert len(summary["fig4_alignment"]["cosines"]) == 4


def test_fanoise_rejects_a_bad_scaling(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="scaling"):
        run_notebook("fanoise_figures.ipynb", {"scalings": ["uniform", "cubic"]}, tmp_path)
