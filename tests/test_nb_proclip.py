"""Smoke run of ``notebooks/proclip.ipynb`` (tiny data, a few steps) and its parameter checks."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "world_pretrain": 120,
    "world_finetune": 80,
    "world_eval": 40,
    "aux_datasets": ["digits"],
    "aux_split": [60, 30, 30],
    "aux_pool": 200,
    "tinyclip_steps": 20,
    "tinyclip_batch": 32,
    "distill_steps": 4,
    "tune_steps": 4,
    "batch_size": 32,
    "lambdas": [0.0, 4e-4, 1e-3],
    "seeds": [0, 1],
}


def test_proclip_smoke_writes_tables_figures_and_summary(tmp_path):
    out = tmp_path / "out"
    run_notebook("proclip.ipynb", {**SMOKE, "output_dir": str(out)}, tmp_path, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    arms = {r["arm"] for r in summary["table5"]}
    assert {
        "clip",
        "direct",
        "ins",
        "ins+struct",
        "ins+struct+info",
        "full",
        "lambda=0.001",
    } == arms
    zs = [r for r in summary["table5"] if r["metric"] == "zero_shot"]
    assert all(0.0 <= r["mean"] <= 1.0 for r in zs)
    assert all(r["n_seeds"] == (1 if r["arm"] == "clip" else 2) for r in zs)
    assert [r["lambda_reg"] for r in summary["table7"]] == [0.0, 4e-4, 1e-3]
    assert summary["paper"]["table5"]["full"] == [62.5, 83.0, 80.5]
    assert set(summary["claim"]) >= {
        "zero_shot_better",
        "retrieval_matched_or_better",
        "claim_holds",
    }
    # stage 1 trains the adapter only: the image-side spectrum after it is CLIP's
    assert summary["stages"][0]["stage1_image_spectrum_unchanged"] is True
    assert summary["long_truncated"] == 1.0  # every long caption exceeds CLIP's 77 tokens
    for stem in ("table5", "table7_lambda", "modality_gap", "image_spectrum"):
        assert (out / f"{stem}.html").exists(), stem


def test_proclip_rejects_bad_parameters_before_any_work(tmp_path):
    import papermill as pm

    out = tmp_path / "never"
    with pytest.raises(pm.PapermillExecutionError, match="teacher must be"):
        run_notebook("proclip.ipynb", {"teacher": "mean", "output_dir": str(out)}, tmp_path)
    assert not out.exists()
