"""Smoke run of the CDDS notebook (tiny data, few steps) and its parameter checks."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "datasets": ["synthetic-world"],
    "n_train": 16,
    "n_test": 8,
    "captions_per_image": 3,
    "dim": 16,
    "steps": 3,
    "batch_size": 8,
    "seeds": [0, 1],
    "rows": ["full", "no_sampling"],
    "identification": ["precomputed"],
    "tsne_images": 4,
}


def test_cdds_smoke_writes_tables_figures_and_summary(tmp_path):
    out = tmp_path / "out"
    run_notebook("cdds.ipynb", {**SMOKE, "output_dir": str(out)}, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    arms = {r["arm"] for r in summary["table"]}
    assert arms == {"vse", "vse/encoder", "vse+ds", "cdds/full", "cdds/no_sampling",
                    "cdds/precomputed"}  # fmt: skip
    overall = [r for r in summary["table"] if r["column"] == "overall"]
    assert len(overall) == len(arms) and all(r["n_seeds"] == 2 for r in overall)
    assert all(0.0 <= r["mean"] <= 600.0 for r in summary["table"])
    assert [r["row"] for r in summary["table3"]] == ["full", "no_sampling"]
    assert [r["identification"] for r in summary["table5"]] == ["per-batch", "precomputed"]
    assert all(r["step_ms"] > 0 for r in summary["table5"])
    assert set(summary["tsne_ratio"]) >= {"before decoupling", "after decoupling"}
    assert summary["token_cache_mb"]["train"] > 0
    assert summary["runtime_seconds"]["total"] > 0
    for stem in ("rsum", "tsne_decoupling"):
        assert (out / f"{stem}.html").exists(), stem


def test_cdds_rejects_unknown_rows_before_any_work(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="unknown ablation rows"):
        run_notebook("cdds.ipynb", {"rows": ["full", "no_everything"]}, tmp_path)
