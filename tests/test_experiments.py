"""Experiment grids behind the SDE/FANoise notebooks: arms, tables, cross-task matrices, spectra."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from dp_fakes import TinyEncoder

from workbench import experiments as E
from workbench.evals import TaskSuiteConfig, build_task_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _loader(name):
    from workbench.data import load_dataset

    if name == "synthetic-world":
        return load_dataset("synthetic-world", size=48, image_size=48)
    if name == "digits":
        return load_dataset("digits", size=60, image_size=16)
    raise FileNotFoundError(name)


@pytest.fixture(scope="module")
def suite():
    cfg = TaskSuiteConfig(
        datasets=("synthetic-world", "digits"),
        n_per_dataset=40,
        mmvp_pairs_per_category=2,
        cache=False,
    )
    return build_task_suite(TinyEncoder(), cfg, loader=_loader)


FAST = E.HeadsTraining(steps=4, batch_size=16)


# -- arms ------------------------------------------------------------------------------------------
def test_sde_arms_share_the_feature_loss_and_differ_by_one_switch():
    arms = E.sde_ablation_arms(["full", "no_kl", "lambda_0"], temperature=0.05, symmetric=True)
    assert [a.name for a in arms] == ["infonce", "sde/full", "sde/no_kl", "sde/lambda_0"]
    base, full, no_kl, lam0 = arms
    assert base.method == "infonce" and base.config == {"temperature": 0.05, "symmetric": True}
    assert full.config == base.config
    assert no_kl.config == {**base.config, "kl": False}
    assert lam0.config == {**base.config, "lambda_max": 0.0}
    with pytest.raises(ValueError, match="unknown ablation rows"):
        E.sde_ablation_arms(["full", "no_curriculum"])


def test_fanoise_arms():
    arms = E.fanoise_alpha_arms([0, 0.5], "linear")
    assert [a.name for a in arms] == ["alpha=0", "alpha=0.5"]
    assert arms[1].config["alpha"] == 0.5 and arms[1].config["scaling"] == "linear"
    scal = E.fanoise_scaling_arms(0.2)
    assert [a.name for a in scal] == ["infonce", "uniform", "linear", "sublinear"]
    assert all(a.config["alpha"] == 0.2 for a in scal[1:])


def test_heads_training_validates():
    for bad in ({"steps": 0}, {"batch_size": 1}, {"lr": 0}, {"steps": 5, "warmup": 6}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            E.HeadsTraining(**bad)
    cfg = E.HeadsTraining(batch_size=64).train_config(E.Arm("a/b", "infonce"), 3, 41, "/tmp/x")
    assert cfg.batch_size == 40 and cfg.trainable == "heads" and cfg.seed == 3
    assert cfg.run_name == "a-b"


# -- tables (hand-made scores) ------------------------------------------------------------------
def _scores(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for arm, vals in values.items():
        for seed, v in enumerate(vals):
            for meta, off in (("classification", 0.0), ("retrieval", 0.1)):
                rows.append(
                    dict(
                        arm=arm,
                        seed=seed,
                        train_on="all",
                        level="meta_task",
                        meta_task=meta,
                        task="",
                        value=v + off,
                    )
                )
            rows.append(
                dict(
                    arm=arm,
                    seed=seed,
                    train_on="all",
                    level="overall",
                    meta_task="",
                    task="",
                    value=v + 0.05,
                )
            )
    return pd.DataFrame(rows)


def test_ablation_table_means_spreads_and_differences():
    t = E.ablation_table(_scores({"base": [0.5, 0.6], "a": [0.8, 0.9], "b": [0.55, 0.6]}))
    assert list(dict.fromkeys(t.column)) == ["classification", "retrieval", "overall"]
    a = t[(t.arm == "a") & (t.column == "classification")].iloc[0]
    assert a["mean"] == pytest.approx(0.85) and a["std"] == pytest.approx(
        np.std([0.8, 0.9], ddof=1)
    )
    assert a["diff"] == pytest.approx(0.3) and bool(a["exceeds_spread"])
    b = t[(t.arm == "b") & (t.column == "overall")].iloc[0]
    assert b["diff"] == pytest.approx(0.025) and not b["exceeds_spread"]
    base = t[t.arm == "base"]
    assert (base["diff"] == 0).all() and not base["exceeds_spread"].any()


def test_one_seed_has_no_spread_and_never_exceeds_it():
    t = E.ablation_table(_scores({"base": [0.5], "a": [0.9]}))
    assert t["std"].isna().all() and not t["exceeds_spread"].any()


def test_sde_paper_claims_hold_only_beyond_the_spread_and_read_the_cross_task_cells():
    table = E.ablation_table(_scores({"infonce": [0.5, 0.6], "sde/full": [0.8, 0.9]}))
    idx = ["classification", "retrieval"]
    base = pd.DataFrame([[0.5, 0.4], [0.3, 0.6]], index=idx, columns=idx)
    sde = base + pd.DataFrame([[0.0, 0.1], [-0.3, 0.0]], index=idx, columns=idx)
    sched = pd.DataFrame({"step": [0, 1, 2], "alpha": [0.5, 0.25, 0.0], "lambda": [0, 0.1, 0.1]})
    claims = E.sde_paper_claims(
        table, {"infonce": base, "sde/full": sde}, sched, "infonce", "sde/full"
    )
    assert list(claims.columns) == ["claim", "paper", "ours", "holds"]
    assert list(claims.holds) == [True, False, True]  # off-diagonal mean (+10 − 30)/2 < 0
    assert "1/2 cells > 0" in claims.ours[1]
    within = E.ablation_table(_scores({"infonce": [0.5, 0.6], "sde/full": [0.52, 0.62]}))
    assert not E.sde_paper_claims(
        within, {"infonce": base, "sde/full": sde}, sched, "infonce", "sde/full"
    ).holds[0]
    with pytest.raises(ValueError, match="no overall row"):
        E.sde_paper_claims(table, {}, sched, "infonce", "sde/other")


def test_fanoise_paper_claims_best_alpha_large_alpha_and_scaling_order():
    sweep = E.ablation_table(
        _scores({"alpha=0": [0.5, 0.51], "alpha=0.1": [0.6, 0.61], "alpha=5": [0.1, 0.11]})
    )
    scal = E.ablation_table(
        _scores(
            {
                "infonce": [0.5, 0.51],
                "uniform": [0.4, 0.41],
                "linear": [0.5, 0.5],
                "sublinear": [0.6, 0.61],
            }
        )
    )
    cos = np.r_[np.ones(8), np.zeros(8)]
    claims = E.fanoise_paper_claims(sweep, scal, (0.0, 0.1, 5.0), 0.1, cos).set_index("claim")
    assert claims.holds.all() and len(claims) == 5
    assert "best overall at α = 0.1 (+10.0 vs α = 0, beyond" in claims.ours.iloc[1]
    tied = E.ablation_table(
        _scores({"alpha=0": [0.5, 0.6], "alpha=0.1": [0.51, 0.61], "alpha=5": [0.1, 0.11]})
    )
    assert not E.fanoise_paper_claims(tied, scal, (0.0, 0.1, 5.0), 0.1, cos).holds[1]
    with pytest.raises(ValueError, match="alphas"):
        E.fanoise_paper_claims(sweep, scal, (0.0, 0.1), 0.1, cos)


def test_format_table_marks_differences_that_exceed_the_spread():
    wide = E.format_table(E.ablation_table(_scores({"base": [0.5, 0.6], "a": [0.8, 0.9]})))
    assert list(wide.index) == ["base", "a"] and list(wide.columns)[-1] == "overall"
    assert wide.loc["base", "classification"] == "55.0 ± 7.1"
    assert wide.loc["a", "classification"] == "85.0 ± 7.1 (+30.0*)"


def test_cross_task_table_rows_are_training_tasks():
    rows = []
    for train_on in ("classification", "retrieval"):
        for meta in ("classification", "retrieval"):
            for seed in (0, 1):
                v = 0.9 if train_on == meta else 0.1
                rows.append(
                    dict(
                        arm="x",
                        seed=seed,
                        train_on=train_on,
                        level="meta_task",
                        meta_task=meta,
                        task="",
                        value=v + seed * 0.02,
                    )
                )
    mats = E.cross_task_table(pd.DataFrame(rows))
    m = mats["x"]
    assert list(m.index) == ["classification", "retrieval"] and list(m.columns) == [
        "classification",
        "retrieval",
    ]
    assert np.allclose(np.diag(m.values), 0.91) and np.allclose(m.values[0, 1], 0.11)


# -- spectra ---------------------------------------------------------------------------------------
def test_cumulative_energy_is_one_function_shared_with_the_spectrum():
    from workbench.probes.spectra import cumulative_energy, spectrum

    np.testing.assert_allclose(cumulative_energy([1.0, 2.0]), [0.8, 1.0])
    with pytest.raises(ValueError, match="all-zero"):
        cumulative_energy([0.0, 0.0])
    X = np.random.default_rng(0).standard_normal((30, 5))
    s = spectrum(X)
    np.testing.assert_array_equal(s.cumulative_energy, cumulative_energy(s.singular_values))


def test_noise_spectra_alpha_zero_is_clean_and_noise_grows_with_alpha():
    x = torch.nn.functional.normalize(torch.randn(40, 12), dim=1).numpy()
    s0 = E.noise_spectra(x, 0.0)
    np.testing.assert_allclose(s0["noisy"], s0["clean"], atol=1e-12)
    small, big = E.noise_spectra(x, 0.1, seed=1), E.noise_spectra(x, 1.0, seed=1)
    np.testing.assert_allclose(big["noise"], 10 * small["noise"], rtol=1e-10)


# -- training grids (tiny suite) --------------------------------------------------------------
@pytest.mark.slow
def test_grid_scores_every_arm_and_seed_and_leaves_the_encoder_unchanged(suite):
    enc = TinyEncoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    arms = E.sde_ablation_arms(["full"])
    grid = E.run_grid(enc, suite, arms, [0, 1], FAST)
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    s = grid.scores
    assert set(s.arm) == {"infonce", "sde/full"} and set(s.seed) == {0, 1}
    assert s["value"].between(0, 1).all()
    assert len(s[s.level == "overall"]) == 4
    # the SDE run logs its band proportions and schedules
    log = grid.run("sde/full", seed=1).log
    bands = E.band_trace(log)
    assert set(bands.band) == {"strong", "weak", "noise"} and set(bands.side) == {"image", "text"}
    sums = bands.groupby(["step", "side"]).proportion.sum()
    assert np.allclose(sums, 1.0)
    sched = E.schedule_trace(log)
    assert (np.diff(sched.alpha) <= 1e-12).all() and sched["lambda"].iloc[-1] > 0
    with pytest.raises(ValueError, match="band proportions"):
        E.band_trace(grid.run("infonce").log)


@pytest.mark.slow
def test_same_seed_same_result_and_seeds_change_the_heads(suite):
    enc = TinyEncoder()
    arm = E.Arm("infonce", "infonce")
    pairs = suite.train_pairs()
    a, b = (E.train_heads(enc, pairs, arm, 0, FAST) for _ in range(2))
    c = E.train_heads(enc, pairs, arm, 1, FAST)
    wa, wb, wc = (r.heads.image_head.weight for r in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.slow
def test_cross_task_matrix_trains_on_each_meta_task(suite):
    mats, grid = E.cross_task_matrix(TinyEncoder(), suite, [E.Arm("infonce", "infonce")], [0], FAST)
    m = mats["infonce"]
    assert list(m.index) == E.trainable_meta_tasks(suite) == suite.meta_tasks
    assert set(m.columns) == set(suite.meta_tasks)
    assert set(grid.scores.train_on) == set(suite.meta_tasks)
    img, txt = E.pair_features(grid.runs[0].heads, suite.train_pairs())
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, rtol=1e-6)
    assert img.shape == txt.shape


# -- notebook configurations -------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, bad, match",
    [
        (E.SDEAblationConfig, {"rows": ("full", "bogus")}, "unknown ablation rows"),
        (E.SDEAblationConfig, {"seeds": ()}, "seeds"),
        (E.SDEAblationConfig, {"seeds": (1, 1)}, "seeds"),
        (E.SDEAblationConfig, {"threads": 0}, "threads"),
        (E.SDEAblationConfig, {"steps": 0}, "steps"),
        (E.SDEAblationConfig, {"n_per_dataset": 1}, "n_per_dataset"),
        (E.SDEAblationConfig, {"device": "tpu"}, "device"),
        (E.SDEAblationConfig, {"sde_config": {"alpha0": -1}}, "alpha0"),
        (E.SDEFiguresConfig, {"cross_task_seeds": ()}, "cross_task_seeds"),
        (E.FANoiseFiguresConfig, {"scalings": ("uniform", "cubic")}, "scaling"),
        (E.FANoiseFiguresConfig, {"alphas": (0.1, -1.0)}, "alphas"),
    ],
)
def test_notebook_configs_reject_bad_parameters(cls, bad, match):
    with pytest.raises(ValueError, match=match):
        cls(**bad)


def test_spread_grid_marks_differences_beyond_the_spread_and_prints_one_seed_means_alone():
    import pandas as pd

    from workbench.experiments.tables import spread_grid

    long = pd.DataFrame(
        [
            {
                "arm": "base",
                "metric": "b",
                "mean": 0.5,
                "std": 0.01,
                "diff": 0.0,
                "exceeds_spread": False,
            },
            {
                "arm": "base",
                "metric": "a",
                "mean": 0.4,
                "std": 0.02,
                "diff": 0.0,
                "exceeds_spread": False,
            },
            {
                "arm": "new",
                "metric": "b",
                "mean": 0.6,
                "std": 0.01,
                "diff": 0.1,
                "exceeds_spread": True,
            },
            {
                "arm": "new",
                "metric": "a",
                "mean": 0.41,
                "std": float("nan"),
                "diff": 0.01,
                "exceeds_spread": False,
            },
        ]
    )
    grid = spread_grid(long, "arm", "metric", "base")
    assert list(grid.index) == ["base", "new"] and list(grid.columns) == ["b", "a"]
    assert grid.loc["base", "b"] == "50.0 ± 1.0"  # the baseline carries no Δ
    assert grid.loc["new", "b"] == "60.0 ± 1.0 (+10.0*)"
    assert grid.loc["new", "a"] == "41.0 (+1.0)"  # one seed: no ± and no star
