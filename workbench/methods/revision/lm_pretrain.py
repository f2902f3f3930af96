"""Pretrain the caption LM once: a plain next-token language model on the mixture's captions.

:func:`build_caption_lm` is the recipe end to end (corpus → tokenizer → training → card → weights
on disk); :func:`pretrain_caption_lm` returns the trained model and its card without writing.
Nothing here is ReVision-specific: no image, embedding or prefix is involved, so the LM's weights
do not depend on the encoder's heads and never go stale when they are retrained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.methods.revision.lm import (
    SHIPPED,
    CaptionLM,
    CaptionLMRecipe,
    cache_path,
    prefix_nll,
    save_caption_lm,
)
from workbench.methods.revision.tokenizer import CaptionTokenizer

__all__ = ["Corpus", "PretrainResult", "build_caption_lm", "caption_corpus", "pretrain_caption_lm"]


@dataclass
class Corpus:
    """Training captions and per-dataset held-out captions of a recipe.

    Attributes:
        train: Every training caption (``recipe.captions`` of each item), in mixture order.
        counts: Training captions per dataset.
        heldout: dataset → canonical captions of up to ``recipe.heldout_size`` test items.
    """

    train: list[str]
    counts: dict[str, int]
    heldout: dict[str, list[str]]


def _load(name: str, split: str, size: int | None) -> Any:
    from workbench.data import load_dataset

    return load_dataset(name, split=split, size=size) if size else load_dataset(name, split=split)


def caption_corpus(recipe: CaptionLMRecipe) -> Corpus:
    """Read the captions of ``recipe.mixture`` (items are loaded, so images are rendered once)."""
    train: list[str] = []
    counts: dict[str, int] = {}
    heldout: dict[str, list[str]] = {}
    for name, split, size in recipe.mixture:
        ds = _load(name, split, size)
        caps = [c for i in range(len(ds)) for c in _captions(ds[i].captions, recipe.captions)]
        train.extend(caps)
        counts[name] = counts.get(name, 0) + len(caps)
        if name not in heldout:
            test = _load(name, "test", min(recipe.heldout_size, len(_load(name, "test", None))))
            heldout[name] = [test[i].captions[0] for i in range(len(test))]
    return Corpus(train, counts, heldout)


def _captions(captions: Sequence[str], which: str) -> list[str]:
    caps = [c for c in captions if c.strip()]
    return caps[:1] if which == "first" else caps


@dataclass
class PretrainResult:
    """A trained, frozen caption LM and its card (everything but the sha256)."""

    lm: CaptionLM
    card: dict[str, Any]


def _lr(step: int, recipe: CaptionLMRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * t))


def _length_batches(
    lengths: torch.Tensor, recipe: CaptionLMRecipe, g: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of row indices: each epoch is a seeded permutation cut into pools of
    ``recipe.bucket`` batches; rows are sorted by length inside a pool (so a batch pads to
    similar lengths) and the pool's batches are visited in random order."""
    B, pool = recipe.batch_size, recipe.batch_size * recipe.bucket
    while True:
        order = torch.randperm(len(lengths), generator=g)
        for s in range(0, len(order) - B + 1, pool):
            chunk = order[s : s + pool]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            cut = [chunk[i : i + B] for i in range(0, len(chunk) - B + 1, B)]
            for j in torch.randperm(len(cut), generator=g).tolist():
                yield cut[j]


@torch.no_grad()
def heldout_nll(lm: CaptionLM, captions: Sequence[str], batch_size: int = 256) -> float:
    """Mean next-token NLL (nats/token) of ``captions`` under the plain LM (no prefix)."""
    total, n = 0.0, 0
    for s in range(0, len(captions), batch_size):
        ids, mask = lm.encode(captions[s : s + batch_size])
        k = int(mask[:, 1:].sum())
        total += float(prefix_nll(lm, None, ids, mask)) * k
        n += k
    return total / max(n, 1)


def pretrain_caption_lm(
    recipe: CaptionLMRecipe | None = None, corpus: Corpus | None = None
) -> PretrainResult:
    """Fit the tokenizer and train the LM of ``recipe`` (default: the shipped recipe).

    AdamW (β = (0.9, 0.95), weight decay on matrices only), linear warm-up then cosine decay,
    gradient clipping at 1.0, data in seeded epoch permutations. The model returned is frozen
    and its weights are rounded to float16 (what ships), and the card's held-out NLL is measured
    on those rounded weights.
    """
    import transformers

    import workbench

    recipe = recipe or CaptionLMRecipe()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        t0 = time.perf_counter()
        corpus = corpus or caption_corpus(recipe)
        t_corpus = time.perf_counter() - t0
        tok = CaptionTokenizer.fit(corpus.train, recipe.min_count)
        lm = CaptionLM(recipe, tok)
        ids_all, mask_all = tok.encode(corpus.train, recipe.max_length)  # (N, T)
        decay = [p for p in lm.parameters() if p.ndim >= 2]
        rest = [p for p in lm.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=recipe.lr, betas=(0.9, 0.95),
        )  # fmt: skip
        lengths = mask_all.sum(1)
        batches = _length_batches(lengths, recipe, torch.Generator().manual_seed(recipe.seed))
        losses = []
        lm.train()
        t1 = time.perf_counter()
        for step in range(recipe.steps):
            rows = next(batches)
            T = int(lengths[rows].max())
            loss = prefix_nll(lm, None, ids_all[rows, :T], mask_all[rows, :T])
            for group in opt.param_groups:
                group["lr"] = _lr(step, recipe)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        t_train = time.perf_counter() - t1
        with torch.no_grad():
            for p in lm.parameters():
                p.copy_(p.half().float())
        lm.freeze()
        card = {
            "name": "caption-lm",
            "recipe": recipe.to_dict(),
            "recipe_key": recipe.key(),
            "n_params": sum(p.numel() for p in lm.model.parameters()),
            "vocab_size": tok.vocab_size,
            "corpus": {
                "captions": len(corpus.train),
                "distinct": len(set(corpus.train)),
                "tokens": int(mask_all.sum()),
                "counts": corpus.counts,
            },
            "first_train_nll": sum(losses[:50]) / len(losses[:50]),
            "final_train_nll": sum(losses[-100:]) / len(losses[-100:]),
            "heldout_nll": {k: heldout_nll(lm, v) for k, v in corpus.heldout.items()},
            "samples": lm.generate(None, n=1) + lm.generate(None, n=1, num_beams=3),
            "wall_seconds": {"corpus": t_corpus, "train": t_train},
            "versions": {
                "workbench": workbench.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }
        return PretrainResult(lm, card)
    finally:
        torch.set_num_threads(threads)


def build_caption_lm(
    recipe: CaptionLMRecipe | None = None,
    *,
    cache_dir: str | Path | None = None,
    ship: bool = False,
) -> Path:
    """Train ``recipe`` and write its weights and card: into the cache, or (``ship=True``) over
    the packaged ``weights/caption-lm.safetensors``. Returns the weights path."""
    result = pretrain_caption_lm(recipe)
    target = SHIPPED if ship else cache_path(result.lm.recipe, cache_dir)
    return save_caption_lm(result.lm, result.card, target)
