"""Experiment grids behind the SDE / FANoise notebooks (spec ``methods-spectral.md`` §1.3, §2.5).

The notebooks stay short: they build a task suite, describe the *arms* to compare, and call
these functions. Everything here trains projection heads only, on the suite's cached tower
features (:class:`~workbench.probes.tasks.TaskSuite`), so a grid of seeds × arms runs on a CPU.

========================================  ==========================================================
function                                  used for
========================================  ==========================================================
:func:`sde_ablation_arms`                 SDE Table 2 rows (baseline + full + each ablation switch)
:func:`fanoise_alpha_arms`,               FANoise Fig. 2 (score vs α) and Fig. 5 / Table 2
:func:`fanoise_scaling_arms`              (uniform / linear / sublinear at one α)
:func:`run_grid`                          train every arm × seed (optionally on one meta-task)
:func:`ablation_table`,                   mean ± std per meta-task and overall, difference from the
:func:`format_table`                      baseline, and whether it exceeds the seed spread
:func:`cross_task_matrix`                 SDE Fig. 2: train on one meta-task, evaluate on all
:func:`band_trace`, :func:`schedule_trace`  SDE Fig. 3a, Fig. 4 from a run's log
:func:`cumulative_energy`,                SDE Fig. 3b/c, FANoise Figs. 3–4
:func:`noise_spectra`, :func:`pair_features`
:class:`SDEAblationConfig`,               the notebooks' parameter sets (validated; the ``parameters``
:class:`SDEFiguresConfig`,                cells repeat their defaults), :func:`load_suite` builds
:class:`FANoiseFiguresConfig`             the encoder + cached task suite
:func:`table_figure`, ...                 plotly figures not covered by :mod:`workbench.viz.spectrum`
========================================  ==========================================================

Seeds: seed ``s`` re-initialises the heads (identically for every arm, so arms are paired) and
seeds the data order and any method noise.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ABLATION_ROWS",
    "Arm",
    "FANoiseFiguresConfig",
    "GridResult",
    "Heads",
    "HeadsTraining",
    "SDEAblationConfig",
    "SDEFiguresConfig",
    "SuiteRunConfig",
    "TrainedArm",
    "ablation_table",
    "band_records",
    "band_trace",
    "check_arms",
    "config_dict",
    "cross_task_figure",
    "cross_task_matrix",
    "cross_task_table",
    "cumulative_energy",
    "fanoise_alpha_arms",
    "fanoise_scaling_arms",
    "format_table",
    "load_suite",
    "noise_spectra",
    "pair_features",
    "run_grid",
    "schedule_figure",
    "schedule_trace",
    "sde_ablation_arms",
    "summary_records",
    "sweep_figure",
    "table_figure",
    "train_heads",
    "trainable_meta_tasks",
]

OVERALL = "overall"


# -- arms -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One row of a comparison: a method name and its configuration.

    Attributes:
        name: Row label in tables and figures (e.g. ``"infonce"``, ``"sde/no_kl"``).
        method: Registry name for :func:`workbench.methods.get`.
        config: Keyword arguments of the method.
    """

    name: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)


def sde_ablation_arms(
    rows: Sequence[str] = ("full",),
    *,
    temperature: float | None = 0.02,
    symmetric: bool = False,
    sde_config: dict[str, Any] | None = None,
    baseline: str = "infonce",
) -> list[Arm]:
    """The InfoNCE baseline plus one SDE arm per ablation row (``workbench.methods.sde.ABLATIONS``).

    Baseline and SDE share the feature loss (``temperature``, ``symmetric``), so each row
    differs from the baseline only by SDE's enhancement and ``L_spec``.

    Args:
        rows: Ablation row names: ``full``, ``no_disentanglement``, ``no_weak_band``,
            ``constant_alpha``, ``lambda_0``, ``no_kl``.
        temperature: Feature-loss τ (VLM2Vec 0.02; ``None`` = learnable logit scale).
        symmetric: CLIP two-way loss (``True``) or VLM2Vec one-way (``False``).
        sde_config: Extra SDE arguments applied to every SDE row (e.g. ``{"alpha0": 0.3}``).
        baseline: Name of the baseline arm.
    """
    from workbench.methods.sde import ABLATIONS

    unknown = [r for r in rows if r not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose from {list(ABLATIONS)}")
    feat = {"temperature": temperature, "symmetric": symmetric}
    arms = [Arm(baseline, "infonce", dict(feat))]
    for r in rows:
        arms.append(Arm(f"sde/{r}", "sde", {**feat, **(sde_config or {}), **ABLATIONS[r]}))
    return arms


def fanoise_alpha_arms(
    alphas: Iterable[float],
    scaling: str = "sublinear",
    *,
    temperature: float | None = 0.02,
    symmetric: bool = False,
    fanoise_config: dict[str, Any] | None = None,
) -> list[Arm]:
    """One FANoise arm per α (FANoise Fig. 2); α = 0 is the InfoNCE baseline by construction."""
    feat = {"temperature": temperature, "symmetric": symmetric, **(fanoise_config or {})}
    return [
        Arm(f"alpha={a:g}", "fanoise", {**feat, "alpha": float(a), "scaling": scaling})
        for a in alphas
    ]


def fanoise_scaling_arms(
    alpha: float = 0.1,
    scalings: Sequence[str] = ("uniform", "linear", "sublinear"),
    *,
    temperature: float | None = 0.02,
    symmetric: bool = False,
    baseline: str = "infonce",
) -> list[Arm]:
    """InfoNCE baseline plus FANoise with each scaling at the same α (FANoise Fig. 5, Table 2)."""
    feat = {"temperature": temperature, "symmetric": symmetric}
    arms = [Arm(baseline, "infonce", dict(feat))]
    arms += [Arm(s, "fanoise", {**feat, "alpha": alpha, "scaling": s}) for s in scalings]
    return arms


# -- training -------------------------------------------------------------------------------------
@dataclass
class HeadsTraining:
    """How each arm's heads are trained (the :class:`~workbench.train.TrainConfig` subset used).

    Attributes:
        steps: Optimiser steps per run (150: the heads converge on a few thousand pairs).
        batch_size: Batch per step (128; capped at the number of training pairs, even).
        lr: Peak AdamW learning rate (1e-3 for heads from random init).
        warmup: Linear warm-up steps (10% of ``steps`` when ``None``).
        weight_decay: AdamW weight decay (0.1, CLIP's).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        snapshot_every: Spectral snapshot cadence of the run log (0 = none; the SDE figures
            read the method's own per-step band logs instead).
        run_root: Keep run directories here; ``None`` = a temporary directory removed after
            each run (the per-step log is kept in memory).
    """

    steps: int = 150
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int | None = None
    weight_decay: float = 0.1
    device: str = "cpu"
    snapshot_every: int = 0
    run_root: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"steps must be an int ≥ 1, got {self.steps!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 2):
            raise ValueError(f"batch_size must be an int ≥ 2, got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise ValueError(f"warmup must be in [0, steps], got {self.warmup!r}")

    def train_config(self, arm: Arm, seed: int, n_pairs: int, run_root: str) -> Any:
        """The :class:`~workbench.train.TrainConfig` of one heads-only run."""
        from workbench.train import TrainConfig

        batch = min(self.batch_size, n_pairs - n_pairs % 2)
        if batch < 2:
            raise ValueError(f"need ≥ 2 training pairs, got {n_pairs}")
        return TrainConfig(
            method=arm.method,
            method_config=dict(arm.config),
            encoder=None,
            dataset=None,
            steps=self.steps,
            batch_size=batch,
            lr=self.lr,
            warmup=max(1, self.steps // 10) if self.warmup is None else self.warmup,
            weight_decay=self.weight_decay,
            seed=seed,
            device=self.device,
            trainable="heads",
            data="cached",
            holdout=0,
            eval_every=0,
            log_every=1,
            snapshot_every=self.snapshot_every,
            run_root=run_root,
            run_name=arm.name.replace("/", "-").replace(" ", "_"),
        )


class Heads:
    """Trained projection heads detached from their encoder (what the suite evaluates).

    Attributes:
        image_head, text_head: Copies of the encoder's heads after training (eval mode).
        logit_scale: The encoder's log logit scale after training (float).
    """

    def __init__(self, encoder: Any) -> None:
        self.image_head = copy.deepcopy(encoder.image_head).eval()
        self.text_head = copy.deepcopy(encoder.text_head).eval()
        self.logit_scale = float(encoder.logit_scale.detach())

    def load_into(self, encoder: Any) -> Any:
        """Copy these heads' weights into ``encoder`` (same architecture); returns it."""
        encoder.image_head.load_state_dict(self.image_head.state_dict())
        encoder.text_head.load_state_dict(self.text_head.state_dict())
        return encoder


@dataclass
class TrainedArm:
    """One finished run: the trained heads and the run's per-step log records.

    Attributes:
        arm, seed: What was trained.
        heads: :class:`Heads` after training (``suite.evaluate(heads)`` scores them).
        log: ``RunDir.log()`` records (step, loss, terms, logs, schedule, ...).
        run_dir: The kept run directory, or ``None`` when runs went to a temporary directory.
        train_on: Meta-task whose training pairs were used, ``"all"`` for the whole suite.
    """

    arm: Arm
    seed: int
    heads: Heads
    log: list[dict[str, Any]]
    run_dir: Path | None
    train_on: str = "all"


def _reset_heads(encoder: Any, seed: int) -> None:
    """Re-initialise both projection heads from ``seed`` (global RNG untouched)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for head in (encoder.image_head, encoder.text_head):
            for mod in head.modules():
                if hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()


def _head_state(encoder: Any) -> dict[str, Any]:
    import torch

    keep = ("image_head.", "text_head.", "logit_scale")
    return {k: v.clone() for k, v in encoder.state_dict().items() if k.startswith(keep)} | {
        "_requires_grad": [p.requires_grad for p in encoder.parameters()],
        "_training": encoder.training,
        "_device": next(encoder.parameters(), torch.empty(0)).device,
    }


def _restore(encoder: Any, state: dict[str, Any]) -> None:
    encoder.to(state["_device"])
    encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("_")}, strict=False)
    for p, flag in zip(encoder.parameters(), state["_requires_grad"]):
        p.requires_grad_(flag)
    encoder.train(state["_training"])


def train_heads(
    encoder: Any, pairs: Any, arm: Arm, seed: int, training: HeadsTraining | None = None
) -> TrainedArm:
    """Train ``encoder``'s heads from a seeded re-initialisation on ``pairs`` with ``arm``.

    The heads are trained in place (copying a whole encoder per run costs more than a short
    run) and restored afterwards, so ``encoder`` is unchanged on return; the trained heads come
    back as :class:`Heads`.

    Args:
        encoder: Encoder whose towers produced ``pairs``.
        pairs: :class:`~workbench.probes.tasks.PairSet` of (image, text) tower features.
        arm: Method and configuration.
        seed: Head initialisation, data order and method noise.
        training: Optimisation settings (defaults: :class:`HeadsTraining`).
    """
    from workbench.train import RunDir, train

    training = training or HeadsTraining()
    saved = _head_state(encoder)
    try:
        _reset_heads(encoder, seed)
        emb = pairs.to_embeddings(encoder)
        with tempfile.TemporaryDirectory(prefix="wb-runs-") as tmp:
            root = training.run_root or tmp
            cfg = training.train_config(arm, seed, len(pairs), root)
            run = train(cfg, embeddings=emb, encoder=encoder, progress=False)
            log = RunDir(run.run_dir).log()
            kept = Path(run.run_dir) if training.run_root else None
        heads = Heads(encoder)
    finally:
        _restore(encoder, saved)
    return TrainedArm(arm, seed, heads, log, kept)


@dataclass
class GridResult:
    """Scores of every arm × seed (× training meta-task) and the trained runs.

    Attributes:
        scores: Long DataFrame ``arm, seed, train_on, level, meta_task, task, value`` with
            ``level`` ∈ {task, meta_task, overall} and ``value`` = held-out Precision@1.
        runs: The :class:`TrainedArm` s, in order (for spectra and logs).
    """

    scores: Any
    runs: list[TrainedArm]

    def run(self, arm: str, seed: int | None = None, train_on: str | None = None) -> TrainedArm:
        """The run of ``arm`` (first seed unless given; whole-suite training unless ``train_on``)."""
        for r in self.runs:
            if r.arm.name == arm and seed in (None, r.seed) and r.train_on == (train_on or "all"):
                return r
        raise KeyError(f"no run for arm={arm!r}, seed={seed!r}, train_on={train_on!r}")


def run_grid(
    encoder: Any,
    suite: Any,
    arms: Sequence[Arm],
    seeds: Sequence[int],
    training: HeadsTraining | None = None,
    *,
    train_on: Sequence[str | None] = (None,),
    on_run: Callable[[Arm, int, str], None] | None = None,
) -> GridResult:
    """Train every arm with every seed and score it on the suite's held-out split.

    Args:
        encoder: Encoder the suite was built from (towers frozen; heads re-initialised per seed).
        suite: :class:`~workbench.probes.tasks.TaskSuite`.
        arms: What to compare (e.g. :func:`sde_ablation_arms`).
        seeds: Seeds (≥ 2 for a spread).
        training: Optimisation settings.
        train_on: Meta-tasks whose training pairs are used, ``None`` = all (cross-task
            generalisation trains on one at a time).
        on_run: Progress callback ``(arm, seed, train_on)`` called before each run.

    Returns:
        :class:`GridResult`; ``scores.train_on`` is ``"all"`` for whole-suite training.
    """
    import pandas as pd

    if not arms:
        raise ValueError("run_grid needs at least one arm")
    if not seeds:
        raise ValueError("run_grid needs at least one seed")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    frames, runs = [], []
    for meta in train_on:
        tag = meta or "all"
        if meta is not None and meta not in trainable_meta_tasks(suite):
            raise ValueError(f"meta-task {meta!r} has fewer than 2 training pairs in this suite")
        pairs = suite.train_pairs(meta_task=meta)
        for seed in seeds:
            for arm in arms:
                if on_run is not None:
                    on_run(arm, seed, tag)
                trained = train_heads(encoder, pairs, arm, seed, training)
                trained.train_on = tag
                df = suite.evaluate(trained.heads)
                df.insert(0, "train_on", tag)
                df.insert(0, "seed", seed)
                df.insert(0, "arm", arm.name)
                frames.append(df)
                runs.append(trained)
    return GridResult(pd.concat(frames, ignore_index=True), runs)


# -- tables ---------------------------------------------------------------------------------------
def ablation_table(scores: Any, baseline: str | None = None) -> Any:
    """Mean ± std over seeds per arm and meta-task (plus overall), with the baseline difference.

    Args:
        scores: ``GridResult.scores`` (one ``train_on`` value).
        baseline: Arm to difference against (default: the first arm).

    Returns:
        Long DataFrame ``arm, column, mean, std, n_seeds, diff, exceeds_spread``: ``column`` is
        a meta-task or ``"overall"``; ``std`` is the sample std over seeds (NaN for one seed);
        ``diff`` = mean − baseline mean; ``exceeds_spread`` is ``|diff| > std + baseline std``
        (the two mean ± std intervals do not overlap; always ``False`` with one seed).
    """
    import pandas as pd

    df = scores[scores["level"].isin(["meta_task", "overall"])].copy()
    if df["train_on"].nunique() > 1:
        raise ValueError("ablation_table takes scores of one training set; filter train_on first")
    df["column"] = np.where(df["level"] == "overall", OVERALL, df["meta_task"])
    arms = list(dict.fromkeys(df["arm"]))
    baseline = baseline or arms[0]
    if baseline not in arms:
        raise ValueError(f"baseline {baseline!r} is not an arm; arms: {arms}")
    columns = [*dict.fromkeys(c for c in df["column"] if c != OVERALL), OVERALL]
    g = df.groupby(["arm", "column"])["value"]
    stats = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n_seeds": g.count()})
    rows = []
    for arm in arms:
        for col in columns:
            m, s, n = stats.loc[(arm, col)]
            bm, bs = stats.loc[(baseline, col), "mean"], stats.loc[(baseline, col), "std"]
            diff = m - bm
            spread = s + bs
            exceeds = bool(n > 1 and np.isfinite(spread) and abs(diff) > spread)
            rows.append(
                {
                    "arm": arm,
                    "column": col,
                    "mean": float(m),
                    "std": float(s),
                    "n_seeds": int(n),
                    "diff": float(diff),
                    "exceeds_spread": exceeds,
                }
            )
    return pd.DataFrame(rows)


def format_table(table: Any, digits: int = 1, scale: float = 100.0) -> Any:
    """Wide display of :func:`ablation_table`: ``"mean ± std (Δ diff)"``, ``*`` = exceeds spread.

    Values are multiplied by ``scale`` (P@1 in percent by default).
    """
    import pandas as pd

    baseline = table["arm"].iloc[0]

    def cell(r: Any) -> str:
        txt = f"{scale * r['mean']:.{digits}f} ± {scale * r['std']:.{digits}f}"
        if math.isnan(r["std"]):
            txt = f"{scale * r['mean']:.{digits}f}"
        if r["arm"] != baseline:
            txt += f" ({scale * r['diff']:+.{digits}f}{'*' if r['exceeds_spread'] else ''})"
        return txt

    wide = table.assign(cell=table.apply(cell, axis=1)).pivot(
        index="arm", columns="column", values="cell"
    )
    cols = [*dict.fromkeys(c for c in table["column"] if c != OVERALL), OVERALL]
    return pd.DataFrame(wide, index=list(dict.fromkeys(table["arm"])), columns=cols)


def cross_task_table(scores: Any) -> dict[str, Any]:
    """Per arm, the (train meta-task × eval meta-task) matrix of mean P@1 over seeds (SDE Fig. 2)."""
    df = scores[(scores["level"] == "meta_task") & (scores["train_on"] != "all")]
    out = {}
    for arm, sub in df.groupby("arm", sort=False):
        order = list(dict.fromkeys(sub["train_on"]))
        cols = list(dict.fromkeys(sub["meta_task"]))
        mat = sub.pivot_table(index="train_on", columns="meta_task", values="value", aggfunc="mean")
        out[arm] = mat.loc[order, cols]
    return out


def trainable_meta_tasks(suite: Any) -> list[str]:
    """Meta-tasks of ``suite`` with at least 2 training pairs (a tiny suite may hold out all of a
    meta-task's items; compositional tasks may share their pairs with retrieval)."""
    return [
        m
        for m in suite.meta_tasks
        if sum(len(t.train) for t in suite.tasks if t.meta_task == m) >= 2
    ]


def cross_task_matrix(
    encoder: Any,
    suite: Any,
    arms: Sequence[Arm],
    seeds: Sequence[int],
    training: HeadsTraining | None = None,
    *,
    on_run: Callable[[Arm, int, str], None] | None = None,
) -> tuple[dict[str, Any], GridResult]:
    """Train on each meta-task alone, evaluate on all (SDE Fig. 2).

    Meta-tasks without training pairs (:func:`trainable_meta_tasks`) get no row.

    Returns:
        ``(matrices, grid)``: ``matrices[arm]`` is a DataFrame (rows: training meta-task,
        columns: evaluated meta-task, values: mean held-out P@1 over seeds).
    """
    grid = run_grid(
        encoder, suite, arms, seeds, training, train_on=trainable_meta_tasks(suite), on_run=on_run
    )
    return cross_task_table(grid.scores), grid


# -- spectra and logs --------------------------------------------------------------------------
def band_trace(log: Sequence[dict[str, Any]]) -> Any:
    """Strong / weak / noise proportions per step and side from an SDE run's log (SDE Fig. 3a).

    Returns:
        Long DataFrame ``step, side, band, proportion``.
    """
    import pandas as pd

    rows = []
    for rec in log:
        for key, value in rec.get("logs", {}).items():
            side, _, band = key.partition("/")
            if band in ("strong", "weak", "noise"):
                rows.append({"step": rec["step"], "side": side, "band": band, "proportion": value})
    if not rows:
        raise ValueError("the log has no band proportions (is it an SDE run?)")
    return pd.DataFrame(rows)


def schedule_trace(log: Sequence[dict[str, Any]]) -> Any:
    """α(t) and λ(t) per step from a run's log (SDE Fig. 4): DataFrame ``step, alpha, lambda``."""
    import pandas as pd

    rows = [{"step": r["step"], **r.get("schedule", {})} for r in log]
    df = pd.DataFrame(rows)
    missing = {"alpha", "lambda"} - set(df.columns)
    if missing:
        raise ValueError(f"the log has no {sorted(missing)} schedule (is it an SDE run?)")
    return df[["step", "alpha", "lambda"]]


def pair_features(heads: Any, pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n, E) L2-normalised image and text embeddings of ``pairs`` under ``heads``
    (an encoder or :class:`Heads`)."""
    emb = pairs.to_embeddings(heads)
    return emb.image_normed.astype(np.float64), emb.text_normed.astype(np.float64)


def cumulative_energy(singular_values: np.ndarray) -> np.ndarray:
    """``Σ_{i≤k} s_i² / Σ s²`` for k = 1..r (SDE Fig. 3c); input any order, output by rank."""
    s = np.sort(np.abs(np.asarray(singular_values, dtype=np.float64)))[::-1]
    e = np.cumsum(s**2)
    if e[-1] <= 0:
        raise ValueError("cumulative_energy of an all-zero spectrum is undefined")
    return e / e[-1]


def noise_spectra(
    features: np.ndarray, alpha: float, scaling: str = "sublinear", seed: int = 0
) -> dict[str, np.ndarray]:
    """Singular values of clean, FANoise-perturbed and pure-noise matrices (FANoise Fig. 3).

    Args:
        features: (B, n) L2-normalised embeddings.
        alpha: Noise strength.
        scaling: FANoise scaling.
        seed: Noise draw.

    Returns:
        ``{"clean", "noisy", "noise"}`` → (r,) singular values, descending, plus
        ``"noisy_features"`` (B, n) for the singular-vector alignment.
    """
    import torch

    from workbench.methods.fanoise import fanoise

    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    noise = fanoise(x, alpha, scaling, generator=torch.Generator().manual_seed(seed))
    noisy = x + noise
    sv = lambda a: torch.linalg.svdvals(a).numpy()  # noqa: E731
    return {
        "clean": sv(x),
        "noisy": sv(noisy),
        "noise": sv(noise),
        "noisy_features": noisy.numpy(),
    }


def summary_records(table: Any) -> list[dict[str, Any]]:
    """JSON-able rows of a table DataFrame (NaN → ``None``)."""
    recs = table.to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in recs
    ]


def config_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-able dict (tuples → lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


def band_records(log: Sequence[dict[str, Any]], side: str = "image") -> list[dict[str, float]]:
    """``[{"step", "strong", "weak", "noise"}]`` of one side from an SDE run's log, the record
    format of :func:`workbench.viz.spectrum.partition_proportions_figure` (SDE Fig. 3a)."""
    df = band_trace(log)
    df = df[df["side"] == side]
    if df.empty:
        raise ValueError(f"the log has no band proportions for side {side!r}")
    wide = df.pivot_table(index="step", columns="band", values="proportion")
    return [{"step": int(s), **{b: float(r[b]) for b in wide.columns}} for s, r in wide.iterrows()]


# -- notebook configurations -------------------------------------------------------------------
ABLATION_ROWS: tuple[str, ...] = (
    "full",
    "no_disentanglement",
    "no_weak_band",
    "constant_alpha",
    "lambda_0",
    "no_kl",
)


@dataclass
class SuiteRunConfig:
    """Shared settings of the method notebooks: data, encoder and heads-only training.

    Attributes:
        encoder: Encoder registry name (``"default"``: the embedded EfficientNet-Lite0 +
            MiniLM towers; heads start random and are what trains).
        datasets: Task-suite datasets; ones whose files are missing are skipped and reported.
        n_per_dataset: Items per dataset (200 → 100 held-out queries per task; keeps the cold
            run within the 10-minute budget on 2 cores).
        mmvp_pairs_per_category: MMVP-style pairs per category for the perception meta-task.
        steps: Optimiser steps per run (100: heads converge on ~700 pairs).
        batch_size: Contrastive batch (64: the SVDs stay cheap on a CPU).
        lr: Peak learning rate of the heads.
        seeds: Seeds per arm (≥ 2 for a spread; 3 by default).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        temperature: Feature-loss τ shared by baseline and methods (VLM2Vec: 0.02).
        symmetric: CLIP two-way loss (``True``) or VLM2Vec one-way image→text (``False``).
        threads: Torch CPU threads (1: small matrices on a shared 2-core box run fastest
            single-threaded; ``None`` leaves torch's default).
        output_dir: Where figures and ``summary.json`` go.
    """

    encoder: str = "default"
    datasets: tuple[str, ...] = ("synthetic-world", "digits", "fashion-mnist", "openclipart")
    n_per_dataset: int = 200
    mmvp_pairs_per_category: int = 8
    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"
    temperature: float | None = 0.02
    symmetric: bool = False
    threads: int | None = 1
    output_dir: str = "figures"

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.datasets:
            raise ValueError("datasets must name at least one dataset")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 or None, got {self.temperature!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be an int ≥ 1 or None, got {self.threads!r}")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}"
            )
        self.training()  # validates steps, batch_size, lr
        self.suite_config()  # validates n_per_dataset, mmvp pairs

    @property
    def feat(self) -> dict[str, Any]:
        """The feature-loss arguments every arm shares."""
        return {"temperature": self.temperature, "symmetric": self.symmetric}

    def training(self) -> HeadsTraining:
        return HeadsTraining(
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, device=self.device
        )

    def suite_config(self) -> Any:
        from workbench.probes.tasks import TaskSuiteConfig

        return TaskSuiteConfig(
            datasets=self.datasets,
            n_per_dataset=self.n_per_dataset,
            mmvp_pairs_per_category=self.mmvp_pairs_per_category,
        )

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)


@dataclass
class SDEAblationConfig(SuiteRunConfig):
    """``notebooks/sde_ablation.ipynb``: baseline + SDE ablation rows over seeds (SDE Table 2).

    Attributes:
        rows: Ablation rows (``workbench.methods.sde.ABLATIONS``): all six by default.
        sde_config: Extra SDE arguments for every row (e.g. ``{"alpha0": 0.3}``).
    """

    rows: tuple[str, ...] = ABLATION_ROWS
    sde_config: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "figures/sde_ablation"

    def __post_init__(self) -> None:
        self.rows = tuple(self.rows)
        super().__post_init__()
        check_arms(self.arms())

    def arms(self) -> list[Arm]:
        return sde_ablation_arms(self.rows, sde_config=self.sde_config, **self.feat)


@dataclass
class SDEFiguresConfig(SuiteRunConfig):
    """``notebooks/sde_figures.ipynb``: SDE Figs. 2, 3 and 4.

    Attributes:
        cross_task_seeds: Seeds of the cross-task matrix (each trains 4 meta-tasks × 2 arms).
        sde_config: SDE arguments (defaults: spec §1.2 [our reading]).
        spectrum_rows: Rows of the batch whose spectrum is shown before/after enhancement.
    """

    cross_task_seeds: tuple[int, ...] = (0, 1)
    sde_config: dict[str, Any] = field(default_factory=dict)
    spectrum_rows: int = 256
    output_dir: str = "figures/sde_figures"

    def __post_init__(self) -> None:
        self.cross_task_seeds = tuple(int(s) for s in self.cross_task_seeds)
        super().__post_init__()
        if not self.cross_task_seeds:
            raise ValueError("cross_task_seeds must not be empty")
        if self.spectrum_rows < 2:
            raise ValueError(f"spectrum_rows must be ≥ 2, got {self.spectrum_rows}")
        check_arms(self.arms())

    def arms(self) -> list[Arm]:
        return sde_ablation_arms(("full",), sde_config=self.sde_config, **self.feat)


@dataclass
class FANoiseFiguresConfig(SuiteRunConfig):
    """``notebooks/fanoise_figures.ipynb``: FANoise Fig. 2, Figs. 3–4, Fig. 5 and Table 2.

    Attributes:
        alphas: α sweep of Fig. 2 (α = 0 is the InfoNCE baseline).
        sweep_scaling: Scaling used in the sweep (sublinear, the paper's default).
        alpha: α of the scaling comparison (Fig. 5, Table 2) and of the spectra (0.1).
        scalings: Scalings compared.
        spectrum_rows: Rows of the feature matrix of Figs. 3–4 (the paper: 1000).
        alignment_k: Leading singular directions compared in Fig. 4.
    """

    alphas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    sweep_scaling: str = "sublinear"
    alpha: float = 0.1
    scalings: tuple[str, ...] = ("uniform", "linear", "sublinear")
    spectrum_rows: int = 1000
    alignment_k: int = 32
    output_dir: str = "figures/fanoise_figures"

    def __post_init__(self) -> None:
        from workbench.methods.fanoise import SCALINGS

        self.alphas = tuple(float(a) for a in self.alphas)
        self.scalings = tuple(self.scalings)
        super().__post_init__()
        if not self.alphas or any(a < 0 for a in self.alphas):
            raise ValueError(f"alphas must be non-empty and ≥ 0, got {self.alphas}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be ≥ 0, got {self.alpha}")
        for s in (self.sweep_scaling, *self.scalings):
            if s not in SCALINGS:
                raise ValueError(f"scaling {s!r} is not one of {SCALINGS}")
        if self.spectrum_rows < 2 or self.alignment_k < 1:
            raise ValueError("spectrum_rows must be ≥ 2 and alignment_k ≥ 1")
        check_arms(self.sweep_arms() + self.scaling_arms())

    def sweep_arms(self) -> list[Arm]:
        return fanoise_alpha_arms(self.alphas, self.sweep_scaling, **self.feat)

    def scaling_arms(self) -> list[Arm]:
        return fanoise_scaling_arms(self.alpha, self.scalings, **self.feat)


def check_arms(arms: Sequence[Arm]) -> list[Arm]:
    """Build each arm's method once so a bad method argument fails before any work."""
    from workbench import methods

    for arm in arms:
        try:
            methods.get(arm.method, **arm.config)
        except (ValueError, KeyError) as err:
            raise ValueError(f"arm {arm.name!r}: {err}") from None
    return list(arms)


def load_suite(config: SuiteRunConfig) -> tuple[Any, Any, float]:
    """``(encoder, suite, seconds)``: the encoder and its task suite (cached on disk).

    Applies ``config.threads`` to torch first (the notebooks' only global setting).
    """
    import time

    import torch

    from workbench.encoders import load_encoder
    from workbench.probes.tasks import build_task_suite

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    encoder = load_encoder(config.encoder)
    suite = build_task_suite(encoder, config.suite_config())
    return encoder, suite, time.perf_counter() - t0


# -- figures ------------------------------------------------------------------------------------
def table_figure(table: Any, *, title: str = "Held-out Precision@1") -> Any:
    """Grouped bars of :func:`ablation_table`: mean ± std per arm (colour) and column (x)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for arm, sub in table.groupby("arm", sort=False):
        fig.add_trace(
            go.Bar(
                x=sub["column"],
                y=100 * sub["mean"],
                error_y={"type": "data", "array": 100 * sub["std"].fillna(0)},
                name=arm,
            )
        )
    fig.update_layout(
        title=title, barmode="group", yaxis_title="Precision@1 (%)", legend_title="arm"
    )
    return fig


def schedule_figure(trace: Any, column: str, *, title: str | None = None) -> Any:
    """One schedule (``"alpha"`` or ``"lambda"``) vs step from :func:`schedule_trace` (SDE Fig. 4)."""
    import plotly.graph_objects as go

    symbol = {"alpha": "α(t)", "lambda": "λ(t)"}.get(column, column)
    fig = go.Figure(go.Scatter(x=trace["step"], y=trace[column], mode="lines", name=symbol))
    fig.update_layout(title=title or symbol, xaxis_title="training step", yaxis_title=symbol)
    return fig


def cross_task_figure(matrices: dict[str, Any], baseline: str, method: str) -> Any:
    """Heat-maps of P@1 (train meta-task × eval meta-task): baseline, method, difference (SDE Fig. 2)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    a, b = matrices[baseline], matrices[method]
    diff = b - a
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.1,
        subplot_titles=(baseline, method, f"{method} − {baseline}"),
    )
    lim = float(np.nanmax(np.abs(100 * diff.values))) or 1.0
    for col, (mat, kw) in enumerate(
        (
            (a, {"zmin": 0, "zmax": 100, "colorscale": "Viridis", "showscale": False}),
            (b, {"zmin": 0, "zmax": 100, "colorscale": "Viridis", "colorbar": _bar(0.645)}),
            (diff, {"zmin": -lim, "zmax": lim, "colorscale": "RdBu", "colorbar": _bar(1.01)}),
        ),
        start=1,
    ):
        z = 100 * mat.values
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(mat.columns),
                y=list(mat.index),
                text=np.round(z, 1),
                texttemplate="%{text}",
                **kw,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="trained on", autorange="reversed", row=1, col=1)
    for col in (2, 3):
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=col)
    fig.update_xaxes(title_text="evaluated on")
    fig.update_layout(title="Cross-task generalisation (held-out P@1, %)")
    return fig


def _bar(x: float) -> dict[str, Any]:
    return {"x": x, "thickness": 12, "len": 0.9}


def sweep_figure(table: Any, values: Sequence[float], *, x_title: str = "α") -> Any:
    """Score vs a swept value, mean ± std over seeds, one line per column (FANoise Fig. 2)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    arms = list(dict.fromkeys(table["arm"]))
    for col, sub in table.groupby("column", sort=False):
        sub = sub.set_index("arm").loc[arms]
        fig.add_trace(
            go.Scatter(
                x=[f"{v:g}" for v in values],
                y=100 * sub["mean"],
                error_y={"type": "data", "array": 100 * sub["std"].fillna(0)},
                mode="lines+markers",
                name=col,
                line={"width": 4 if col == OVERALL else 1.5},
            )
        )
    fig.update_layout(
        title="Held-out Precision@1 vs noise strength",
        xaxis_title=x_title,
        xaxis_type="category",
        yaxis_title="Precision@1 (%)",
        legend_title="meta-task",
    )
    return fig
