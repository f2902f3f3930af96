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


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"rows": ["full", "no_everything"]}, "unknown ablation rows"),
        ({"datasets": ["synthetic-wrld"]}, "Did you mean 'synthetic-world'"),
        # a known dataset whose files are absent: skipped, then no data at all — still no output
        ({"datasets": ["coco-captions"]}, "no dataset could be loaded"),
    ],
)
def test_cdds_bad_parameters_fail_before_anything_is_written(tmp_path, bad, match):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match=match):
        run_notebook("cdds.ipynb", {**bad, "output_dir": str(out)}, tmp_path)
    assert not out.exists()
