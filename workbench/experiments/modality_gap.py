"""The modality-gap study behind ``notebooks/modality_gap.ipynb``: its config and its analyses.

The notebook is a thin driver; every computation it shows lives here (and is tested):

* :class:`ModalityGapConfig` — the papermill parameters, validated.
* :func:`load_gap_data` — embeds a fit pool (its images and captions handed to ReAlign as two
  unpaired arrays) and a held-out paired evaluation set.
* :func:`alignment_variants` — original / C3 / ReAlign (and its step prefixes) on held-out text.
* :func:`ablation_rows` — ReAlign Tab. 5 analogue: centroid gap, text→image R@1, zero-shot with
  aligned prompts, and a classifier trained on aligned *text* but tested on *images*.
* :func:`stability_curve` — ReAlign Fig. 6: fitted statistics vs number of unpaired samples.
* :func:`centroid_gaps`, :func:`variant_spectra`, :func:`variant_cosine_kdes`,
  :func:`variant_knn_mixing`, :func:`fixed_frame_summary` — ReAlign Figs. 3, 4a, 4b, 5 and the
  §3 decomposition, each over the same variants.
* :func:`load_baseline_eval` — the same held-out items through the default's pretrained towers
  with ``heads="random"``: Mind the Gap's random-init baseline for the gap and the cone.
* :func:`paper_vs_ours` — the papers' numbers (spec ``methods-geometry.md`` §2.3, §3) beside ours.

The study runs on the pretrained default (``load_encoder("default")``: shipped MLP heads and a
trained temperature, card ``workbench/encoders/weights/default_heads.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workbench.experiments._gap_analyses import (
    FIG_VARIANTS,
    AlignedSet,
    ablation_rows,
    alignment_variants,
    centroid_gaps,
    fixed_frame_summary,
    stability_curve,
    variant_cosine_kdes,
    variant_knn_mixing,
    variant_spectra,
)

__all__ = [
    "FIG_VARIANTS",
    "PAPER",
    "AlignedSet",
    "GapData",
    "ModalityGapConfig",
    "ablation_rows",
    "alignment_variants",
    "centroid_gaps",
    "encoder_temperature",
    "fixed_frame_summary",
    "load_baseline_eval",
    "load_gap_data",
    "paper_vs_ours",
    "stability_curve",
    "variant_cosine_kdes",
    "variant_knn_mixing",
    "variant_spectra",
]


#: Encoder names whose factory takes ``heads="random"`` (the cone baseline needs it).
_DEFAULT_NAMES = ("default", "lit-effnet-minilm")

#: The papers' numbers [paper] (spec ``methods-geometry.md`` §3 for Mind the Gap: CLIP on 5,000
#: MSCOCO val pairs; §2.3 for ReAlign: LLM2CLIP-L-14-336 on 100k samples). ReAlign's Tab. 5 is
#: a downstream VLM average (11 benchmarks), not retrieval: no paper figure exists for our
#: text→image R@1 row.
PAPER: dict[str, Any] = {
    "gap_norm": 0.82,
    "cone_width_trained": "0.56 / 0.47 / 0.51 (ResNet / ViT / text)",
    "cone_width_random_init": "≈ 0.99 (random-init ResNet)",
    "loss_argmin_lambda_tau_0.01": 0.0,
    "realign_gap_original": 0.3918,
    "realign_gap_c3": 0.0023,
    "realign_gap_realign": 2.64e-4,
    "alpha": {"image": 1.83, "text": 1.33, "C3": 1.06, "ReAlign": 1.33},
    "cosine_js": {"C3": 0.19, "ReAlign": 0.0066},
    "knn_mixing": {"original": 0.0032, "C3": 0.0131, "ReAlign": 0.0435},
    "tab5_downstream_avg": {"anchor": 46.68, "anchor+trace": 48.67, "ReAlign": 50.16},
}


@dataclass
class ModalityGapConfig:
    """Parameters of the modality-gap notebook (its ``parameters`` cell repeats these defaults).

    Attributes:
        encoder: registry id for ``workbench.load_encoder`` ("default" = the shipped pretrained
            model: trained MLP heads and temperature on frozen towers).
        dataset: registry id for ``workbench.load_dataset`` (synthetic-world: its ``test``
            stream is held out of the default's pretraining, which saw 1,000 ``train`` items).
        n_fit: unpaired samples *per modality* for the ReAlign / C3 fit. ReAlign's statistics
            settle after ≈ 1e4 samples (its Fig. 6); 2,000 because the towers must run on every
            new item: 3,000 items took 4.7 min on the shared 2-core machine (load ≈ 15), so the
            former 10,000 + 8,000 would take ≈ 28 min of embedding alone (this study's own
            Fig. 6 curve shows the fit error at 2,000).
        n_eval: held-out paired items for every evaluation (Mind the Gap used 5,000 pairs; 1,000
            for the same cost reason, still a retrieval gallery of 1,000).
        seed: seeds item sampling, C3 noise and subsampling.
        k: neighbours for the k-NN mixing rate (ReAlign Fig. 5 uses 20).
        temperature: τ of the CLIP loss in the shift experiment (1/100 = CLIP's learned τ).
        c3_sigma: C3's per-coordinate noise std (not given by ReAlign; our reading).
        cone_inits: random initialisations in the cone experiment (25 in Mind the Gap Fig. 2c).
        cone_samples: Gaussian inputs per initialisation.
        stability_sizes: N values for the Fig. 6 stability curve (those ≤ n_fit are used).
        cone_baseline: also embed the held-out items with the default's pretrained towers and
            ``heads="random"`` (Mind the Gap's random-init point: its gap and cone widths beside
            the trained model's). Needs ``encoder="default"``.
        output_dir: where figures and ``summary.json`` go.
    """

    encoder: str = "default"
    dataset: str = "synthetic-world"
    n_fit: int = 2_000
    n_eval: int = 1_000
    seed: int = 0
    k: int = 20
    temperature: float = 0.01
    c3_sigma: float = 0.02
    cone_inits: int = 5
    cone_samples: int = 1_000
    stability_sizes: tuple[int, ...] = (30, 100, 300, 1_000, 2_000)
    cone_baseline: bool = True
    output_dir: str = "figures/modality_gap"

    def __post_init__(self) -> None:
        from workbench._validate import as_float, as_int, as_int_tuple
        from workbench.data import check_dataset_name
        from workbench.encoders.registry import check_encoder_name

        own = "ModalityGapConfig"
        check_encoder_name(self.encoder, "encoder", owner=own)
        check_dataset_name(self.dataset, "dataset", owner=own)
        self.stability_sizes = as_int_tuple(
            self.stability_sizes, "stability_sizes", owner=own, lo=2
        )
        self.n_fit = as_int(self.n_fit, f"{own}: n_fit", lo=10)
        self.k = as_int(self.k, f"{own}: k", lo=1)
        self.n_eval = as_int(self.n_eval, f"{own}: n_eval", lo=max(10, self.k + 1))
        self.seed = as_int(self.seed, f"{own}: seed", lo=0)
        self.temperature = as_float(self.temperature, f"{own}: temperature", lo=0.0, lo_open=True)
        self.c3_sigma = as_float(self.c3_sigma, f"{own}: c3_sigma", lo=0.0)
        self.cone_inits = as_int(self.cone_inits, f"{own}: cone_inits", lo=2)
        self.cone_samples = as_int(self.cone_samples, f"{own}: cone_samples", lo=2)
        if not isinstance(self.cone_baseline, bool):
            raise TypeError(
                f"{own}: cone_baseline must be True or False, got {self.cone_baseline!r}"
            )
        if self.cone_baseline and self.encoder not in _DEFAULT_NAMES:
            raise ValueError(
                f"{own}: cone_baseline needs encoder='default' (it loads heads='random'), got "
                f"{self.encoder!r}; set cone_baseline=False"
            )
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"{own}: output_dir must be a non-empty path, got {self.output_dir!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GapData:
    """Embeddings of one study, raw (un-normalised) float32 rows.

    Attributes:
        fit_image: (n_fit, d) images of the fit pool.
        fit_text: (n_fit, d) captions of the fit pool in an independent random order (unpaired).
        fit_text_labels: (n_fit,) labels of the items whose captions ``fit_text`` holds (−1: none).
        eval: the held-out paired :class:`~workbench.encoders.embeddings.Embeddings` (n_eval rows).
        class_prompts: (K, T, d) L2-normalised class-prompt embeddings, or None when unlabelled.
        embed_seconds: wall time spent embedding (0 on a cache hit).
        temperature: the encoder's own τ = 1/exp(logit_scale), or None without a logit scale.
    """

    fit_image: np.ndarray
    fit_text: np.ndarray
    fit_text_labels: np.ndarray
    eval: Any
    class_prompts: np.ndarray | None
    embed_seconds: float
    temperature: float | None = None


def encoder_temperature(enc: Any) -> float | None:
    """The encoder's learned τ = 1 / exp(logit_scale) (CLIP's parameterisation), or None."""
    scale = getattr(enc, "logit_scale", None)
    if scale is None:
        return None
    return float(1.0 / np.exp(float(scale.detach().float().cpu())))


def _embed_pools(cfg: ModalityGapConfig, enc: Any) -> tuple[Any, Any, float]:
    """(fit-pool embeddings, held-out embeddings, seconds). Each pool is one cached ``embed`` call.

    synthetic-world has independent ``train``/``test`` streams: the fit pool is ``n_fit`` train
    items and the held-out set ``n_eval`` test items. Other datasets are split by a seeded
    permutation of ``n_fit + n_eval`` items.
    """
    import time

    import workbench as wb

    t0 = time.perf_counter()
    if cfg.dataset == "synthetic-world":
        pools = [
            wb.embed(enc, wb.load_dataset(cfg.dataset, split=split, size=n, seed=cfg.seed))
            for split, n in (("train", cfg.n_fit), ("test", cfg.n_eval))
        ]
        return pools[0], pools[1], time.perf_counter() - t0
    total = cfg.n_fit + cfg.n_eval
    data = wb.load_dataset(cfg.dataset)
    if len(data) < total:
        raise ValueError(
            f"{cfg.dataset!r} has {len(data)} items but n_fit + n_eval = {total} are needed; "
            f"lower n_fit / n_eval"
        )
    emb = wb.embed(enc, data, size=total, seed=cfg.seed)
    order = np.random.default_rng(cfg.seed).permutation(total)
    fit, held = emb.subset(np.sort(order[: cfg.n_fit])), emb.subset(np.sort(order[cfg.n_fit :]))
    return fit, held, time.perf_counter() - t0


def load_gap_data(cfg: ModalityGapConfig, encoder: Any = None) -> GapData:
    """Embed a fit pool of ``n_fit`` items and ``n_eval`` held-out items with ``cfg.encoder``.

    ReAlign / C3 get the fit pool's images and its captions as two *unpaired* arrays: the captions
    are put in an independent random order, so no row of one matches a row of the other, and the
    estimators only ever form per-modality moments. The held-out items, never seen by any fit,
    are the paired evaluation set (synthetic-world: its independent ``test`` stream).
    """
    import workbench as wb
    from workbench.probes.separability import zero_shot_classifier

    enc = encoder if encoder is not None else wb.load_encoder(cfg.encoder)
    fit, held, seconds = _embed_pools(cfg, enc)
    txt_rows = np.random.default_rng(cfg.seed).permutation(len(fit))  # unpaired order
    prompts = None
    if held.class_names and held.has_labels:
        prompts = zero_shot_classifier(enc, held.class_names)
    return GapData(
        fit_image=fit.image,
        fit_text=fit.text[txt_rows],
        fit_text_labels=fit.labels[txt_rows],
        eval=held,
        class_prompts=prompts,
        embed_seconds=seconds,
        temperature=encoder_temperature(enc),
    )


def load_baseline_eval(cfg: ModalityGapConfig) -> Any:
    """The held-out items of :func:`load_gap_data` embedded by the default's pretrained towers
    with seeded, untrained linear heads (``load_encoder(cfg.encoder, heads="random")``).

    Mind the Gap's random-init baseline (its Fig. 1b/2: a gap and a cone exist before any
    training). The towers' features come from the embedding cache the trained run filled (keyed
    by tower identity), so only the heads run.
    """
    import workbench as wb

    if cfg.encoder not in _DEFAULT_NAMES:
        raise ValueError(
            f"load_baseline_eval: needs encoder='default' (heads='random'), got {cfg.encoder!r}"
        )
    _, held, _ = _embed_pools(cfg, wb.load_encoder(cfg.encoder, heads="random"))
    return held


def paper_vs_ours(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"quantity", "paper", "ours"}``: :data:`PAPER` beside this study's ``summary.json``.

    ``summary`` needs the keys the notebook writes (``gap``, ``shift``, ``centroid_gap``,
    ``power_law_alpha``, ``cosine_js``, ``knn_mixing``, ``ablation``); ``gap_random_heads`` is used
    when present. Formatting only: every number comes from ``summary`` or :data:`PAPER`.
    """
    missing = [
        k
        for k in ("gap", "shift", "centroid_gap", "power_law_alpha", "cosine_js", "knn_mixing",
                  "ablation")
        if k not in summary
    ]  # fmt: skip
    if missing:
        raise ValueError(f"paper_vs_ours: summary lacks {missing}; run the notebook's cells first")
    g, sh, cg = summary["gap"], summary["shift"], summary["centroid_gap"]
    base = summary.get("gap_random_heads")
    ab = {r["variant"]: r for r in summary["ablation"]}
    rows = [
        ("‖Δ‖ gap of the trained model", PAPER["gap_norm"], g["gap_norm"]),
        (
            "cone width (mean intra cosine) image / text, trained",
            PAPER["cone_width_trained"],
            f"{g['cone_width_image']:.3f} / {g['cone_width_text']:.3f}",
        ),
        (
            "cone width image / text, random init (ours: pretrained towers, random heads)",
            PAPER["cone_width_random_init"],
            "—"
            if base is None
            else f"{base['cone_width_image']:.3f} / {base['cone_width_text']:.3f}",
        ),
        (
            "‖Δ‖ gap at random init (ours: random heads)",
            "1.19 (from scratch, before training)",
            "—" if base is None else base["gap_norm"],
        ),
        (
            f"λ of the loss minimum at τ = {sh.get('temperature', 0.01)}",
            PAPER["loss_argmin_lambda_tau_0.01"],
            sh["loss_argmin_lambda"],
        ),
        ("ReAlign Fig. 3 held-out gap: original", PAPER["realign_gap_original"], cg["original"]),
        ("… C3", PAPER["realign_gap_c3"], cg["C3"]),
        ("… ReAlign", PAPER["realign_gap_realign"], cg["ReAlign"]),
        *(
            (f"power-law α {k}", v, summary["power_law_alpha"].get(k))
            for k, v in PAPER["alpha"].items()
        ),
        *(
            (f"cosine JS to images {k}", v, summary["cosine_js"].get(k))
            for k, v in PAPER["cosine_js"].items()
        ),
        *(
            (f"k-NN mixing (k = 20) {k}", v, summary["knn_mixing"].get(k))
            for k, v in PAPER["knn_mixing"].items()
        ),
        *(
            (
                f"Tab. 5 {k}: paper downstream avg / ours text→image R@1",
                v,
                ab.get(k, {}).get("t2i_r1"),
            )
            for k, v in PAPER["tab5_downstream_avg"].items()
        ),
        ("text→image R@1, original (no paper figure)", "—", ab.get("original", {}).get("t2i_r1")),
    ]
    return [{"quantity": q, "paper": p, "ours": o} for q, p, o in rows]
