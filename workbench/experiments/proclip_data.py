"""Data of the ProCLIP study (:mod:`workbench.experiments.proclip`): tower features of every
set, tinyclip trained on the pretraining pool, the fine-tuning rows, the distillation targets and
the held-out evaluation sets with each model's prompt and caption features."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EvalSet",
    "ProCLIPData",
    "build_data",
    "encode_rows",
    "set_threads",
    "text_tower_features",
]


@dataclass
class EvalSet:
    """One held-out dataset: image tower features, labels, class names and per-model texts.

    Attributes:
        name: ``"synthetic-world"`` or an aux dataset name.
        image_tower: (n, 1280) image tower features.
        labels: ``{label name: (n,) int labels}`` (``"shape"``, ``"colour"`` / ``"class"``).
        class_names: ``{label name: class names}``.
        prompts: ``{model kind: {label name: (K·T, D_txt) text-tower features}}``.
        texts: ``{model kind: {"short"/"long": (n, D_txt) text-tower features}}`` (world only).
    """

    name: str
    image_tower: np.ndarray
    labels: dict[str, np.ndarray]
    class_names: dict[str, list[str]]
    prompts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    texts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class ProCLIPData:
    """Everything the arms train and are scored on (built once by :func:`build_data`).

    Attributes:
        base: The starting encoder (default: image tower + MiniLM text tower).
        tiny: The trained tinyclip ("CLIP").
        tiny_path: Its weights file.
        train: :class:`Embeddings` of the fine-tuning set (image tower, MiniLM short captions).
        targets_path: :func:`~workbench.methods.proclip.write_distill_targets` file.
        eval_sets: Held-out :class:`EvalSet` s (synthetic-world first).
        long_truncated: Fraction of long eval captions longer than 77 CLIP tokens.
        example: One held-out scene's ``short`` and ``long`` caption and what tinyclip reads
            of the long one (``clip_reads``: its 77 tokens, decoded).
        seconds: Wall time of each building step.
    """

    base: Any
    tiny: Any
    tiny_path: Path
    train: Any
    targets_path: Path
    eval_sets: list[EvalSet]
    long_truncated: float
    seconds: dict[str, float]
    example: dict[str, str] = field(default_factory=dict)


def set_threads(cfg: Any) -> None:
    """``torch.set_num_threads(cfg.threads)`` unless it is ``None``."""
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)


def text_tower_features(encoder: Any, texts: Sequence[str]) -> np.ndarray:
    """(n, D_txt) text-tower features of ``texts`` through the shared text-feature cache
    (:class:`~workbench.encoders.text_cache.TextTowerCache`: each string computed once)."""
    from workbench.encoders.text_cache import TextTowerCache

    return TextTowerCache(encoder).features(list(texts))


def _ids(tiny: Any, texts: Sequence[str]) -> np.ndarray:
    return tiny.tokenize(list(texts))["input_ids"].numpy().astype(np.float32)  # (n, 77)


def encode_rows(head: Any, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """(n, E) L2-normalised ``head`` outputs on (n, D) tower features (no grad, float64)."""
    import torch

    p = next(head.parameters())
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            z = head(torch.as_tensor(x[i : i + batch], dtype=torch.float32, device=p.device))
            outs.append(torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy())
    return np.concatenate(outs).astype(np.float64)


def _aux_rows(n: int, split: tuple[int, int, int], seed: int = 0) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, 13]).permutation(n)
    a, b, c = split
    return [np.sort(perm[:a]), np.sort(perm[a : a + b]), np.sort(perm[a + b : a + b + c])]


def build_data(cfg: Any, *, log: Callable[[str], None] = lambda _: None) -> ProCLIPData:
    """Embed every set, train (or load) tinyclip, and write the distillation targets.

    Cached: tower features (``wb.embed``), long captions' MiniLM features, tinyclip's weights
    and the targets — a warm second call only loads.
    """
    import torch

    import workbench as wb
    from workbench.data.synthetic import FACTORS, SyntheticWorld
    from workbench.data.synthetic_long import long_captions
    from workbench.encoders.cache import default_cache_dir
    from workbench.encoders.embeddings import Embeddings
    from workbench.experiments.tinyclip import build_tinyclip_weights
    from workbench.methods.proclip import write_distill_targets
    from workbench.probes.separability import PROMPT_TEMPLATES

    set_threads(cfg)
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    base = wb.load_encoder(cfg.encoder)
    emb = lambda ds, **kw: wb.embed(base, ds, tower_features=True, progress=False, **kw)  # noqa: E731
    world_pre = emb(SyntheticWorld(size=cfg.world_pretrain, seed=0, split="train"))
    world_ft = emb(SyntheticWorld(size=cfg.world_finetune, seed=1, split="train"))
    world_ev = emb(SyntheticWorld(size=cfg.world_eval, seed=0, split="test"))
    aux = {}
    for name in cfg.aux_datasets:
        ds = wb.load_dataset(name)
        e = emb(ds, size=None if len(ds) <= cfg.aux_pool else cfg.aux_pool)
        if len(e) < sum(cfg.aux_split):
            raise ValueError(f"{name} has {len(e)} items, aux_split needs {sum(cfg.aux_split)}")
        aux[name] = [e.subset(r) for r in _aux_rows(len(e), cfg.aux_split)]
    secs["embed"] = time.perf_counter() - t0
    log(f"tower features ready ({secs['embed']:.0f} s)")

    t0 = time.perf_counter()
    pre = [world_pre, *(parts[0] for parts in aux.values())]
    tiny_path = build_tinyclip_weights(cfg.recipe(), pre, image_head=base.image_head)
    tiny = wb.load_encoder(f"tinyclip:{tiny_path.stem}").to("cpu")
    secs["tinyclip"] = time.perf_counter() - t0
    log(f"tinyclip ready: {tiny_path.name} ({secs['tinyclip']:.0f} s)")

    t0 = time.perf_counter()
    ft_parts = [world_ft, *(parts[1] for parts in aux.values())]
    train = Embeddings.concat(ft_parts)
    long_ft = long_captions(world_ft.attributes) if cfg.long_captions else []
    with torch.no_grad():
        teach = lambda texts: tiny.encode_texts(list(texts)).float()  # noqa: E731
        captions = sorted(set(train.captions))
        teacher = teach(captions)
        long_in = teacher_long = None
        if long_ft:
            by_caption = dict(zip(world_ft.captions, long_ft))
            longs = [by_caption.get(c) for c in captions]
            have = [i for i, x in enumerate(longs) if x is not None]
            feats = text_tower_features(base, [longs[i] for i in have])
            long_in = torch.full((len(captions), feats.shape[1]), float("nan"))
            long_in[have] = torch.as_tensor(feats)
            teacher_long = torch.full_like(teacher, float("nan"))
            teacher_long[have] = teach([longs[i] for i in have])
    digest = hashlib.sha256(
        ("\x00".join(captions) + tiny_path.stem + str(cfg.long_captions)).encode()
    )
    targets_path = (
        default_cache_dir() / "proclip" / f"targets-{digest.hexdigest()[:16]}.safetensors"
    )
    write_distill_targets(targets_path, captions, teacher, long_in, teacher_long)
    secs["targets"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    eval_sets = []
    long_ev = long_captions(world_ev.attributes)
    world_labels = {
        f: np.array([FACTORS[f].index(a[f]) for a in world_ev.attributes])
        for f in ("shape", "colour")
    }
    world_names = {f: [str(v) for v in FACTORS[f]] for f in ("shape", "colour")}
    sets = [("synthetic-world", world_ev, world_labels, world_names)]
    for name, parts in aux.items():
        ev = parts[2]
        sets.append((name, ev, {"class": np.asarray(ev.labels)}, {"class": list(ev.class_names)}))
    for name, e, labels, names in sets:
        es = EvalSet(name, np.asarray(e.image_tower, dtype=np.float32), labels, names)
        for kind, model in (("embedder", base), ("clip", tiny)):
            es.prompts[kind] = {}
            for label, cls in names.items():
                texts = [t.format(c) for c in cls for t in PROMPT_TEMPLATES]
                es.prompts[kind][label] = (
                    text_tower_features(model, texts) if kind == "embedder" else _ids(model, texts)
                )
        if name == "synthetic-world":
            es.texts = {
                "embedder": {
                    "short": np.asarray(e.text_tower),
                    "long": text_tower_features(base, long_ev),
                },
                "clip": {"short": _ids(tiny, e.captions), "long": _ids(tiny, long_ev)},
            }
        eval_sets.append(es)
    n_tok = [len(tiny._tokenizer.encode(t)) + 2 for t in long_ev]
    ids = tiny.tokenize(long_ev[:1])["input_ids"][0]
    reads = tiny._tokenizer.decode(ids[1 : int(ids.argmax())].tolist())
    example = {"short": world_ev.captions[0], "long": long_ev[0], "clip_reads": reads}
    secs["eval_sets"] = time.perf_counter() - t0
    log(f"fine-tuning set {len(train)} pairs, {len(captions)} distinct captions; eval sets ready")
    return ProCLIPData(
        base, tiny, tiny_path, train, targets_path, eval_sets,
        float(np.mean(np.asarray(n_tok) > 77)), secs, example,
    )  # fmt: skip
