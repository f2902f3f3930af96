"""notebooks/dp_ability.ipynb runs headless with its smoke parameters and records what it measured."""

from __future__ import annotations

import pytest
from nbutil import read_summary, run_notebook

from workbench.experiments.dp_ability import BASELINES, PRETRAINED, RANDOM_HEADS, RANDOM_INIT

pytestmark = pytest.mark.notebooks


def smoke(tmp_path, **over):
    params = dict(
        encoders=[],
        datasets=["digits"],
        seeds=[0],
        n_samples=40,
        mmvp_pairs_per_category=1,
        map_dataset="digits",
        output_dir=str(tmp_path / "out"),
    )
    params.update(over)
    return params


def test_smoke_run_writes_figures_and_measured_points(tmp_path):
    params = smoke(tmp_path)
    run_notebook("dp_ability.ipynb", params, tmp_path)
    out = tmp_path / "out"
    summary = read_summary(out)
    points = {p["encoder"]: p for p in summary["points"]}
    # the shipped pretrained default is the trained point; both baselines are always scored
    assert set(points) == {PRETRAINED, RANDOM_HEADS, RANDOM_INIT}
    for p in points.values():
        assert 0.0 <= p["x"] <= 1.0 and 0.0 <= p["y"] <= 1.0
        assert "kmeans_acc" in p["x_title"] and "mmvp_mean" in p["y_title"]
    seps = summary["separation_pretrained_vs"]
    assert set(seps) == set(BASELINES)
    for base, by_metric in seps.items():
        assert set(by_metric) == {"kmeans_acc", "fisher"}
        for metric, sep in by_metric.items():
            by = {p["encoder"]: p for p in summary["points_by_x_metric"][metric]}
            assert sep["a"] == PRETRAINED and sep["b"] == base
            assert sep["dx"] == pytest.approx(by[PRETRAINED]["x"] - by[base]["x"])
            assert sep["dy"] == pytest.approx(by[PRETRAINED]["y"] - by[base]["y"])
    names = (
        "dp_scatter",
        "dp_scatter_fisher",
        "pability_bars",
        "map_tsne_pretrained",
        "map_tsne_random_heads",
        "map_tsne_random_init",
    )
    for name in names:
        assert (out / f"{name}.html").exists(), name
    assert {r["dataset"] for r in summary["scores"]} == {"digits", "synthetic-mmvp"}


def test_bad_parameters_fail_in_the_first_cells(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="map_dataset"):
        run_notebook("dp_ability.ipynb", smoke(tmp_path, map_dataset="fashion-mnist"), tmp_path)


def test_default_is_refused_as_an_extra_point() -> None:
    from workbench.experiments.dp_ability import DPStudyConfig

    with pytest.raises(ValueError, match="trained point"):
        DPStudyConfig(encoders=("default",))
