"""The Earth-Adapter study behind ``notebooks/earth_adapter.ipynb``.

Segmentation of synthetic-world scenes (:mod:`workbench.data.segworld`) by a frozen image tower
with adapters (:mod:`workbench.methods.earth_adapter`) and a light head. Source domain: clean
images; target domains: remote-sensing-like artifacts (:mod:`workbench.data.artifacts`).

* **Domain generalisation (DG)**: train on labelled source images only, test on every domain.
* **Domain adaptation (DA)**: continue each DG run with self-training on unlabelled images of
  all target domains pooled (a small stand-in for DACS: EMA teacher, confidence-thresholded
  pseudo-labels, no ClassMix; :mod:`workbench.experiments.segtrain`), test on every domain.

Rows (:data:`EARTH_ADAPTER_ROWS`): head only (frozen tower), one spatial adapter per layer (Rein-like), three
spatial experts at the mixture layers (the paper's ablation baseline), Earth-Adapter (spatial +
low + high). Tables give mIoU (%) per domain, the mean over the target domains, mean ± std over
seeds, and :func:`~workbench.experiments.stats.spread_test` against a baseline row. Paper
numbers (:data:`EARTH_ADAPTER_PAPER`) come from the official repository's result tables.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.artifacts import TARGET_ARTIFACTS
from workbench.experiments.stats import spread_test

__all__ = [
    "EARTH_ADAPTER_PAPER",
    "EARTH_ADAPTER_ROWS",
    "EarthAdapterConfig",
    "EarthAdapterData",
    "StudyResult",
    "compare_rows",
    "domain_table",
    "format_domain_table",
    "prepare_data",
    "rho_table",
    "run_earth_adapter_study",
    "trainable_table",
]

#: Table row → registry name of the method variant.
EARTH_ADAPTER_ROWS: dict[str, str] = {
    "head only": "earth_adapter/head_only",
    "1 spatial": "earth_adapter/spatial1",
    "3 spatial": "earth_adapter/spatial3",
    "Earth-Adapter": "earth_adapter",
}

#: The paper's mIoU (%) on DINOv2-L [paper: Earth-Adapter main table and adapter ablation, as
#: printed in the official repository's ``assets/main_result.png`` and ``assets/ab_2.png``].
#: ``dg``/``da``: averages over P2V, V2P, R2U, U2R (frozen, Adapter [28], Rein, Earth-Adapter);
#: ``ablation``: DG average over P2V and V2P of the adapter counts. Our "1 spatial" row is the
#: paper's one-adapter ablation row and its "Adapter" baseline; "head only" is its "Frozen".
EARTH_ADAPTER_PAPER: dict[str, dict[str, float]] = {
    "dg": {"head only": 51.8, "1 spatial": 50.7, "Rein": 53.1, "Earth-Adapter": 56.2},
    "da": {"head only": 15.4, "1 spatial": 57.0, "Rein": 50.0, "Earth-Adapter": 59.0},
    "ablation": {"1 spatial": 56.9, "3 spatial": 58.4, "Earth-Adapter": 60.0},
}
TARGETS = "targets"  # column: mean over the target domains


@dataclass
class EarthAdapterConfig:
    """``notebooks/earth_adapter.ipynb``'s parameters; every field is validated.

    The data and step defaults are shrunk to what a shared 2-core CPU runs in ~30 minutes
    (bench_step --modes segment: an Earth-Adapter step at batch 16 costs 0.3 s of CPU; at load
    16-20 a notebook kernel gets ~0.16 of a core, so the former 600 scenes × 300 steps × batch 16
    over 30 runs would take hours there). The runs are therefore short (60 steps: the head is
    not converged) — on a GPU or an idle machine raise ``steps``, ``batch_size``, ``n_train``,
    ``n_test``, ``n_target``, ``da_steps`` and ``rho_sweep`` back (e.g. 300, 16, 600, 100, 50,
    100, (0.3, 0.5, 0.75)).

    Attributes:
        encoder: Encoder registry name (the study fine-tunes adapters inside its image tower).
        resolution: Image side in px, rendered and fed at this size (128: stride-16 tokens on an
            8 × 8 grid, the smallest grid where ρ = 0.3 leaves a low band, k = 1).
        rows: Table rows, keys of :data:`EARTH_ADAPTER_ROWS`.
        baseline: Row the spread test compares every row with.
        seeds: Seeds per row (≥ 2 for a spread; 3 by default).
        domains: Target domains (artifact names).
        n_train: Labelled source scenes (200).
        n_test: Test scenes per domain (30; the same scenes in every domain).
        n_target: Unlabelled scenes per target domain for DA (20, disjoint from the source's).
        steps: Source-only steps per run (60 at batch 8: 2.4 epochs of 200 scenes).
        batch_size: Images per step (8).
        lr: Peak learning rate of head and adapters (1e-2: at 300 steps the head from random
            init reaches 0.44 clean mIoU with Earth-Adapter vs 0.35 at 3e-3; measured).
        da: Run the domain-adaptation table too.
        da_steps: Self-training steps per DA run (20).
        da_lr: Their peak learning rate (1e-3: fine-tuning a trained model).
        threshold: Pseudo-label confidence (0.968, DACS) [code: DACS].
        ratio: ρ of the frequency split (0.3) [code].
        bottleneck: Expert width (32) [code: 16–64].
        fft_layers: Mixture layers = the first n adapted blocks (3; official configs [0–2]).
        min_stride: Adapters on blocks with token stride ≥ this (16, ViT-B/16-like tokens).
        feature_layers: Image blocks whose outputs feed the head (``None``: the method's
            default, the last block of each of the three coarsest grids).
        loss: Source loss of :class:`~workbench.experiments.segtrain_config.SegTraining`
            (``"ce"``, ``"balanced_ce"``, ``"ce+dice"``).
        rho_sweep: ρ values of the sweep (Earth-Adapter row, DG; (0.3, 0.5): k = 1, 2 on the 8 × 8
            grid); the main ``ratio`` is reused.
        extra_ablation: More expert sets for the ablation table, e.g. ``[["low", "high"]]``.
        figure_images: Test scenes in the qualitative-mask figure.
        data_seed: Seed of the scenes and of the artifacts' noise.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        threads: Torch CPU threads (1 on a shared machine; ``None`` = torch's default).
        output_dir: Figures and ``summary.json``.
        run_root: Where run directories go (``None``: a temporary directory).
    """

    encoder: str = "default"
    resolution: int = 128
    rows: tuple[str, ...] = ("head only", "1 spatial", "3 spatial", "Earth-Adapter")
    baseline: str = "head only"
    seeds: tuple[int, ...] = (0, 1, 2)
    domains: tuple[str, ...] = TARGET_ARTIFACTS
    n_train: int = 200
    n_test: int = 30
    n_target: int = 20
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-2
    da: bool = True
    da_steps: int = 20
    da_lr: float = 1e-3
    threshold: float = 0.968
    ratio: float = 0.3
    bottleneck: int = 32
    fft_layers: int = 3
    min_stride: float = 16
    feature_layers: tuple[int, ...] | None = None
    loss: str = "ce"
    rho_sweep: tuple[float, ...] = (0.3, 0.5)
    extra_ablation: tuple[tuple[str, ...], ...] = ()
    figure_images: int = 3
    data_seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    output_dir: str = "figures/earth_adapter"
    run_root: str | None = None

    def __post_init__(self) -> None:
        from workbench import methods
        from workbench.data.artifacts import ARTIFACTS

        for name in ("rows", "seeds", "domains", "rho_sweep", "extra_ablation"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(
                    f"EarthAdapterConfig: {name} must be a sequence, got the string {value!r}"
                )
        self.rows, self.domains = tuple(self.rows), tuple(self.domains)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.rho_sweep = tuple(float(r) for r in self.rho_sweep)
        self.extra_ablation = tuple(tuple(e) for e in self.extra_ablation)
        if self.feature_layers is not None:
            if isinstance(self.feature_layers, str):
                raise ValueError("EarthAdapterConfig: feature_layers must be a sequence of "
                                 f"block indices, got the string {self.feature_layers!r}")  # fmt: skip
            self.feature_layers = tuple(self.feature_layers)
        unknown = [r for r in self.rows if r not in EARTH_ADAPTER_ROWS]
        if unknown or not self.rows:
            raise ValueError(
                f"EarthAdapterConfig: unknown rows {unknown}; choose from {list(EARTH_ADAPTER_ROWS)}"
            )
        if self.baseline not in self.rows:
            raise ValueError(
                f"EarthAdapterConfig: baseline {self.baseline!r} is not among rows {self.rows}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(
                f"EarthAdapterConfig: seeds must be distinct and non-empty, got {self.seeds}"
            )
        bad = [d for d in self.domains if d not in ARTIFACTS or d == "clean"]
        if bad or not self.domains:
            raise ValueError(
                f"EarthAdapterConfig: domains must be artifacts other than 'clean', got {bad}; "
                f"choose from {[n for n in ARTIFACTS.names() if n != 'clean']}"
            )
        for name in ("n_train", "n_test", "n_target", "figure_images", "resolution"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"EarthAdapterConfig: {name} must be an int ≥ 1, got {v!r}")
        if self.resolution < 48:
            raise ValueError(
                f"EarthAdapterConfig: resolution must be ≥ 48 px, got {self.resolution}"
            )
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(
                f"EarthAdapterConfig: threads must be an int ≥ 1 or None, got {self.threads!r}"
            )
        self.training()  # validates steps, batch sizes, learning rates, threshold, device
        if self.n_train < self.batch_size:
            raise ValueError(
                f"EarthAdapterConfig: n_train ({self.n_train}) < batch_size ({self.batch_size})"
            )
        if self.da and self.n_target * len(self.domains) < self.batch_size:
            raise ValueError("EarthAdapterConfig: n_target × domains must be ≥ batch_size for DA")
        for label, experts in self.ablation_arms().items():  # bad method arguments fail now
            methods.get("earth_adapter", **self.method_config(label, experts=experts))
        for ratio in self.rho_sweep:
            methods.get("earth_adapter", **self.method_config("Earth-Adapter", ratio=ratio))

    def training(self) -> Any:
        from workbench.experiments.segtrain import SegTraining

        return SegTraining(
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=min(10, self.steps // 10),
            da_steps=self.da_steps, da_lr=self.da_lr, threshold=self.threshold,
            device=self.device, loss=self.loss,
        )  # fmt: skip

    def method_config(
        self, row: str, *, ratio: float | None = None, experts: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The method arguments of a row (shared by every row but the expert set)."""
        from workbench.methods.earth_adapter import VARIANTS

        cfg: dict[str, Any] = {
            "ratio": self.ratio if ratio is None else ratio, "bottleneck": self.bottleneck,
            "fft_layers": self.fft_layers, "min_stride": self.min_stride,
        }  # fmt: skip
        if self.feature_layers is not None:
            cfg["feature_layers"] = list(self.feature_layers)
        cfg["experts"] = list(VARIANTS[EARTH_ADAPTER_ROWS[row]] if experts is None else experts)
        return cfg

    def ablation_arms(self) -> dict[str, tuple[str, ...]]:
        """Extra ablation rows: label → expert set."""
        return {" + ".join(e) or "none": e for e in self.extra_ablation}

    @property
    def encoder_kwargs(self) -> dict[str, Any]:
        """The encoder's arguments: the default at ``resolution`` with ``heads="random"`` — the
        shipped pretrained heads are trained at 96 px and refuse other resolutions, and a
        segmenter reads only the image tower's blocks, which are the same ImageNet weights
        under either heads, so the study's numbers do not depend on them."""
        if self.encoder != "default":
            return {}
        return {"resolution": self.resolution, "heads": "random"}

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class EarthAdapterData:
    """Rendered domains and their frozen-prefix caches.

    Attributes:
        source: Labelled clean training scenes (:class:`~workbench.data.segworld.SegArrays`).
        target: Unlabelled scenes of every target domain, pooled (DA).
        tests: ``{"clean": ..., <domain>: ...}`` test scenes (the same scenes per domain).
        caches: ``{"source"/"target"/<test domain>: PrefixCache}``.
        start: First block the runs execute (the first adapter layer).
        mixture_grid: Token grid ``(H, W)`` of the first mixture layer.
    """

    source: Any
    target: Any
    tests: dict[str, Any]
    caches: dict[str, Any]
    start: int
    mixture_grid: tuple[int, int]


def prepare_data(cfg: EarthAdapterConfig) -> EarthAdapterData:
    """Render every domain at ``cfg.resolution`` and cache the frozen prefix of each."""
    from workbench import methods
    from workbench.data.segworld import SegArrays, SegWorld
    from workbench.encoders import load_encoder
    from workbench.experiments.segtrain import build_prefix_cache

    size, seed = cfg.resolution, cfg.data_seed
    source = SegWorld(cfg.n_train, seed, "train", size).arrays()
    parts = [SegWorld(cfg.n_target, seed, "train", size, d, offset=cfg.n_train).arrays()
             for d in cfg.domains]  # fmt: skip
    target = SegArrays(np.concatenate([p.images for p in parts]),
                       np.concatenate([p.labels for p in parts]), source.class_names, "targets",
                       {"domains": list(cfg.domains), "parts": [p.config for p in parts]})  # fmt: skip
    tests = {
        d: SegWorld(cfg.n_test, seed, "test", size, d).arrays() for d in ("clean", *cfg.domains)
    }
    encoder = load_encoder(cfg.encoder, **cfg.encoder_kwargs)
    probe = methods.get("earth_adapter", **cfg.method_config("Earth-Adapter"))
    probe.attach(encoder)
    start = min(probe.adapter_layers_)
    segmenter = probe.segmenter(encoder)
    spec = (cfg.encoder, cfg.encoder_kwargs)
    sets = {"source": source, **({"target": target} if cfg.da else {}), **tests}
    caches = {k: build_prefix_cache(segmenter, encoder, a, start, encoder_spec=spec)
              for k, a in sets.items()}  # fmt: skip
    grid = probe.blocks_[probe.fft_layers_[0] if probe.fft_layers_ else start].grid
    return EarthAdapterData(source, target, tests, caches, start, grid)


@dataclass
class StudyResult:
    """Scores and run directories of a study.

    Attributes:
        scores: Long DataFrame ``table, mode, row, ratio, seed, domain, miou, pixel_accuracy``
            (``table`` ∈ main / rho / ablation; ``mode`` ∈ dg / da).
        runs: ``{(table, mode, row, ratio, seed): {"run_dir", "n_trainable", "seconds"}}``.
        iou: ``{(mode, row, seed, domain): per-class IoU list}`` of the main table.
    """

    scores: Any
    runs: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    iou: dict[tuple, list[float]] = field(default_factory=dict)

    def run_dir(self, row: str, seed: int, mode: str = "dg", table: str = "main",
                ratio: float | None = None) -> Path:  # fmt: skip
        for (t, m, r, rho, s), info in self.runs.items():
            if (t, m, r, s) == (table, mode, row, seed) and ratio in (None, rho):
                return Path(info["run_dir"])
        raise KeyError(f"no {table}/{mode} run of {row!r} with seed {seed}")


def run_earth_adapter_study(
    cfg: EarthAdapterConfig, data: EarthAdapterData, *, on_run: Callable[[str], None] | None = None
) -> StudyResult:
    """Every run of the study: the main rows (DG, then DA from each DG run), the ρ sweep and the
    extra ablation rows (DG), each over ``cfg.seeds``."""
    import pandas as pd

    from workbench.experiments.segtrain import evaluate_domains, train_segmenter

    root = Path(cfg.run_root or tempfile.mkdtemp(prefix="wb-earth-adapter-"))
    training = cfg.training()
    test_caches = {d: data.caches[d] for d in data.tests}
    records, runs, ious = [], {}, {}

    def one(table: str, row: str, mc: dict, seed: int, ratio: float, init=None) -> Path:
        mode = "da" if init is not None else "dg"
        if on_run is not None:
            on_run(f"{table} {mode} {row} ρ={ratio} seed={seed}")
        method = EARTH_ADAPTER_ROWS.get(row, "earth_adapter")
        run = train_segmenter(
            method, mc, data.source, training, seed=seed, run_root=root,
            run_name=f"{table}-{mode}-{row}".replace(" ", "_").replace("+", "p"),
            encoder=cfg.encoder, encoder_kwargs=cfg.encoder_kwargs,
            target=data.target if init is not None else None, init_from=init,
            source_cache=data.caches["source"], target_cache=data.caches.get("target"),
        )  # fmt: skip
        scores = evaluate_domains(run.segmenter, run.encoder, data.tests, caches=test_caches)
        for domain, res in scores.items():
            records.append({"table": table, "mode": mode, "row": row, "ratio": ratio, "seed": seed,
                            "domain": domain, "miou": res["miou"],
                            "pixel_accuracy": res["pixel_accuracy"]})  # fmt: skip
            if table == "main":
                ious[(mode, row, seed, domain)] = [float(v) for v in res["iou"]]
        runs[(table, mode, row, ratio, seed)] = {
            "run_dir": str(run.run_dir), "n_trainable": run.n_trainable, "seconds": run.seconds,
            "confident_fraction": float(np.mean([r["logs"].get("confident_fraction", np.nan)
                                                 for r in run.log])) if init else None,
        }  # fmt: skip
        return run.run_dir

    for seed in cfg.seeds:
        for row in cfg.rows:
            dg = one("main", row, cfg.method_config(row), seed, cfg.ratio)
            if cfg.da:
                one("main", row, cfg.method_config(row), seed, cfg.ratio, init=dg)
        for ratio in cfg.rho_sweep:
            if ratio != cfg.ratio:
                one(
                    "rho",
                    "Earth-Adapter",
                    cfg.method_config("Earth-Adapter", ratio=ratio),
                    seed,
                    ratio,
                )
        for label, experts in cfg.ablation_arms().items():
            one(
                "ablation",
                label,
                cfg.method_config("Earth-Adapter", experts=experts),
                seed,
                cfg.ratio,
            )
    return StudyResult(pd.DataFrame(records), runs, ious)


# -- tables ------------------------------------------------------------------------------------
def _per_seed(scores: Any, domains: Sequence[str]) -> Any:
    """Wide per-seed mIoU: index (row, seed), columns clean, domains…, targets (their mean)."""
    wide = scores.pivot_table(index=["row", "seed"], columns="domain", values="miou")
    wide[TARGETS] = wide[list(domains)].mean(axis=1)
    return wide[["clean", *domains, TARGETS]]


def domain_table(scores: Any, domains: Sequence[str], baseline: str) -> Any:
    """Mean ± std over seeds of mIoU per row and domain (+ the target mean), with the difference
    from ``baseline`` and :func:`spread_test`.

    Args:
        scores: Rows of one ``table`` and ``mode`` of :attr:`StudyResult.scores`.
        domains: Target domains (columns after ``clean``).
        baseline: Row to compare with.

    Returns:
        Long DataFrame ``row, column, mean, std, n_seeds, diff, exceeds_spread``.
    """
    import pandas as pd

    wide = _per_seed(scores, domains)
    rows = list(dict.fromkeys(scores["row"]))
    if baseline not in rows:
        raise ValueError(f"domain_table: baseline {baseline!r} is not a row of {rows}")
    out = []
    for row in rows:
        for col in wide.columns:
            v = wide.loc[row, col].to_numpy(dtype=np.float64)
            test = spread_test(v, wide.loc[baseline, col].to_numpy(dtype=np.float64))
            out.append({"row": row, "column": col, "mean": float(v.mean()),
                        "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                        "n_seeds": int(v.size), "diff": test.diff,
                        "exceeds_spread": test.exceeds})  # fmt: skip
    return pd.DataFrame(out)


def format_domain_table(table: Any, baseline: str, paper: dict[str, float] | None = None) -> Any:
    """Wide display of :func:`domain_table` in %: ``mean ± std (Δ*)`` (Δ from ``baseline``,
    ``*`` = beyond the seed spread); a ``paper`` column when given (row → the paper's number)."""
    import pandas as pd

    def cell(r: Any) -> str:
        txt = f"{100 * r['mean']:.1f}" + ("" if np.isnan(r["std"]) else f" ± {100 * r['std']:.1f}")
        if r["row"] != baseline:
            txt += f" ({100 * r['diff']:+.1f}{'*' if r['exceeds_spread'] else ''})"
        return txt

    wide = table.assign(cell=table.apply(cell, axis=1)).pivot(
        index="row", columns="column", values="cell"
    )
    cols = list(dict.fromkeys(table["column"]))
    wide = pd.DataFrame(wide, index=list(dict.fromkeys(table["row"])), columns=cols)
    if paper is not None:
        wide["paper"] = [f"{paper[r]:.1f}" if r in paper else "" for r in wide.index]
    return wide


def rho_table(scores: Any, domains: Sequence[str], grid: tuple[int, int]) -> Any:
    """ρ sweep: per ρ, the cutoff k on the mixture layers' ``grid`` and mIoU mean ± std on clean
    and over the target domains."""
    import pandas as pd

    from workbench.methods.earth_adapter import low_pass_cutoff

    out = []
    for ratio, sub in scores.groupby("ratio"):
        wide = _per_seed(sub, domains)
        rec = {
            "ratio": float(ratio),
            "k": low_pass_cutoff(grid, float(ratio)),
            "n_seeds": len(wide),
        }
        for col in ("clean", TARGETS):
            v = wide[col].to_numpy(dtype=np.float64)
            rec[f"{col}_mean"] = float(v.mean())
            rec[f"{col}_std"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        out.append(rec)
    return pd.DataFrame(out)


def compare_rows(scores: Any, domains: Sequence[str], a: str, b: str) -> Any:
    """Row ``a`` minus row ``b`` per column (mIoU points), with :func:`spread_test`:
    DataFrame ``column, diff, spread, exceeds_spread`` (empty when either row is missing)."""
    import pandas as pd

    if not {a, b} <= set(scores["row"]):
        return pd.DataFrame(columns=["column", "diff", "spread", "exceeds_spread"])
    wide = _per_seed(scores, domains)
    out = []
    for col in wide.columns:
        test = spread_test(wide.loc[a, col].to_numpy(), wide.loc[b, col].to_numpy())
        out.append({"column": col, "diff": 100 * test.diff, "spread": 100 * test.spread,
                    "exceeds_spread": test.exceeds})  # fmt: skip
    return pd.DataFrame(out)


def trainable_table(result: StudyResult) -> Any:
    """Per DG row: trainable parameters (adapters, routers, scales, head), training seconds
    (mean over seeds) and, for its DA continuation, the mean confident pseudo-label fraction."""
    import pandas as pd

    recs = [{"table": t, "mode": m, "row": r, "ratio": rho, "seed": s, **info}
            for (t, m, r, rho, s), info in result.runs.items()]  # fmt: skip
    df = pd.DataFrame(recs)
    keys = ["table", "row", "ratio"]
    out = (
        df[df["mode"] == "dg"]
        .groupby(keys, sort=False)
        .agg(n_trainable=("n_trainable", "first"), dg_seconds=("seconds", "mean"))
    )
    da = df[df["mode"] == "da"]
    if len(da):
        out = out.join(
            da.groupby(keys, sort=False).agg(
                da_seconds=("seconds", "mean"), confident_fraction=("confident_fraction", "mean")
            )
        )
    return out.reset_index()
