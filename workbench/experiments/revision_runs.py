"""Scoring and the row loop of the ReVision study (``notebooks/revision.ipynb``): captions of the
held-out images, CIDEr-D / BLEU-4, the retrieval check, the prefix centroid gap, and
:func:`run_revision_study` over every row × seed (Stage 1) and Stage-2 base × fraction × seed.

Config, data and one row's training: :mod:`workbench.experiments.revision`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.experiments.revision import (
    REVISION_ROWS,
    SCRATCH,
    ReVisionConfig,
    ReVisionData,
    fit_row_alignment,
    stage2_rows,
    train_row,
)

__all__ = ["RowResult", "prefix_gap", "run_name", "run_revision_study", "score_row"]


# -- scoring ----------------------------------------------------------------------------------
def _normed(X: np.ndarray) -> Any:
    import torch

    t = torch.as_tensor(np.asarray(X, dtype=np.float32))
    return torch.nn.functional.normalize(t, dim=-1)


def prefix_gap(method: Any, data: ReVisionData) -> dict[str, float]:
    """Centroid gap between the eval images' and eval captions' projected prefixes.

    Images go through the row's image frame, captions through its Stage-1 text frame (C3 without
    noise); each prefix is flattened to k·d_model. Returns ``gap`` = ‖mean P(image) − mean P(text)‖
    and ``relative_gap`` = gap / RMS distance of text prefixes to their mean (scale-free).
    """
    import torch

    dev = method.mu_x.device
    with torch.no_grad():
        pi = method.prefixes(_normed(data.eval.image).to(dev), "image").flatten(1).double().cpu()
        pt = method.prefixes(_normed(data.eval.text).to(dev), "text").flatten(1).double().cpu()
    gap = float((pi.mean(0) - pt.mean(0)).norm())
    spread = float((pt - pt.mean(0)).pow(2).sum(1).mean().sqrt())
    return {"gap": gap, "relative_gap": gap / spread if spread > 0 else float("nan")}


def _sources(data: ReVisionData) -> list[str]:
    return (
        [a.get("source", "all") for a in data.eval.attributes]
        if data.eval.attributes
        else ["all"] * len(data.eval)
    )


def score_row(
    cfg: ReVisionConfig,
    data: ReVisionData,
    captions: Sequence[str],
    *,
    retrieval_cache: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """CIDEr-D / BLEU-4 overall and per source, and the retrieval check, of one row's captions."""
    from workbench.evals.captioning import caption_retrieval, caption_scores

    out = {f"{k}": v for k, v in caption_scores(captions, data.references).items()}
    src = np.asarray(_sources(data))
    for s in dict.fromkeys(src):
        idx = np.flatnonzero(src == s)
        if len(idx) >= 2:
            sc = caption_scores([captions[i] for i in idx], [data.references[i] for i in idx])
            out[f"CIDEr/{s}"] = sc["CIDEr"]
    ret = caption_retrieval(
        data.encoder, captions, data.eval.image, gallery=cfg.retrieval_gallery, seed=seed,
        cache=retrieval_cache,
    )  # fmt: skip
    out["R@1"], out["R@5"], out["chance@1"] = ret["R@1"], ret["R@5"], ret["chance@1"]
    out["distinct_captions"] = len(set(captions)) / len(captions)
    return out


@dataclass
class RowResult:
    """One scored (row, seed): ``row`` names the Tab. 1 row or ``"<from> → S2 <f>"``."""

    row: str
    seed: int
    fraction: float
    base: str
    metrics: dict[str, float]
    captions: list[str]
    steps: int = 0
    seconds: float = 0.0


def run_name(label: str) -> str:
    """A row label as a loop run name (letters, digits and ``_.=,-`` only: ``+`` → ``_``).

    >>> run_name("Anchor+Trace-s0")
    'Anchor_Trace-s0'
    """
    return re.sub(r"[^A-Za-z0-9_.=,-]", "_", label)


def _caption_images(method: Any, data: ReVisionData, cfg: ReVisionConfig) -> list[str]:
    dev = method.mu_x.device
    return method.caption(_normed(data.eval.image).to(dev), "image", num_beams=cfg.num_beams)


def run_revision_study(
    cfg: ReVisionConfig,
    data: ReVisionData,
    run_root: str | Path,
    *,
    on_result: Callable[[RowResult], None] | None = None,
) -> list[RowResult]:
    """Every row × seed (Stage 1), then every Stage-2 base × fraction × seed (Tab. 6/7)."""
    import torch

    from workbench.evals.captioning import caption_scores
    from workbench.methods.revision import load_caption_lm

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    results: list[RowResult] = []
    cache: dict[str, np.ndarray] = {}

    def emit(r: RowResult) -> None:
        results.append(r)
        if on_result is not None:
            on_result(r)

    try:
        for seed in cfg.seeds:
            stage1: dict[str, Any] = {}
            for name in cfg.rows:
                row = REVISION_ROWS[name]
                if row.source is None:  # Blind: the frozen LM with no visual prefix at all
                    caps = load_caption_lm(cfg.lm).generate(
                        None, n=len(data.eval), num_beams=cfg.num_beams
                    )
                    m = score_row(cfg, data, caps, retrieval_cache=cache, seed=seed)
                    emit(
                        RowResult(
                            name,
                            seed,
                            0.0,
                            name,
                            {**m, "gap": math.nan, "relative_gap": math.nan},
                            caps,
                        )
                    )
                    continue
                stats = fit_row_alignment(row, data.pool, seed, cfg.c3_sigma)
                tr = train_row(
                    cfg,
                    data,
                    row.source,
                    row.align,
                    stats,
                    seed,
                    run_root,
                    name=run_name(f"{name}-s{seed}"),
                )
                stage1[name] = (tr.method, stats)
                caps = _caption_images(tr.method, data, cfg)
                m = {
                    **score_row(cfg, data, caps, retrieval_cache=cache, seed=seed),
                    **prefix_gap(tr.method, data),
                }
                m["final_nll"] = tr.log[-1].get("loss", math.nan) if tr.log else math.nan
                if cfg.text_check and row.source == "text" and seed == cfg.seeds[0]:
                    text_caps = tr.method.caption(
                        _normed(data.eval.text).to(tr.method.mu_x.device),
                        "text",
                        num_beams=cfg.num_beams,
                    )
                    m["CIDEr (text in)"] = caption_scores(text_caps, data.references)["CIDEr"]
                emit(RowResult(name, seed, 0.0, name, m, caps, tr.steps, tr.seconds))
            for base in cfg.stage2_from:
                init = None
                if base == SCRATCH:
                    align, stats = "none", None
                else:
                    method, stats = stage1[base]
                    align = REVISION_ROWS[base].align
                    init = str(
                        method.save_projector(
                            Path(run_root) / f"projector-{base}-s{seed}.safetensors"
                        )
                    )
                for f in cfg.fractions:
                    if f == 0:
                        continue
                    rows = stage2_rows(len(data.pool), f, seed, cfg.n_stage2)
                    tr = train_row(
                        cfg, data, "image", align, stats, seed, run_root, rows=rows,
                        init_projector=init, name=run_name(f"{base}-S2-{f:g}-s{seed}"),
                    )  # fmt: skip
                    caps = _caption_images(tr.method, data, cfg)
                    m = {
                        **score_row(cfg, data, caps, retrieval_cache=cache, seed=seed),
                        **prefix_gap(tr.method, data),
                    }
                    emit(
                        RowResult(
                            f"{base} → S2 {f:.0%}", seed, f, base, m, caps, tr.steps, tr.seconds
                        )
                    )
    finally:
        torch.set_num_threads(threads)
    return results
