"""Smoke run of notebooks/pretrain_default.ipynb (tiny mixture, few steps) and its parameter check."""

from __future__ import annotations

import json

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

SMOKE = {
    "mixture": {"synthetic-world": 48, "fashion-mnist": 48},
    "steps": 4,
    "batch_size": 16,
    "warmup": 1,
    "eval_every": 2,
    "val_curve_steps": 4,
    "fashion_test": 60,
    "digits": 60,
    "eval_datasets": ["fashion-mnist", "digits"],
    "threads": 1,
}


def test_pretrain_smoke_writes_weights_card_and_summary(tmp_path):
    from safetensors.torch import load_file

    from workbench.encoders.shipped import sha256_of

    out = tmp_path / "out"
    run_notebook(
        "pretrain_default.ipynb",
        {**SMOKE, "output_dir": str(out), "run_root": str(tmp_path / "runs")},
        tmp_path,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training_rows"] == {"synthetic-world": 48, "fashion-mnist": 48}
    assert 0.0 <= summary["metrics"]["fashion-mnist"]["top1"] <= 1.0
    assert summary["metrics"]["digits"]["chance"] == pytest.approx(0.1)
    assert [r["step"] for r in summary["validation_curve"]] == [0, 2, 4]
    card = json.loads((out / "default_heads.json").read_text())
    assert card["sha256"] == sha256_of(out / "default_heads.safetensors")
    assert card["architecture"]["head"] == "mlp" and card["training_rows"]["fashion-mnist"] == 48
    tensors = load_file(str(out / "default_heads.safetensors"))
    assert tensors["image_head.0.weight"].shape == (1024, 1280)
    assert (out / "default_heads.md").read_text().startswith("# Model card")
    assert (out / "heldout_metrics.png").exists() or (out / "heldout_metrics.html").exists()


def test_pretrain_rejects_an_unknown_source_before_any_work(tmp_path):
    import papermill as pm

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError, match="unknown dataset"):
        run_notebook(
            "pretrain_default.ipynb",
            {"mixture": {"openclipartt": None}, "output_dir": str(out)},
            tmp_path,
        )
    assert not out.exists()  # nothing written before the parameters are valid
