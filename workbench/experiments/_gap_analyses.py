"""ReAlign's analyses of the modality-gap study (its Tab. 5, Figs. 3–6 and the §3 frame), over
the held-out variants original / C3 / ReAlign prefixes. Imported through
:mod:`workbench.experiments.modality_gap`, whose config and data (``GapData``) they take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.probes.realign import C3, REALIGN_STEPS, ReAlign

#: The three variants ReAlign's Figs. 3–5 compare.
FIG_VARIANTS: tuple[str, ...] = ("original", "C3", "ReAlign")


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


def alignment_variants(data: Any, realign: ReAlign, c3: C3) -> dict[str, AlignedSet]:
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


def ablation_rows(variants: dict[str, AlignedSet], data: Any) -> list[dict[str, Any]]:
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
