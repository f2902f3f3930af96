"""The methods leaderboard behind ``notebooks/methods_leaderboard.ipynb`` (issue 18).

Every method fine-tunes the same starting encoder (``encoder="default"``: the pretrained default
once it ships) on the same mixture, for the same seeds and the same number of optimiser steps,
training the same parts where the method allows it. How each method is run under that common
budget is data — :data:`ADAPTERS` — not a branch per method:

- most methods train heads only on cached tower features (``TrainConfig(data="cached")``);
- DeGLA gets a rule-based hard-negative bank of the mixture's training captions (rows no rule
  applies to are dropped from *its* training set), ProCLIP gets distillation targets = the
  starting text head on the training captions (stage 1 distils its adapter into the starting
  text space, stage 2 tunes; half the steps each);
- ReAlign is training-free: fitted on the starting embeddings of the training pairs, 0 steps;
- DCR (pixels + a denoiser), CDDS (token features) and Earth-Adapter (segmentation) each get
  their own data path to the same start, mixture, seeds and step budget
  (:mod:`~workbench.experiments.leaderboard_paths`); a config's ``paths=False`` turns them off,
  and their rows then say what they need.

A method named in the table but not registered in :mod:`workbench.methods`, or needing inputs
this configuration lacks, still gets a row saying why — rows are never silently dropped.

Each run logs, through the loop's eval hooks at ``eval_every``, the leaderboard metrics
(``lb/...``: held-out P@1 per meta-task, retrieval both ways, zero-shot on data held out of
fine-tuning, Fisher ratio) and the cross-paper diagnostics (``diag/...``,
:mod:`workbench.evals.diagnostics`) on one probe set, in one β/γ frame frozen from the starting
heads. :func:`results_from_runs` reads the same records back from run directories, which is all
the table, the figures and ``workbench leaderboard RUN_DIR...`` need.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.experiments.grid import config_dict
from workbench.experiments.leaderboard_data import (
    ReAlignHead,
    distill_targets,
    negative_bank,
    probe_set,
    subset_pairs,
)
from workbench.experiments.leaderboard_runs import (
    RunResult,
    median_step_time,
    results_from_runs,
)
from workbench.experiments.leaderboard_scoring import LeaderboardData, leaderboard_hook, score_model

__all__ = [
    "ADAPTERS",
    "HEAD_PARTS",
    "PROVIDED",
    "Adapter",
    "LeaderboardConfig",
    "PlannedRow",
    "load_leaderboard_data",
    "plan_rows",
    "run_leaderboard",
    "score_runs",
]

#: Inputs a study configuration can hand a method beyond (image, text) tower features.
PROVIDED: tuple[str, ...] = ("negatives", "targets")

#: Own data paths (:data:`~workbench.experiments.leaderboard_paths.PATHS`) and what they supply.
PATH_INPUTS: dict[str, tuple[str, ...]] = {
    "items": ("pixels", "denoiser"),
    "tokens": ("tokens",),
    "scenes": ("segmentation",),
}


@dataclass(frozen=True)
class Adapter:
    """How one method runs under the common budget.

    Attributes:
        method: Registry name in :mod:`workbench.methods` (the row label too).
        config: Method arguments the leaderboard fixes (the rest are the method's defaults).
        needs: Inputs beyond cached tower features (``"pixels"``, ``"denoiser"``, ``"tokens"``,
            ``"segmentation"``); a row needing one not in :data:`PROVIDED` is not run.
        prepare: Inputs the study builds for it (``"negatives"``, ``"targets"``).
        training_free: Fitted, not trained (0 optimiser steps).
        replaces_text_head: The method's ``attach`` swaps the text head for its own module
            (ProCLIP's adapter); the study first puts a fresh linear head of the text tower's
            width in its place, so the adapter starts from the same seeded state whatever the
            starting model's text head is (ProCLIP sizes itself from an MLP head too).
        budget: One line on how its budget is matched (shown in the table).
        path: Its own data path (:data:`PATH_INPUTS` key): it supplies ``needs`` and trains
            the row outside the cached-feature loop.
    """

    method: str
    config: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    prepare: tuple[str, ...] = ()
    training_free: bool = False
    replaces_text_head: bool = False
    budget: str = "heads-only on cached towers, equal steps"
    path: str | None = None


ADAPTERS: dict[str, Adapter] = {
    a.method: a
    for a in (
        Adapter("start", training_free=True,
                budget="reference: the starting heads, not fine-tuned (0 steps)"),
        Adapter("infonce", budget="the baseline: heads-only on cached towers"),
        Adapter("infonce/vlm2vec"),
        Adapter("sde"),
        Adapter("fanoise"),
        Adapter("degla", prepare=("negatives",),
                budget="heads-only, equal steps; rule-based negatives, rows without one dropped"),
        Adapter("proclip", {"long_captions": False}, prepare=("targets",), replaces_text_head=True,
                budget="equal steps split distill/tune; targets = starting text head"),
        Adapter("proclip/direct", replaces_text_head=True, budget="heads-only (adapter replaces the text head), equal steps"),
        Adapter("realign", training_free=True,
                budget="training-free: fitted on the starting training-pair embeddings, 0 steps"),
        Adapter("revision"),
        Adapter("dcr", {"stage1_lr": 1e-3}, needs=("pixels", "denoiser"), path="items",
                budget="pixels of the mixture's items through the 'tiny' denoiser; equal steps "
                       "split projector (lr 1e-3, from scratch) / image head (lr); dcr_batch_size"),
        Adapter("cdds", {"dim": 256}, needs=("tokens",), path="tokens",
                budget="token features of the mixture's pairs, modules from scratch (token_lr), "
                       "equal steps at token_batch_size; diagnostics every eval_every, task "
                       "columns at the last step only"),
        Adapter("earth_adapter", {"ratio": 0.5}, needs=("segmentation",), path="scenes",
                budget="the Earth-Adapter study's recipe (ρ 0.5 at 96 px) on the mixture's "
                       "synthetic-world scenes (seg_lr, seg_batch_size), equal steps; adapted "
                       "tower via the start's heads: diagnostics every eval_every, task columns "
                       "at the last step only"),
    )
}  # fmt: skip

#: Trainable parts that keep the towers frozen (the cached-feature path's condition).
HEAD_PARTS: tuple[str, ...] = ("heads", "image_head", "text_head", "logit_scale", "method")


@dataclass
class LeaderboardConfig:
    """``notebooks/methods_leaderboard.ipynb``: every method, one encoder, mixture and budget.

    Attributes:
        encoder: Starting encoder (``"default"``; its current heads are fine-tuned).
        mixture: Fine-tuning mixture = task-suite datasets (the held-out halves score it).
        zero_shot: Datasets held out of fine-tuning, scored by zero-shot classification
            (digits: in neither the mixture nor the default's pretraining data).
        methods: Rows, in order (:data:`ADAPTERS` names; others run heads-only if registered).
        steps: Optimiser steps per run (100: the heads move well within it on ~600 pairs and
            the default grid stays under the 30-minute target on 2 loaded cores).
        trainable: ``TrainConfig.trainable``; head-side parts only (:data:`HEAD_PARTS`), since
            the towers' features are cached.
        seeds: Seeds per method (≥ 2 for a spread).
        n_per_dataset: Items per dataset (200 → 100 held-out queries per task).
        mmvp_pairs_per_category: MMVP-style pairs per category (perception meta-task).
        batch_size: Contrastive batch (64, as the method notebooks).
        lr: Peak AdamW LR (1e-4: fine-tuning pretrained heads, not training them afresh).
        eval_every: Cadence of the metric + diagnostic snapshots (10 steps → 11 points a run).
            CDDS and Earth-Adapter log the diagnostics at it too (their trainers' ``on_step``,
            on the probe pairs re-embedded through the current model) but their task columns
            once, at the last step (each scoring rebuilds the suites over their towers).
        probe_pairs: Probe pairs of the diagnostics (held-out retrieval/classification pairs).
        paths: Run the rows with their own data path (DCR, CDDS, Earth-Adapter:
            :mod:`~workbench.experiments.leaderboard_paths`); ``False``: they say what they need.
        dcr_batch_size: DCR's images per step (16, not ``batch_size``: a DCR step runs the image
            tower twice on pixels plus (K + 2)·B denoiser passes, so three seeds at 64 would
            alone exceed the 30-minute target on 2 cores; the step count stays the same).
        dcr_negatives: DCR's sampled negatives per anchor (4, the DCR study's CPU budget).
        dcr_trainable: DCR's Stage-2 parts (``"image_head"``: the leaderboard's trainable
            parts that DCR's loss reaches — it conditions the denoiser on the image embedding
            only — with the towers frozen, so DCR is scored on the same cached tower features,
            at the same cadence, as every heads-only row). Head-side parts only.
        token_batch_size: CDDS's pairs per step (32, not ``batch_size``: a CDDS step at 64 took
            1.6 s on one idle core — decoupling networks with 4 perturbations over every patch
            and word token — so three seeds at 64 would take ~8 of the 30 minutes; at 32 it is
            half that; the step count stays the same).
        token_lr: CDDS's peak LR (1e-3: its projections and networks train from scratch, as in
            ``TokenTraining``; the heads' ``lr`` fine-tunes a pretrained start).
        seg_batch_size: Earth-Adapter's scenes per step (8: the Earth-Adapter study's CPU
            budget; each step back-propagates through the adapted tower blocks).
        seg_lr: Earth-Adapter's peak LR (1e-2: the Earth-Adapter study's, for a head from
            random init in ~100 steps).
        device: ``"cpu"``, ``"cuda"`` (bf16 autocast via ``precision``) or ``"auto"``.
        precision: ``"fp32"`` or ``"bf16"`` (CUDA).
        threads: Torch CPU threads (1 on the shared box).
        run_root: Where run directories go (``None`` = ``$WORKBENCH_CACHE/runs/methods_leaderboard``:
            ~13 MB a run with its checkpoint, kept out of the committed figures).
        runs: Extra finished run directories (``"run:<dir>"`` or a path) joining the table and
            the figures — leaderboard runs are read, others scored at their checkpoints.
        output_dir: Figures and ``summary.json``.
    """

    encoder: str = "default"
    mixture: tuple[str, ...] = ("synthetic-world", "fashion-mnist", "openclipart")
    zero_shot: tuple[str, ...] = ("digits",)
    methods: tuple[str, ...] = tuple(ADAPTERS)
    steps: int = 100
    trainable: str = "heads+logit_scale+method"
    seeds: tuple[int, ...] = (0, 1, 2)
    n_per_dataset: int = 200
    mmvp_pairs_per_category: int = 8
    batch_size: int = 64
    lr: float = 1e-4
    eval_every: int = 10
    probe_pairs: int = 256
    paths: bool = True
    dcr_batch_size: int = 16
    dcr_negatives: int = 4
    dcr_trainable: str = "image_head"
    token_batch_size: int = 32
    token_lr: float = 1e-3
    seg_batch_size: int = 8
    seg_lr: float = 1e-2
    device: str = "cpu"
    precision: str = "fp32"
    threads: int | None = 1
    run_root: str | None = None
    runs: tuple[str, ...] = ()
    output_dir: str = "figures/methods_leaderboard"

    def __post_init__(self) -> None:
        from workbench._validate import as_choice, as_int, as_int_tuple, as_names
        from workbench.data import dataset_names
        from workbench.encoders.registry import check_encoder_name

        own = type(self).__name__
        check_encoder_name(self.encoder, "encoder", owner=own)
        self.mixture = dataset_names(self.mixture, "mixture", owner=own)
        self.zero_shot = dataset_names(self.zero_shot, "zero_shot", owner=own)
        both = sorted(set(self.mixture) & set(self.zero_shot))
        if both:
            raise ValueError(
                f"{own}: zero_shot must be held out of the mixture; {both} are in both"
            )
        self.runs = as_names(self.runs, "runs", owner=own, unique=True) if self.runs else ()
        for r in self.runs:
            if not (Path(r.removeprefix("run:")) / "config.json").exists():
                raise ValueError(f"{own}: runs entry {r!r} is not a run directory (no config.json)")
        if self.methods or not self.runs:
            self.methods = as_names(self.methods, "methods", owner=own, unique=True)
        self.seeds = as_int_tuple(self.seeds, "seeds", owner=own, lo=0, unique=True)
        for name, lo in (("steps", 1), ("n_per_dataset", 8), ("mmvp_pairs_per_category", 0),
                         ("batch_size", 2), ("eval_every", 1), ("probe_pairs", 8),
                         ("dcr_batch_size", 2), ("dcr_negatives", 1), ("token_batch_size", 2),
                         ("seg_batch_size", 1)):  # fmt: skip
            setattr(self, name, as_int(getattr(self, name), f"{own}: {name}", lo=lo))
        if not isinstance(self.paths, bool):
            raise TypeError(f"{own}: paths must be True or False, got {self.paths!r}")
        self.threads = as_int(self.threads, f"{own}: threads", lo=1, none_ok=True)
        self.precision = as_choice(self.precision, f"{own}: precision", ("fp32", "bf16"))
        for name in ("lr", "token_lr", "seg_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{own}: {name} must be a finite float > 0, got {v!r}")
        for name, allowed in (("trainable", HEAD_PARTS), ("dcr_trainable", HEAD_PARTS[:-1])):
            parts = getattr(self, name)
            if not isinstance(parts, str) or not parts:
                raise TypeError(f"{own}: {name} must be a '+'-joined parts string, got {parts!r}")
            tower = [p for p in parts.split("+") if p not in allowed]
            if tower:
                raise ValueError(
                    f"{own}: {name}={parts!r} trains tower parts {tower}; this study scores every row "
                    f"on cached tower features, so only {allowed} can train"
                )
        if not isinstance(self.device, str) or not (
            self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")
        ):
            raise ValueError(
                f"{own}: device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}"
            )
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise TypeError(f"{own}: output_dir must be a non-empty path, got {self.output_dir!r}")

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    def runs_dir(self) -> Path:
        from workbench.encoders.cache import default_cache_dir

        if self.run_root:
            return Path(self.run_root)
        return default_cache_dir() / "runs" / "methods_leaderboard"


@dataclass(frozen=True)
class PlannedRow:
    """One leaderboard row before any work: run it, or why not (``reason``)."""

    name: str
    adapter: Adapter
    run: bool
    reason: str = ""


def plan_rows(
    methods: Sequence[str], registered: Sequence[str] | None = None, *, paths: bool = True
) -> list[PlannedRow]:
    """Which rows run under the common budget and why each other one does not.

    A name outside :data:`ADAPTERS` runs heads-only when it is registered; a registered
    method whose class says ``needs_towers`` (pixels through the towers) is not run unless its
    adapter has its own data path (``Adapter.path``) and ``paths`` is on.
    """
    from workbench import methods as M

    registered = list(M.names() if registered is None else registered)
    rows = []
    for name in methods:
        ad = ADAPTERS.get(name, Adapter(name))
        if not ad.training_free and name not in registered:
            why = f"not registered in workbench.methods on this checkout (have: {', '.join(registered)})"
            rows.append(PlannedRow(name, ad, False, why))
            continue
        own = PATH_INPUTS[ad.path] if paths and ad.path else ()
        missing = [n for n in ad.needs if n not in PROVIDED + own]
        if (
            not missing
            and not own
            and not ad.training_free
            and getattr(M.METHODS.get(name), "needs_towers", False)
        ):
            missing = ["pixels"]
        if missing:
            why = f"needs {' + '.join(missing)}, which cached tower features lack"
            why += " (its data path is off: paths=False)" if ad.path else f" ({ad.budget})"
            rows.append(PlannedRow(name, ad, False, why))
            continue
        rows.append(PlannedRow(name, ad, True))
    return rows


def load_leaderboard_data(config: LeaderboardConfig, rows: Sequence[PlannedRow]) -> LeaderboardData:
    """Load the encoder, build (cached) task suites, the probe set, the frame and the inputs the
    runnable rows ``prepare`` (negative bank, distillation targets) or their data paths need
    (items, tokens, segmentation scenes: :func:`~.leaderboard_paths.prepare_path_inputs`)."""
    import torch

    from workbench.encoders import load_encoder
    from workbench.encoders.heads import Heads
    from workbench.evals.diagnostics import fit_frame, project_pairs
    from workbench.evals.task_builder import build_task_suite
    from workbench.evals.task_suite import TaskSuiteConfig
    from workbench.experiments.leaderboard_paths import prepare_path_inputs

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    enc = load_encoder(config.encoder)
    enc.requires_grad_(False)
    c = config
    suite = build_task_suite(
        enc,
        TaskSuiteConfig(
            datasets=c.mixture,
            n_per_dataset=c.n_per_dataset,
            mmvp_pairs_per_category=c.mmvp_pairs_per_category,
        ),
    )
    zs = build_task_suite(enc, TaskSuiteConfig(datasets=c.zero_shot, n_per_dataset=c.n_per_dataset,
                                               mmvp_pairs_per_category=0, meta_tasks=("classification",)))  # fmt: skip
    pairs = suite.train_pairs()
    probe = probe_set(suite, c.probe_pairs)
    frame = fit_frame(*project_pairs(Heads.of(enc), *probe))
    extras: dict[str, Any] = {}
    wanted = {p for r in rows if r.run for p in r.adapter.prepare}
    cache = Path(tempfile.mkdtemp(prefix="wb-leaderboard-"))
    if "negatives" in wanted:
        extras["negatives"] = negative_bank(pairs)
    if "targets" in wanted:
        extras["targets"] = distill_targets(enc, pairs, cache / "proclip_targets.safetensors")
    data = LeaderboardData(enc, suite, zs, pairs, probe, frame, extras, 0.0)
    data.extras |= prepare_path_inputs(
        data, {r.adapter.path for r in rows if r.run and r.adapter.path}
    )
    data.seconds = time.perf_counter() - t0
    return data


def _fitted_result(row: PlannedRow, seed: int, data: LeaderboardData) -> RunResult:
    """A training-free row, scored once: ``"start"`` = the starting heads untouched (the point
    every trained row moves from); ``"realign"`` = ReAlign fitted on the start's training-pair
    embeddings."""
    from workbench.encoders.heads import Heads
    from workbench.evals.diagnostics import project_pairs
    from workbench.probes.realign import ReAlign

    t0 = time.perf_counter()
    heads = start = Heads.of(data.encoder)
    if row.name == "realign":
        ra = ReAlign().fit(*project_pairs(start, data.pairs.image_tower, data.pairs.text_tower))
        heads = Heads(start.image_head, ReAlignHead(start.text_head, ra), start.logit_scale)
    metrics = score_model(heads, data)
    seconds = time.perf_counter() - t0
    return RunResult(
        row.name, seed, metrics, [{"step": 0, **metrics}], 0, seconds, float("nan"), None
    )


def run_leaderboard(
    config: LeaderboardConfig,
    data: LeaderboardData,
    rows: Sequence[PlannedRow],
    *,
    on_run: Callable[[str, int], None] | None = None,
) -> list[RunResult]:
    """Run every runnable row for every seed (runs kept under ``config.runs_dir()``).

    Each run starts from a fresh copy of the starting encoder, so methods that replace a head
    (ProCLIP's adapter) or attach modules never leak into the next run. Rows with their own
    data path run through :data:`~workbench.experiments.leaderboard_paths.PATHS`.
    """
    from workbench.experiments.leaderboard_paths import PATHS
    from workbench.train import TrainConfig, train

    c, out = config, []
    for seed in c.seeds:
        for row in rows:
            if not row.run:
                continue
            if on_run is not None:
                on_run(row.name, seed)
            if row.adapter.training_free:
                out.append(_fitted_result(row, seed, data))
                continue
            if row.adapter.path:
                out.append(PATHS[row.adapter.path](c, data, row, seed))
                continue
            pairs, method_config = data.pairs, dict(row.adapter.config)
            if "negatives" in row.adapter.prepare:
                method_config["negatives"] = data.extras["negatives"]["path"]
                pairs = subset_pairs(pairs, data.extras["negatives"]["rows"])
            if "targets" in row.adapter.prepare:
                method_config["targets"] = data.extras["targets"]
            enc = copy.deepcopy(data.encoder)
            if row.adapter.replaces_text_head:
                from torch import nn

                enc.text_head = nn.Linear(pairs.text_tower.shape[1], enc.embed_dim)
            cfg = TrainConfig(
                method=row.adapter.method, method_config=method_config, encoder=None, dataset=None,
                steps=c.steps, batch_size=min(c.batch_size, len(pairs) - len(pairs) % 2), lr=c.lr,
                warmup=max(1, c.steps // 10), weight_decay=0.1, seed=seed, device=c.device,
                precision=c.precision, trainable=c.trainable, data="cached", holdout=0,
                eval_every=c.eval_every, log_every=1, snapshot_every=0,
                run_root=str(c.runs_dir()), run_name=row.name.replace("/", "-"),
            )  # fmt: skip
            run = train(cfg, embeddings=pairs.to_embeddings(enc), encoder=enc,
                        eval_hooks=[leaderboard_hook(data)], progress=False)  # fmt: skip
            out.extend(results_from_runs([run.run_dir]))
    return out


def score_runs(paths: Sequence[str | Path], data: LeaderboardData) -> list[RunResult]:
    """Results of any finished runs: their leaderboard records when they have them, else each
    kept checkpoint's heads scored on ``data`` (metrics and diagnostics, same frame).

    A run of one's own (any method, heads-only or not) thus gets the same table row and
    trajectory; its towers are taken to be the starting encoder's (cached features), so a run
    that trained tower blocks is scored with its heads on the *starting* towers — say so.
    """
    from workbench.encoders.heads import Heads
    from workbench.train import RunDir, load_encoder_from_run

    out = []
    for p in paths:
        path = Path(str(p).removeprefix("run:"))
        try:
            out.extend(results_from_runs([path]))
            continue
        except ValueError:
            pass
        rd = RunDir(path)
        steps = rd.checkpoint_steps()
        if not steps:
            raise ValueError(f"score_runs: {path} has neither leaderboard records nor a checkpoint")
        traj = []
        for s in steps:
            start = (
                copy.deepcopy(data.encoder)
                if rd.raw_config["config"].get("encoder") is None
                else None
            )
            heads = Heads.of(load_encoder_from_run(path, s, encoder=start))
            m = score_model(heads, data)
            traj.append({"step": s, **m})
        cfg = rd.raw_config["config"]
        recs = rd.records()
        step_recs = [r for r in recs if r.get("kind") == "step"]
        seconds = float(step_recs[-1]["time"]) if step_recs else float("nan")
        final = {k: v for k, v in traj[-1].items() if k != "step"}
        out.append(RunResult(f"run:{path.name}", int(cfg["seed"]), final, traj, int(cfg["steps"]),
                             seconds, median_step_time(recs), path))  # fmt: skip
    return out
