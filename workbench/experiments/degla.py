"""The DeGLA study behind ``notebooks/degla.ipynb``: Table 7, Fig. 5 and Fig. 6 at small scale.

Spec ``methods-geometry.md`` §5, §8. DeGLA fine-tunes a *pretrained* CLIP on captions with
hard negatives; here the starting model is ``DeGLAStudyConfig.encoder`` (the embedded default),
as loaded — the shipped pretrained heads — or, with ``warm_start_steps`` > 0, after a short
InfoNCE fit of its heads (for a start with random heads). Every arm then fine-tunes the same start — heads and logit scale on
cached tower features — and is scored on data it never trained on:

* compositional (:mod:`workbench.evals.compositional_sets`): SugarCrepe-style replace / swap /
  add and ARO-style word order, from a generator configuration different from the training
  bank's (other seed, held-out vocabulary half, held-out items, untrained kinds), on a
  synthetic world with another seed and on held-out real captions; plus the existing synthetic
  compositional task, which *does* share the training rules (reported apart);
* general ability (:mod:`workbench.evals.general_ability`): zero-shot top-1 and linear probe on
  data sets kept out of fine-tuning.

Seeds: seed ``s`` orders the fine-tuning data and draws the ``eval_fraction`` subsample of every
evaluation set, so even the untrained start has a spread and every comparison goes through
:func:`~workbench.experiments.stats.spread_test` [our reading].
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workbench.experiments.degla_data import StudyData, load_study_data
from workbench.experiments.grid import Arm, check_arms
from workbench.experiments.stats import spread_test

__all__ = [
    "PAPER_TABLE7",
    "TABLE7_METRICS",
    "DeGLAStudy",
    "DeGLAStudyConfig",
    "degla_arms",
    "degla_tradeoff_figure",
    "format_table7",
    "lambda_sweep_arms",
    "lambda_sweep_figure",
    "self_distillation_check",
    "table7",
]

#: DeGLA Table 7 (ARO avg / zero-shot avg, %) [paper], plus CLIP's zero-shot (Table 5).
PAPER_TABLE7: dict[str, dict[str, float]] = {
    "pretrained": {"zs": 61.0},
    "cn": {"aro": 80.8, "zs": 55.4},
    "cn+igc": {"aro": 84.8, "zs": 55.1},
    "cn+tgc": {"aro": 82.2, "zs": 57.2},
    "cn+igc+tgc": {"aro": 86.2, "zs": 56.9},
    "full": {"aro": 86.1, "zs": 58.7, "sugarcrepe": (90.5 + 81.9 + 94.8) / 3, "lp": 79.9},
}
TABLE7_METRICS: tuple[str, ...] = ("aro", "sugarcrepe", "comp_avg", "comp_train_rules", "zs", "lp")
BASELINE = "pretrained"


@dataclass
class DeGLAStudyConfig:
    """``notebooks/degla.ipynb``'s parameters; every default carries its reason.

    Attributes:
        encoder: Starting model (registry name; ``"default"`` = the embedded default).
        warm_start_steps: InfoNCE steps fitting the start's heads before fine-tuning (0: the
            pretrained default is fine-tuned as loaded, DeGLA's setting; 400 plateaus held-out
            retrieval for a start with random heads, e.g. ``heads="random"``).
        n_synthetic: Synthetic-world training items (world seed 0), DeGLA's COCO stand-in.
        n_synthetic_eval: Held-out synthetic items (world seed 1, test split) for the benchmarks.
        real_captions: Real captioned data set for fine-tuning + held-out benchmarks
            (spaCy negatives; ``"openclipart"``), or ``None``.
        min_caption_words: Real captions with fewer words are dropped (one-word clip-art titles
            admit only a noun swap-in).
        real_eval_fraction: Share of the real items held out for evaluation (by id hash).
        general_datasets: Zero-shot / linear-probe data sets, kept out of fine-tuning (digits is
            also kept out of the warm start: a true zero-shot figure).
        n_general: Items per general data set.
        steps: Fine-tuning steps (100 ≈ 7 epochs of ~3.6k pairs at batch 256: with the shipped
            MLP heads (hidden 1024) a step costs several times the old linear heads', and 300 steps
            × 26 runs would take well over an hour on the shared 2-core machine; 300 was the
            default while a linear stand-in was fine-tuned).
        batch_size: Fine-tuning batch (256 [paper]).
        lr: Peak AdamW learning rate of the heads (1e-3: at 1e-4 three hundred steps barely move
            a head; the paper's 1e-6 is for a whole ViT-B/32).
        seeds: Fine-tuning / evaluation seeds (≥ 3 for the spread test).
        rows: Table 7 rows (``workbench.methods.degla.ABLATIONS``).
        degla_config: Extra DeGLA arguments for every DeGLA arm.
        sweep: λ values of Fig. 6 (λ1 with λ2 = 0.1, then λ2 with λ1 = 0.1; [0, 0.4] [paper]);
            the range's two ends by default (the 0.1 point is Table 7's ``full`` row), for the
            same CPU budget — pass ``(0.0, 0.1, 0.2, 0.4)`` for the finer sweep.
        sweep_seeds: Seeds of the sweep (small scale: one).
        eval_fraction: Share of each evaluation set scored per seed [our reading].
        k: Hard negatives per caption (4 [paper]).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        threads: Torch CPU threads (1: a shared 2-core machine).
        output_dir: Figures and ``summary.json``.
    """

    encoder: str = "default"
    warm_start_steps: int = 0
    n_synthetic: int = 2000
    n_synthetic_eval: int = 500
    real_captions: str | None = "openclipart"
    min_caption_words: int = 2
    real_eval_fraction: float = 0.2
    general_datasets: tuple[str, ...] = ("fashion-mnist", "digits")
    n_general: int = 1000
    steps: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    rows: tuple[str, ...] = ("cn", "cn+igc", "cn+tgc", "cn+igc+tgc", "full")
    degla_config: dict[str, Any] = field(default_factory=dict)
    sweep: tuple[float, ...] = (0.0, 0.4)
    sweep_seeds: tuple[int, ...] = (0,)
    eval_fraction: float = 0.8
    k: int = 4
    device: str = "cpu"
    threads: int | None = 1
    output_dir: str = "figures/degla"

    def __post_init__(self) -> None:
        from workbench.methods.degla import ABLATIONS

        for name in ("general_datasets", "seeds", "rows", "sweep", "sweep_seeds"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"DeGLAStudyConfig: {name} must be a sequence, got {value!r}")
            setattr(self, name, tuple(value))
        self.seeds = tuple(int(s) for s in self.seeds)
        from workbench.data import check_dataset_name, dataset_names

        dataset_names(self.general_datasets, "general_datasets", owner="DeGLAStudyConfig")
        if self.real_captions is not None:
            check_dataset_name(self.real_captions, "real_captions", owner="DeGLAStudyConfig")
        ints = ("warm_start_steps", "n_synthetic", "n_synthetic_eval", "n_general", "steps",
                "batch_size", "min_caption_words", "k")  # fmt: skip
        for name in ints:
            value = getattr(self, name)
            low = 0 if name == "warm_start_steps" else 1
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"DeGLAStudyConfig: {name} must be an int ≥ {low}, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"DeGLAStudyConfig: batch_size must be ≥ 2, got {self.batch_size}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"DeGLAStudyConfig: seeds must be distinct, non-empty: {self.seeds}")
        unknown = [r for r in self.rows if r not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown Table 7 rows {unknown}; choose from {list(ABLATIONS)}")
        if any(not 0 <= v for v in self.sweep):
            raise ValueError(f"DeGLAStudyConfig: sweep values must be ≥ 0, got {self.sweep}")
        for name in ("real_eval_fraction", "eval_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1 and not (name == "eval_fraction" and value == 1):
                raise ValueError(f"DeGLAStudyConfig: {name} must be in (0, 1), got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"DeGLAStudyConfig: lr must be > 0, got {self.lr!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(
                f"DeGLAStudyConfig: threads must be an int ≥ 1 or None, got {self.threads!r}"
            )
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"DeGLAStudyConfig: device must be cpu/cuda/auto, got {self.device!r}")
        check_arms([*degla_arms(self.rows, self.degla_config), *lambda_sweep_arms(self.sweep)])

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def degla_arms(rows: Sequence[str], degla_config: dict[str, Any] | None = None) -> list[Arm]:
    """Plain fine-tuning (InfoNCE, learnable scale, no negatives) and one DeGLA arm per row."""
    from workbench.methods.degla import ABLATIONS

    arms = [Arm("finetune", "infonce", {"temperature": None, "symmetric": True})]
    for row in rows:
        arms.append(Arm(row, "degla", {**(degla_config or {}), **ABLATIONS[row]}))
    return arms


def lambda_sweep_arms(values: Sequence[float]) -> list[Arm]:
    """Fig. 6: the full method with λ1 (``lambda_igc``) swept at λ2 = 0.1, then λ2 at λ1 = 0.1."""
    arms = []
    for name in ("lambda_igc", "lambda_tgc"):
        for v in values:
            arms.append(Arm(f"{name}={v:g}", "degla", {name: float(v)}))
    return arms


class DeGLAStudy:
    """Loaded data, the starting heads, and training + scoring of arms (see the module docstring)."""

    def __init__(self, config: DeGLAStudyConfig, data: StudyData) -> None:
        self.config, self.data = config, data
        self.encoder = data.encoder

    @classmethod
    def load(cls, config: DeGLAStudyConfig, progress: Callable[[str], None] | None = None):
        """Embed every data set (cached), build the negative bank and benchmarks, warm-start."""
        import torch

        if config.threads is not None:
            torch.set_num_threads(config.threads)
        return cls(config, load_study_data(config, progress))

    # -- training ---------------------------------------------------------------------------
    def finetune(self, arm: Arm, seed: int) -> tuple[Any, list[dict[str, Any]]]:
        """Fine-tune the start's heads with ``arm``; ``(Heads, log records)``."""
        from workbench.encoders.heads import Heads
        from workbench.train import RunDir, TrainConfig, train

        c, d = self.config, self.data
        method_config = dict(arm.config)
        if arm.method == "degla":
            method_config["negatives"] = str(d.bank_path)
        cfg = TrainConfig(
            method=arm.method, method_config=method_config, encoder=None, dataset=None,
            steps=c.steps, batch_size=min(c.batch_size, len(d.train) - len(d.train) % 2),
            lr=c.lr, warmup=max(1, c.steps // 10), weight_decay=0.1, seed=seed,
            device=c.device, trainable="heads+logit_scale", data="cached", holdout=0,
            eval_every=0, log_every=max(1, c.steps // 30), snapshot_every=0,
            run_name=arm.name.replace("+", "_").replace("=", "-"),
        )  # fmt: skip
        enc = self.encoder
        saved = Heads.of(enc)
        try:
            d.start.load_into(enc)
            with tempfile.TemporaryDirectory(prefix="wb-degla-") as tmp:
                cfg.run_root = tmp
                run = train(cfg, embeddings=d.train, encoder=enc, progress=False)
                log = RunDir(run.run_dir).log()
            return Heads.of(enc), log
        finally:
            saved.load_into(enc)
            enc.requires_grad_(False)

    # -- scoring ----------------------------------------------------------------------------
    def score(self, heads: Any, seed: int) -> dict[str, float]:
        """Every metric of ``heads`` on seed ``seed``'s subsample of the evaluation sets."""
        out: dict[str, float] = {}
        groups: dict[str, list[float]] = {"replace": [], "swap": [], "add": []}
        aro = []
        for name, bench in self.data.benchmarks.items():
            res = bench.score(heads, self._rows(name, bench.n_items, seed))
            for kind, value in res.per_kind.items():
                out[f"{name}/{kind}"] = value
            if name.startswith("sugarcrepe/"):
                for kind, value in res.per_kind.items():
                    groups[kind.split("-")[0]].append(value)
            elif name.startswith("aro/"):
                aro.append(res.mean)
            else:
                out[name] = res.mean
        for group, values in groups.items():
            if values:
                out[f"sugarcrepe/{group}"] = float(np.mean(values))
        out["sugarcrepe"] = float(np.mean([out[f"sugarcrepe/{g}"] for g in groups if groups[g]]))
        out["aro"] = float(np.mean(aro))
        out["comp_avg"] = (out["aro"] + out["sugarcrepe"]) / 2
        for name, general in self.data.general.items():
            rows = self._rows(name, len(general.labels), seed)
            for metric, value in general.score(heads, rows, seed=seed).items():
                out[f"{metric}/{name}"] = value
        out["zs"] = float(np.mean([out[f"zero_shot/{n}"] for n in self.data.general]))
        out["lp"] = float(np.mean([out[f"linear_probe/{n}"] for n in self.data.general]))
        return out

    def _rows(self, name: str, n: int, seed: int) -> np.ndarray:
        if self.config.eval_fraction >= 1:
            return np.arange(n)
        salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
        rng = np.random.default_rng([seed, salt])
        return np.sort(
            rng.choice(n, size=max(2, round(self.config.eval_fraction * n)), replace=False)
        )

    # -- the grids --------------------------------------------------------------------------
    def run(
        self,
        arms: Sequence[Arm],
        seeds: Sequence[int],
        on_run: Callable[[str, int], None] | None = None,
        include_start: bool = True,
    ) -> tuple[Any, dict[tuple[str, int], list[dict[str, Any]]]]:
        """Train + score every arm × seed (and score the start, arm ``"pretrained"``).

        Returns:
            ``(scores, logs)``: long DataFrame ``arm, seed, metric, value, seconds`` and the
            per-run log records keyed by ``(arm, seed)``.
        """
        import pandas as pd

        rows, logs = [], {}
        for seed in seeds:
            todo = ([Arm(BASELINE, "none")] if include_start else []) + list(arms)
            for arm in todo:
                if on_run is not None:
                    on_run(arm.name, seed)
                t0 = time.perf_counter()
                if arm.name == BASELINE:
                    heads = self.data.start
                else:
                    heads, logs[(arm.name, seed)] = self.finetune(arm, seed)
                seconds = time.perf_counter() - t0
                for metric, value in self.score(heads, seed).items():
                    rows.append(
                        {"arm": arm.name, "seed": seed, "metric": metric, "value": value,
                         "seconds": seconds}
                    )  # fmt: skip
        return pd.DataFrame(rows), logs


# -- tables and figures -----------------------------------------------------------------------
def table7(scores: Any, metrics: Sequence[str] = TABLE7_METRICS, baseline: str = BASELINE) -> Any:
    """Mean ± std over seeds per arm and metric, the difference from ``baseline`` and the spread
    test; long DataFrame ``arm, metric, mean, std, n_seeds, diff, exceeds_spread``."""
    import pandas as pd

    arms = list(dict.fromkeys(scores["arm"]))
    if baseline not in arms:
        raise ValueError(f"baseline {baseline!r} is not among the arms {arms}")
    values = scores.groupby(["arm", "metric"])["value"].apply(list)
    out = []
    for arm in arms:
        for metric in metrics:
            v = np.asarray(values.loc[(arm, metric)], dtype=np.float64)
            test = spread_test(v, values.loc[(baseline, metric)])
            out.append(
                {"arm": arm, "metric": metric, "mean": float(v.mean()),
                 "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                 "n_seeds": int(v.size), "diff": test.diff, "exceeds_spread": test.exceeds}
            )  # fmt: skip
    return pd.DataFrame(out)


def format_table7(table: Any, paper: dict[str, dict[str, float]] = PAPER_TABLE7) -> Any:
    """Wide display, percent: ``mean ± std (Δ vs pretrained, * beyond the spread)``, plus the
    paper's ARO / SugarCrepe / zero-shot / linear-probe numbers beside ours."""
    from workbench.experiments.tables import spread_grid

    wide = spread_grid(table, "arm", "metric", BASELINE)
    arms = list(wide.index)
    for metric in ("aro", "sugarcrepe", "zs", "lp"):
        wide[f"paper {metric}"] = [
            f"{paper[a][metric]:.1f}" if metric in paper.get(a, {}) else "" for a in arms
        ]
    return wide


def degla_tradeoff_figure(
    table: Any, arms: Sequence[str] = (BASELINE, "finetune", "cn", "full")
) -> Any:
    """DeGLA Fig. 5: compositional average vs zero-shot average (mean ± std over seeds) of the
    start, plain fine-tuning, CN only and DeGLA."""
    from workbench.viz.tradeoff import tradeoff_figure

    t = table.set_index(["arm", "metric"])
    points = [
        {"label": arm, "x": t.loc[(arm, "comp_avg"), "mean"], "y": t.loc[(arm, "zs"), "mean"],
         "x_err": t.loc[(arm, "comp_avg"), "std"], "y_err": t.loc[(arm, "zs"), "std"]}
        for arm in arms if (arm, "comp_avg") in t.index
    ]  # fmt: skip
    return tradeoff_figure(
        points,
        x_title="compositional average: (ARO-style + SugarCrepe-style) / 2 (%)",
        y_title="zero-shot average (%)",
        title="Compositional vs general ability (DeGLA Fig. 5)",
    )


def lambda_sweep_figure(scores: Any, metrics: Sequence[str] = ("aro", "sugarcrepe", "zs")) -> Any:
    """DeGLA Fig. 6: each metric against λ1 (IGC) and λ2 (TGC), one panel per λ."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("λ1 (IGC), λ2 = 0.1", "λ2 (TGC), λ1 = 0.1"))
    df = scores[scores["metric"].isin(metrics)].copy()
    df["lam"] = df["arm"].str.partition("=")[2].astype(float)
    df["param"] = df["arm"].str.partition("=")[0]
    mean = df.groupby(["param", "lam", "metric"])["value"].mean().reset_index()
    colours = dict(zip(metrics, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")))
    for col, param in enumerate(("lambda_igc", "lambda_tgc"), start=1):
        for metric in metrics:
            sub = mean[(mean["param"] == param) & (mean["metric"] == metric)].sort_values("lam")
            fig.add_trace(
                go.Scatter(x=sub["lam"], y=100 * sub["value"], mode="lines+markers", name=metric,
                           line={"color": colours[metric]}, showlegend=col == 1),
                row=1, col=col,
            )  # fmt: skip
    fig.update_xaxes(title_text="λ")
    fig.update_yaxes(title_text="%", row=1, col=1)
    fig.update_layout(title="λ1 / λ2 sweep (DeGLA Fig. 6, small scale)")
    return fig


def self_distillation_check(
    scores: Any, full: str = "full", start: str = BASELINE, without: str = "cn+igc+tgc"
) -> dict[str, Any]:
    """The paper's claim in numbers: does DeGLA (``full``) keep zero-shot within the seed
    spread of the start while the compositional scores rise beyond it, and what does the
    self-distillation add over ``without`` (the same losses, no SD)?

    Returns:
        ``{"<metric>_vs_start": {diff, spread, exceeds}, "<metric>_sd_effect": {...},
        "zs_kept": bool, "comp_rises": bool}`` for metrics ``zs``, ``comp_avg``, ``aro``,
        ``sugarcrepe`` (:func:`~workbench.experiments.stats.spread_test` throughout).
    """
    per = scores.groupby(["arm", "metric"])["value"].apply(list)
    arms = set(scores["arm"])
    out: dict[str, Any] = {}
    for metric in ("zs", "comp_avg", "aro", "sugarcrepe", "lp"):
        pairs = {"vs_start": (full, start), "sd_effect": (full, without)}
        for tag, (a, b) in pairs.items():
            if a in arms and b in arms:
                t = spread_test(per.loc[(a, metric)], per.loc[(b, metric)])
                out[f"{metric}_{tag}"] = {"diff": t.diff, "spread": t.spread, "exceeds": t.exceeds}
    if "zs_vs_start" in out:
        out["zs_kept"] = not out["zs_vs_start"]["exceeds"] or out["zs_vs_start"]["diff"] > 0
        out["comp_rises"] = bool(
            out["comp_avg_vs_start"]["exceeds"] and out["comp_avg_vs_start"]["diff"] > 0
        )
    return out
