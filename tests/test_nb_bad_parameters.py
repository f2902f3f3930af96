"""Notebooks refuse bad data parameters before any training and before writing ``output_dir``.

Issue 19: ``papermill notebooks/sde_ablation.ipynb out.ipynb -p datasets '["nope"]'`` exited 0
with a full table measured on the synthetic MMVP task alone, and other bad parameters left a
``summary.json`` behind the failing cell. Here every notebook is run with a data set that cannot
be built (registered, files missing) and, for the main job, the string-for-a-list case; each
must fail in its config or data cell, with nothing written to ``output_dir``.
"""

from __future__ import annotations

import pytest
from nbutil import run_notebook

pytestmark = pytest.mark.notebooks

MISSING = "coco-captions"  # registered, but no local copy: load_dataset raises FileNotFoundError

CASES = {
    "sde_ablation.ipynb": {"datasets": [MISSING]},
    "sde_figures.ipynb": {"datasets": [MISSING]},
    "fanoise_figures.ipynb": {"datasets": [MISSING]},
    "modality_gap.ipynb": {"dataset": MISSING},
    "dp_ability.ipynb": {"datasets": ["digits", MISSING]},
    "explore_spectra.ipynb": {"dataset": MISSING},
}


def _fails_before_writing(name: str, params: dict, tmp_path, match: str) -> None:
    import papermill as pm

    out = tmp_path / "out"
    runs = tmp_path / "runs"
    extra = {"run_root": str(runs)} if name in ("dp_ability.ipynb", "explore_spectra.ipynb") else {}
    with pytest.raises(pm.PapermillExecutionError, match=match):
        run_notebook(name, {**params, **extra, "output_dir": str(out)}, tmp_path)
    assert not out.exists() or not any(out.iterdir()), f"{name} wrote {list(out.iterdir())}"
    assert not runs.exists() or not any(runs.iterdir()), f"{name} started a training run"


@pytest.mark.parametrize("name", list(CASES))
def test_a_dataset_that_cannot_be_built_stops_the_notebook_before_anything_is_written(
    name, tmp_path
):
    _fails_before_writing(name, CASES[name], tmp_path, "cannot be built|not found")


def test_the_main_job_refuses_a_list_passed_as_a_string(tmp_path):
    _fails_before_writing(
        "sde_ablation.ipynb", {"datasets": '["nope"]'}, tmp_path, "sequence of names"
    )


def test_the_main_job_refuses_an_unknown_dataset_with_a_suggestion(tmp_path):
    _fails_before_writing("sde_ablation.ipynb", {"datasets": ["digts"]}, tmp_path, "Did you mean")
