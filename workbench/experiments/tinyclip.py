"""The recipe of ``"tinyclip"`` (:mod:`workbench.encoders.tinyclip`): CLIP-style contrastive
training of its image head and from-scratch text transformer, with the one training loop.

The recipe runs :func:`workbench.train.train` with ``method="infonce"`` (CLIP's symmetric loss,
learnable temperature) on the heads-only fast path: image tower features (EfficientNet, the
default encoder's, cached) and the captions' 77-token ids as the cached "text tower" features,
so no tower runs per step. The weights go to the workbench cache under a name that digests the
recipe and the training data, with a JSON model card beside them; a second call with the same
recipe and data loads them instead of training.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TinyCLIPRecipe",
    "build_tinyclip_weights",
    "tinyclip_embeddings",
    "tinyclip_model_card",
]


@dataclass
class TinyCLIPRecipe:
    """How ``"tinyclip"`` is trained (every field is part of its weights' cache name).

    Attributes:
        config: :class:`~workbench.encoders.tinyclip.TinyCLIPConfig` fields (architecture).
        steps: Optimiser steps (1200: the in-batch loss flattens on ~6k template captions).
        batch_size: Contrastive batch (256).
        lr: Peak AdamW learning rate (1e-3: from-scratch transformer + head).
        warmup: Linear warm-up steps (100).
        weight_decay: AdamW weight decay (0.1, CLIP's).
        seed: Seeds initialisation and data order.
        device: Training device (``"cpu"``; ``"auto"`` picks CUDA).
    """

    config: dict[str, Any] = field(default_factory=dict)
    steps: int = 1200
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        from workbench.encoders.tinyclip import TinyCLIPConfig

        TinyCLIPConfig(**self.config)  # validates the architecture
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"TinyCLIPRecipe.{name} must be an int ≥ 1, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"TinyCLIPRecipe.lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.warmup, int) and 0 <= self.warmup <= self.steps):
            raise ValueError(f"TinyCLIPRecipe.warmup must be in [0, steps], got {self.warmup!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tinyclip_embeddings(tiny: Any, source: Any) -> Any:
    """Training rows for ``tiny``: ``source``'s image tower features with each caption's token
    ids as the text "tower" features.

    Args:
        tiny: A :class:`~workbench.encoders.tinyclip.TinyCLIPEncoder`.
        source: :class:`~workbench.encoders.embeddings.Embeddings` with ``image_tower`` from
            an encoder with the same image tower (the default encoder's EfficientNet).

    Returns:
        :class:`Embeddings` with ``image_tower`` (n, 1280), ``text_tower`` (n, 77) float ids,
        and ``image``/``text`` left as zeros (the loop only reads the tower features).
    """
    from workbench.encoders.embeddings import Embeddings

    if source.image_tower is None:
        raise ValueError("tinyclip_embeddings needs Embeddings with image_tower features")
    ids = tiny.tokenize(list(source.captions))["input_ids"].numpy().astype(np.float32)  # (n, 77)
    zeros = np.zeros((len(source), tiny.embed_dim), dtype=np.float32)
    return Embeddings(
        image=zeros,
        text=zeros,
        ids=list(source.ids),
        labels=np.asarray(source.labels),
        captions=list(source.captions),
        attributes=list(source.attributes),
        image_tower=np.asarray(source.image_tower, dtype=np.float32),
        text_tower=ids,
        provenance={"tinyclip_rows_from": source.provenance.get("cache_key")},
    )


def tinyclip_model_card(path: str | Path) -> dict[str, Any]:
    """The JSON model card beside tinyclip weights (config, recipe, data, loss, time)."""
    from workbench.encoders.tinyclip import model_card

    return model_card(path)


def _digest(recipe: TinyCLIPRecipe, data: Any, image_head: Any) -> str:
    import torch

    h = hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode())
    h.update(np.ascontiguousarray(data.image_tower).tobytes())
    h.update("\n".join(data.captions).encode())
    if image_head is not None:
        for v in image_head.state_dict().values():
            h.update(v.detach().cpu().to(torch.float32).numpy().tobytes())
    return h.hexdigest()[:12]


def build_tinyclip_weights(
    recipe: TinyCLIPRecipe,
    data: Sequence[Any] | Any,
    *,
    image_head: Any = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Train ``"tinyclip"`` on ``data`` by ``recipe`` (or find it trained) and return its weights.

    Args:
        recipe: Architecture and optimisation.
        data: :class:`Embeddings` (or several, concatenated) with ``image_tower`` features of
            the default encoder and the canonical captions to train on.
        image_head: A module whose state initialises tinyclip's image head (e.g. the default
            encoder's ``image_head``, pretrained when that lands); ``None`` = seeded random.
        cache_dir: Workbench cache root (default ``$WORKBENCH_CACHE`` / ``~/.cache/workbench``).
        force: Retrain even when the weights exist.

    Returns:
        Path of ``<cache>/tinyclip/tinyclip-<digest>.safetensors``; load it with
        ``load_encoder("tinyclip:tinyclip-<digest>")`` (same ``cache_dir``).
    """
    from safetensors.torch import save_file

    from workbench.encoders.embeddings import Embeddings
    from workbench.encoders.tinyclip import build_tinyclip, trained_state, weights_path
    from workbench.train import RunDir, TrainConfig, train

    parts = [data] if isinstance(data, Embeddings) else list(data)
    if not parts:
        raise ValueError("build_tinyclip_weights needs training data (Embeddings)")
    pooled = parts[0] if len(parts) == 1 else Embeddings.concat(parts)
    name = f"tinyclip-{_digest(recipe, pooled, image_head)}"
    path = weights_path(name, cache_dir)
    if path.exists() and not force:
        return path
    tiny = build_tinyclip(random_init=True, **recipe.config)
    if image_head is not None:
        tiny.image_head.load_state_dict(image_head.state_dict())
    rows = tinyclip_embeddings(tiny, pooled)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wb-tinyclip-") as tmp:
        cfg = TrainConfig(
            method="infonce", encoder=None, dataset=None, steps=recipe.steps,
            batch_size=min(recipe.batch_size, len(rows) - len(rows) % 2), lr=recipe.lr,
            warmup=recipe.warmup, weight_decay=recipe.weight_decay, seed=recipe.seed,
            device=recipe.device, trainable="heads+logit_scale", data="cached", holdout=0,
            snapshot_every=0, log_every=max(1, recipe.steps // 50), run_root=tmp,
            run_name="tinyclip",
        )  # fmt: skip
        run = train(cfg, embeddings=rows, encoder=tiny, progress=False)
        log = [r for r in RunDir(run.run_dir).log() if r.get("kind") == "step"]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(run.encoder.cpu()), str(path))
    card = {
        "name": name,
        "config": tiny.config.to_dict(),
        "recipe": recipe.to_dict(),
        "data": {"n_pairs": len(rows), "sources": [p.provenance.get("dataset") for p in parts]},
        "image_head_init": None if image_head is None else "given module",
        "train_seconds": time.perf_counter() - t0,
        "loss": {"first": log[0]["loss"], "last": log[-1]["loss"]},
        "logit_scale": float(run.encoder.logit_scale.detach().exp()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "about": (
            "CLIP-like model: default image tower (frozen EfficientNet-Lite0) + trained linear "
            "head; CLIP BPE tokens truncated at 77; text transformer trained from scratch with "
            "symmetric InfoNCE (workbench.experiments.tinyclip). Not a general model: it knows "
            "only the captions it was trained on."
        ),
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=1))

    return path
