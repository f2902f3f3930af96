"""Pretraining the ``"tiny"`` denoiser (:mod:`~workbench.methods.dcr.tiny`): data, loop, card.

One process on the CPU: the recipe's mixture is loaded once (images at 32 px as uint8, every
distinct caption embedded by the default encoder's text tower), then an ε-prediction DDPM is
trained with AdamW, a warm-up + cosine LR and an EMA of the weights; the float16-rounded EMA
weights (what ships) are evaluated on the held-out items and sampled with DDIM for the card.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workbench.methods.dcr.denoiser import SCHEDULER_CONFIG, UNetDenoiser, ddpm_scheduler
from workbench.methods.dcr.tiny import TinyDenoiserRecipe, build_unet, in_holdout

__all__ = [
    "MixtureData",
    "PretrainResult",
    "denoising_loss",
    "heldout_losses",
    "mixture_key",
    "prepare_mixture",
    "pretrain_tiny_denoiser",
    "sample",
]


@dataclass
class MixtureData:
    """The recipe's data at ``image_size`` px, with caption embeddings.

    Attributes:
        images: (N, 3, s, s) uint8 images.
        caption_ids: Per item, indices into ``caption_emb`` of its captions.
        caption_emb: (U, 384) float32 text-tower embeddings of the U distinct captions.
        captions: The U distinct captions.
        empty: (384,) the empty caption's embedding.
        holdout: (N,) bool, held-out items.
        source: (N,) index into the recipe's mixture.
    """

    images: torch.Tensor
    caption_ids: list[list[int]]
    caption_emb: torch.Tensor
    captions: list[str]
    empty: torch.Tensor
    holdout: torch.Tensor
    source: torch.Tensor
    counts: dict[str, int] = field(default_factory=dict)


def mixture_key(recipe: TinyDenoiserRecipe, encoder) -> str:
    """16-hex digest of what the prepared data depends on: mixture, hold-out fraction, image
    size and the encoder's towers (their fingerprint covers preprocessing too)."""
    import hashlib
    import json

    from workbench.encoders.heads import tower_fingerprint

    d = {"mixture": recipe.to_dict()["mixture"], "holdout": recipe.holdout,
         "image_size": recipe.image_size, "towers": tower_fingerprint(encoder)}  # fmt: skip
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def prepare_mixture(
    recipe: TinyDenoiserRecipe, encoder=None, batch: int = 256, cache_dir=None
) -> MixtureData:
    """Load the recipe's datasets, preprocess as the encoder does (then resize to ``image_size``)
    and embed every distinct caption with the encoder's text tower (default: ``"default"``).

    The result is cached as ``<cache>/denoisers/mixture-<key>.safetensors`` (+ ``.json``; key
    :func:`mixture_key`): decoding openclipart's PNGs is most of the cost.
    """
    import json
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from workbench.encoders import load_encoder
    from workbench.encoders.cache import default_cache_dir

    enc = encoder if encoder is not None else load_encoder("default")
    enc.eval()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "denoisers" / f"mixture-{mixture_key(recipe, enc)}.safetensors"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        t, js = load_file(str(path)), json.loads(meta.read_text())
        return MixtureData(t["images"], js["caption_ids"], t["caption_emb"], js["captions"],
                           t["empty"], t["holdout"], t["source"], js["counts"])  # fmt: skip
    data = _prepare(recipe, enc, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": data.images, "caption_emb": data.caption_emb, "empty": data.empty,
               "holdout": data.holdout, "source": data.source}  # fmt: skip
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    meta.write_text(json.dumps({"caption_ids": data.caption_ids, "captions": data.captions,
                                "counts": data.counts}))  # fmt: skip
    return data


def _prepare(recipe: TinyDenoiserRecipe, enc, batch: int) -> MixtureData:
    from workbench.data import load_dataset

    mean = torch.tensor(enc.preprocess_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(enc.preprocess_config["std"]).view(1, 3, 1, 1)
    images, caption_ids, holdout, source = [], [], [], []
    index: dict[str, int] = {}
    counts: dict[str, int] = {}
    skipped: list[str] = []
    for si, (name, split, size) in enumerate(recipe.mixture):
        kw: dict[str, Any] = {"split": split}
        if size is not None:
            kw["size"] = size
        ds = load_dataset(name, **kw)
        counts[f"{name}/{split}"] = len(ds)
        for start in range(0, len(ds), batch):
            items = _load_items(ds, range(start, min(start + batch, len(ds))), skipped)
            if not items:
                continue
            with torch.no_grad():
                px = enc.preprocess([it.image for it in items]) * std + mean  # (b, 3, H, W) [0,1]
                px = F.interpolate(
                    px, size=(recipe.image_size,) * 2, mode="bilinear", antialias=True
                )
            images.append((px.clamp(0, 1) * 255).round().to(torch.uint8))
            for it in items:
                caption_ids.append([index.setdefault(c, len(index)) for c in it.captions])
                holdout.append(in_holdout(name, it.id, recipe.holdout))
                source.append(si)
    if skipped:
        counts["skipped"] = len(skipped)
    captions = list(index)
    with torch.no_grad():
        embs = [
            enc.text_tower(enc.tokenize(captions[i : i + batch])).float()
            for i in range(0, len(captions), batch)
        ]
        empty = enc.text_tower(enc.tokenize([""])).float()[0]
    return MixtureData(
        torch.cat(images),
        caption_ids,
        torch.cat(embs),
        captions,
        empty,
        torch.tensor(holdout),
        torch.tensor(source),
        counts,
    )


def _load_items(ds, indices, skipped: list[str]) -> list:
    """Items at ``indices``; images PIL refuses as decompression bombs (three openclipart PNGs
    of up to 21k × 30k px) are skipped with a warning naming them."""
    from PIL import Image

    out = []
    for i in indices:
        try:
            out.append(ds[i])
        except Image.DecompressionBombError as err:
            skipped.append(f"{ds.name}[{i}]")
            warnings.warn(f"tiny denoiser data: skipping {ds.name}[{i}]: {err}", stacklevel=2)
    return out


def _lr(step: int, recipe: TinyDenoiserRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    p = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * p))


def _pick_captions(
    data: MixtureData, rows: torch.Tensor, dropout: float, g: torch.Generator
) -> torch.Tensor:
    """(b, 384) one random caption embedding per row; the empty caption with prob. ``dropout``."""
    picks = []
    for r in rows.tolist():
        ids = data.caption_ids[r]
        picks.append(ids[int(torch.randint(len(ids), (1,), generator=g))])
    emb = data.caption_emb[torch.tensor(picks)]
    drop = torch.rand(len(picks), generator=g) < dropout
    return torch.where(drop[:, None], data.empty[None], emb)


def denoising_loss(
    den: UNetDenoiser,
    x0: torch.Tensor,
    cond_vec: torch.Tensor,
    g: torch.Generator,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample ε-prediction MSE (b,) of ``den`` on clean (b, 3, s, s) inputs in [−1, 1] under
    (b, D) condition vectors (broadcast over the tokens, *not* added to the empty embedding:
    during pretraining the caption embedding is the whole condition)."""
    b = x0.shape[0]
    if t is None:
        t = torch.randint(den.num_timesteps, (b,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = den.add_noise(x0, noise, t)
    cond = cond_vec[:, None, :].expand(-1, den.cond_tokens, -1)  # (b, T, D)
    pred = den._predict(x_t, t, cond).float()
    return (pred - noise).pow(2).flatten(1).mean(1)


def heldout_losses(
    den: UNetDenoiser, data: MixtureData, seed: int = 1, max_items: int = 512
) -> dict[str, float]:
    """Held-out denoising MSE under the true caption, the empty caption and a shuffled caption
    (another held-out item's), on the same noise and timesteps: the gaps show that the model uses
    its condition, which DCR's negatives rely on."""
    rows = torch.nonzero(data.holdout).flatten()[:max_items]
    if len(rows) < 2:
        return {}
    g = torch.Generator().manual_seed(seed)
    x0 = data.images[rows].float() / 127.5 - 1
    true = data.caption_emb[torch.tensor([data.caption_ids[r][0] for r in rows.tolist()])]
    conds = {"true": true, "empty": data.empty.expand_as(true), "shuffled": true.roll(1, 0)}
    t = torch.randint(den.num_timesteps, (len(rows),), generator=g)
    noise_seed = int(torch.randint(2**31 - 1, (1,), generator=g))
    out = {}
    with torch.no_grad():
        for name, c in conds.items():
            losses = [
                denoising_loss(
                    den,
                    x0[i : i + 128],
                    c[i : i + 128],
                    torch.Generator().manual_seed(noise_seed + i),
                    t[i : i + 128],
                )
                for i in range(0, len(rows), 128)
            ]
            out[f"heldout_mse/{name}"] = float(torch.cat(losses).mean())
    out["heldout_items"] = len(rows)
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
    t0 = time.perf_counter()
    try:
        data = data if data is not None else prepare_mixture(recipe)
        t_data = time.perf_counter() - t0
        unet = build_unet(recipe, data.caption_emb.shape[1])
        empty = data.empty[None].expand(recipe.cond_tokens, -1)
        den = UNetDenoiser(
            unet,
            ddpm_scheduler(),
            empty,
            image_size=recipe.image_size,
            patch=recipe.patch,
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
            cond = _pick_captions(data, rows, recipe.cond_dropout, g)
            for group in opt.param_groups:
                group["lr"] = _lr(step, recipe)
            loss = denoising_loss(den, x0, cond, g).mean()
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
        # What ships is float16: evaluate exactly those weights.
        unet.load_state_dict(
            {k: v.half().float() if v.dtype.is_floating_point else v for k, v in ema.items()}
        )
        den.freeze()
        metrics = heldout_losses(den, data)
        rows = torch.nonzero(data.holdout).flatten()
        pick = _sample_rows(data, rows, per_source=4)
        caps = [data.captions[data.caption_ids[r][0]] for r in pick]
        cond = data.caption_emb[torch.tensor([data.caption_ids[r][0] for r in pick])]
        samples = sample(den, cond, seed=recipe.seed)
        card = {
            "name": "tiny",
            "recipe": recipe.to_dict(),
            "recipe_key": recipe.key(),
            "scheduler": SCHEDULER_CONFIG,
            "condition": "default encoder text tower (all-MiniLM-L6-v2, mean-pooled, 384-d), "
            f"broadcast over {recipe.cond_tokens} tokens; empty caption with p={recipe.cond_dropout}",
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
            "threads": recipe.threads,
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
            "sample_captions": caps,
        }
        return PretrainResult(den, card, samples, caps, losses)
    finally:
        torch.set_num_threads(threads)


def _sample_rows(data: MixtureData, rows: torch.Tensor, per_source: int) -> list[int]:
    out = []
    for s in sorted(set(data.source.tolist())):
        mine = [int(r) for r in rows if int(data.source[r]) == s]
        out.extend(mine[:: max(len(mine) // per_source, 1)][:per_source])
    return out
