"""D-ability: how well image embeddings separate classes (DCR's "discriminative ability").

Every function takes labelled embeddings ``X`` (n, d) — raw or L2-normalised, see each
``normalize`` argument — and integer labels (n,). Spec: ``methods-geometry.md`` §1.5 (scatters,
[our reading]), §1.6 (clustering protocol, [our reading]), §0 (zero-shot top-1, CLIP prompt
ensembles).

- :func:`class_scatter` — S_inner, S_inter and their ratio (Fisher criterion), DCR Thm 1.
- :func:`knn_accuracy` — leave-one-out cosine k-NN accuracy.
- :func:`linear_probe` — logistic regression fitted on a train split, scored on held-out rows.
- :func:`clustering_scores` — k-means NMI / ACC (Hungarian) / ARI over several seeds.
- :func:`zero_shot_accuracy` — nearest class-prompt embedding, with prompt ensembling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench._validate import (
    as_bool,
    as_class_ids,
    as_class_prompts,
    as_float,
    as_indices,
    as_int,
    as_int_tuple,
    as_labels,
    as_matrix,
    as_names,
    check_same_dim,
    l2_normalize,
    roundoff,
    to_numpy,
)

__all__ = [
    "PROMPT_TEMPLATES",
    "ClassScatter",
    "ClusteringScores",
    "LinearProbeResult",
    "class_scatter",
    "clustering_accuracy",
    "clustering_scores",
    "fisher_ratio",
    "knn_accuracy",
    "linear_probe",
    "split_indices",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]

# A short subset of the CLIP / CLIP_benchmark ImageNet templates (spec §0); pass your own for
# the full 80-template ensemble.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "a close-up photo of a {}.",
    "a low resolution photo of a {}.",
)


def _labelled(X: Any, labels: Any, min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    A = as_matrix(X, "X")
    y = as_labels(labels, "labels", n=A.shape[0], negative=False, min_classes=min_classes)
    return A, y


# -- scatter ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassScatter:
    """Intra/inter-class scatter of one labelled embedding set.

    Attributes:
        s_inner: ``(1/K) Σ_k (1/n_k) Σ_{i∈k} ‖z_i − μ_k‖²`` — mean squared distance to the own
            class centroid, averaged over classes (each class weighs the same).
        s_inter: ``(1/K) Σ_k ‖μ_k − μ‖²`` with μ the mean of the K class centroids.
        fisher: ``s_inter / s_inner`` (larger = more separable); ``inf`` when ``s_inner == 0``.
        n_classes: K.
    """

    s_inner: float
    s_inter: float
    fisher: float
    n_classes: int


def class_scatter(X: Any, labels: Any, *, normalize: bool = True) -> ClassScatter:
    """S_inner, S_inter and their ratio for embeddings ``X`` (n, d) with class ``labels`` (n,).

    Implements the scatter definitions of DCR Theorem 1 in ``methods-geometry.md`` §1.5, which
    are **[our reading]** (the paper's own definitions were not recovered): class-balanced
    averages, and the global mean μ taken as the mean of class centroids so that class sizes do
    not move it. With ``normalize=True`` (default) rows are L2-normalised first, so encoders
    with different embedding norms are comparable; pass ``False`` to measure raw features.

    A scatter no larger than round-off of the rows' scale (:func:`~workbench._validate.roundoff`
    of their RMS norm) is zero: every class collapsed to a point gives ``s_inner = 0`` and
    ``fisher = inf``; all rows at one point raises (the ratio is 0/0).
    """
    A, y = _labelled(X, labels)
    if as_bool(normalize, "normalize"):
        A = l2_normalize(A, "X")
    classes = np.unique(y)
    centroids = np.stack([A[y == c].mean(axis=0) for c in classes])  # (K, d)
    within = [((A[y == c] - centroids[k]) ** 2).sum(axis=1).mean() for k, c in enumerate(classes)]
    s_inner = float(np.mean(within))
    s_inter = float(((centroids - centroids.mean(axis=0)) ** 2).sum(axis=1).mean())
    floor = roundoff(float(np.sqrt(np.mean(np.square(A).sum(axis=1)))), max(A.shape)) ** 2
    s_inner = 0.0 if s_inner <= floor else s_inner
    s_inter = 0.0 if s_inter <= floor else s_inter
    if s_inner == 0.0 and s_inter == 0.0:
        raise ValueError(
            "X: every row is the same point (up to round-off); the Fisher ratio is undefined"
        )
    fisher = s_inter / s_inner if s_inner > 0 else float("inf")
    return ClassScatter(s_inner, s_inter, fisher, int(classes.size))


def fisher_ratio(X: Any, labels: Any, *, normalize: bool = True) -> float:
    """``S_inter / S_inner`` of :func:`class_scatter` (the Fisher criterion; larger = better)."""
    return class_scatter(X, labels, normalize=normalize).fisher


# -- k-NN ---------------------------------------------------------------------------------------


def knn_accuracy(X: Any, labels: Any, *, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy under cosine similarity.

    Each row of ``X`` (n, d; raw — rows are L2-normalised here) is classified by a majority vote
    of its ``k`` most cosine-similar *other* rows; vote ties go to the class whose members in the
    neighbourhood are most similar in total. No split is needed because a row never votes for
    itself.
    """
    A, y = _labelled(X, labels)
    k = as_int(k, "k", lo=1, hi=A.shape[0] - 1)
    Z = l2_normalize(A, "X")
    sim = Z @ Z.T  # (n, n)
    np.fill_diagonal(sim, -np.inf)
    nn_idx = np.argpartition(-sim, kth=k - 1, axis=1)[:, :k]  # (n, k), unordered
    classes, y_codes = np.unique(y, return_inverse=True)
    votes = np.zeros((A.shape[0], classes.size))
    weight = np.zeros_like(votes)
    rows = np.repeat(np.arange(A.shape[0]), k)
    np.add.at(votes, (rows, y_codes[nn_idx].ravel()), 1.0)
    np.add.at(weight, (rows, y_codes[nn_idx].ravel()), np.take_along_axis(sim, nn_idx, 1).ravel())
    # votes dominate; summed similarity (< k in magnitude) only breaks ties
    pred = np.argmax(votes * (2 * k + 1) + weight, axis=1)
    return float(np.mean(pred == y_codes))


# -- linear probe -------------------------------------------------------------------------------


def split_indices(
    labels: Any, *, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train / held-out row indices (both sorted, disjoint, covering all).

    Every class with ≥ 2 rows puts at least one row on each side; singleton classes go to train.
    """
    test_fraction = as_float(
        test_fraction, "test_fraction", lo=0.0, hi=1.0, lo_open=True, hi_open=True
    )
    y = as_labels(labels, "labels")
    rng = np.random.default_rng(as_int(seed, "seed", lo=0))
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if idx.size < 2:
            continue
        n_test = int(np.clip(round(test_fraction * idx.size), 1, idx.size - 1))
        test.append(idx[:n_test])
    test_idx = np.sort(np.concatenate(test)) if test else np.array([], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(y.shape[0]), test_idx)
    return train_idx, test_idx


@dataclass
class LinearProbeResult:
    """Outcome of :func:`linear_probe`.

    Attributes:
        accuracy: top-1 accuracy on the held-out rows.
        train_accuracy: top-1 accuracy on the rows the model was fitted on.
        train_idx, test_idx: the rows used for fitting / scoring (disjoint).
        model: the fitted scikit-learn pipeline (standardiser + logistic regression), fitted on
            ``X[train_idx]`` only.
    """

    accuracy: float
    train_accuracy: float
    train_idx: np.ndarray
    test_idx: np.ndarray
    model: Any = field(repr=False)


def linear_probe(
    X: Any,
    labels: Any,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
    normalize: bool = True,
    train_idx: Sequence[int] | None = None,
    test_idx: Sequence[int] | None = None,
) -> LinearProbeResult:
    """Linear-probe accuracy: logistic regression on a train split, scored on held-out rows.

    ``X`` (n, d) is L2-normalised per row when ``normalize`` (default), then standardised with
    statistics of the *train rows only* and fitted with ``LogisticRegression(C, max_iter)``.
    Held-out labels are used only to score predictions, never to fit (``tests`` check this by
    poisoning them). Pass ``train_idx``/``test_idx`` to use your own split; otherwise a
    stratified split from :func:`split_indices` with ``test_fraction`` and ``seed``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    A, y = _labelled(X, labels)
    C = as_float(C, "C", lo=0.0, lo_open=True)
    max_iter = as_int(max_iter, "max_iter", lo=1)
    normalize = as_bool(normalize, "normalize")
    if (train_idx is None) != (test_idx is None):
        raise ValueError("pass both train_idx and test_idx, or neither")
    if train_idx is None:
        tr, te = split_indices(y, test_fraction=test_fraction, seed=seed)
    else:
        tr = as_indices(train_idx, "train_idx", n=A.shape[0])
        te = as_indices(test_idx, "test_idx", n=A.shape[0])
        if np.intersect1d(tr, te).size:
            raise ValueError("train_idx and test_idx overlap; a probe scored on fitted rows leaks")
    if te.size == 0:
        raise ValueError(
            "the held-out split (test_idx) is empty; every class needs at least 2 rows"
        )
    if np.unique(y[tr]).size < 2:
        raise ValueError("the train split (train_idx) holds fewer than 2 classes; nothing to fit")
    if normalize:
        A = l2_normalize(A, "X")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    model.fit(A[tr], y[tr])
    return LinearProbeResult(
        accuracy=float(np.mean(model.predict(A[te]) == y[te])),
        train_accuracy=float(np.mean(model.predict(A[tr]) == y[tr])),
        train_idx=tr,
        test_idx=te,
        model=model,
    )


# -- clustering ---------------------------------------------------------------------------------


def clustering_accuracy(y_true: Any, y_pred: Any) -> float:
    """Unsupervised clustering accuracy: best one-to-one cluster→class map (Hungarian), then accuracy.

    ``y_true`` and ``y_pred`` are (n,) integer arrays; the numbering of clusters is irrelevant,
    so a pure relabelling of ``y_true`` scores 1.0. Uses
    ``scipy.optimize.linear_sum_assignment`` on the (clusters × classes) contingency table.
    """
    from scipy.optimize import linear_sum_assignment

    t = as_labels(y_true, "y_true")
    p = as_labels(y_pred, "y_pred", n=t.shape[0], rows_of="y_true")
    _, t_codes = np.unique(t, return_inverse=True)
    _, p_codes = np.unique(p, return_inverse=True)
    table = np.zeros((p_codes.max() + 1, t_codes.max() + 1), dtype=np.int64)
    np.add.at(table, (p_codes, t_codes), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / t.size)


@dataclass(frozen=True)
class ClusteringScores:
    """k-means agreement with the labels for one seed: NMI, ACC (Hungarian), ARI, and inertia."""

    seed: int
    nmi: float
    acc: float
    ari: float
    inertia: float


def clustering_scores(
    X: Any,
    labels: Any,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    n_clusters: int | None = None,
    n_init: int = 1,
    normalize: bool = True,
) -> list[ClusteringScores]:
    """k-means on ``X`` (n, d) with k = #classes, scored against ``labels``, once per seed.

    Protocol **[our reading]** of DCR Tab. 2 (``methods-geometry.md`` §1.6): frozen embeddings,
    L2-normalised (``normalize``), k-means with k = number of classes; NMI, ACC after Hungarian
    matching (:func:`clustering_accuracy`) and ARI. Each seed is one ``KMeans(random_state=seed,
    n_init=n_init)`` run, so the spread over seeds is visible; the spec's "best inertia of 10
    seeds" is the entry with the lowest ``inertia`` (``min(scores, key=lambda s: s.inertia)``).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    A, y = _labelled(X, labels)
    if as_bool(normalize, "normalize"):
        A = l2_normalize(A, "X")
    n_clusters = as_int(n_clusters, "n_clusters", lo=2, hi=A.shape[0], none_ok=True)
    k = int(np.unique(y).size) if n_clusters is None else n_clusters
    seeds = as_int_tuple(seeds, "seeds", lo=0)
    n_init = as_int(n_init, "n_init", lo=1)
    out = []
    for seed in seeds:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=int(seed)).fit(A)
        pred = km.labels_
        out.append(
            ClusteringScores(
                seed=int(seed),
                nmi=float(normalized_mutual_info_score(y, pred)),
                acc=clustering_accuracy(y, pred),
                ari=float(adjusted_rand_score(y, pred)),
                inertia=float(km.inertia_),
            )
        )
    return out


# -- zero-shot ----------------------------------------------------------------------------------


def zero_shot_classifier(
    encoder: Any, class_names: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES
) -> np.ndarray:
    """Class prompt embeddings (K, T, D), L2-normalised, from ``encoder.encode_texts``.

    ``templates`` are format strings with one ``{}`` for the class name (spec §0: CLIP prompt
    ensembles). Feed the result to :func:`zero_shot_accuracy`, which averages over templates.
    """
    import torch

    class_names = as_names(class_names, "class_names", min_len=2, unique=True)
    templates = as_names(templates, "templates")
    if any("{}" not in t for t in templates):
        raise ValueError("templates must be format strings each containing '{}' (the class name)")
    texts = [t.format(c) for c in class_names for t in templates]
    with torch.no_grad():
        Z = encoder.encode_texts(texts, normalize=True)
    return to_numpy(Z).reshape(len(class_names), len(templates), -1)


def zero_shot_accuracy(
    image: Any, class_text: Any, labels: Any, *, mean_per_class: bool = False
) -> float:
    """Top-1 zero-shot accuracy of images against class prompt embeddings.

    Args:
        image: (n, D) image embeddings, raw or normalised (normalised here).
        class_text: (K, D) one embedding per class, or (K, T, D) with T prompt templates per
            class; templates are L2-normalised, averaged and renormalised (CLIP's ensembling).
        labels: (n,) integer labels in ``[0, K)``.
        mean_per_class: average the per-class accuracies instead of the per-image ones (the
            spec's metric for Aircraft, Pets, Caltech101, Flowers).
    """
    I = l2_normalize(as_matrix(image, "image"), "image")
    T = as_class_prompts(class_text, "class_text")
    if T.ndim == 3:
        T = l2_normalize(T.reshape(-1, T.shape[-1]), "class_text").reshape(T.shape).mean(axis=1)
    T = l2_normalize(as_matrix(T, "class_text", min_rows=1), "class_text")
    check_same_dim(I, T, ("image", "class_text"))
    y = as_class_ids(labels, T.shape[0], n=I.shape[0], rows_of="image", classes_of="class_text")
    pred = np.argmax(I @ T.T, axis=1)
    hit = pred == y
    if as_bool(mean_per_class, "mean_per_class"):
        return float(np.mean([hit[y == c].mean() for c in np.unique(y)]))
    return float(hit.mean())
