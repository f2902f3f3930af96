"""Pretraining the ``"tiny"`` denoiser (:mod:`~workbench.methods.dcr.tiny`): data, loop, card.

One process on the CPU: the recipe's mixture is loaded once (images at 32 px as uint8, every
distinct caption embedded by the default encoder's text tower; with ``condition="joint"`` the
captions, the empty caption and every image are then mapped into the encoder's shared space, see
:mod:`~workbench.methods.dcr.tiny`), then a DDPM is trained with AdamW on the ε-MSE, a warm-up +
cosine LR and an EMA of the weights; the float16-rounded EMA weights (what ships) are evaluated
on the held-out items and sampled with DDIM for the card.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workbench.methods.dcr.denoiser import SCHEDULER_CONFIG, UNetDenoiser, ddpm_scheduler
from workbench.methods.dcr.tiny import TinyDenoiserRecipe, build_unet
from workbench.methods.dcr.tiny_data import (
    MixtureData,
    joint_conditions,
    mixture_key,
    prepare_mixture,
)

__all__ = [
    "MixtureData",
    "PretrainResult",
    "denoising_loss",
    "heldout_losses",
    "joint_conditions",
    "mixture_key",
    "prepare_mixture",
    "pretrain_tiny_denoiser",
    "sample",
]


def _lr(step: int, recipe: TinyDenoiserRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    p = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * p))


def _pick_conditions(
    data: MixtureData, rows: torch.Tensor, recipe: TinyDenoiserRecipe, g: torch.Generator
) -> torch.Tensor:
    """(b, D) one condition vector per row: the row's image embedding with probability
    ``recipe.image_condition``, else one of its captions at random; then the empty caption's
    with probability ``recipe.cond_dropout``."""
    picks = []
    for r in rows.tolist():
        ids = data.caption_ids[r]
        picks.append(ids[int(torch.randint(len(ids), (1,), generator=g))])
    emb = data.caption_emb[torch.tensor(picks)]
    image = torch.rand(len(picks), generator=g) < recipe.image_condition
    if data.image_emb is not None:
        emb = torch.where(image[:, None], data.image_emb[rows], emb)
    drop = torch.rand(len(picks), generator=g) < recipe.cond_dropout
    return torch.where(drop[:, None], data.empty[None], emb)


def denoising_loss(
    den: UNetDenoiser,
    x0: torch.Tensor,
    cond_vec: torch.Tensor,
    g: torch.Generator,
    t: torch.Tensor | None = None,
    target: str = "eps",
) -> torch.Tensor:
    """Per-sample denoising MSE (b,) of ``den`` on clean (b, 3, s, s) inputs in [−1, 1] under
    (b, D) condition vectors (broadcast over the tokens, *not* added to the empty embedding:
    during pretraining the condition vector is the whole condition).

    ``target="eps"``: the ε-MSE (DDPM's simple loss); ``"v"``: the MSE on v, computed as
    ‖ε̂ − ε‖²/ᾱ_t (since ε̂ − ε = √ᾱ_t·(v̂ − v)): ε-MSE at low t, a reconstruction of x₀ at high
    t, where only the condition tells the model what x₀ was."""
    b = x0.shape[0]
    if t is None:
        t = torch.randint(den.num_timesteps, (b,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = den.add_noise(x0, noise, t)
    cond = cond_vec[:, None, :].expand(-1, den.cond_tokens, -1)  # (b, T, D)
    pred = den._predict(x_t, t, cond).float()
    mse = (pred - noise).pow(2).flatten(1).mean(1)  # (b,)
    if target == "v":
        return mse / den.scheduler.alphas_cumprod[t].float()
    return mse


#: Timestep bins of the card's per-t held-out losses (t in [lo, hi)).
T_BINS = ((0, 250), (250, 500), (500, 750), (750, 1000))


def heldout_losses(
    den: UNetDenoiser, data: MixtureData, seed: int = 1, max_items: int = 512
) -> dict[str, Any]:
    """Held-out ε-MSE under each kind of condition, on the same noise and timesteps, so the gaps
    show how much the model uses its condition (DCR's negatives rely on it).

    Conditions: ``true`` (what DCR feeds: the item's own image embedding with
    ``condition="joint"``, its first caption otherwise), ``shuffled`` (the same kind, of another
    held-out item), ``caption`` / ``shuffled_caption`` (``"joint"`` only), ``empty``.

    Returns ``{"heldout_mse/<condition>": float, "heldout_items": n,
    "heldout_by_t": {"bins": [[lo, hi], ...], "true": [...], "shuffled": [...]},
    "heldout_cos/true_vs_shuffled": float}``; the last is the mean cosine between the two
    flattened predictions for one noisy input (DCR's logits are these cosines / τ).
    """
    rows = torch.nonzero(data.holdout).flatten()[:max_items]
    if len(rows) < 2:
        return {}
    g = torch.Generator().manual_seed(seed)
    x0 = data.images[rows].float() / 127.5 - 1
    caption = data.caption_emb[torch.tensor([data.caption_ids[r][0] for r in rows.tolist()])]
    true = data.image_emb[rows] if data.image_emb is not None else caption
    conds = {"true": true, "shuffled": true.roll(1, 0)}
    if data.image_emb is not None:
        conds.update(caption=caption, shuffled_caption=caption.roll(1, 0))
    conds["empty"] = data.empty.expand_as(true)
    t = torch.randint(den.num_timesteps, (len(rows),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = den.add_noise(x0, noise, t)
    preds: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, c in conds.items():
            preds[name] = torch.cat(
                [
                    den._predict(
                        x_t[i : i + 128],
                        t[i : i + 128],
                        c[i : i + 128, None, :].expand(-1, den.cond_tokens, -1),
                    ).float()
                    for i in range(0, len(rows), 128)
                ]
            )  # (n, 3, s, s)
    mse = {k: (p - noise).pow(2).flatten(1).mean(1) for k, p in preds.items()}  # (n,) each
    out: dict[str, Any] = {f"heldout_mse/{k}": float(v.mean()) for k, v in mse.items()}
    out["heldout_items"] = len(rows)
    in_bin = [(t >= lo) & (t < hi) for lo, hi in T_BINS]
    out["heldout_by_t"] = {
        "bins": [list(b) for b in T_BINS],
        **{k: [float(mse[k][m].mean()) if m.any() else None for m in in_bin]
           for k in ("true", "shuffled")},
    }  # fmt: skip
    cos = F.cosine_similarity(preds["true"].flatten(1), preds["shuffled"].flatten(1), dim=1)
    out["heldout_cos/true_vs_shuffled"] = float(cos.mean())
    return out


def sample(
    den: UNetDenoiser, cond_vec: torch.Tensor, steps: int = 50, seed: int = 0
) -> torch.Tensor:
    """DDIM samples (b, 3, s, s) in [0, 1] under (b, D) condition vectors (as in training)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()}, clip_sample=False)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    s = den.image_size
    x = torch.randn((cond_vec.shape[0], 3, s, s), generator=g)
    cond = cond_vec[:, None, :].expand(-1, den.cond_tokens, -1)
    with torch.no_grad():
        for t in sched.timesteps:
            eps = den._predict(x, t.expand(x.shape[0]), cond).float()
            x = sched.step(eps, t, x).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


@dataclass
class PretrainResult:
    """What :func:`pretrain_tiny_denoiser` returns: the EMA denoiser, its card, samples."""

    denoiser: UNetDenoiser
    card: dict[str, Any]
    samples: torch.Tensor
    sample_captions: list[str]
    losses: list[float]


def pretrain_tiny_denoiser(
    recipe: TinyDenoiserRecipe | None = None,
    *,
    data: MixtureData | None = None,
    log_every: int = 50,
    log=None,
) -> PretrainResult:
    """Train the tiny denoiser from scratch on the recipe's mixture (one process, CPU).

    Args:
        recipe: The recipe (default: the shipped one's).
        data: Prepared mixture (default: :func:`prepare_mixture`).
        log_every: Steps between progress records passed to ``log``.
        log: Optional callable ``(dict) -> None`` receiving ``{"step", "loss", "lr", "time"}``.

    Returns:
        :class:`PretrainResult`; ``card`` has the recipe, data counts, final training loss (mean
        of the last 100 steps), held-out losses, wall time, threads and library versions.
    """
    import diffusers

    recipe = recipe or TinyDenoiserRecipe()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    load_start = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        data = data if data is not None else prepare_mixture(recipe)
        if (data.image_emb is not None) != (recipe.condition == "joint"):
            raise ValueError(
                f"pretrain_tiny_denoiser: data prepared for another condition than the recipe's "
                f"{recipe.condition!r}; prepare it with prepare_mixture(recipe)"
            )
        t_data, c_data = time.perf_counter() - t0, time.process_time() - c0
        unet = build_unet(recipe, data.caption_emb.shape[1])
        empty = data.empty[None].expand(recipe.cond_tokens, -1)
        den = UNetDenoiser(
            unet,
            ddpm_scheduler(),
            empty,
            image_size=recipe.image_size,
            patch=recipe.patch,
            output=recipe.unet_output,
            name="tiny",
        )
        unet.requires_grad_(True)
        unet.train()
        ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(recipe.seed)
        train_rows = torch.nonzero(~data.holdout).flatten()
        perm, pos, losses = train_rows[torch.randperm(len(train_rows), generator=g)], 0, []
        for step in range(recipe.steps):
            if pos + recipe.batch_size > len(perm):
                perm, pos = train_rows[torch.randperm(len(train_rows), generator=g)], 0
            rows = perm[pos : pos + recipe.batch_size]
            pos += recipe.batch_size
            x0 = data.images[rows].float() / 127.5 - 1  # (b, 3, s, s) in [-1, 1]
            cond = _pick_conditions(data, rows, recipe, g)
            for group in opt.param_groups:
                group["lr"] = _lr(step, recipe)
            loss = denoising_loss(den, x0, cond, g, target=recipe.loss).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            decay = min(recipe.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for k, v in unet.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                    else:
                        ema[k].copy_(v)
            losses.append(float(loss.detach()))
            if log is not None and (step + 1) % log_every == 0:
                log(
                    {
                        "step": step + 1,
                        "loss": float(np.mean(losses[-log_every:])),
                        "lr": _lr(step, recipe),
                        "time": time.perf_counter() - t0,
                    }
                )
        t_train = time.perf_counter() - t0 - t_data
        c_train = time.process_time() - c0 - c_data
        load_end = os.getloadavg()
        # What ships is float16: evaluate exactly those weights.
        unet.load_state_dict(
            {k: v.half().float() if v.dtype.is_floating_point else v for k, v in ema.items()}
        )
        den.freeze()
        metrics = heldout_losses(den, data)
        samples, caps = _card_samples(den, data, recipe.seed)
        card = {
            "name": "tiny",
            "recipe": recipe.to_dict(),
            "recipe_key": recipe.key(),
            "scheduler": SCHEDULER_CONFIG,
            "condition": _condition_text(recipe),
            "data": {
                "counts": data.counts,
                "train_items": int((~data.holdout).sum()),
                "heldout_items": int(data.holdout.sum()),
                "distinct_captions": len(data.captions),
            },
            "final_train_loss": float(np.mean(losses[-100:])),
            "first_train_loss": float(np.mean(losses[:50])),
            **metrics,
            "n_params": int(sum(p.numel() for p in unet.parameters())),
            "wall_seconds": {"data": round(t_data, 1), "train": round(t_train, 1)},
            "cpu_seconds": {"data": round(c_data, 1), "train": round(c_train, 1)},
            "data_from_cache": bool(data.from_cache),
            "loadavg_1min": {"start": round(load_start[0], 2), "end": round(load_end[0], 2)},
            "threads": recipe.threads,
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
            "sample_captions": caps,
        }
        return PretrainResult(den, card, samples, caps, losses)
    finally:
        torch.set_num_threads(threads)


def _condition_text(recipe: TinyDenoiserRecipe) -> str:
    """The card's one-line description of the recipe's condition."""
    tail = (f"broadcast over {recipe.cond_tokens} tokens; the empty caption's with "
            f"p={recipe.cond_dropout}")  # fmt: skip
    if recipe.condition == "text-tower":
        return f"default encoder text tower (all-MiniLM-L6-v2, mean-pooled, 384-d) of a caption, {tail}"
    return (
        "the default encoder's shared 256-d space, L2-normalised × √256: the item's own image "
        f"embedding (image_head ∘ image_tower) with p={recipe.image_condition}, else a caption's "
        f"(text_head ∘ text_tower); {tail}"
        + ("; also through the time embedding (class_embed_type='projection')"
           if recipe.global_condition else "")
    )  # fmt: skip


def _card_samples(
    den: UNetDenoiser, data: MixtureData, seed: int, per_source: int = 2
) -> tuple[torch.Tensor, list[str]]:
    """The card's figure: per held-out item (``per_source`` per source) the original, then a
    DDIM sample under its image embedding (``"joint"``), then one under its first caption.
    Returns (n, 3, s, s) in [0, 1] and one title per panel."""
    rows = _sample_rows(data, torch.nonzero(data.holdout).flatten(), per_source=per_source)
    cap = data.caption_emb[torch.tensor([data.caption_ids[r][0] for r in rows])]
    by_cap = sample(den, cap, seed=seed)
    panels, titles = [], []
    by_img = sample(den, data.image_emb[rows], seed=seed) if data.image_emb is not None else None
    for i, r in enumerate(rows):
        text = data.captions[data.caption_ids[r][0]]
        panels.append(data.images[r].float() / 255)
        titles.append("held out: " + text)
        if by_img is not None:
            panels.append(by_img[i])
            titles.append("| its image embedding")
        panels.append(by_cap[i])
        titles.append("| its caption")
    return torch.stack(panels), titles


def _sample_rows(data: MixtureData, rows: torch.Tensor, per_source: int) -> list[int]:
    out = []
    for s in sorted(set(data.source.tolist())):
        mine = [int(r) for r in rows if int(data.source[r]) == s]
        out.extend(mine[:: max(len(mine) // per_source, 1)][:per_source])
    return out
