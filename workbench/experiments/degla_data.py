"""Data of the DeGLA study (:mod:`workbench.experiments.degla`): fine-tuning pairs with their
hard-negative bank, the held-out compositional benchmarks, the general-ability sets, the start.

Everything expensive is cached on disk: tower features (:func:`workbench.embed`), text-tower
features of negatives and prompts (:class:`~workbench.encoders.text_cache.TextTowerCache`) and
the negative bank (``$WORKBENCH_CACHE/negatives``). Towers are embedded with the encoder *as
loaded*, so a warm start or a fine-tuned head never invalidates them.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.base import Dataset, Item

__all__ = ["StudyData", "load_study_data"]


class _Rows(Dataset):
    """Rows ``rows`` of ``base`` (its config plus a digest of the rows identifies the data)."""

    def __init__(self, base: Dataset, rows: Sequence[int], tag: str) -> None:
        self.base, self.rows, self.tag = base, [int(r) for r in rows], tag
        self.name, self.split = base.name, tag
        self.class_names = base.class_names

    @property
    def config(self) -> dict[str, Any]:
        digest = hashlib.sha256(str(self.rows).encode()).hexdigest()[:16]
        return {**self.base.config, "rows": digest, "subset": self.tag, "size": len(self.rows)}

    def __len__(self) -> int:
        return len(self.rows)

    def _get(self, i: int) -> Item:
        return self.base[self.rows[i]]


def _all_captions(ds: Dataset) -> list[list[str]]:
    """Every item's captions without decoding its image where the data set allows it."""
    from workbench.data.synthetic import SyntheticWorld, caption, short_caption

    if isinstance(ds, SyntheticWorld):
        attrs = [ds.attributes(i) for i in range(len(ds))]
        return [[caption(a), short_caption(a)] for a in attrs]
    records = getattr(ds, "_records", None)  # openclipart keeps its parsed metadata index
    if records is not None:
        return [list(r["captions"]) for r in records]
    return [list(item.captions) for item in ds]


def _oversized(ds: Dataset, i: int) -> bool:
    """openclipart PNGs that trip PIL's decompression-bomb guard (read from the header only)."""
    from PIL import Image

    records = getattr(ds, "_records", None)
    root = getattr(ds, "root", None)
    if records is None or root is None:
        return False
    png = (Path(root) / "png" / records[i]["path"]).with_suffix(".png")
    try:
        with Image.open(png) as im:
            return im.size[0] * im.size[1] > Image.MAX_IMAGE_PIXELS
    except (OSError, Image.DecompressionBombError):
        return True


def _concat(embs: Sequence[Any]) -> Any:
    """Row-wise union of :class:`Embeddings` with tower features (labels set to -1: the data
    sets' class spaces differ)."""
    from workbench.encoders.embeddings import Embeddings

    cat = lambda name: np.concatenate([getattr(e, name) for e in embs])  # noqa: E731
    return Embeddings(
        image=cat("image"), text=cat("text"), ids=[i for e in embs for i in e.ids],
        labels=np.full(sum(len(e) for e in embs), -1, dtype=np.int64),
        captions=[c for e in embs for c in e.captions],
        attributes=[a for e in embs for a in (e.attributes or [{}] * len(e))],
        image_tower=cat("image_tower"), text_tower=cat("text_tower"),
        provenance={"concat": [e.provenance.get("cache_key") for e in embs]},
    )  # fmt: skip


@dataclass
class StudyData:
    """What :class:`~workbench.experiments.degla.DeGLAStudy` trains on and scores with.

    Attributes:
        encoder: The loaded encoder (towers frozen; heads are swapped in per run).
        start: :class:`~workbench.encoders.heads.Heads` every arm fine-tunes from.
        train: Fine-tuning pairs (:class:`Embeddings` with tower features).
        bank_path: The saved :class:`~workbench.data.negative_bank.NegativeBank` of ``train``.
        benchmarks: name → :class:`~workbench.evals.compositional_sets.CompositionalBenchmark`.
        general: name → :class:`~workbench.evals.general_ability.GeneralAbilitySet`.
        info: Counts, bank statistics and timings.
    """

    encoder: Any
    start: Any
    train: Any
    bank_path: Path
    benchmarks: dict[str, Any]
    general: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return dict(self.info)


def _real_rows(ds: Dataset, captions: list[list[str]], min_words: int, eval_fraction: float):
    """(train rows, eval rows) of a real data set: titles with ≥ ``min_words`` words, split by a
    hash of the caption (duplicated captions never straddle the split)."""
    keep = [
        i for i, caps in enumerate(captions)
        if caps and len(caps[0].split()) >= min_words and not _oversized(ds, i)
    ]  # fmt: skip
    held = [zlib.crc32(captions[i][0].encode()) % 1000 < 1000 * eval_fraction for i in keep]
    return [i for i, h in zip(keep, held) if not h], [i for i, h in zip(keep, held) if h]


def load_study_data(config: Any, progress: Callable[[str], None] | None = None) -> StudyData:
    """Build every piece of :class:`StudyData` for a :class:`DeGLAStudyConfig` (see module doc)."""
    from workbench.data import load_dataset
    from workbench.data.negative_bank import NegativeConfig, build_negative_bank
    from workbench.data.synthetic import SyntheticWorld
    from workbench.encoders import load_encoder
    from workbench.encoders.cache import default_cache_dir
    from workbench.encoders.embed import embed
    from workbench.encoders.heads import Heads
    from workbench.encoders.text_cache import TextTowerCache
    from workbench.evals.compositional_sets import (
        CompositionalBenchmark,
        HeldOutConfig,
        aro_order,
        sugarcrepe_style,
    )
    from workbench.evals.general_ability import GeneralAbilitySet
    from workbench.probes.compositional import build_negatives

    say = progress or (lambda _msg: None)
    c, t0, info = config, time.perf_counter(), {}
    encoder = load_encoder(c.encoder)
    encoder.requires_grad_(False)
    texts = TextTowerCache(encoder)

    def towers(ds: Dataset) -> Any:
        say(f"tower features of {ds.name} ({ds.split}, {len(ds)} items)")
        return embed(encoder, ds, tower_features=True, progress=False, device=c.device)

    # -- fine-tuning pairs: a synthetic world (seed 0) + real captions ----------------------
    syn = SyntheticWorld(size=c.n_synthetic, seed=0, split="train")
    parts, positives = [towers(syn)], _all_captions(syn)
    real_eval = None
    if c.real_captions is not None:
        real = load_dataset(c.real_captions)
        caps = _all_captions(real)
        train_rows, eval_rows = _real_rows(real, caps, c.min_caption_words, c.real_eval_fraction)
        parts.append(towers(_Rows(real, train_rows, "degla-train")))
        positives += [caps[i] for i in train_rows]
        real_eval = (_Rows(real, eval_rows, "degla-eval"), [caps[i] for i in eval_rows],
                     [caps[i][0] for i in train_rows])  # fmt: skip
        info["real"] = {
            "dataset": c.real_captions,
            "train": len(train_rows),
            "eval": len(eval_rows),
        }
    train = _concat(parts)

    say("hard-negative bank (rule-based, cached)")
    bank, skipped = build_negative_bank(
        train.captions, positives=positives, attributes=train.attributes,
        config=NegativeConfig(k=c.k), skip_empty=True,
        cache_dir=default_cache_dir() / "negatives",
    )  # fmt: skip
    if skipped:
        train = train.subset(np.setdiff1d(np.arange(len(train)), skipped))
    info["bank"] = {"captions": len(bank), "repeated": bank.n_repeated, "dropped_rows": len(skipped),
                    "path": str(bank.path)}  # fmt: skip
    say(f"tower features of {len(bank) * c.k} training negatives (once per string)")
    texts([n for negs in bank.negatives.values() for n in negs])

    # -- held-out compositional benchmarks ---------------------------------------------------
    held, benchmarks = HeldOutConfig(), {}
    syn_eval = SyntheticWorld(size=c.n_synthetic_eval, seed=1, split="test")
    emb = towers(syn_eval)
    syn_pos = _all_captions(syn_eval)
    sets = {
        "sugarcrepe/synthetic": sugarcrepe_style(emb.captions, emb.attributes, positives=syn_pos),
        "aro/synthetic": aro_order(emb.captions, positives=syn_pos, config=held),
        "comp_train_rules": build_negatives(emb.captions, emb.attributes, max_per_kind=1),
    }
    for name, negs in sets.items():
        say(f"benchmark {name}: {len(negs)} negatives")
        benchmarks[name] = CompositionalBenchmark.build(name, encoder, emb, negs, texts)
    if real_eval is not None:
        ds, pos, corpus = real_eval
        emb = towers(ds)
        for name, negs in {
            f"sugarcrepe/{c.real_captions}": sugarcrepe_style(
                emb.captions, positives=pos, corpus=corpus, config=held
            ),
            f"aro/{c.real_captions}": aro_order(emb.captions, positives=pos, config=held),
        }.items():
            say(f"benchmark {name}: {len(negs)} negatives")
            benchmarks[name] = CompositionalBenchmark.build(name, encoder, emb, negs, texts)
    info["benchmarks"] = {n: {"items": b.n_items, "negatives": len(b.negatives)}
                          for n, b in benchmarks.items()}  # fmt: skip

    # -- general ability: data kept out of fine-tuning ---------------------------------------
    general, warm_parts = {}, list(parts)
    for name in c.general_datasets:
        kwargs = {"split": "test"} if name == "fashion-mnist" else {}
        ds = load_dataset(name, size=c.n_general, **kwargs)
        general[name] = GeneralAbilitySet.build(name, encoder, towers(ds), text_cache=texts)
        if name == "fashion-mnist":  # its train split joins the warm start; digits never does
            warm_parts.append(towers(load_dataset(name, split="train", size=c.n_general)))
    info["general"] = {n: len(g.labels) for n, g in general.items()}

    # -- the start ---------------------------------------------------------------------------
    start = Heads.of(encoder)
    if c.warm_start_steps:
        say(f"warm start: InfoNCE on heads for {c.warm_start_steps} steps")
        start = _warm_start(encoder, _concat(warm_parts), c)
    info["train_pairs"] = len(train)
    info["seconds"] = time.perf_counter() - t0
    return StudyData(encoder, start, train, Path(bank.path), benchmarks, general, info)


def _warm_start(encoder: Any, emb: Any, c: Any) -> Any:
    """Heads (and logit scale) fitted by InfoNCE on ``emb``, from the loaded ones, seed 0."""
    import tempfile

    from workbench.encoders.heads import Heads
    from workbench.train import TrainConfig, train

    saved = Heads.of(encoder)
    cfg = TrainConfig(
        method="infonce", encoder=None, dataset=None, steps=c.warm_start_steps,
        batch_size=min(512, len(emb) - len(emb) % 2), lr=1e-3, warmup=max(1, c.warm_start_steps // 10),
        seed=0, device=c.device, trainable="heads+logit_scale", data="cached", holdout=0,
        eval_every=0, log_every=50, snapshot_every=0, run_name="degla-warm-start",
    )  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="wb-degla-warm-") as tmp:
            cfg.run_root = tmp
            train(cfg, embeddings=emb, encoder=encoder, progress=False)
        return Heads.of(encoder)
    finally:
        saved.load_into(encoder)
        encoder.requires_grad_(False)
