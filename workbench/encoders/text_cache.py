"""Text-tower features of arbitrary strings under a *frozen* text tower, memoised by string.

Hard-negative captions (DeGLA), prompt ensembles and compositional benchmarks embed many texts
that are not a dataset's captions, so :func:`workbench.embed`'s per-dataset cache does not
cover them. While the text tower does not train, its output for a string never changes, so
:class:`TextTowerCache` computes each distinct string once — in memory for the process, and on
disk for later processes — and answers every later request by lookup:

    cache = TextTowerCache(encoder)
    feats = cache(["a red circle", "a blue circle"])          # (2, D_txt) float32, CPU

Key: :func:`~workbench.encoders.heads.tower_fingerprint` of the encoder (every non-head tensor
and the preprocessing), so a different or fine-tuned tower never reads another tower's rows.
Layout under ``<cache_dir>/text_tower/<fingerprint[:32]>/``: one ``<uuid>.safetensors`` shard
per batch of new strings, holding ``features`` (m, D_txt) and the strings as JSON in the header,
and a ``<uuid>.json`` sidecar with its sha256, written after it. Both are written to a temporary
name and moved into place, so a crash or a concurrent writer never leaves a half shard; two
processes may write the same string twice (the rows are equal). A shard whose sidecar is missing
or whose bytes fail the check is reported (:class:`~workbench.encoders.cache.CacheCorruptedWarning`)
and its strings are recomputed.

The footgun: the fingerprint is taken when the cache first needs it. The caller promises the
tower stays frozen from then on; the training loop only builds one when no tower parameter
trains (:mod:`workbench.train.batch`).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import CacheCorruptedWarning, _atomic_write, _sha256, default_cache_dir

__all__ = ["TextTowerCache"]


class TextTowerCache:
    """``texts → (n, D_txt)`` text-tower features, each distinct string computed once.

    Args:
        encoder: Encoder whose (frozen) ``text_features`` are memoised.
        root: Cache directory (shards go in ``root/text_tower``); default
            :func:`~workbench.encoders.cache.default_cache_dir`.
        persist: Also read and write shards on disk (``False``: memory only).
        batch_size: Texts per tower call when computing misses.

    Attributes:
        hits, misses: Strings answered from the cache / computed, over this object's life.
    """

    def __init__(
        self,
        encoder: Any,
        root: str | Path | None = None,
        *,
        persist: bool = True,
        batch_size: int = 256,
    ) -> None:
        if not hasattr(encoder, "text_features"):
            raise TypeError(
                f"TextTowerCache needs an Encoder with text_features, got {type(encoder).__name__}"
            )
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"TextTowerCache: batch_size must be an int ≥ 1, got {batch_size!r}")
        self.encoder = encoder
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.persist = persist
        self.batch_size = batch_size
        self._rows: dict[str, torch.Tensor] = {}
        self._dir: Path | None = None
        self.hits = self.misses = 0

    @property
    def directory(self) -> Path:
        """This tower's shard directory (fingerprints the tower on first access)."""
        if self._dir is None:
            from .heads import tower_fingerprint

            self._dir = self.root / "text_tower" / tower_fingerprint(self.encoder)[:32]
            if self.persist:
                self._load_shards()
        return self._dir

    def __len__(self) -> int:
        return len(self._rows)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, D_txt) float32 CPU features of ``texts``, row ``i`` for ``texts[i]``."""
        if isinstance(texts, str):
            raise ValueError("TextTowerCache takes a list of strings; wrap a single one as [text]")
        texts = list(texts)
        if not texts:
            raise ValueError("TextTowerCache got an empty list of texts")
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"TextTowerCache: every text must be a str, got {type(bad[0]).__name__}"
            )
        _ = self.directory  # fingerprint + read shards before deciding what is missing
        missing = [t for t in dict.fromkeys(texts) if t not in self._rows]
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            self._compute(missing)
        return torch.stack([self._rows[t] for t in texts])

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Like calling the cache, as a (n, D_txt) float32 numpy array."""
        return self(texts).numpy()

    # -- internals --------------------------------------------------------------------------
    def _compute(self, texts: list[str]) -> None:
        chunks = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                part = self.encoder.text_features(texts[i : i + self.batch_size])
                chunks.append(part.detach().float().cpu())
        feats = torch.cat(chunks)  # (m, D_txt)
        self._rows.update(zip(texts, feats))
        if self.persist:
            self._write_shard(texts, feats)

    def _write_shard(self, texts: list[str], feats: torch.Tensor) -> None:
        from safetensors.torch import save_file

        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{uuid.uuid4().hex}.safetensors"
        header = {"texts": json.dumps(texts)}
        fd, name = tempfile.mkstemp(dir=d, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)  # not matched by the readers' "*.safetensors" glob
        try:
            save_file({"features": feats.contiguous()}, str(tmp), metadata=header)
            meta = {"sha256": _sha256(tmp), "n": len(texts)}
            # the sidecar lands first, so a reader in another process never meets a shard
            # without it (which it would take for a damaged shard and recompute)
            _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta)))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _load_shards(self) -> None:
        from safetensors import safe_open

        if self._dir is None or not self._dir.is_dir():
            return
        for shard in sorted(self._dir.glob("*.safetensors")):
            try:
                sidecar = json.loads(shard.with_suffix(".json").read_text())
                if not isinstance(sidecar, dict) or _sha256(shard) != sidecar.get("sha256"):
                    raise ValueError("sha256 does not match its sidecar")
                with safe_open(str(shard), framework="pt") as f:
                    texts = json.loads((f.metadata() or {})["texts"])
                    feats = f.get_tensor("features")
                if feats.ndim != 2 or feats.shape[0] != len(texts):
                    raise ValueError("strings and feature rows differ in number")
            except Exception as e:  # damaged or foreign: its strings are recomputed on demand
                warnings.warn(
                    f"text-tower cache shard {shard} is unusable ({type(e).__name__}: {e}); "
                    "recomputing its strings",
                    CacheCorruptedWarning,
                    stacklevel=4,
                )
                continue
            self._rows.update(zip(texts, feats.float()))
