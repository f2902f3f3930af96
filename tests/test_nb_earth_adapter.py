"""Smoke run of ``notebooks/earth_adapter.ipynb`` (tiny data, a few steps) and its parameter checks."""

from __future__ import annotations

import pytest
from nbutil import read_summary, run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "n_train": 24,
    "n_test": 4,
    "n_target": 8,
    "steps": 2,
    "batch_size": 8,
    "da_steps": 2,
    "seeds": [0, 1],
    "domains": ["stripes", "jpeg"],
    "rho_sweep": [0.3, 0.5],
    "extra_ablation": [["low", "high"]],
    "figure_images": 1,
}


def test_earth_adapter_smoke_writes_tables_figures_and_summary(tmp_path):
    out = tmp_path / "out"
    run_notebook("earth_adapter.ipynb", {**SMOKE, "output_dir": str(out)}, tmp_path, timeout=900)
    summary = read_summary(out)
    rows = {"head only", "1 spatial", "3 spatial", "Earth-Adapter"}
    for mode in ("dg", "da"):
        table = summary[mode]
        assert {r["row"] for r in table} == rows
        assert {r["column"] for r in table} == {"clean", "stripes", "jpeg", "targets"}
        assert all(r["n_seeds"] == 2 and 0.0 <= r["mean"] <= 1.0 for r in table)
        assert {r["column"] for r in summary["earth_minus_spatial3"][mode]} >= {"clean", "targets"}
    assert {r["ratio"] for r in summary["rho"]} == {0.3, 0.5}
    assert {r["k"] for r in summary["rho"]} == {1, 2}  # the 8 × 8 mixture grid
    params = {r["row"]: r["n_trainable"] for r in summary["trainable_parameters"]}
    assert (
        params["head only"] < params["1 spatial"] < params["3 spatial"] == params["Earth-Adapter"]
    )
    assert "low + high" in params
    assert {r["domain"] for r in summary["high_band_energy"]} == {"clean", "stripes", "jpeg"}
    weights = summary["router_weights"]
    assert {w["expert"] for w in weights} == {"spatial", "low", "high"}
    ours = {(r["setting"], r["row"]): r for r in summary["paper_vs_ours"]}
    assert ours[("ablation", "3 spatial")]["paper"] == 58.4  # the paper's number beside ours
    assert 0.0 <= ours[("ablation", "Earth-Adapter")]["ours_targets"] <= 100.0
    assert ours[("dg", "Rein")]["ours_targets"] is None  # a paper row we do not run
    for stem in ("dg_table", "da_table", "rho_sweep", "frequency_parts", "router_weights",
                 "qualitative_masks", "adapter_ablation"):  # fmt: skip
        assert (out / f"{stem}.html").exists(), stem


def test_earth_adapter_rejects_bad_parameters_before_any_work(tmp_path):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match="unknown rows"):
        run_notebook("earth_adapter.ipynb", {"rows": ["head only", "LoRA"], "output_dir": str(out)},
                     tmp_path)  # fmt: skip
    assert not (out / "summary.json").exists()
