"""How every leaderboard row is scored: the shared data, the task columns and the diagnostics.

One scoring path for all rows (issue 18). A heads-only row is scored on the mixture's cached
tower features through its heads (:func:`score_heads`); a row whose image tower changed
(Earth-Adapter's adapters) or whose embeddings are not heads over the towers (CDDS's semantic
components) gets the *same* suites rebuilt over its own towers — the splits depend only on the
suite's config, so every row answers the same queries (:func:`rebuilt_data`) — and is then
scored by the same :func:`score_model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LeaderboardData",
    "append_evals",
    "leaderboard_hook",
    "probe_snapshot",
    "rebuilt_data",
    "score_heads",
    "score_model",
]


@dataclass
class LeaderboardData:
    """Everything the runs share: the start, the suites, the probe set, the frame, extras.

    Attributes:
        encoder: The starting encoder (every run starts from a copy of it).
        suite: Task suite of the mixture (cached tower features of ``encoder``).
        zero_shot: Classification suite of the held-out data sets.
        pairs: The mixture's training pairs (``suite.train_pairs()``).
        probe: ``(image (n, D_img), text (n, D_txt))`` tower features of the diagnostics' pairs.
        frame: β/γ frame fitted on the starting heads' probe embeddings (``None``: no β/γ,
            for a row whose embedding space is not the heads').
        extras: Inputs some rows need (negative bank, targets, items, tokens, scenes).
        seconds: Time to build all of it.
    """

    encoder: Any
    suite: Any
    zero_shot: Any
    pairs: Any
    probe: tuple[np.ndarray, np.ndarray]
    frame: Any
    extras: dict[str, Any]
    seconds: float


def score_heads(heads: Any, data: LeaderboardData) -> dict[str, float]:
    """The leaderboard's task columns of ``heads`` (``lb/...``; P@1 in [0, 1])."""
    from workbench.encoders.heads import apply_head
    from workbench.probes.separability import fisher_ratio

    df = data.suite.evaluate(heads, check_towers=False)
    meta = df[df.level == "meta_task"].set_index("meta_task")["value"]
    task = df[df.level == "task"].set_index("task")["value"]
    out = {f"lb/{m}": float(v) for m, v in meta.items() if m != "retrieval"}
    for way, query in (("i2t", "image"), ("t2i", "text")):
        names = [t.name for t in data.suite.tasks
                 if t.meta_task == "retrieval" and t.query_modality == query]  # fmt: skip
        if names:
            out[f"lb/retrieval_{way}"] = float(task.loc[names].mean())
    zs = data.zero_shot.evaluate(heads, check_towers=False)
    out["lb/zero_shot"] = float(zs[zs.level == "overall"]["value"].iloc[0])
    fisher = [
        fisher_ratio(apply_head(heads.image_head, t.queries), t.target)
        for t in data.suite.tasks
        if t.meta_task == "classification" and len(np.unique(t.target)) > 1
    ]
    if fisher:
        out["lb/fisher"] = float(np.mean(fisher))
    return out


def probe_snapshot(
    heads: Any, image_tower: np.ndarray, text_tower: np.ndarray, frame: Any
) -> dict[str, float]:
    """:func:`~workbench.evals.diagnostics.geometry_snapshot` of probe pairs given by their
    tower features, image (n, D_img) and text (n, D_txt), projected through ``heads``; β/γ in
    ``frame`` (``None``: none). Keys unprefixed."""
    from workbench.evals.diagnostics import geometry_snapshot, project_pairs

    return geometry_snapshot(*project_pairs(heads, image_tower, text_tower), frame)


def score_model(heads: Any, data: LeaderboardData) -> dict[str, float]:
    """Task columns (:func:`score_heads`) and diagnostics (``diag/...``) of ``heads`` on
    ``data``'s probe pairs, β/γ in ``data.frame`` when it has one."""
    from workbench.evals.diagnostics import DIAG_PREFIX

    snap = probe_snapshot(heads, *data.probe, data.frame)
    return {**score_heads(heads, data), **{DIAG_PREFIX + k: v for k, v in snap.items()}}


def leaderboard_hook(data: LeaderboardData) -> Callable[[Any, int], dict[str, float]]:
    """Eval hook of :func:`workbench.train.train`: ``lb/...`` and ``diag/...`` of the current
    heads at every ``eval_every`` (step 0 included), on the cached tower features."""
    from workbench.encoders.heads import as_heads

    return lambda encoder, step: score_model(as_heads(encoder), data)


def rebuilt_data(encoder: Any, data: LeaderboardData, probe_pairs: int) -> LeaderboardData:
    """``data`` with its suites rebuilt over ``encoder``'s towers (same configs, so the same
    splits and queries) and its probe pairs drawn again from them.

    For a row whose towers are not the start's: adapters inside the image tower
    (Earth-Adapter), or a token method behind identity heads
    (:class:`~workbench.methods.tokens.TokenMethodEncoder`). The β/γ frame is kept when the
    encoder keeps the start's kind of heads (the same space), else dropped (``None``).
    """
    from workbench.evals.task_builder import build_task_suite
    from workbench.experiments.leaderboard_data import probe_set

    suite = build_task_suite(encoder, data.suite.config)
    zero_shot = build_task_suite(encoder, data.zero_shot.config)
    probe = probe_set(suite, probe_pairs)
    same_heads = type(encoder.image_head) is type(data.encoder.image_head)
    frame = data.frame if same_heads else None
    return dataclasses.replace(data, suite=suite, zero_shot=zero_shot, probe=probe, frame=frame)


def append_evals(run_dir: str | Path, trajectory: list[dict[str, Any]]) -> None:
    """Append ``[{"step": s, **metrics}]`` to a run's log as the loop's ``eval`` records, so
    :func:`~workbench.experiments.leaderboard_runs.results_from_runs` (and
    ``workbench leaderboard RUN_DIR...``) read the row back from its run directory."""
    from workbench.train.rundir import LOG, LogWriter

    writer = LogWriter(Path(run_dir) / LOG)
    try:
        for point in trajectory:
            metrics = {k: v for k, v in point.items() if k != "step"}
            writer.write({"kind": "eval", "step": int(point["step"]), "metrics": metrics})
    finally:
        writer.close()
