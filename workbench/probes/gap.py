"""The modality gap and its two classic experiments (Mind the Gap, Liang et al., NeurIPS 2022).

* :func:`modality_gap` — the centroid gap Δ = mean(x̂) − mean(ŷ) of L2-normalised image (x) and
  text (y) embeddings, its norm, the centroids' cosine, each modality's cone width and spectrum
  (spec ``methods-geometry.md`` §0 and §3 "Gap").
* :func:`shift_experiment` — move both modalities along Δ and watch the signed remaining gap, the
  CLIP contrastive loss at temperature τ and retrieval / zero-shot accuracy (§3, Fig. 3).
* :func:`cone_effect` — random-init MLPs map an isotropic Gaussian into a narrow cone, a different
  cone per initialisation (§3, Fig. 2).

Shapes: image/text embeddings are (n, d) *raw* (any norm); every function L2-normalises them
first, so passing already-normalised embeddings is fine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from workbench._validate import (
    as_bool,
    as_choice,
    as_class_ids,
    as_class_prompts,
    as_float,
    as_int,
    as_int_tuple,
    as_matrix,
    as_names,
    as_vector,
    check_paired,
    check_same_dim,
    l2_normalize,
)
from workbench.probes.geometry import cone_width
from workbench.probes.separability import zero_shot_accuracy

__all__ = [
    "ConeResult",
    "GapReport",
    "ShiftResult",
    "clip_loss",
    "cone_effect",
    "modality_gap",
    "retrieval_accuracy",
    "shift_experiment",
    "signed_centroid_distance",
]


def _normed(X: Any, name: str, min_rows: int = 2) -> np.ndarray:
    """Validate ``X`` as (n, d) float64 and L2-normalise its rows (raises on NaN / zero rows)."""
    return l2_normalize(as_matrix(X, name, min_rows=min_rows), name)


@dataclass(frozen=True)
class GapReport:
    """Centroid-gap geometry of one image/text embedding set (spec §0, §3).

    Attributes:
        delta: (d,) gap vector Δ = mean(x̂) − mean(ŷ) of L2-normalised embeddings [paper].
        gap_norm: ‖Δ‖₂ (0.82 for CLIP ViT-B/32 on MSCOCO in Mind the Gap).
        centroid_cosine: cos(µ_x, µ_y) between the two (un-normalised) centroids.
        image_centroid, text_centroid: (d,) µ_x, µ_y (means of unit vectors, norm < 1).
        cone_width_image, cone_width_text: mean pairwise cosine within each modality.
        image_spectrum, text_spectrum: (d,) trace-normalised covariance eigenvalues, descending.
        image_alpha, text_alpha: power-law exponent α of each spectrum (λ_k ∝ k^−α).
        n_image, n_text: sample counts (the two sets need not be paired).
    """

    delta: np.ndarray
    gap_norm: float
    centroid_cosine: float
    image_centroid: np.ndarray
    text_centroid: np.ndarray
    cone_width_image: float
    cone_width_text: float
    image_spectrum: np.ndarray
    text_spectrum: np.ndarray
    image_alpha: float
    text_alpha: float
    n_image: int
    n_text: int

    def summary(self) -> dict[str, float | int]:
        """The scalar fields, for ``summary.json``."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}


def modality_gap(
    image_emb: Any, text_emb: Any, *, with_spectra: bool = True, group: Any = None
) -> GapReport:
    """Centroid gap, centroid cosine, cone widths and spectra of (unpaired) image and text sets.

    Args:
        image_emb: (n_x, d) raw image embeddings (L2-normalised here).
        text_emb: (n_y, d) raw text embeddings; n_y may differ from n_x.
        with_spectra: compute the per-modality trace-normalised spectra and power-law α
            (O(d³); switch off inside tight loops).
        group: ``None`` (this process), ``"auto"`` or a ``ProcessGroup``: the inputs are this
            rank's rows (at least 2 of each) and every sum (centroids, cone widths, spectra) is
            all-reduced, so every rank reports the gap of all ranks' rows. Call on every rank.

    Returns:
        :class:`GapReport`. Δ follows the sign convention image − text of Mind the Gap [paper].
    """
    X = _normed(image_emb, "image_emb")
    Y = _normed(text_emb, "text_emb")
    check_same_dim(X, Y, ("image_emb", "text_emb"))
    with_spectra = as_bool(with_spectra, "with_spectra")
    (mu_x, n_x), (mu_y, n_y) = _mean_rows(X, group), _mean_rows(Y, group)
    delta = mu_x - mu_y
    denom = np.linalg.norm(mu_x) * np.linalg.norm(mu_y)
    cos = float(mu_x @ mu_y / denom) if denom > 0 else float("nan")
    if with_spectra:
        from workbench.probes.distribution import trace_normalized_spectrum_alpha

        spec_x, alpha_x = trace_normalized_spectrum_alpha(X, name="image_emb", group=group)
        spec_y, alpha_y = trace_normalized_spectrum_alpha(Y, name="text_emb", group=group)
    else:
        spec_x = spec_y = np.empty(0)
        alpha_x = alpha_y = float("nan")
    return GapReport(
        delta=delta,
        gap_norm=float(np.linalg.norm(delta)),
        centroid_cosine=cos,
        image_centroid=mu_x,
        text_centroid=mu_y,
        cone_width_image=cone_width(X, group=group),
        cone_width_text=cone_width(Y, group=group),
        image_spectrum=spec_x,
        text_spectrum=spec_y,
        image_alpha=alpha_x,
        text_alpha=alpha_y,
        n_image=n_x,
        n_text=n_y,
    )


def _mean_rows(X: np.ndarray, group: Any) -> tuple[np.ndarray, int]:
    """(d,) column mean and row count of ``X`` (n, d) — of every rank's rows under ``group``."""
    from workbench.distributed import all_reduce_sums

    total, n = all_reduce_sums(lambda: [X.sum(axis=0), [X.shape[0]]], group, "the centroid")
    return total / n[0], int(n[0])


# --- losses and accuracies on paired, normalised embeddings ---------------------------------


def _paired_scores(
    X: np.ndarray, Y: np.ndarray, temperature: float, chunk: int = 2048
) -> tuple[float, float, float]:
    """One blockwise pass over S = X̂Ŷᵀ (n, n) of normalised paired rows → (loss, R@1 i2t, R@1 t2i).

    Row statistics come from each block directly; column log-sum-exp and argmax are merged across
    blocks (running max and rescaled sum), so no n×n buffer is ever held.
    """
    n = X.shape[0]
    scale = 1.0 / temperature
    pos = scale * np.einsum("ij,ij->i", X, Y)  # (n,)
    row_lse = np.empty(n)
    row_hit = np.empty(n, dtype=bool)
    col_max = np.full(n, -np.inf)
    col_sum = np.zeros(n)
    col_best = np.full(n, -np.inf)
    col_arg = np.zeros(n, dtype=np.int64)
    for s in range(0, n, chunk):
        logits = scale * (X[s : s + chunk] @ Y.T)  # (c, n)
        rows = np.arange(logits.shape[0])
        m = logits.max(axis=1)
        row_lse[s : s + chunk] = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
        row_hit[s : s + chunk] = logits.argmax(axis=1) == s + rows
        bm = logits.max(axis=0)
        new_max = np.maximum(col_max, bm)
        col_sum = col_sum * np.exp(col_max - new_max) + np.exp(logits - new_max).sum(axis=0)
        col_max = new_max
        better = bm > col_best
        col_arg[better] = s + logits.argmax(axis=0)[better]
        col_best = np.maximum(col_best, bm)
    col_lse = col_max + np.log(col_sum)
    loss = 0.5 * ((row_lse - pos).mean() + (col_lse - pos).mean())
    return float(loss), float(row_hit.mean()), float((col_arg == np.arange(n)).mean())


def clip_loss(image_emb: Any, text_emb: Any, temperature: float = 0.01) -> float:
    """Symmetric CLIP InfoNCE loss of paired embeddings at temperature τ (Mind the Gap Fig. 3).

    L = ½·[mean_i CE(row i of X̂Ŷᵀ/τ, i) + mean_i CE(column i, i)], with X̂, Ŷ (n, d) the
    L2-normalised image/text rows (row i of one pairs row i of the other). Computed blockwise,
    so n = 10⁴ costs no n×n buffer.
    """
    temperature = as_float(temperature, "temperature", lo=0.0, lo_open=True)
    X = _normed(image_emb, "image_emb")
    Y = _normed(text_emb, "text_emb")
    check_paired(X, Y, ("image_emb", "text_emb"))
    return _paired_scores(X, Y, temperature)[0]


def _top1(Q: np.ndarray, G: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index of the most cosine-similar row of G (already normalised) for each row of Q."""
    return np.concatenate(
        [(Q[s : s + chunk] @ G.T).argmax(axis=1) for s in range(0, len(Q), chunk)]
    )


def retrieval_accuracy(image_emb: Any, text_emb: Any) -> dict[str, float]:
    """Recall@1 of paired embeddings both ways: ``{"i2t": ..., "t2i": ...}`` in [0, 1].

    Query i is right when its own partner (row i of the other modality) has the highest cosine.
    Cosine ranking is unchanged by per-row rescaling, so un-normalised aligned text is fine.
    """
    X = _normed(image_emb, "image_emb")
    Y = _normed(text_emb, "text_emb")
    check_paired(X, Y, ("image_emb", "text_emb"))
    idx = np.arange(X.shape[0])
    return {
        "i2t": float((_top1(X, Y) == idx).mean()),
        "t2i": float((_top1(Y, X) == idx).mean()),
    }


# --- shift experiment ------------------------------------------------------------------------


def signed_centroid_distance(
    image_normed: np.ndarray, text_normed: np.ndarray, delta: np.ndarray
) -> float:
    """‖µ_x − µ_y‖ signed by ⟨Δ, µ_x − µ_y⟩, so the gap goes negative once the modalities cross.

    ``image_normed`` (n_x, d) and ``text_normed`` (n_y, d) are already L2-normalised; ``delta``
    (d,) is the *original* gap direction [paper: Mind the Gap Fig. 3, sign convention of §3].

    Raises ``ValueError`` on bad arrays, differing widths and a zero ``delta`` (no sign).
    """
    X = as_matrix(image_normed, "image_normed", min_rows=1)
    Y = as_matrix(text_normed, "text_normed", min_rows=1)
    check_same_dim(X, Y, ("image_normed", "text_normed"))
    d = as_vector(delta, "delta (one entry per embedding dimension)", length=X.shape[1])
    if not np.any(d):
        raise ValueError("delta is the zero vector; it gives no direction to sign the gap by")
    return _signed_gap(X, Y, d)


def _signed_gap(X: np.ndarray, Y: np.ndarray, delta: np.ndarray) -> float:
    diff = X.mean(axis=0) - Y.mean(axis=0)
    sign = 1.0 if diff @ delta >= 0 else -1.0
    return sign * float(np.linalg.norm(diff))


@dataclass(frozen=True)
class ShiftResult:
    """Outcome of :func:`shift_experiment`, one entry per λ (all arrays (n_λ,)).

    Attributes:
        lambdas: the λ grid; λ = 0 is the unshifted embedding.
        signed_gap: remaining centroid distance, negative past the crossing.
        loss: symmetric CLIP loss at ``temperature`` (NaN when the sets are unpaired).
        i2t, t2i: Recall@1 both ways (NaN when unpaired).
        zero_shot: zero-shot accuracy (NaN unless labels and class prompts were given).
        gap_norm: ‖Δ‖ of the unshifted embeddings.
        temperature: τ used for the loss.
        direction: ``"gap"`` (shift by λΔ) or ``"unit"`` (shift by ½λ·Δ/‖Δ‖, the code's variant).
        modalities: ``"both"`` or ``"image"`` (only images move).
    """

    lambdas: np.ndarray
    signed_gap: np.ndarray
    loss: np.ndarray
    i2t: np.ndarray
    t2i: np.ndarray
    zero_shot: np.ndarray
    gap_norm: float
    temperature: float
    direction: str
    modalities: str

    def crossing(self) -> float:
        """λ where the signed gap first changes sign (linear interpolation); NaN if it never does."""
        g = self.signed_gap
        for i in range(len(g) - 1):
            if g[i] == 0:
                return float(self.lambdas[i])
            if np.sign(g[i]) != np.sign(g[i + 1]):
                t = g[i] / (g[i] - g[i + 1])
                return float(self.lambdas[i] + t * (self.lambdas[i + 1] - self.lambdas[i]))
        return float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()
        }


def shift_experiment(
    image_emb: Any,
    text_emb: Any,
    lambdas: Sequence[float] | np.ndarray | None = None,
    *,
    temperature: float = 0.01,
    direction: Literal["gap", "unit"] = "gap",
    modalities: Literal["both", "image"] = "both",
    labels: Any = None,
    class_text_emb: Any = None,
) -> ShiftResult:
    """Shift the modalities along the gap and measure what the contrastive objective sees.

    Mind the Gap Fig. 3 [paper]: with Δ the gap of the unshifted L2-normalised embeddings,
    ``x'_i = norm(x_i − λΔ)`` and ``y'_i = norm(y_i + λΔ)``. So λ = 0.5 roughly closes the gap
    (exactly when text shares one component along Δ), λ < 0 widens it. ``direction="unit"`` is
    the official code's variant [code]: shift by ±0.5·λ·Δ/‖Δ‖ (grid −5…5 step 0.25 there).
    ``modalities="image"`` moves only the images by −λΔ (one of the code's notebooks).

    Class prompts (``class_text_emb``) are text and move with the text.

    Args:
        image_emb, text_emb: (n, d) raw embeddings. Paired (row i ↔ row i) for loss and
            retrieval; unpaired sets still give the signed gap (loss/retrieval are then NaN).
        lambdas: the shift grid; default ``np.arange(-1, 1.5 + 1e-9, 0.125)`` for ``"gap"`` and
            ``np.arange(-5, 5, 0.25)`` for ``"unit"``.
        temperature: τ of the CLIP loss (1/100 is CLIP's learned value).
        labels: (n,) ints for zero-shot accuracy, with ``class_text_emb`` — (C, d) class
            prompts or (C, T, d) prompt ensembles (averaged per class after shifting).
    """
    direction = as_choice(direction, "direction", ("gap", "unit"))
    modalities = as_choice(modalities, "modalities", ("both", "image"))
    temperature = as_float(temperature, "temperature", lo=0.0, lo_open=True)
    X = _normed(image_emb, "image_emb")
    Y = _normed(text_emb, "text_emb")
    check_same_dim(X, Y, ("image_emb", "text_emb"))
    paired = X.shape[0] == Y.shape[0]
    if (labels is None) != (class_text_emb is None):
        raise ValueError("zero-shot accuracy needs both labels and class_text_emb (or neither)")
    C, prompt_shape, y = None, None, None
    if class_text_emb is not None:  # (C, d) prompts or (C, T, d) ensembles; they move like text
        prompts = as_class_prompts(class_text_emb, "class_text_emb")
        prompt_shape = prompts.shape
        C = _normed(prompts.reshape(-1, prompts.shape[-1]), "class_text_emb", min_rows=1)
        check_same_dim(X, C, ("image_emb", "class_text_emb"))
        y = as_class_ids(
            labels, prompt_shape[0], n=X.shape[0], rows_of="image_emb", classes_of="class_text_emb"
        )
    if lambdas is None:
        lambdas = (
            np.arange(-1.0, 1.5 + 1e-9, 0.125) if direction == "gap" else np.arange(-5, 5, 0.25)
        )
    lams = as_vector(lambdas, "lambdas")

    delta = X.mean(axis=0) - Y.mean(axis=0)
    gap_norm = float(np.linalg.norm(delta))
    if gap_norm == 0:
        raise ValueError(
            "the two modalities share a centroid (Δ = 0): there is no gap to shift along"
        )
    step = delta if direction == "gap" else 0.5 * delta / gap_norm  # (d,)
    nan = float("nan")
    rows: list[tuple[float, ...]] = []
    for lam in lams:
        Xs = l2_normalize(X - lam * step, "shifted image_emb")
        if modalities == "both":
            Ys = l2_normalize(Y + lam * step, "shifted text_emb")
            Cs = None if C is None else l2_normalize(C + lam * step, "shifted class_text_emb")
        else:
            Ys, Cs = Y, C
        Cs = None if Cs is None else Cs.reshape(prompt_shape)
        gap = _signed_gap(Xs, Ys, delta)
        if paired:
            loss, i2t, t2i = _paired_scores(Xs, Ys, temperature)
        else:
            loss = i2t = t2i = nan
        zs = zero_shot_accuracy(Xs, Cs, y) if Cs is not None else nan
        rows.append((gap, loss, i2t, t2i, zs))
    cols = np.array(rows).T  # (5, n_λ)
    return ShiftResult(
        lambdas=lams,
        signed_gap=cols[0],
        loss=cols[1],
        i2t=cols[2],
        t2i=cols[3],
        zero_shot=cols[4],
        gap_norm=gap_norm,
        temperature=float(temperature),
        direction=direction,
        modalities=modalities,
    )


# --- cone effect -----------------------------------------------------------------------------

_ACTIVATIONS = {
    "relu": lambda h: np.maximum(h, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda h: 1.0 / (1.0 + np.exp(-h)),
    "gelu": lambda h: 0.5 * h * (1.0 + np.tanh(0.7978845608028654 * (h + 0.044715 * h**3))),
    "linear": lambda h: h,
}


@dataclass(frozen=True)
class ConeResult:
    """Cone effect of random MLPs (Mind the Gap Fig. 2).

    Attributes:
        activations: activation names, length A.
        depths: (D,) layer counts; depth 0 is the isotropic input itself.
        mean_cosine: (A, D) mean pairwise cosine of outputs, averaged over initialisations.
        mean_cosine_std: (A, D) its standard deviation over initialisations.
        within_init_cosine: (A,) at the deepest depth, mean cosine between outputs of one init.
        between_init_cosine: (A,) at the deepest depth, mean cosine between the output centroids
            of *different* inits — low when every init forms its own cone.
        centroid_cosine_matrix: (A, n_inits, n_inits) cosines between init centroids.
        projection: (n_inits, n_show, 2) 2-D PCA of the L2-normalised deepest outputs of
            ``activations[0]`` (the Fig. 2c picture, PCA in place of UMAP).
        n_samples, dim, n_inits: the set-up.
    """

    activations: tuple[str, ...]
    depths: np.ndarray
    mean_cosine: np.ndarray
    mean_cosine_std: np.ndarray
    within_init_cosine: np.ndarray
    between_init_cosine: np.ndarray
    centroid_cosine_matrix: np.ndarray
    projection: np.ndarray
    n_samples: int
    dim: int
    n_inits: int

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"depths": self.depths.tolist(), "n_inits": self.n_inits}
        for a, act in enumerate(self.activations):
            out[f"mean_cosine/{act}"] = self.mean_cosine[a].tolist()
            out[f"within_init_cosine/{act}"] = float(self.within_init_cosine[a])
            out[f"between_init_cosine/{act}"] = float(self.between_init_cosine[a])
        return out


def cone_effect(
    depths: Sequence[int] = (0, 1, 2, 3, 4, 6, 8, 10),
    activations: Sequence[str] = ("relu", "tanh", "sigmoid", "gelu", "linear"),
    *,
    n_samples: int = 1000,
    dim: int = 512,
    n_inits: int = 5,
    n_show: int = 100,
    seed: int = 0,
) -> ConeResult:
    """Mean pairwise cosine of random-init MLP outputs by depth and activation (Fig. 2).

    Set-up [paper]: inputs ``N(0, I_dim)`` (the same ``n_samples`` inputs for every init), layers
    ``h ← act(W h + b)`` of width ``dim`` with W and b entries ~ N(0, 1/dim). The activation
    follows every layer [our reading: the text does not say whether the last layer has one].
    ``"linear"`` (no activation) is the control: it stays isotropic-ish.

    Args:
        depths: numbers of layers to read out at (0 = the input), sorted ascending.
        activations: names among relu, tanh, sigmoid, gelu, linear.
        n_inits: independent random initialisations (25 in the paper's Fig. 2c).
        n_show: points per init kept for the 2-D projection.
    """
    activations = as_names(activations, "activations")
    unknown = [a for a in activations if a not in _ACTIVATIONS]
    if unknown:
        raise ValueError(
            f"unknown activation(s) {unknown} in activations; choose from {sorted(_ACTIVATIONS)}"
        )
    ds = np.asarray(sorted(set(as_int_tuple(depths, "depths", lo=0))))
    n_samples = as_int(n_samples, "n_samples", lo=2)
    dim = as_int(dim, "dim", lo=1)
    n_inits = as_int(n_inits, "n_inits", lo=2)  # cones of different inits are compared
    n_show = as_int(n_show, "n_show", lo=1)
    seed = as_int(seed, "seed", lo=0)
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((n_samples, dim)).astype(np.float32)  # (n, dim)
    std = np.float32(np.sqrt(1.0 / dim))
    n_show = min(n_show, n_samples)
    A, D = len(activations), len(ds)
    cos = np.zeros((A, n_inits, D))
    centroids = np.zeros((A, n_inits, dim))
    deepest = np.zeros((n_inits, n_show, dim))
    for a, act in enumerate(activations):
        f = _ACTIVATIONS[act]
        for k in range(n_inits):
            h = inputs
            layer = 0
            for j, depth in enumerate(ds):
                while layer < depth:
                    W = rng.standard_normal((dim, dim)).astype(np.float32) * std
                    b = rng.standard_normal(dim).astype(np.float32) * std
                    h = f(h @ W.T + b)
                    layer += 1
                cos[a, k, j] = cone_width(h)
            hn = h / np.linalg.norm(h, axis=1, keepdims=True)
            centroids[a, k] = hn.mean(axis=0)
            if a == 0:
                deepest[k] = hn[:n_show]
    cn = centroids / np.linalg.norm(centroids, axis=2, keepdims=True)
    cmat = np.einsum("akd,ald->akl", cn, cn)  # (A, n_inits, n_inits)
    off = ~np.eye(n_inits, dtype=bool)
    flat = deepest.reshape(-1, dim)
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    proj = (flat @ vt[:2].T).reshape(n_inits, n_show, 2)
    return ConeResult(
        activations=tuple(activations),
        depths=ds,
        mean_cosine=cos.mean(axis=1),
        mean_cosine_std=cos.std(axis=1),
        within_init_cosine=cos[:, :, -1].mean(axis=1),
        between_init_cosine=cmat[:, off].mean(axis=1),
        centroid_cosine_matrix=cmat,
        projection=proj,
        n_samples=n_samples,
        dim=dim,
        n_inits=n_inits,
    )
