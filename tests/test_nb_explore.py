"""explore_spectra.ipynb under papermill: static figures (no widgets), figures and numbers saved."""

from __future__ import annotations

import json

import pytest
from nbutil import read_summary, run_notebook

from workbench.viz.explorers import GapController, SpectrumController

SMOKE = {
    "sample_size": 40,
    "train_steps": 6,
    "batch_size": 16,
    "snapshot_every": 3,
    "checkpoint_every": 3,
    "holdout": 8,
    "output_dir": "out",
    "run_root": "runs",
}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.mark.notebooks
def test_explore_notebook_renders_static_figures_under_papermill(tmp_path) -> None:
    executed = run_notebook("explore_spectra.ipynb", SMOKE, tmp_path)
    nb = json.loads(executed.read_text())
    explorer_cells = [
        c for c in nb["cells"] if c["cell_type"] == "code" and "Explorer(" in "".join(c["source"])
    ]
    assert len(explorer_cells) == 4
    for cell in explorer_cells:
        mimes = [m for o in cell["outputs"] for m in o.get("data", {})]
        assert WIDGET_MIME not in mimes  # papermill is not interactive: static figures
        n_figures = mimes.count("application/vnd.plotly.v1+json")
        assert n_figures in (len(SpectrumController.FIGURES), len(GapController.FIGURES))
    out = tmp_path / "out"
    for prefix in ("default_", "run_"):
        for name in (*SpectrumController.FIGURES, *GapController.FIGURES):
            assert (out / f"{prefix}{name}.html").exists(), f"missing {prefix}{name}"
    s = read_summary(out)
    run = s["run"]
    # the run explorer starts on the run's last step and knows the logged snapshots
    assert run["spectrum"]["settings"]["step"] == SMOKE["train_steps"]
    assert run["spectrum"]["logged_steps"][-1] == SMOKE["train_steps"]
    for part in (s["default"]["spectrum"]["partition"], run["spectrum"]["partition"]):
        assert part["n_strong"] + part["n_weak"] + part["n_noise"] == part["rank"]
    assert (tmp_path / run["run_dir"]).is_dir() or (tmp_path / "runs").is_dir()


@pytest.mark.notebooks
def test_explore_notebook_rejects_bad_parameters_early(tmp_path) -> None:
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="holdout"):
        run_notebook("explore_spectra.ipynb", {**SMOKE, "holdout": 100}, tmp_path)
    executed = json.loads((tmp_path / "executed-explore_spectra.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    failing = next(
        i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c["outputs"])
    )
    assert failing <= 2  # the config cell right after the parameters, before anything heavy
