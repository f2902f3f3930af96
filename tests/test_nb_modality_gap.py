"""The modality-gap notebook runs end to end on a smoke configuration and records what it shows."""

from __future__ import annotations

import math

import pytest
from nbutil import read_summary, run_notebook

from workbench.experiments.modality_gap import ModalityGapConfig

SMOKE = {
    "n_fit": 60,
    "n_eval": 40,
    "k": 5,
    "cone_inits": 2,
    "cone_samples": 50,
    "stability_sizes": [10, 30, 60],
    "output_dir": "out",
}

FIGURES = (
    "mtg_fig2_cone",
    "mtg_fig3_shift",
    "mtg_fig3_shift_learned_tau",
    "realign_fig3_centroid_gap",
    "realign_fig4a_spectra",
    "realign_fig4b_cosine_kde",
    "realign_fig5_knn_mixing",
    "realign_tab5_ablation",
    "realign_fig6_stability",
)


@pytest.mark.notebooks
def test_modality_gap_notebook_smoke(tmp_path) -> None:
    run_notebook("modality_gap.ipynb", SMOKE, tmp_path)
    out = tmp_path / "out"
    for name in FIGURES:
        assert (out / f"{name}.html").exists(), f"missing figure {name}"
    s = read_summary(out)
    assert s["config"]["n_fit"] == 60 and s["config"]["n_eval"] == 40
    gaps = s["centroid_gap"]
    # the pretrained default's gap is already small; fitted on 60 unpaired samples, ReAlign
    # brings held-out text to the images' centroid up to the held-out sampling noise
    assert gaps["ReAlign"] <= gaps["original"]
    assert gaps["ReAlign"] < 2 * gaps["sampling_noise_floor"]
    assert gaps["shrink_factor"] == pytest.approx(gaps["original"] / gaps["ReAlign"])
    assert s["gap"]["gap_norm"] > 0
    # the default is the pretrained model: its learned τ (not CLIP's 0.01) drives the second shift
    tau = s["temperature_learned"]
    assert 0.0 < tau < 1.0 and tau != pytest.approx(0.01)
    assert s["shift_learned_tau"]["temperature"] == pytest.approx(tau)
    assert s["shift"]["temperature"] == pytest.approx(0.01)
    # the random-heads baseline is measured on the same held-out pairs, with its cone in Fig. 2
    base = s["gap_random_heads"]
    assert base["n_image"] == s["gap"]["n_image"] and base["gap_norm"] != pytest.approx(
        s["gap"]["gap_norm"]
    )
    assert s["encoder_cone_widths"]["image, random heads"] == pytest.approx(
        base["cone_width_image"]
    )
    paper = {r["quantity"]: r for r in s["paper_vs_ours"]}
    assert paper["‖Δ‖ gap of the trained model"]["ours"] == pytest.approx(s["gap"]["gap_norm"])
    assert paper["‖Δ‖ gap of the trained model"]["paper"] == 0.82
    assert len(s["shift"]["signed_gap"]) == len(s["shift"]["lambdas"])
    assert set(s["power_law_alpha"]) == {"image", "text", "C3", "ReAlign"}
    assert {r["variant"] for r in s["ablation"]} == {
        "original", "C3", "anchor", "anchor+trace", "ReAlign"
    }  # fmt: skip
    assert s["stability"]["sizes"] == [10, 30, 60]
    assert s["fixed_frame"]["reconstruction_error"] < 1e-10
    assert all(math.isfinite(v) for v in s["knn_mixing"].values())


@pytest.mark.notebooks
def test_modality_gap_notebook_rejects_bad_parameters(tmp_path) -> None:
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="n_fit must be"):
        run_notebook("modality_gap.ipynb", {**SMOKE, "n_fit": 1}, tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_fit", 1, "n_fit"),
        ("n_eval", 3, "n_eval"),
        ("temperature", 0.0, "temperature"),
        ("c3_sigma", -0.1, "c3_sigma"),
        ("cone_inits", 1, "cone_inits"),
        ("stability_sizes", (1, 10), "stability_sizes"),
        ("encoder", "", "encoder"),
        ("cone_baseline", "yes", "cone_baseline"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        ModalityGapConfig(**{field: value})


def test_cone_baseline_needs_the_default_encoder() -> None:
    with pytest.raises(ValueError, match="cone_baseline=False"):
        ModalityGapConfig(encoder="open_clip:RN50")
    assert (
        ModalityGapConfig(encoder="open_clip:RN50", cone_baseline=False).encoder == "open_clip:RN50"
    )


def test_paper_vs_ours_names_the_missing_cells() -> None:
    from workbench.experiments.modality_gap import paper_vs_ours

    with pytest.raises(ValueError, match="lacks"):
        paper_vs_ours({"gap": {}})


def test_notebook_parameters_repeat_config_defaults() -> None:
    import ast
    import json
    from dataclasses import fields
    from pathlib import Path

    nb = json.loads(
        (Path(__file__).resolve().parents[1] / "notebooks/modality_gap.ipynb").read_text()
    )
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params = {}
    for node in ast.parse("".join(cell["source"])).body:
        params[node.targets[0].id] = ast.literal_eval(node.value)
    defaults = ModalityGapConfig()
    assert set(params) == {f.name for f in fields(ModalityGapConfig)}
    for name, value in params.items():
        assert value == getattr(defaults, name), name
