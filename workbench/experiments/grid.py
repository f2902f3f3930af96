"""Experiment grids: arms × seeds of short heads-only runs, scored on the task suite.

The method notebooks stay short: they build a task suite, describe the *arms* to compare and
call :func:`run_grid`. Each run trains projection heads only, on the suite's cached tower
features (:class:`~workbench.evals.task_suite.TaskSuite`), so a grid of seeds × arms runs on a CPU.

Seeds: seed ``s`` re-initialises the heads (identically for every arm, so arms are paired) and
seeds the data order and any method noise.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.encoders.heads import Heads

if TYPE_CHECKING:
    import torch

__all__ = [
    "Arm",
    "GridResult",
    "HeadsTraining",
    "StepCallback",
    "SuiteRunConfig",
    "TrainedArm",
    "call_on_step",
    "check_arms",
    "check_on_step",
    "check_run_length",
    "config_dict",
    "load_suite",
    "pair_features",
    "run_grid",
    "train_heads",
    "trainable_meta_tasks",
]


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


def check_run_length(config: Any) -> None:
    """Validate a short training config's ``steps``, ``batch_size``, ``lr`` and ``warmup``
    (shared by :class:`HeadsTraining` and the token trainer's config)."""
    if not (isinstance(config.steps, int) and config.steps >= 1):
        raise ValueError(f"steps must be an int ≥ 1, got {config.steps!r}")
    if not (isinstance(config.batch_size, int) and config.batch_size >= 2):
        raise ValueError(f"batch_size must be an int ≥ 2, got {config.batch_size!r}")
    if not config.lr > 0:
        raise ValueError(f"lr must be > 0, got {config.lr!r}")
    if config.warmup is not None and not 0 <= config.warmup <= config.steps:
        raise ValueError(f"warmup must be in [0, steps], got {config.warmup!r}")


#: ``on_step(step, model) -> {metric: value} | None`` of the trainers (:func:`~workbench.experiments.
#: token_training.train_token_method`, :func:`~workbench.experiments.segtrain.train_segmenter`).
StepCallback = Callable[[int, Any], "dict[str, float] | None"]


def call_on_step(
    on_step: StepCallback,
    step: int,
    model: torch.nn.Module,
    evals: list[dict[str, Any]] | None = None,
) -> dict[str, float] | None:
    """Call ``on_step(step, model)`` with ``model`` in eval mode under ``torch.no_grad`` (train
    mode restored after, so batch norm statistics and dropout of the run are untouched); return
    its metrics as floats, and append ``{"step", "metrics", "seconds"}`` to ``evals`` (when
    given) when it returns some."""
    import torch

    was = model.training
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        metrics = on_step(step, model)
    model.train(was)
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        raise TypeError(
            f"on_step must return a dict of metrics or None, got {type(metrics).__name__}"
        )
    out = {k: float(v) for k, v in metrics.items()}
    if evals is not None:
        evals.append({"step": step, "metrics": out, "seconds": time.perf_counter() - t0})
    return out


def check_on_step(on_step: Any) -> None:
    """``TypeError`` unless ``on_step`` is ``None`` or callable."""
    if on_step is not None and not callable(on_step):
        raise TypeError(
            f"on_step must be a callable (step, model) -> dict | None, or None; got {on_step!r}"
        )


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
        init: ``"random"`` — each run re-initialises the heads from its seed (heads from
            scratch); ``"keep"`` — each run fine-tunes the encoder's current heads (e.g. the
            pretrained default's; seeds then vary the data order and method noise only).
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
    init: str = "random"
    run_root: str | None = None

    def __post_init__(self) -> None:
        check_run_length(self)
        if self.init not in ("random", "keep"):
            raise ValueError(f"init must be 'random' or 'keep', got {self.init!r}")

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
    """Train ``encoder``'s heads on ``pairs`` with ``arm``: from a seeded re-initialisation
    (``training.init="random"``) or from the heads it has (``"keep"``: fine-tuning).

    The heads are trained in place (copying a whole encoder per run costs more than a short
    run) and restored afterwards, so ``encoder`` is unchanged on return; the trained heads come
    back as :class:`Heads`.

    Args:
        encoder: Encoder whose towers produced ``pairs``.
        pairs: :class:`~workbench.evals.task_suite.PairSet` of (image, text) tower features.
        arm: Method and configuration.
        seed: Head initialisation, data order and method noise.
        training: Optimisation settings (defaults: :class:`HeadsTraining`).
    """
    from workbench.train import RunDir, train

    training = training or HeadsTraining()
    saved = _head_state(encoder)
    try:
        if training.init == "random":
            _reset_heads(encoder, seed)
        emb = pairs.to_embeddings(encoder)
        with tempfile.TemporaryDirectory(prefix="wb-runs-") as tmp:
            root = training.run_root or tmp
            cfg = training.train_config(arm, seed, len(pairs), root)
            run = train(cfg, embeddings=emb, encoder=encoder, progress=False)
            log = RunDir(run.run_dir).log()
            kept = Path(run.run_dir) if training.run_root else None
        heads = Heads.of(encoder)
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
        suite: :class:`~workbench.evals.task_suite.TaskSuite`.
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


def trainable_meta_tasks(suite: Any) -> list[str]:
    """Meta-tasks of ``suite`` with at least 2 training pairs (a tiny suite may hold out all of a
    meta-task's items; compositional tasks may share their pairs with retrieval)."""
    return [
        m
        for m in suite.meta_tasks
        if sum(len(t.train) for t in suite.tasks if t.meta_task == m) >= 2
    ]


def pair_features(heads: Any, pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n, E) L2-normalised image and text embeddings of ``pairs`` under ``heads``
    (an encoder or :class:`Heads`)."""
    emb = pairs.to_embeddings(heads)
    return emb.image_normed.astype(np.float64), emb.text_normed.astype(np.float64)


@dataclass
class SuiteRunConfig:
    """Shared settings of the method notebooks: data, encoder and heads-only training.

    Attributes:
        encoder: Encoder registry name (``"default"``: the embedded EfficientNet-Lite0 +
            MiniLM towers with its shipped pretrained heads).
        init: ``"pretrained"`` — every run fine-tunes the encoder's pretrained heads (the
            papers' setting: SDE and FANoise fine-tune a pretrained VLM); ``"random"`` — heads
            from scratch, re-initialised per seed (the default encoder then has its seeded linear
            heads, ``load_encoder("default", heads="random")``).
        datasets: Task-suite datasets, a sequence of registry names (a bare string is refused,
            an unknown name raises with suggestions); one that cannot be built stops
            :func:`load_suite` before any training.
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
    init: str = "pretrained"
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
        from workbench._validate import as_bool, as_choice, as_float, as_int, as_int_tuple
        from workbench.data import dataset_names
        from workbench.encoders.registry import check_encoder_name

        own = type(self).__name__
        self.init = as_choice(self.init, f"{own}: init", ("pretrained", "random"))
        check_encoder_name(self.encoder, "encoder", owner=own)
        self.datasets = dataset_names(self.datasets, "datasets", owner=own)
        self.seeds = as_int_tuple(self.seeds, "seeds", owner=own, lo=0, unique=True)
        self.temperature = as_float(
            self.temperature, f"{own}: temperature", lo=0.0, lo_open=True, none_ok=True
        )
        self.symmetric = as_bool(self.symmetric, f"{own}: symmetric")
        self.threads = as_int(self.threads, f"{own}: threads", lo=1, none_ok=True)
        for name in ("n_per_dataset", "mmvp_pairs_per_category", "steps", "batch_size"):
            setattr(self, name, as_int(getattr(self, name), f"{own}: {name}", lo=0))
        self.lr = as_float(self.lr, f"{own}: lr", lo=0.0, lo_open=True)
        if not isinstance(self.device, str) or (
            self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:")
        ):
            raise ValueError(
                f"{own}: device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}"
            )
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise TypeError(f"{own}: output_dir must be a non-empty path, got {self.output_dir!r}")
        self.training()  # validates steps, batch_size, lr
        self.suite_config()  # validates n_per_dataset, mmvp pairs

    @property
    def feat(self) -> dict[str, Any]:
        """The feature-loss arguments every arm shares."""
        return {"temperature": self.temperature, "symmetric": self.symmetric}

    def training(self) -> HeadsTraining:
        return HeadsTraining(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            device=self.device,
            init="keep" if self.init == "pretrained" else "random",
        )

    def suite_config(self) -> Any:
        from workbench.evals.task_suite import TaskSuiteConfig

        return TaskSuiteConfig(
            datasets=self.datasets,
            n_per_dataset=self.n_per_dataset,
            mmvp_pairs_per_category=self.mmvp_pairs_per_category,
        )

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)


def config_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-able dict (tuples → lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


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
    from workbench.evals.task_builder import build_task_suite

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    kw = {"heads": "random"} if config.init == "random" and config.encoder == "default" else {}
    encoder = load_encoder(config.encoder, **kw)
    suite = build_task_suite(encoder, config.suite_config())
    return encoder, suite, time.perf_counter() - t0
