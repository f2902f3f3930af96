"""LiT-style pretraining of the embedded default's heads: the recipe behind the shipped weights.

``notebooks/pretrain_default.ipynb`` is a thin driver over this module. The towers stay locked
(EfficientNet-Lite0 ImageNet, all-MiniLM-L6-v2; Zhai et al. 2022, "LiT": locked image, and here
locked text too — unlocking MiniLM's last layer gave no held-out gain at 12× the step time in the
prototype, see the model card); two MLP heads and the temperature train with InfoNCE on cached
tower features of every real captioned image set available offline:

============================  =================================================================
source                        what it contributes
============================  =================================================================
openclipart (train split)     real drawings with their titles/descriptions (3,636 with captions)
emoji (train split)           Noto Color Emoji glyphs with their Unicode CLDR names
tuxpaint-stamps (train split) cut-out photographs with their descriptions (real photos)
fashion-mnist (train split)   product photos with templated class captions (a seeded subset)
synthetic-world (train)       rendered scenes with compositional captions (attributes, counts)
============================  =================================================================

Held-out splits are fixed by a hash of each item's id (``workbench.data.splits``), never trained
on; digits and skimage's photos stay out of training entirely (true zero-shot). Repeated captions
in a batch ("a photo of a sneaker") are positives of each other (``infonce(caption_positives=
True)``). The number of steps was chosen once on a validation split carved out of train by the
same id hash with salt ``"val"`` (``holdout_by="id"``, 15 %): held-out R@1 peaked near 250 steps
and was flat after, hence 300 for the final fit on all of train.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MIXTURE",
    "PretrainConfig",
    "PretrainResult",
    "card_figure",
    "card_rows",
    "pretrain",
    "target_rows",
    "training_mixture",
    "validation_curve",
    "validation_figure",
    "write_card",
]

#: Training sources → items drawn from their train split (``None`` = all of it).
DEFAULT_MIXTURE: dict[str, int | None] = {
    "openclipart": None,
    "emoji": None,
    "tuxpaint-stamps": None,
    "fashion-mnist": 1000,
    "synthetic-world": 1000,
}


@dataclass
class PretrainConfig:
    """Parameters of ``notebooks/pretrain_default.ipynb`` (its ``parameters`` cell repeats these).

    Attributes:
        mixture: Source → train items drawn (seeded subset; ``None`` = the whole train split).
            Fashion and synthetic are capped at 1,000 so drawings and photos are not swamped by
            templated captions.
        steps: Optimiser steps (300: held-out R@1 on the validation split peaks near 250).
        batch_size: Contrastive batch (512: the negatives a CPU step affords).
        lr: Peak AdamW learning rate of the heads (1e-3).
        weight_decay: AdamW weight decay on ≥ 2-D weights (0.1, CLIP's).
        warmup: Linear warm-up steps, then cosine decay to 0.
        seed: Seeds the heads' initialisation, the subsets and the batch order.
        head: Head architecture (``"mlp"``: +0.04 held-out R@1 over linear heads in the prototype).
        mlp_hidden: Hidden width of the MLP heads.
        trainable: Trainable parts (``heads+logit_scale``: locked towers, learnable τ from 0.07).
        caption_positives: Identical captions in a batch are positives of each other.
        val_fraction: > 0 holds out this fraction of the training rows by id hash (salt ``"val"``)
            and logs held-out R@1 every ``eval_every`` steps — how ``steps`` was chosen; 0 trains
            on everything (the shipped fit).
        eval_every: Evaluation cadence with ``val_fraction`` > 0.
        val_curve_steps: Steps of the extra validation run (15 % held out by id hash, salt
            ``"val"``) that shows how ``steps`` was chosen; 0 skips it.
        fashion_test, digits: Held-out evaluation sizes (``None`` = the whole split).
        eval_datasets: Which held-out evaluations run (:class:`~workbench.evals.card.CardEvalConfig`).
        threads: Torch CPU threads (``None`` = torch's default).
        output_dir: Figures and ``summary.json``.
        weights_dir: Where the weights and the model card go (``None`` = ``output_dir``); the
            shipped ones live in ``workbench/encoders/weights``.
        run_root: Run directories of the training loop.
    """

    mixture: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_MIXTURE))
    steps: int = 300
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    seed: int = 0
    head: str = "mlp"
    mlp_hidden: int = 1024
    trainable: str = "heads+logit_scale"
    caption_positives: bool = True
    val_fraction: float = 0.0
    eval_every: int = 25
    val_curve_steps: int = 600
    fashion_test: int | None = None
    digits: int | None = None
    eval_datasets: tuple[str, ...] = (
        "openclipart",
        "emoji",
        "fashion-mnist",
        "digits",
        "tuxpaint-stamps",
        "skimage-photos",
        "synthetic-world",
    )
    threads: int | None = 2
    output_dir: str = "figures/pretrain_default"
    weights_dir: str | None = None
    run_root: str = "runs/pretrain_default"

    def __post_init__(self) -> None:
        from workbench.data import DATASETS

        if isinstance(self.eval_datasets, str):
            raise TypeError("eval_datasets must be a sequence of names, not one string")
        self.eval_datasets = tuple(self.eval_datasets)

        if not isinstance(self.mixture, dict) or not self.mixture:
            raise ValueError("mixture must be a non-empty dict {dataset: items or None}")
        for name, n in self.mixture.items():
            if name not in DATASETS:
                DATASETS.resolve(name)  # raises with a "did you mean"
            if n is not None and (not isinstance(n, int) or n < 2):
                raise ValueError(f"mixture[{name!r}] must be an int ≥ 2 or None, got {n!r}")
        checks = [
            (isinstance(self.steps, int) and self.steps >= 1, "steps must be an int ≥ 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 2, "batch_size must be ≥ 2"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be ≥ 0"),
            (0 <= self.warmup <= self.steps, "warmup must be in [0, steps]"),
            (self.head in ("linear", "mlp"), "head must be 'linear' or 'mlp'"),
            (self.mlp_hidden >= 1, "mlp_hidden must be ≥ 1"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.eval_every >= 1, "eval_every must be ≥ 1"),
            (
                isinstance(self.val_curve_steps, int) and self.val_curve_steps >= 0,
                "val_curve_steps must be an int ≥ 0",
            ),
            (self.threads is None or self.threads >= 1, "threads must be ≥ 1 or None"),
            (bool(self.output_dir), "output_dir must be a path"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"PretrainConfig: {msg}")
        from workbench.train import TrainConfig

        TrainConfig(trainable=self.trainable, steps=self.steps)  # validates the parts spec
        self.eval_config()  # validates the evaluation sizes and names

    def eval_config(self) -> Any:
        """The :class:`~workbench.evals.card.CardEvalConfig` of the held-out measurements."""
        from workbench.evals.card import CardEvalConfig

        return CardEvalConfig(
            fashion_test=self.fashion_test, digits=self.digits, datasets=self.eval_datasets
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PretrainResult:
    """A finished fit: the encoder, its run, what it trained on, how long it took.

    Attributes:
        encoder: The default encoder with the trained heads.
        run: The training loop's :class:`~workbench.train.Run`.
        counts: Source → training rows.
        seconds: ``{"embed": tower extraction (0 on a warm cache), "train": the loop}``.
    """

    encoder: Any
    run: Any
    counts: dict[str, int]
    seconds: dict[str, float]


def _train_split(name: str, n: int | None, seed: int) -> Any:
    import workbench as wb

    if name == "synthetic-world":
        return wb.load_dataset(name, split="train", size=n or 1000, seed=seed)
    return wb.load_dataset(name, split="train")


def training_mixture(encoder: Any, config: PretrainConfig) -> tuple[Any, dict[str, int]]:
    """The training rows: each source's train split (capped, seeded) embedded with tower features
    and joined with :meth:`~workbench.encoders.embeddings.Embeddings.concat`; and the counts."""
    import workbench as wb
    from workbench.encoders.embeddings import Embeddings

    parts, names = [], []
    for name, n in config.mixture.items():
        ds = _train_split(name, n, config.seed)
        size = None if n is None or name == "synthetic-world" else min(n, len(ds))
        parts.append(wb.embed(encoder, ds, size=size, seed=config.seed, tower_features=True))
        names.append(name)
    mix = Embeddings.concat(parts, names=names)
    return mix, {name: len(p) for name, p in zip(names, parts)}


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Fit the default's heads by the recipe (see the module docstring) and return them."""
    import torch

    import workbench as wb
    from workbench.train import TrainConfig, train

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    encoder = wb.load_encoder(
        "default", heads="random", head=config.head, mlp_hidden=config.mlp_hidden, seed=config.seed
    )
    t0 = time.perf_counter()
    mix, counts = training_mixture(encoder, config)
    t_embed = time.perf_counter() - t0
    held = config.val_fraction > 0
    cfg = TrainConfig(
        method="infonce",
        method_config={"caption_positives": config.caption_positives},
        encoder=None,
        dataset=None,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup=config.warmup,
        seed=config.seed,
        device="cpu",
        trainable=config.trainable,
        data="cached",
        holdout=config.val_fraction if held else 0,
        holdout_by="id" if held else "row",
        eval_every=config.eval_every if held else 0,
        log_every=max(1, config.steps // 30),
        snapshot_every=0,
        run_root=config.run_root,
        run_name="pretrain-default",
    )
    t0 = time.perf_counter()
    run = train(cfg, embeddings=mix, encoder=encoder, progress=None)
    return PretrainResult(
        run.encoder, run, counts, {"embed": t_embed, "train": time.perf_counter() - t0}
    )


def write_card(
    result: PretrainResult, config: PretrainConfig, metrics: dict[str, Any], out_dir: str | Path
) -> dict[str, Path]:
    """Write ``default_heads.safetensors``, ``.json`` (the card as data, with the sha256) and
    ``.md`` into ``out_dir``; return their paths. Copy all three into
    ``workbench/encoders/weights`` to ship them."""
    import platform

    import torch
    from safetensors.torch import save_file

    import workbench
    from workbench.encoders.shipped import sha256_of

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = result.encoder
    tensors = {f"image_head.{k}": v for k, v in enc.image_head.state_dict().items()}
    tensors |= {f"text_head.{k}": v for k, v in enc.text_head.state_dict().items()}
    tensors["logit_scale"] = enc.logit_scale.detach().reshape(1)
    weights = out / "default_heads.safetensors"
    save_file({k: v.detach().contiguous().cpu().float() for k, v in tensors.items()}, str(weights))
    ec = enc.config
    card = {
        "model": "workbench embedded default: EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, "
        "locked towers, pretrained heads",
        "sha256": sha256_of(weights),
        "bytes": weights.stat().st_size,
        "architecture": {
            "head": ec.head,
            "mlp_hidden": ec.mlp_hidden,
            "embed_dim": ec.embed_dim,
            "resolution": ec.resolution,
            "crop_pct": ec.crop_pct,
            "max_length": ec.max_length,
        },
        "recipe": config.to_dict(),
        "training_rows": result.counts,
        "final_temperature": float(1 / enc.logit_scale.detach().exp()),
        "seconds": result.seconds,
        "metrics": metrics,
        "eval_config": config.eval_config().to_dict(),
        "versions": {
            "workbench": workbench.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reproduce": "papermill notebooks/pretrain_default.ipynb out.ipynb -k workbench",
    }
    card_json = out / "default_heads.json"
    card_json.write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    card_md = out / "default_heads.md"
    card_md.write_text(card_markdown(card))
    return {"weights": weights, "card": card_json, "card_md": card_md}


def card_markdown(card: dict[str, Any]) -> str:
    """The model card for people (what ``default_heads.md`` holds)."""
    m, arch = card["metrics"], card["architecture"]
    lines = [
        "# Model card: the embedded default's pretrained heads",
        "",
        f"{card['model']}. Heads: {arch['head']} (hidden {arch['mlp_hidden']}) into "
        f"{arch['embed_dim']}-d, {arch['resolution']} px images, final τ = "
        f"{card['final_temperature']:.4f}. File `default_heads.safetensors`, {card['bytes']:,} bytes, "
        f"sha256 `{card['sha256']}` (checked on every load).",
        "",
        "## Data (train splits only; held-out splits fixed by a hash of each item's id)",
        "",
        "| source | training rows |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in card["training_rows"].items()],
        "",
        "digits and skimage's photos are never trained on (true zero-shot).",
        "",
        "## Held-out metrics (each beside its chance level)",
        "",
        "| measurement | value | chance |",
        "|---|---|---|",
    ]
    for row in card_rows(m):
        lines.append(f"| {row[0]} | {row[1]} | {row[2]} |")
    rc = card["recipe"]
    lines += [
        "",
        "## Recipe",
        "",
        f"InfoNCE (identical captions are positives), {rc['steps']} steps, batch {rc['batch_size']}, "
        f"AdamW lr {rc['lr']} (warm-up {rc['warmup']}, cosine), weight decay {rc['weight_decay']}, "
        f"trainable `{rc['trainable']}`, seed {rc['seed']}. Versions: {card['versions']}.",
        f"Reproduce: `{card['reproduce']}`.",
        "",
    ]
    return "\n".join(lines)


def card_rows(m: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(measurement, value, chance)`` rows of the card's metrics, as strings."""
    rows: list[tuple[str, str, str]] = []

    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    for ds in ("openclipart", "emoji"):
        if ds in m:
            r = m[ds]
            for tag in ("keyed", "strict"):
                for d in ("i2t", "t2i"):
                    vals = "/".join(pct(r[f"{tag}/{d}_R@{k}"]) for k in (1, 5, 10))
                    rows.append(
                        (
                            f"{ds} {d} R@1/5/10 ({tag}, gallery {r['gallery']})",
                            vals,
                            pct(r["chance_R@1"]),
                        )
                    )
    for ds in ("fashion-mnist", "digits", "skimage-photos", "tuxpaint-photos"):
        if ds in m:
            r = m[ds]
            rows.append(
                (
                    f"{ds} zero-shot top-1 (n {r['n']}, {r['classes']} classes)",
                    pct(r["top1"]),
                    pct(r["chance"]),
                )
            )
    if "synthetic-mmvp" in m:
        r = m["synthetic-mmvp"]
        rows.append(
            (
                f"synthetic MMVP-style pairs ({r['pairs']})",
                pct(r["pair_accuracy"]),
                pct(r["chance"]),
            )
        )
    if "synthetic-compositional" in m:
        r = m["synthetic-compositional"]
        rows.append(
            (
                "synthetic compositional (caption vs hard negatives)",
                pct(r["accuracy"]),
                pct(r["chance"]),
            )
        )
    if "geometry" in m:
        g = m["geometry"]
        rows.append(("centroid gap ‖Δ‖ (openclipart test)", f"{g['centroid_gap']:.3f}", "—"))
        rows.append(
            (
                "mean intra-modality cosine image / text",
                f"{g['cone_width_image']:.3f} / {g['cone_width_text']:.3f}",
                "—",
            )
        )
        rows.append(
            (
                "effective rank image / text",
                f"{g['effective_rank_image']:.1f} / {g['effective_rank_text']:.1f}",
                "—",
            )
        )
    return rows


def validation_curve(config: PretrainConfig) -> Any:
    """How ``steps`` was chosen: the same recipe for ``val_curve_steps`` steps with 15 % of the
    training rows held out by id hash; DataFrame ``step, i2t_r1, t2i_r1, infonce`` (held-out)."""
    import dataclasses

    import pandas as pd

    from workbench.train import RunDir

    val = dataclasses.replace(config, steps=config.val_curve_steps, val_fraction=0.15, val_curve_steps=0,
                              warmup=min(config.warmup, config.val_curve_steps))  # fmt: skip
    res = pretrain(val)
    rows = [
        {
            "step": r["step"],
            "i2t_r1": r["metrics"]["heldout/i2t_r1"],
            "t2i_r1": r["metrics"]["heldout/t2i_r1"],
            "infonce": r["metrics"]["heldout/infonce"],
        }
        for r in RunDir(res.run.run_dir).evals()
    ]
    return pd.DataFrame(rows)


def validation_figure(curve: Any, chosen: int) -> Any:
    """Held-out R@1 (strict, validation split) vs step, the chosen step marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for col, name in (("i2t_r1", "image→text R@1"), ("t2i_r1", "text→image R@1")):
        fig.add_trace(
            go.Scatter(x=curve["step"], y=100 * curve[col], mode="lines+markers", name=name)
        )
    fig.add_vline(x=chosen, line_dash="dash", annotation_text=f"steps = {chosen}")
    fig.update_layout(title="Validation split (15 % of train, by id hash): held-out R@1 vs step",
                      xaxis_title="step", yaxis_title="R@1 (%, strict)")  # fmt: skip
    return fig


def card_figure(metrics: dict[str, Any]) -> Any:
    """Each held-out score beside its chance level (bars, %)."""
    import plotly.graph_objects as go

    names, vals, chance = [], [], []
    for ds in ("openclipart", "emoji"):
        if ds in metrics:
            r = metrics[ds]
            for d in ("i2t", "t2i"):
                names.append(f"{ds} {d} R@1 (keyed)")
                vals.append(r[f"keyed/{d}_R@1"])
                chance.append(r["chance_R@1"])
    for ds in ("fashion-mnist", "digits", "tuxpaint-photos", "skimage-photos"):
        if ds in metrics:
            names.append(f"{ds} zero-shot")
            vals.append(metrics[ds]["top1"])
            chance.append(metrics[ds]["chance"])
    for ds, key in (("synthetic-mmvp", "pair_accuracy"), ("synthetic-compositional", "accuracy")):
        if ds in metrics:
            names.append(ds)
            vals.append(metrics[ds][key])
            chance.append(metrics[ds]["chance"])
    fig = go.Figure(
        [
            go.Bar(x=names, y=[100 * v for v in vals], name="held-out score"),
            go.Bar(x=names, y=[100 * c for c in chance], name="chance"),
        ]
    )
    fig.update_layout(title="The pretrained default on held-out data", barmode="group",
                      yaxis_title="%", xaxis_tickangle=-30)  # fmt: skip
    return fig


def target_rows(metrics: dict[str, Any]) -> list[tuple[str, float, float, bool | None]]:
    """The pretraining issue's targets against what was measured: ``(target, measured, bar or
    chance, met)``, for the evaluations that ran (``met`` is ``None`` for report-as-measured)."""
    rows: list[tuple[str, float, float, bool | None]] = []
    if "openclipart" in metrics:
        oc = metrics["openclipart"]
        ok = oc["gallery"] >= 1000 and oc["keyed/i2t_R@1"] >= 0.35
        rows.append(
            ("openclipart image→text R@1, keyed, gallery ≥ 1,000", oc["keyed/i2t_R@1"], 0.35, ok)
        )
    if "fashion-mnist" in metrics:
        top1 = metrics["fashion-mnist"]["top1"]
        rows.append(
            ("Fashion-MNIST test zero-shot (classes seen in training)", top1, 0.70, top1 >= 0.70)
        )
    if "digits" in metrics:
        d = metrics["digits"]
        rows.append(
            ("digits zero-shot (never trained on; as measured)", d["top1"], d["chance"], None)
        )
    if "tuxpaint-photos" in metrics:
        t = metrics["tuxpaint-photos"]
        rows.append(("held-out real photos zero-shot ≥ 5× chance (Tux Paint)", t["top1"], t["chance"],
                     t["top1"] >= 5 * t["chance"]))  # fmt: skip
    return rows
