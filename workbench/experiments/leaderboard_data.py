"""Inputs of the methods leaderboard that some rows need: the probe set of the diagnostics, DeGLA's
hard-negative bank, ProCLIP's distillation targets, and ReAlign as a text head (issue 18)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ReAlignHead",
    "distill_targets",
    "negative_bank",
    "probe_keys",
    "probe_set",
    "subset_pairs",
]


def probe_set(suite: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probe pairs: (n, D) image and text tower features of held-out retrieval pairs (query i ↔
    its caption), a seeded sample of at most ``n``; the training pairs when there is no retrieval
    task."""
    X, Y, _ = _probe_rows(suite, n)
    return X, Y


def probe_keys(suite: Any, n: int) -> list[str]:
    """Source-item keys (``"<dataset>:<item id>"``) of :func:`probe_set`'s rows, in its order:
    what re-embeds the probe pairs through a model whose towers changed."""
    return _probe_rows(suite, n)[2]


def _probe_rows(suite: Any, n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    img, txt, keys = [], [], []
    for t in suite.tasks:
        if t.meta_task == "retrieval" and t.query_modality == "image":
            img.append(t.queries)
            keys += list(t.held_out_keys)  # one per query (task_builder)
            if t.pool_groups is None:
                txt.append(t.pool[t.target])
            else:  # several pool rows per candidate: the first row of the target's group
                first = {int(g): i for i, g in reversed(list(enumerate(t.pool_groups)))}
                txt.append(t.pool[[first[int(g)] for g in t.target]])
    if not img:
        pairs = suite.train_pairs()
        img, txt, keys = [pairs.image_tower], [pairs.text_tower], list(pairs.keys)
    X, Y = np.concatenate(img), np.concatenate(txt)
    rows = np.random.default_rng(0).permutation(len(X))[:n]
    return X[rows], Y[rows], [keys[i] for i in rows] if len(keys) == len(X) else []


def negative_bank(pairs: Any) -> dict[str, Any]:
    """DeGLA's rule-based bank of the training captions (cached): ``{"path", "rows" kept, "dropped"}``."""
    from workbench.data.negative_bank import build_negative_bank
    from workbench.encoders.cache import default_cache_dir

    bank, skipped = build_negative_bank(pairs.texts, skip_empty=True,
                                        cache_dir=default_cache_dir() / "negatives")  # fmt: skip
    keep = np.setdiff1d(np.arange(len(pairs)), skipped)
    return {"path": str(bank.path), "rows": keep, "dropped": len(skipped)}


def distill_targets(enc: Any, pairs: Any, path: Path) -> str:
    """ProCLIP targets: the starting text head on each distinct training caption (written to ``path``)."""
    import torch

    from workbench.encoders.heads import apply_head
    from workbench.methods.proclip import write_distill_targets

    first = {t: i for i, t in reversed(list(enumerate(pairs.texts)))}
    caps = list(dict.fromkeys(pairs.texts))
    teacher = apply_head(enc.text_head, pairs.text_tower[[first[t] for t in caps]])
    return str(write_distill_targets(path, caps, torch.from_numpy(teacher)))


class ReAlignHead:
    """A text head followed by a fitted :class:`~workbench.probes.realign.ReAlign` (per row)."""

    def __init__(self, head: Any, realign: Any) -> None:
        self.head, self.realign = head, realign

    def __call__(self, X: Any) -> Any:
        import torch

        from workbench.encoders.heads import apply_head

        out = self.realign.transform(apply_head(self.head, X))  # (n, E) on the image side
        return torch.from_numpy(out.astype(np.float32))


def subset_pairs(pairs: Any, rows: np.ndarray) -> Any:
    """The ``rows`` of a :class:`~workbench.evals.task_suite.PairSet`."""
    from workbench.evals.task_suite import PairSet

    return PairSet(pairs.image_tower[rows], pairs.text_tower[rows], [pairs.texts[i] for i in rows],
                   [pairs.keys[i] for i in rows], [pairs.tasks[i] for i in rows])  # fmt: skip
