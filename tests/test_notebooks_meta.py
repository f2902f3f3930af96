"""Every committed notebook is a clean source: outputs stripped, one tagged parameters cell, our kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ holds no .ipynb files"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stripped_and_parameterised(path: Path) -> None:
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    for i, cell in enumerate(code):
        assert not cell.get("outputs"), f"{path.name}: code cell {i} carries outputs"
        assert cell.get("execution_count") is None, f"{path.name}: code cell {i} has a count"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters'"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "workbench"


# Each notebook's parameters come from one config dataclass: notebook stem → "module:Class".
CONFIGS = {
    "sde_ablation": "workbench.experiments.sde:SDEAblationConfig",
    "sde_figures": "workbench.experiments.sde:SDEFiguresConfig",
    "fanoise_figures": "workbench.experiments.fanoise:FANoiseFiguresConfig",
    "modality_gap": "workbench.experiments.modality_gap:ModalityGapConfig",
    "dp_ability": "workbench.experiments.dp_ability:DPStudyConfig",
    "explore_spectra": "workbench.viz.explorers:ExploreConfig",
    "pretrain_default": "workbench.experiments.pretrain:PretrainConfig",
    "degla": "workbench.experiments.degla:DeGLAStudyConfig",
    "proclip": "workbench.experiments.proclip:ProCLIPConfig",
    "cdds": "workbench.experiments.cdds:CDDSStudyConfig",
    "methods_leaderboard": "workbench.experiments.leaderboard:LeaderboardConfig",
    "revision": "workbench.experiments.revision:ReVisionConfig",
    "dcr": "workbench.experiments.dcr:DCRStudyConfig",
    "earth_adapter": "workbench.experiments.earth_adapter:EarthAdapterConfig",
}


def _plain(value: object) -> object:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_every_notebook_names_its_config() -> None:
    assert {p.stem for p in NOTEBOOKS} == set(CONFIGS), "add the notebook's config to CONFIGS"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_parameters_cell_equals_the_config_defaults(path: Path) -> None:
    """The parameters cell assigns every config field, each to the dataclass default, as literals."""
    import ast
    import dataclasses
    import importlib

    module, _, cls_name = CONFIGS[path.stem].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {}
    for node in ast.parse("".join(cell["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        values[node.targets[0].id] = ast.literal_eval(node.value)  # literals only
    defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
    assert set(values) == set(defaults), f"{path.name}: fields differ from {cls_name}"
    for name, value in values.items():
        assert _plain(value) == _plain(defaults[name]), f"{path.name}: {name}"
