"""A short trainer for token methods (CDDS, its VSE baseline) on cached token features.

Why not :func:`workbench.train.train`: the loop's contract is pooled tower features through the
encoder's heads — its sources hand (B, D) ``image_tower``/``text_tower`` rows to
``encoder.image_head``/``text_head``, one row per dataset item with ``captions[0]``, and its
held-out metrics and spectral snapshots score those heads. A token method owns its projections,
reads (B, L, C) tokens with masks, trains on *every* (image, caption) pair with captions of one
image as mutual positives, and is scored by image↔caption retrieval. Fitting that into the loop
would change its sources, batch builder, held-out evaluation and snapshots at once; a run here
is 10–60 s, so this trainer keeps only what such a run needs and reuses the loop's pieces (LR
schedule :func:`~workbench.train.schedules.lr_factor`, weight-decay groups
:func:`~workbench.train.params.param_groups`, seeding :func:`~workbench.train.rng.seed_all`):

per step: seeded pair order (epochs of permutations, last partial batch dropped) → token batch
from the cache (float16 → float32, trimmed to the batch's longest caption) →
``method(TokenBatch, StepState)`` under bf16 autocast on CUDA → backward → gradient clipping →
AdamW. No checkpoints (runs are shorter than a checkpoint is worth).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.encoders.tokens import TokenFeatures
from workbench.experiments.grid import StepCallback, call_on_step, check_on_step, check_run_length
from workbench.methods.tokens import TokenBatch, TokenMethod

__all__ = [
    "TokenTraining",
    "TrainedTokenModel",
    "check_token_features",
    "encode_token_features",
    "token_retrieval",
    "train_token_method",
]


@dataclass
class TokenTraining:
    """Optimisation settings of one token-method run.

    Attributes:
        steps: Optimiser steps (300: ~4 epochs of 5k pairs at batch 64; the baseline has
            converged by then on our data).
        batch_size: Pairs per step (64: CDDS's batch [secondary]).
        lr: Peak AdamW learning rate (1e-3: every module trains from scratch in a few hundred
            steps; the paper's 2e-4 is for 25 epochs).
        warmup: Linear warm-up steps (10 % of ``steps`` when ``None``).
        weight_decay: AdamW weight decay on matrices (0.01, AdamW's default).
        schedule: ``"cosine"``, ``"linear"`` or ``"constant"`` after warm-up.
        grad_clip: Max gradient norm (2.0, VSE++'s; ``None``: no clipping).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        precision: ``"fp32"`` or ``"bf16"`` (autocast on CUDA only; losses compute in fp32).
        refresh_every: For ``identification="precomputed"``: recompute the whole training set's
            column statistics every this many steps (``None``: once, before the first step).
    """

    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int | None = None
    weight_decay: float = 0.01
    schedule: str = "cosine"
    grad_clip: float | None = 2.0
    device: str = "cpu"
    precision: str = "fp32"
    refresh_every: int | None = None

    def __post_init__(self) -> None:
        check_run_length(self)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.refresh_every is not None and not (
            isinstance(self.refresh_every, int) and self.refresh_every >= 1
        ):
            raise ValueError(
                f"refresh_every must be an int ≥ 1 or None, got {self.refresh_every!r}"
            )


@dataclass
class TrainedTokenModel:
    """One finished run.

    Attributes:
        method: The trained method (eval mode).
        seed: Its seed.
        log: Per-step records ``{"step", "loss", "lr", "terms", "logs", "ms"}``.
        step_ms: Median wall-clock milliseconds per optimiser step (statistics refreshes of
            ``identification="precomputed"`` excluded; they are in ``refresh_seconds``).
        seconds: Whole run, refreshes included.
        refresh_seconds: Time spent computing whole-training-set statistics.
        evals: What ``on_step`` returned, ``{"step", "metrics", "seconds"}`` per call that
            returned metrics (empty without ``on_step``).
    """

    method: TokenMethod
    seed: int
    log: list[dict[str, Any]] = field(repr=False)
    step_ms: float
    seconds: float
    refresh_seconds: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list, repr=False)


def check_token_features(features: TokenFeatures, name: str = "features") -> None:
    """Raise ``ValueError`` if any *real* token of ``features`` is NaN/Inf (padding may be anything)."""
    if not isinstance(features, TokenFeatures):
        raise TypeError(f"{name} must be TokenFeatures (workbench.encoders.tokens.embed_tokens)")
    if features.n_captions < 2:
        raise ValueError(f"{name} holds {features.n_captions} caption(s); training needs ≥ 2 pairs")
    for side, tokens, mask in (
        ("image", features.image_tokens, features.image_mask),
        ("text", features.text_tokens, features.text_mask),
    ):
        if not np.isfinite(tokens[mask]).all():
            raise ValueError(f"{name}: {side} tokens hold NaN/Inf at real (unmasked) positions")


def _resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


class _DeviceTokens:
    """A :class:`TokenFeatures` held as tensors on the training device, cast once.

    float16 → float32 costs ~10 ms per batch of (64, 16, 1280) on a CPU, as much as a baseline
    step, so on a CPU the tokens are upcast once here (twice the cache's bytes in memory); on
    CUDA they stay in their storage dtype and are cast per batch (free there).
    """

    def __init__(self, features: TokenFeatures, device: torch.device) -> None:
        dtype = torch.float32 if device.type == "cpu" else None
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, dtype)  # noqa: E731
        self.image, self.text = as_t(features.image_tokens), as_t(features.text_tokens)
        self.image_mask = torch.from_numpy(features.image_mask).to(device)
        self.text_mask = torch.from_numpy(features.text_mask).to(device)
        self.owner = torch.from_numpy(features.caption_owner).to(device)
        self.text_len = self.text_mask.sum(1)

    def batch(self, captions: np.ndarray) -> TokenBatch:
        rows = torch.as_tensor(captions, device=self.owner.device)
        images = self.owner[rows]
        length = int(self.text_len[rows].max())  # real tokens are left-aligned
        return TokenBatch(
            self.image.index_select(0, images).float(),
            self.image_mask.index_select(0, images),
            self.text.index_select(0, rows)[:, :length].float(),
            self.text_mask.index_select(0, rows)[:, :length],
            images,
        )


def _refresh_statistics(method: Any, features: TokenFeatures, device: torch.device) -> None:
    """Column (mean, std) of both sides' semantic components over the whole training set."""
    from workbench.methods.cdds.semantics import column_stats

    was = method.training
    method.eval()
    stats = []
    with torch.no_grad():
        for side, n, batch in (
            ("image", features.n_images, features.image_batch),
            ("text", features.n_captions, features.text_batch),
        ):
            s1 = s2 = count = 0.0
            for start in range(0, n, 512):
                tokens, mask = batch(np.arange(start, min(n, start + 512)), device)
                c = method.components(side, tokens, mask)
                mean, std = column_stats(c.semantic, c.mask, eps=0.0)
                k = float(mask.sum())
                s1, s2, count = s1 + k * mean, s2 + k * (std**2 + mean**2), count + k
            mean = s1 / count
            stats.append((mean, (s2 / count - mean**2).clamp_min(0).sqrt()))
    method.set_statistics(*stats)
    method.train(was)


def train_token_method(
    method: str | TokenMethod,
    features: TokenFeatures,
    seed: int,
    training: TokenTraining | None = None,
    *,
    method_config: dict[str, Any] | None = None,
    on_step: StepCallback | None = None,
) -> TrainedTokenModel:
    """Train a token method from a seeded initialisation on every (image, caption) pair.

    Args:
        method: A registry name (built with ``method_config`` plus the features' token widths
            as ``image_dim``/``text_dim``, after seeding, so a seed fixes the initialisation) or
            a :class:`TokenMethod` instance (trained in place).
        features: Training tokens; every caption is one pair with its image.
        seed: Initialisation, pair order and perturbation noise.
        training: Optimisation settings (defaults: :class:`TokenTraining`).
        method_config: Keyword arguments of the method when ``method`` is a name.
        on_step: Optional ``(step, method) -> {metric: value} | None``, called before the first
            update (step 0, after the first statistics refresh) and after every optimiser step
            (steps 1..``steps``), the method in eval mode under ``torch.no_grad``; the caller
            picks its cadence (return ``None`` to skip a step). Its time is not in ``step_ms``.
            Returned metrics land in :attr:`TrainedTokenModel.evals`. ``None`` (default): no
            calls, the run is unchanged.

    Returns:
        :class:`TrainedTokenModel` (method in eval mode).
    """
    from workbench import methods
    from workbench.methods.base import StepState
    from workbench.train.params import param_groups
    from workbench.train.rng import seed_all
    from workbench.train.schedules import lr_factor

    training = training or TokenTraining()
    check_token_features(features)
    check_on_step(on_step)
    device = _resolve(training.device)
    seed_all(seed)
    if isinstance(method, str):
        image_dim, text_dim = features.dims
        cfg = {"image_dim": image_dim, "text_dim": text_dim, **(method_config or {})}
        method = methods.get(method, **cfg)
    if not isinstance(method, TokenMethod):
        raise TypeError(f"method must be a token method (TokenMethod), got {type(method).__name__}")
    method.to(device).train()
    data = _DeviceTokens(features, device)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(params, training.weight_decay), lr=training.lr)
    n, batch = features.n_captions, min(training.batch_size, features.n_captions)
    per_epoch = n // batch
    rng_epochs: dict[int, np.ndarray] = {}
    warmup = max(1, training.steps // 10) if training.warmup is None else training.warmup
    amp = device.type == "cuda" and training.precision == "bf16"
    precomputed = getattr(method, "identification", None) == "precomputed"
    log, times, refresh, evals = [], [], 0.0, []
    t_run = time.perf_counter()
    for step in range(training.steps):
        if precomputed and (
            step == 0 or (training.refresh_every and step % training.refresh_every == 0)
        ):
            t0 = time.perf_counter()
            _refresh_statistics(method, features, device)
            refresh += time.perf_counter() - t0
        if step == 0 and on_step is not None:
            call_on_step(on_step, 0, method, evals)
        t0 = time.perf_counter()
        epoch, pos = divmod(step, per_epoch)
        if epoch not in rng_epochs:
            rng_epochs = {epoch: np.random.default_rng([seed, epoch]).permutation(n)}
        rows = rng_epochs[epoch][pos * batch : (pos + 1) * batch]
        lr = training.lr * lr_factor(step, training.steps, warmup, training.schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = method(data.batch(rows), StepState(step, training.steps))
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{method.name}: loss is not finite at step {step + 1} "
                f"(terms: { {k: float(v) for k, v in out.terms.items()} }); lower lr"
            )
        out.loss.backward()
        if training.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, training.grad_clip)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        log.append(
            {
                "step": step + 1,
                "loss": loss,
                "lr": lr,
                "terms": {k: float(v.detach()) for k, v in out.terms.items()},
                "logs": dict(out.logs),
                "ms": 1e3 * times[-1],
            }
        )
        if on_step is not None:
            call_on_step(on_step, step + 1, method, evals)
    method.eval()
    return TrainedTokenModel(method, seed, log, 1e3 * statistics.median(times),
                             time.perf_counter() - t_run, refresh, evals)  # fmt: skip


@torch.no_grad()
def encode_token_features(
    method: TokenMethod, features: TokenFeatures, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """``(image (n_img, E), text (n_cap, E))`` L2-normalised retrieval embeddings, eval mode."""
    device = next(method.parameters()).device
    was = method.training
    method.eval()
    out = []
    for side, n, batch in (
        ("image", features.n_images, features.image_batch),
        ("text", features.n_captions, features.text_batch),
    ):
        chunks = []
        for start in range(0, n, batch_size):
            tokens, mask = batch(np.arange(start, min(n, start + batch_size)), device)
            chunks.append(method.embed_tokens(side, tokens, mask).float().cpu().numpy())
        out.append(np.concatenate(chunks))
    method.train(was)
    return out[0], out[1]


def token_retrieval(
    method: TokenMethod, features: TokenFeatures, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Image→caption and caption→image R@K and rSum of ``method`` on ``features`` (every caption
    of an image counts as its match; :func:`workbench.probes.retrieval.retrieval_scores`)."""
    from workbench.probes.retrieval import retrieval_scores

    image, text = encode_token_features(method, features)
    return retrieval_scores(image @ text.T, features.caption_owner, ks)
