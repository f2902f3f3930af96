"""Smoke run of ``notebooks/revision.ipynb`` (tiny data, two optimiser steps per row) and its
parameter check before any work."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "train_mixture": [["synthetic-world", "train", 64]],
    "eval_mixture": [["synthetic-world", "test", 24]],
    "n_train": 64,
    "n_eval": 24,
    "heads_steps": 2,
    "rows": ["Blind", "No-Align", "ReAlign", "Paired"],
    "fractions": [0.0, 0.5],
    "stage2_from": ["ReAlign"],
    "seeds": [0, 1],
    "stage1_steps": 2,
    "batch_size": 8,
    "retrieval_gallery": 8,
    "n_examples": 2,
    "threads": 1,
}


def test_revision_smoke_writes_tables_figures_and_summary(tmp_path):
    out = tmp_path / "out"
    run_notebook("revision.ipynb", {**SMOKE, "output_dir": str(out)}, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["row"] for r in summary["stage1"]] == ["Blind", "No-Align", "ReAlign", "Paired"]
    assert all(r["seeds"] == 2 for r in summary["stage1"])
    assert all(r["CIDEr"] >= 0 and 0 <= r["R@1"] <= 1 for r in summary["stage1"])
    assert summary["stage1"][0]["paper avg acc (%)"] == 7.85  # Blind, Tab. 1
    runs = {(r["row"], r["seed"]) for r in summary["per_seed"]}
    assert ("ReAlign → S2 50%", 1) in runs and len(runs) == 2 * 5
    assert {r["fraction"] for r in summary["stage2"]} == {0.0, 0.5}
    assert {c["claim"] for c in summary["claims"]} >= {"ReAlign > No-Align", "Paired < ReAlign"}
    assert set(summary["prefix_gap"]) >= {"No-Align", "ReAlign", "Paired"}
    assert len(summary["examples"]) == 2 and summary["data"]["n_eval"] == 24
    assert summary["config"]["seeds"] == [0, 1] and summary["decoding"] == "greedy"
    for stem in ("revision_tab1_stage1", "revision_tab7_stage2", "revision_prefix_gap"):
        assert (out / f"{stem}.png").exists() and (out / f"{stem}.html").exists(), stem


def test_revision_refuses_bad_parameters_before_writing_anything(tmp_path):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match="unknown rows"):
        run_notebook(
            "revision.ipynb", {"rows": ["ReAlign", "Whitened"], "output_dir": str(out)}, tmp_path
        )
    assert not out.exists()
