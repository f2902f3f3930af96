"""Smoke run of the DeGLA notebook (tiny data, few steps) and its parameter checks."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "warm_start_steps": 4,
    "n_synthetic": 48,
    "n_synthetic_eval": 24,
    "real_captions": None,
    "n_general": 40,
    "steps": 3,
    "batch_size": 16,
    "seeds": [0, 1],
    "rows": ["cn", "full"],
    "sweep": [0.0, 0.4],
}


def test_degla_smoke_writes_table7_figures_and_summary(tmp_path):
    out = tmp_path / "out"
    run_notebook("degla.ipynb", {**SMOKE, "output_dir": str(out)}, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    arms = {r["arm"] for r in summary["table7"]}
    assert arms == {"pretrained", "finetune", "cn", "full"}
    assert all(r["n_seeds"] == 2 for r in summary["table7"])
    assert all(0.0 <= r["mean"] <= 1.0 for r in summary["table7"])
    assert {r["metric"] for r in summary["table7"]} >= {"aro", "sugarcrepe", "zs", "lp"}
    assert "zs_vs_start" in summary["self_distillation"]
    assert {r["arm"] for r in summary["sweep"]} == {
        "lambda_igc=0", "lambda_igc=0.4", "lambda_tgc=0", "lambda_tgc=0.4"
    }  # fmt: skip
    for stem in ("table7", "fig5_tradeoff", "fig6_lambda_sweep"):
        assert (out / f"{stem}.html").exists(), stem
    assert summary["runtime_seconds"]["total"] > 0


def test_degla_rejects_unknown_rows_before_any_work(tmp_path):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match="unknown Table 7 rows"):
        run_notebook("degla.ipynb", {"rows": ["cn", "cn+sd"], "output_dir": str(out)}, tmp_path)
    assert not out.exists()
