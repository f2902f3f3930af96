"""The methods leaderboard: row planning, the table from run directories, the CLI, the notebook."""

from __future__ import annotations

import json

import pytest

from workbench.experiments import leaderboard as L
from workbench.experiments.leaderboard_runs import leaderboard_table, results_from_runs

TINY = {
    "mixture": ["synthetic-world"],
    "zero_shot": ["digits"],
    "n_per_dataset": 24,
    "mmvp_pairs_per_category": 1,
    "steps": 4,
    "batch_size": 8,
    "seeds": [0, 1],
    "eval_every": 2,
    "probe_pairs": 8,
}


def test_unregistered_and_unsupported_methods_get_a_row_that_says_why():
    rows = {
        r.name: r
        for r in L.plan_rows(["infonce", "dcr", "no-such-method"], registered=["infonce", "dcr"])
    }
    assert rows["infonce"].run and not rows["infonce"].reason
    assert not rows["dcr"].run and "pixels + denoiser" in rows["dcr"].reason
    assert not rows["no-such-method"].run and "not registered" in rows["no-such-method"].reason
    fitted = L.plan_rows(["realign", "start"], registered=[])
    assert all(r.run for r in fitted), "training-free rows need no registered method"


def test_config_refuses_tower_parts_bare_strings_and_overlapping_zero_shot():
    with pytest.raises(ValueError, match="tower parts"):
        L.LeaderboardConfig(trainable="heads+last_n_blocks:1")
    with pytest.raises((TypeError, ValueError), match="mixture"):
        L.LeaderboardConfig(mixture="synthetic-world")
    with pytest.raises(ValueError, match="held out of the mixture"):
        L.LeaderboardConfig(mixture=("digits",), zero_shot=("digits",))
    with pytest.raises(ValueError, match="not a run directory"):
        L.LeaderboardConfig(runs=("run:/nonexistent/run",))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two methods × two seeds of a tiny leaderboard, kept as run directories."""
    root = tmp_path_factory.mktemp("lb")
    cfg = L.LeaderboardConfig(**TINY, methods=("infonce", "sde", "dcr"), run_root=str(root / "runs"),
                              output_dir=str(root / "out"))  # fmt: skip
    rows = L.plan_rows(cfg.methods)
    data = L.load_leaderboard_data(cfg, rows)
    return cfg, rows, L.run_leaderboard(cfg, data, rows), data


def test_runs_log_metrics_and_diagnostics_at_the_same_cadence(tiny_runs):
    _, _, results, _ = tiny_runs
    assert {(r.name, r.seed) for r in results} == {
        (m, s) for m in ("infonce", "sde") for s in (0, 1)
    }
    for r in results:
        assert [p["step"] for p in r.trajectory] == [0, 2, 4]
        last = r.trajectory[-1]
        assert 0.0 <= last["lb/classification"] <= 1.0 and 0.0 <= last["lb/zero_shot"] <= 1.0
        shares = sum(last[f"diag/image/{b}"] for b in ("strong", "weak", "noise"))
        assert shares == pytest.approx(1.0)
        assert last["diag/gap"] >= 0 and last["diag/beta"] >= 0 and last["diag/gamma"] >= 0
        assert r.step_time > 0


def test_table_has_spread_test_against_infonce_and_the_skipped_row(tiny_runs):
    _, rows, results, _ = tiny_runs
    table = leaderboard_table(results, [r for r in rows if not r.run])
    sde = table[(table.row == "sde") & (table.column == "classification")].iloc[0]
    base = table[(table.row == "infonce") & (table.column == "classification")].iloc[0]
    assert sde.n_seeds == 2 and sde["diff"] == pytest.approx(sde["mean"] - base["mean"])
    ratio = table[(table.row == "infonce") & (table.column == "step_ratio")].iloc[0]
    assert ratio["mean"] == pytest.approx(1.0)
    dcr = table[table.row == "dcr"].iloc[0]
    assert dcr.status == "not run" and dcr.reason


def test_cli_prints_the_table_of_run_directories(tiny_runs, tmp_path, capsys):
    from workbench.cli import main

    _, _, results, _ = tiny_runs
    dirs = [f"run:{r.run_dir}" for r in results]
    out_json = tmp_path / "table.json"
    assert main(["leaderboard", *dirs, "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "infonce" in text and "sde" in text and "classification" in text
    recs = json.loads(out_json.read_text())
    direct = leaderboard_table(results_from_runs(dirs))
    assert len(recs) == len(direct)
    assert main(["leaderboard", str(tmp_path)]) == 2  # not a run directory
    assert "not a run directory" in capsys.readouterr().err


def test_own_run_without_leaderboard_records_is_scored_at_its_checkpoints(tiny_runs, tmp_path):
    import copy

    from workbench.train import TrainConfig, train

    _, _, _, data = tiny_runs
    enc = copy.deepcopy(data.encoder)
    tc = TrainConfig(method="infonce", encoder=None, dataset=None, steps=4, batch_size=8,
                     data="cached", holdout=0, eval_every=0, snapshot_every=0,
                     checkpoint_every=2, run_root=str(tmp_path), run_name="mine")  # fmt: skip
    run = train(tc, embeddings=data.pairs.to_embeddings(enc), encoder=enc, progress=False)
    with pytest.raises(ValueError, match="no leaderboard records"):
        results_from_runs([run.run_dir])
    (mine,) = L.score_runs([f"run:{run.run_dir}"], data)
    assert [p["step"] for p in mine.trajectory] == [2, 4]
    assert mine.name.startswith("run:") and 0.0 <= mine.final["lb/classification"] <= 1.0
    assert mine.final["diag/beta"] >= 0.0


@pytest.mark.notebooks
def test_notebook_smoke_writes_table_figures_and_summary(tmp_path):
    from nbutil import run_notebook

    out = tmp_path / "out"
    params = {**TINY, "methods": ["start", "infonce", "fanoise", "realign", "cdds"],
              "run_root": str(tmp_path / "runs"), "output_dir": str(out)}  # fmt: skip
    run_notebook("methods_leaderboard.ipynb", params, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["row"]: r for r in summary["rows"]}
    assert rows["cdds"]["run"] is False and rows["cdds"]["reason"]
    assert {r["row"] for r in summary["table"]} == {
        "start",
        "infonce",
        "fanoise",
        "realign",
        "cdds",
    }
    assert {r["row"] for r in summary["runs"]} == {"start", "infonce", "fanoise", "realign"}
    for stem in ("trajectories", "spectra", "dp_scatter", "tradeoff_scatter"):
        assert (out / f"{stem}.html").exists(), stem
    assert summary["runtime_seconds"]["total"] > 0
