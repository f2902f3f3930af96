"""Text-tower features cached by the caption string: every caption, template or prompt once.

Image rows need a dataset and an item order; a text's tower features depend only on the string
and the towers. So this cache is keyed by :func:`~workbench.encoders.heads.tower_fingerprint`
and holds any text ever asked for — extra captions of multi-caption items, caption templates,
zero-shot prompts, hard negatives — each computed once, whatever data set it came from.

Layout under ``<cache_dir>/texts/<fingerprint[:32]>/``: ``batch-<n>.safetensors`` (``features``
(m, D_txt) float32, the m strings in the header) with a ``batch-<n>.json`` sidecar holding its
sha256, written after it. A batch whose check fails warns (:class:`CacheCorruptedWarning`) and
its strings are recomputed. Batches are only ever added, each atomically.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import CacheCorruptedWarning, _atomic_write, _sha256, default_cache_dir
from .heads import tower_fingerprint


class TextFeatureCache:
    """Text-tower features of strings under one encoder's towers.

    Args:
        encoder: Supplies ``text_features`` and the towers' fingerprint.
        root: Cache root (default :func:`~workbench.encoders.cache.default_cache_dir`);
            ``None`` with ``persist=False`` keeps everything in memory.
        persist: Write new features to disk.
    """

    def __init__(self, encoder: Any, root: str | Path | None = None, persist: bool = True) -> None:
        self.encoder = encoder
        base = Path(root).expanduser() if root is not None else default_cache_dir()
        self.dir = base / "texts" / tower_fingerprint(encoder)[:32]
        self.persist = persist
        self._rows: dict[str, np.ndarray] = {}
        if persist and self.dir.is_dir():
            self._load()

    def _load(self) -> None:
        from safetensors import safe_open

        for sidecar in sorted(self.dir.glob("batch-*.json")):
            tensor = sidecar.with_suffix(".safetensors")
            try:
                meta = json.loads(sidecar.read_text())
                if not isinstance(meta, dict) or _sha256(tensor) != meta.get("sha256"):
                    raise ValueError("sha256 does not match its sidecar")
                with safe_open(str(tensor), framework="numpy") as f:
                    texts = json.loads((f.metadata() or {})["texts"])
                    feats = f.get_tensor("features")
                if len(texts) != len(feats):
                    raise ValueError("strings and feature rows differ in number")
            except Exception as e:  # a batch that fails any check is recomputed on demand
                warnings.warn(
                    f"text cache {tensor} is unusable ({type(e).__name__}: {e}); recomputing it",
                    CacheCorruptedWarning,
                    stacklevel=3,
                )
                continue
            self._rows.update(zip(texts, feats))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, text: object) -> bool:
        return text in self._rows

    @torch.no_grad()
    def features(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, D_txt) float32 text-tower features of ``texts`` (cached ones read, new ones computed
        with the encoder in eval mode and, with ``persist``, written as one new batch)."""
        if isinstance(texts, str):
            raise TypeError("features takes a list of strings; wrap a single one as [text]")
        texts = list(texts)
        if not texts:
            raise ValueError("features got an empty list of texts")
        new = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if new:
            was_training = self.encoder.training
            self.encoder.train(False)
            try:
                feats = np.concatenate(
                    [
                        self.encoder.text_features(new[i : i + batch_size]).float().cpu().numpy()
                        for i in range(0, len(new), batch_size)
                    ]
                ).astype(np.float32)
            finally:
                self.encoder.train(was_training)
            self._rows.update(zip(new, feats))
            if self.persist:
                self._write(new, feats)
        return np.stack([self._rows[t] for t in texts])

    def _write(self, texts: list[str], feats: np.ndarray) -> None:
        from safetensors.numpy import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        stem = f"batch-{os.getpid()}-{len(list(self.dir.glob('batch-*.json'))):06d}-{os.urandom(4).hex()}"
        tensor = self.dir / f"{stem}.safetensors"
        header = {"texts": json.dumps(texts)}
        _atomic_write(tensor, lambda p: save_file({"features": feats}, str(p), metadata=header))
        meta = {"sha256": _sha256(tensor), "n": len(texts)}
        _atomic_write(self.dir / f"{stem}.json", lambda p: p.write_text(json.dumps(meta)))


__all__ = ["TextFeatureCache"]
