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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workbench.probes.realign import C3, REALIGN_STEPS, ReAlign

__all__ = [
    "FIG_VARIANTS",
    "AlignedSet",
    "GapData",
    "ModalityGapConfig",
    "ablation_rows",
    "alignment_variants",
    "centroid_gaps",
    "fixed_frame_summary",
    "load_gap_data",
    "stability_curve",
    "variant_cosine_kdes",
    "variant_knn_mixing",
    "variant_spectra",
]

#: The three variants ReAlign's Figs. 3–5 compare.
FIG_VARIANTS: tuple[str, ...] = ("original", "C3", "ReAlign")


@dataclass
class ModalityGapConfig:
    """Parameters of the modality-gap notebook (its ``parameters`` cell repeats these defaults).

    Attributes:
        encoder: registry id for ``workbench.load_encoder`` ("default" = the embedded model).
        dataset: registry id for ``workbench.load_dataset``.
        n_fit: unpaired samples *per modality* for the ReAlign / C3 fit; ReAlign's statistics
            settle after ≈ 1e4 samples (its Fig. 6), hence 10,000.
        n_eval: held-out paired items for every evaluation (Mind the Gap used 5,000 pairs).
        seed: seeds item sampling, C3 noise and subsampling.
        k: neighbours for the k-NN mixing rate (ReAlign Fig. 5 uses 20).
        temperature: τ of the CLIP loss in the shift experiment (1/100 = CLIP's learned τ).
        c3_sigma: C3's per-coordinate noise std (not given by ReAlign; our reading).
        cone_inits: random initialisations in the cone experiment (25 in Mind the Gap Fig. 2c).
        cone_samples: Gaussian inputs per initialisation.
        stability_sizes: N values for the Fig. 6 stability curve (those ≤ n_fit are used).
        output_dir: where figures and ``summary.json`` go.
    """

    encoder: str = "default"
    dataset: str = "synthetic-world"
    n_fit: int = 10_000
    n_eval: int = 8_000
    seed: int = 0
    k: int = 20
    temperature: float = 0.01
    c3_sigma: float = 0.02
    cone_inits: int = 5
    cone_samples: int = 1_000
    stability_sizes: tuple[int, ...] = (30, 100, 300, 1_000, 3_000, 10_000)
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
    """

    fit_image: np.ndarray
    fit_text: np.ndarray
    fit_text_labels: np.ndarray
    eval: Any
    class_prompts: np.ndarray | None
    embed_seconds: float


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
    )


@dataclass
class AlignedSet:
    """One variant's held-out text and the images it should be compared with (same frame).

    Attributes:
        name: "original", "C3", "anchor", "anchor+trace" or "ReAlign".
        text: (n, d) transformed held-out text (unit-norm except C3 and anchor).
        image: (n, d) held-out images in the variant's frame (C3 centres them; others raw-normed).
        fit_text: (n_fit, d) the transformed fit text (for text-trained classifiers).
        image_target: (d,) the image centroid the variant aims at (fit statistics).
        prompts: (K, T, d) class prompts through the same transform, or None.
    """

    name: str
    text: np.ndarray
    image: np.ndarray
    fit_text: np.ndarray
    image_target: np.ndarray
    prompts: np.ndarray | None


def _unit(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


def alignment_variants(data: GapData, realign: ReAlign, c3: C3) -> dict[str, AlignedSet]:
    """Original, C3 and every ReAlign prefix applied to held-out text (and prompts).

    ``realign`` and ``c3`` must already be fitted on ``data.fit_image`` / ``data.fit_text``.
    """
    ev = data.eval
    img = _unit(ev.image)
    prompts = data.class_prompts
    flat = None if prompts is None else prompts.reshape(-1, prompts.shape[-1])

    def reshape(P: np.ndarray | None) -> np.ndarray | None:
        return None if P is None else P.reshape(prompts.shape)

    out = {
        "original": AlignedSet(
            "original", _unit(ev.text), img, _unit(data.fit_text), realign.mu_x_, prompts
        ),
        "C3": AlignedSet(
            "C3",
            c3.transform(ev.text),
            c3.transform_image(ev.image),
            c3.transform(data.fit_text),
            np.zeros_like(c3.mu_x_),
            reshape(None if flat is None else flat - c3.mu_y_),  # prompts are centred, not noised
        ),
    }
    for steps in REALIGN_STEPS:
        name = "ReAlign" if steps == "full" else steps
        out[name] = AlignedSet(
            name,
            realign.transform(ev.text, steps=steps),
            img,
            realign.transform(data.fit_text, steps=steps),
            realign.mu_x_,
            reshape(None if flat is None else realign.transform(flat, steps=steps)),
        )
    return out


def _centroid_text_classifier(
    fit_text: np.ndarray, labels: np.ndarray, image: np.ndarray
) -> np.ndarray:
    """Predict image labels with class centroids of *text* (cosine): text stands in for images."""
    classes = np.unique(labels[labels >= 0])
    cent = np.stack([fit_text[labels == c].mean(axis=0) for c in classes])
    return classes[np.argmax(_unit(image) @ _unit(cent).T, axis=1)]


def ablation_rows(variants: dict[str, AlignedSet], data: GapData) -> list[dict[str, Any]]:
    """ReAlign Tab. 5 analogue, one row per variant, all on held-out items.

    Columns: ``gap_to_target`` ‖µ_target − mean(text)‖ (µ_target = fit image centroid, the
    origin for C3); ``gap_to_heldout_images`` ‖mean(images) − mean(text)‖ (both held out, so it
    includes sampling noise ≈ sqrt((T_x + T_y)/n)); ``t2i_r1`` text→image Recall@1 with aligned
    text as queries; ``zero_shot`` accuracy with class prompts passed through the same transform;
    ``text_trained_acc`` — class centroids of the aligned *fit text* classify held-out *images*
    (the ReVision use: text stands in for images when training).
    """
    from workbench.probes.gap import retrieval_accuracy
    from workbench.probes.separability import zero_shot_accuracy

    ev = data.eval
    labelled = bool(ev.has_labels) and (data.fit_text_labels >= 0).any()
    rows = []
    for name, v in variants.items():
        row: dict[str, Any] = {
            "variant": name,
            "gap_to_target": float(np.linalg.norm(v.image_target - v.text.mean(axis=0))),
            "gap_to_heldout_images": float(
                np.linalg.norm(v.image.mean(axis=0) - v.text.mean(axis=0))
            ),
            "t2i_r1": retrieval_accuracy(v.image, v.text)["t2i"],
        }
        if labelled and v.prompts is not None:
            row["zero_shot"] = zero_shot_accuracy(v.image, v.prompts, ev.labels)
        if labelled:
            pred = _centroid_text_classifier(v.fit_text, data.fit_text_labels, v.image)
            row["text_trained_acc"] = float((pred == ev.labels).mean())
        rows.append(row)
    return rows


def stability_curve(
    fit_image: np.ndarray,
    fit_text: np.ndarray,
    sizes: Sequence[int],
    *,
    eval_text: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """ReAlign Fig. 6: how fitted statistics converge with the number N of unpaired samples.

    For each N, ReAlign is fitted on N random images and N random captions (subsets of the fit
    sets) and compared with the fit on everything: relative errors ‖µ_x(N) − µ_x‖/‖µ_x‖, the same
    for µ_y and µ'_y, |s(N) − s|/s, and (with ``eval_text``) the held-out centroid gap after
    alignment ‖µ_x − mean ReAlign_N(eval_text)‖.

    Returns a dict of lists keyed by statistic plus ``"sizes"``.
    """
    full = ReAlign().fit(fit_image, fit_text)
    n_max = min(len(fit_image), len(fit_text))
    sizes = [int(s) for s in sizes if s <= n_max]
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {
        k: [] for k in ("mu_x", "mu_y", "mu_y_prime", "scale", "heldout_gap")
    }

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    for n in sizes:
        ix = rng.choice(len(fit_image), n, replace=False)
        iy = rng.choice(len(fit_text), n, replace=False)
        part = ReAlign().fit(fit_image[ix], fit_text[iy])
        out["mu_x"].append(rel(part.mu_x_, full.mu_x_))
        out["mu_y"].append(rel(part.mu_y_, full.mu_y_))
        out["mu_y_prime"].append(rel(part.mu_y_prime_, full.mu_y_prime_))
        out["scale"].append(abs(part.scale_ - full.scale_) / full.scale_)
        if eval_text is not None:
            out["heldout_gap"].append(
                float(np.linalg.norm(full.mu_x_ - part.transform(eval_text).mean(axis=0)))
            )
    if eval_text is None:
        del out["heldout_gap"]
    return {"sizes": sizes, **out}


def centroid_gaps(variants: dict[str, AlignedSet], realign: ReAlign, n_eval: int) -> dict[str, Any]:
    """ReAlign Fig. 3: ``‖µ_x − mean(aligned held-out text)‖`` for original / C3 / ReAlign.

    ``µ_x`` is each variant's image target (the fit's image centroid; the origin for C3). Also
    returns the shrink factor original/ReAlign and the held-out sampling-noise floor
    ``sqrt(T_x / n_eval)`` below which no aligner can push the gap of ``n_eval`` samples.
    """
    gaps = {
        name: float(np.linalg.norm(variants[name].image_target - variants[name].text.mean(axis=0)))
        for name in FIG_VARIANTS
    }
    return {
        **gaps,
        "shrink_factor": gaps["original"] / gaps["ReAlign"],
        "sampling_noise_floor": float(np.sqrt(realign.trace_x_ / n_eval)),
        "n_heldout_text": int(n_eval),
    }


def variant_spectra(variants: dict[str, AlignedSet]) -> tuple[dict[str, Any], dict[str, float]]:
    """ReAlign Fig. 4a: trace-normalised spectra and power-law α of images, text, C3, ReAlign."""
    from workbench.probes.distribution import trace_normalized_spectrum_alpha

    sets = {
        "image": variants["original"].image,
        "text": variants["original"].text,
        "C3": variants["C3"].text,
        "ReAlign": variants["ReAlign"].text,
    }
    spectra, alphas = {}, {}
    for name, emb in sets.items():
        spectra[name], alphas[name] = trace_normalized_spectrum_alpha(emb)
    return spectra, alphas


def variant_cosine_kdes(variants: dict[str, AlignedSet], seed: int = 0) -> dict[str, Any]:
    """ReAlign Fig. 4b: each variant's within-text cosine KDE against its frame's images (JS, bits)."""
    from workbench.probes.distribution import cosine_js_divergence

    return {
        name: cosine_js_divergence(variants[name].text, variants[name].image, seed=seed)
        for name in FIG_VARIANTS
    }


def variant_knn_mixing(
    variants: dict[str, AlignedSet], k: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """ReAlign Fig. 5: k-NN mixing rate per variant, and how much of each text's 10-NN
    neighbourhood survives the transform (``knn_overlap`` against the original text)."""
    from workbench.probes.distribution import knn_mixing_rate, knn_overlap

    mixing = {
        name: knn_mixing_rate(variants[name].image, variants[name].text, k=k)
        for name in FIG_VARIANTS
    }
    n = len(variants["original"].text)
    overlap = {
        name: knn_overlap(variants["original"].text, variants[name].text, k=min(10, n - 1))
        for name in ("C3", "ReAlign")
    }
    return mixing, overlap


def fixed_frame_summary(image: np.ndarray, text: np.ndarray, energy: float = 0.9) -> dict[str, Any]:
    """ReAlign §3: freeze U ⊕ V on the first half of paired rows, decompose the other half's gaps.

    Returns the rank of U, β/γ/δ/ζ norms (``decompose(...).summary()``), the reconstruction
    error of Eq. 1 and the ridge coupling ζ ≈ δW (App. C; ``None`` when V is empty).
    """
    from workbench.probes.fixed_frame import FixedFrame, uv_coupling

    half = len(image) // 2
    frame = FixedFrame(energy=energy).fit(image[:half], text[:half])
    dec = frame.decompose(image[half:], text[half:])
    coupling = uv_coupling(frame, dec) if frame.V_.shape[1] else None
    return {
        "rank_U": frame.rank_,
        **dec.summary(),
        "reconstruction_error": dec.reconstruction_error(),
        "coupling_spectral_norm": coupling.spectral_norm if coupling else None,
        "coupling_r2": coupling.r2 if coupling else None,
    }
