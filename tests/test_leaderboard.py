"""The methods leaderboard: row planning, own data paths, the table from run directories, the CLI."""

from __future__ import annotations

import json
import math

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
    "dcr_batch_size": 4,
    "dcr_negatives": 2,
    "seg_batch_size": 2,
}

#: Rows with their own data path: trained outside the cached-feature loop.
PATH_ROWS = ("dcr", "cdds", "earth_adapter")


def test_unregistered_and_unsupported_methods_get_a_row_that_says_why():
    names = ["infonce", "dcr", "cdds", "no-such-method"]
    rows = {r.name: r for r in L.plan_rows(names, registered=names[:3])}
    assert rows["infonce"].run and not rows["infonce"].reason
    assert rows["dcr"].run and rows["cdds"].run, "their data paths run them"
    assert not rows["no-such-method"].run and "not registered" in rows["no-such-method"].reason
    off = {r.name: r for r in L.plan_rows(names, registered=names[:3], paths=False)}
    assert not off["dcr"].run and "pixels + denoiser" in off["dcr"].reason
    assert not off["cdds"].run and "tokens" in off["cdds"].reason
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
    with pytest.raises(ValueError, match="dcr_trainable"):
        L.LeaderboardConfig(dcr_trainable="image_head+image_blocks:2")
    with pytest.raises(ValueError, match="seg_lr"):
        L.LeaderboardConfig(seg_lr=float("nan"))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two heads-only methods and the three own-path rows × two seeds of a tiny leaderboard,
    kept as run directories."""
    root = tmp_path_factory.mktemp("lb")
    cfg = L.LeaderboardConfig(**TINY, methods=("infonce", "sde", "no-such-method", *PATH_ROWS),
                              run_root=str(root / "runs"), output_dir=str(root / "out"))  # fmt: skip
    rows = L.plan_rows(cfg.methods)
    data = L.load_leaderboard_data(cfg, rows)
    return cfg, rows, L.run_leaderboard(cfg, data, rows), data


def test_runs_log_metrics_and_diagnostics_at_the_same_cadence(tiny_runs):
    _, _, results, _ = tiny_runs
    assert {(r.name, r.seed) for r in results} == {
        (m, s) for m in ("infonce", "sde", *PATH_ROWS) for s in (0, 1)
    }
    for r in results:
        # every row, own-path ones included, logs the diagnostics at step 0 and every eval_every
        assert [p["step"] for p in r.trajectory] == [0, 2, 4], r.name
        last = r.trajectory[-1]
        assert r.steps == 4, "the same optimiser-step budget for every trained row"
        for col in ("classification", "retrieval_i2t", "perception", "compositional", "zero_shot"):
            assert 0.0 <= last[f"lb/{col}"] <= 1.0, (r.name, col)
        keys = set(last) - {"step"}
        for point in r.trajectory:
            diag = {k for k in keys if k.startswith("diag/")}
            assert diag <= set(point), (r.name, point["step"], diag - set(point))
            for side in ("image", "text"):
                shares = sum(point[f"diag/{side}/{b}"] for b in ("strong", "weak", "noise"))
                assert shares == pytest.approx(1.0)
                assert point[f"diag/{side}/erank"] > 0 and point[f"diag/{side}/sv/0"] > 0
                assert math.isfinite(point[f"diag/{side}/cone"])
            assert point["diag/gap"] >= 0
            if r.name != "cdds":  # CDDS's semantic space is not the heads': no frame there
                assert point["diag/beta"] >= 0 and point["diag/gamma"] >= 0
            else:
                assert "diag/beta" not in point
        assert r.step_time > 0


def test_own_path_snapshots_re_embed_the_probe_pairs_as_the_rebuilt_suites_do(tiny_runs):
    """The cheap per-eval snapshot of Earth-Adapter (adapted tower on the probe images) gives
    the diagnostics that the full scoring on suites rebuilt over the trained tower gives."""
    from workbench.experiments.leaderboard_paths import _tower_snapshot
    from workbench.train import load_encoder_from_run

    _, _, results, data = tiny_runs
    ea = next(r for r in results if r.name == "earth_adapter" and r.seed == 0)
    enc = load_encoder_from_run(ea.run_dir).eval()
    snap = _tower_snapshot(data.extras["probe"]["pixels"], data)(enc)
    for k in ("gap", "beta", "gamma", "image/erank", "text/erank", "image/sv/0"):
        assert snap[k] == pytest.approx(ea.final[f"diag/{k}"], rel=1e-3, abs=1e-5), k


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a, b):
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_own_path_rows_start_from_the_start_and_train_only_their_parts(tiny_runs):
    import copy

    from workbench.encoders.heads import tower_fingerprint
    from workbench.train import RunDir, load_encoder_from_run

    _, _, results, data = tiny_runs
    start = data.encoder
    runs = {r.name: r for r in results if r.seed == 0}
    dcr = load_encoder_from_run(runs["dcr"].run_dir, encoder=copy.deepcopy(start))
    assert tower_fingerprint(dcr) == tower_fingerprint(start), "DCR keeps the towers frozen"
    assert _same(_state(dcr.text_head), _state(start.text_head))
    assert not _same(_state(dcr.image_head), _state(start.image_head)), "Stage 2 trains it"
    stages = [r["stage"] for r in RunDir(runs["dcr"].run_dir).log()]
    assert stages == ["align"] * 2 + ["enhance"] * 2, "projector first, then the image head"
    ea = load_encoder_from_run(runs["earth_adapter"].run_dir)
    assert hasattr(ea, "earth_adapter") and tower_fingerprint(ea) != tower_fingerprint(start)
    for side in ("image_head", "text_head"):  # scored through the start's pretrained heads
        assert _same(_state(getattr(ea, side)), _state(getattr(start, side))), side
    cdds = RunDir(runs["cdds"].run_dir).raw_config
    assert cdds["config"]["method"] == "cdds" and cdds["config"]["steps"] == 4
    assert cdds["meta"]["tokens"]["n_captions"] == len(data.pairs), "the heads' training pairs"


def test_table_has_spread_test_against_infonce_and_the_skipped_row(tiny_runs):
    _, rows, results, _ = tiny_runs
    table = leaderboard_table(results, [r for r in rows if not r.run])
    sde = table[(table.row == "sde") & (table.column == "classification")].iloc[0]
    base = table[(table.row == "infonce") & (table.column == "classification")].iloc[0]
    base_comp = table[(table.row == "infonce") & (table.column == "compositional")]["mean"].iloc[0]
    assert sde.n_seeds == 2 and sde["diff"] == pytest.approx(sde["mean"] - base["mean"])
    ratio = table[(table.row == "infonce") & (table.column == "step_ratio")].iloc[0]
    assert ratio["mean"] == pytest.approx(1.0)
    skipped = table[table.row == "no-such-method"].iloc[0]
    assert skipped.status == "not run" and skipped.reason
    for name in PATH_ROWS:
        cell = table[(table.row == name) & (table.column == "compositional")].iloc[0]
        assert (
            cell.status == "run"
            and cell.n_seeds == 2
            and cell["diff"] == pytest.approx(cell["mean"] - base_comp)
        ), name


def test_cli_prints_the_table_of_run_directories(tiny_runs, tmp_path, capsys):
    from workbench.cli import main

    _, _, results, _ = tiny_runs
    dirs = [f"run:{r.run_dir}" for r in results]
    out_json = tmp_path / "table.json"
    assert main(["leaderboard", *dirs, "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "infonce" in text and "sde" in text and "classification" in text
    assert all(name in text for name in PATH_ROWS), "the own-path rows from their run dirs"
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
