"""Smoke run of ``notebooks/dcr.ipynb`` (tiny data, a few steps) and its parameter checks."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "denoiser": "tiny:random",
    "train_mixture": [["synthetic-world", "train", 30], ["fashion-mnist", "train", 30]],
    "seeds": [0, 1],
    "joint_seeds": [0],
    "steps": 4,
    "batch_size": 6,
    "negatives": 2,
    "suite_samples": 20,
    "mmvp_pairs_per_category": 1,
    "d_datasets": ["digits", "synthetic-world"],
    "theorem_timesteps": [500],
    "theorem_per_class": 6,
    "tsne_samples": 40,
}


def test_dcr_notebook_smoke_writes_every_figure_and_summary(tmp_path):
    out = tmp_path / "out"
    run_notebook("dcr.ipynb", {**SMOKE, "output_dir": str(out)}, tmp_path, timeout=1800)
    for stem in ("fig2_naive_conflict", "fig1d_dp_kmeans_acc", "fig1d_dp_fisher",
                 "tab4b_joint_vs_two_stage", "theorem1_bounds", "fig5_tsne_digits",
                 "paper_vs_ours"):  # fmt: skip
        assert (out / f"{stem}.html").exists(), stem
    s = json.loads((out / "summary.json").read_text())
    assert 0.0 <= s["fig2"]["fraction_below_0"] <= 1.0 and s["fig2"]["paper"] == 0.863
    assert s["fig2"]["steps"] == 2 * 2  # two seeds × the two Stage-2 steps, probed every step
    arms = {p["encoder"] for p in s["fig1d"]["kmeans_acc"]}
    assert arms == {"pretrained", "recon", "naive", "dcr", "dcr-joint"}
    assert all(p["n_seeds"] == 2 for p in s["fig1d"]["kmeans_acc"] if p["encoder"] != "dcr-joint")
    assert set(s["dp_claims"]["dcr"]) >= {"mmvp_mean", "kmeans_acc", "fisher", "p_up", "d_down"}
    assert [r["protocol"] for r in s["tab4b"]] == ["joint", "two-stage"]
    assert s["theorem1_holds"]["in_sample_all_hold"] is True  # the algebra, with B's own constants
    assert {r["split"] for r in s["theorem1"]} == {"held-out", "in-sample"}
    assert s["runtime_seconds"]["total"] > 0


def test_dcr_notebook_rejects_bad_parameters_before_any_work(tmp_path):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match="arms must be"):
        run_notebook("dcr.ipynb", {"arms": ["dcr", "diva"], "output_dir": str(out)}, tmp_path)
    with pytest.raises(pm.PapermillExecutionError, match="negatives"):
        run_notebook("dcr.ipynb", {"negatives": 0, "output_dir": str(out)}, tmp_path)
    assert not out.exists()
