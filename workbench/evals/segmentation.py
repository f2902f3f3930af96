"""Semantic-segmentation scores: the confusion matrix, per-class IoU and mIoU of a predictor.

Convention (mmseg's ``IoUMetric``, which the Earth-Adapter code reports): intersections and
unions are summed over the **whole** evaluation set before dividing, IoU_c = TP_c / (TP_c +
FP_c + FN_c); a class that appears neither in the labels nor in the predictions has no IoU
(NaN) and mIoU is the mean over the others. Pixels labelled ``ignore_index`` are left out.

>>> import numpy as np
>>> target = np.array([[0, 0, 1, 1]])
>>> conf = confusion_matrix(np.array([[0, 1, 1, 1]]), target, n_classes=3)
>>> iou_per_class(conf).round(3).tolist()[:2], round(mean_iou(conf), 3)
([0.5, 0.667], 0.583)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["confusion_matrix", "evaluate_segmentation", "iou_per_class", "mean_iou"]


def confusion_matrix(pred: Any, target: Any, n_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class.

    Args:
        pred: Integer class predictions, any shape (numpy or torch).
        target: Integer labels of the same shape; ``ignore_index`` pixels are skipped.
        n_classes: K.
        ignore_index: Label of unlabelled pixels.
    """
    p, t = _ints(pred, "pred"), _ints(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"confusion_matrix: pred {p.shape} and target {t.shape} differ in shape")
    if not (isinstance(n_classes, int) and n_classes >= 1):
        raise ValueError(f"confusion_matrix: n_classes must be an int ≥ 1, got {n_classes!r}")
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    for name, x in (("pred", p), ("target", t)):
        if x.size and (x.min() < 0 or x.max() >= n_classes):
            raise ValueError(
                f"confusion_matrix: {name} holds classes outside [0, {n_classes}) "
                f"(min {x.min()}, max {x.max()}); pass n_classes or set ignore_index"
            )
    return np.bincount(t * n_classes + p, minlength=n_classes**2).reshape(n_classes, n_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """(K,) IoU per class from a (K, K) confusion matrix; NaN where a class is absent from both
    labels and predictions."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"iou_per_class: conf must be (K, K), got {conf.shape}")
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """mIoU: the mean of :func:`iou_per_class` over classes that occur (NaN if none do)."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def evaluate_segmentation(
    predict: Callable[[np.ndarray], Any],
    labels: np.ndarray,
    n_classes: int,
    *,
    batch_size: int = 32,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Score ``predict`` over a labelled set, batch by batch.

    Args:
        predict: ``rows (b,) int array -> (b, H, W)`` predicted classes for those rows.
        labels: (N, H, W) integer labels.
        n_classes: K.
        batch_size: Rows per ``predict`` call.
        ignore_index: Label of unlabelled pixels.

    Returns:
        ``{"miou": float, "iou": (K,) array, "confusion": (K, K) array, "pixel_accuracy": float}``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or len(labels) == 0:
        raise ValueError(
            f"evaluate_segmentation: labels must be (N, H, W), N ≥ 1, got {labels.shape}"
        )
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(
            f"evaluate_segmentation: batch_size must be an int ≥ 1, got {batch_size!r}"
        )
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    for start in range(0, len(labels), batch_size):
        rows = np.arange(start, min(start + batch_size, len(labels)))
        pred = _ints(predict(rows), "predict(rows)")
        if pred.shape != labels[rows].shape:
            raise ValueError(
                f"evaluate_segmentation: predict returned {pred.shape}, labels are "
                f"{labels[rows].shape}"
            )
        conf += confusion_matrix(pred, labels[rows], n_classes, ignore_index)
    total = conf.sum()
    return {
        "miou": mean_iou(conf),
        "iou": iou_per_class(conf),
        "confusion": conf,
        "pixel_accuracy": float(np.trace(conf) / total) if total else float("nan"),
    }


def _ints(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)
