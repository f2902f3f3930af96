"""The on-disk cache of :class:`~workbench.encoders.token_features.TokenFeatures` (``<cache>/tokens/``).

Same conventions as the embedding cache (:mod:`workbench.encoders.cache`): one safetensors file
of arrays with row metadata in its header, and a JSON sidecar written last that names the
tensor file's sha256 and the provenance; both written to a temporary name and moved into place
with ``os.replace``; a damaged entry warns with ``CacheCorruptedWarning`` and is a miss.
Kept apart from ``cache.py`` so either can change without the other.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .cache import CacheCorruptedWarning, _atomic_write, _sha256, default_cache_dir
from .token_features import ARRAYS, FORMAT, TokenFeatures

__all__ = ["TokenCache", "token_key"]


def token_key(provenance: dict[str, Any]) -> str:
    """32-hex sha256 of ``provenance`` without ``created``/``cache_key`` (sorted-key JSON)."""
    core = {k: v for k, v in provenance.items() if k not in ("created", "cache_key", "skipped")}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:32]


class TokenCache:
    """Read/write :class:`TokenFeatures` under ``<root>/tokens`` keyed by :func:`token_key`.

    Args:
        root: Cache directory; default :func:`~workbench.encoders.cache.default_cache_dir`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.dir = self.root / "tokens"

    def path_for(self, key: str) -> tuple[Path, Path]:
        """``(tensor_file, json_file)`` of ``key`` (they need not exist)."""
        return self.dir / f"{key}.safetensors", self.dir / f"{key}.json"

    def _reject(self, key: str, why: str) -> None:
        warnings.warn(
            f"token cache entry {key} in {self.dir} is unusable ({why}); recomputing it",
            CacheCorruptedWarning,
            stacklevel=3,
        )

    def get(self, key: str) -> TokenFeatures | None:
        """The cached entry, ``None`` on a miss; a damaged entry warns and is a miss."""
        tensor_file, json_file = self.path_for(key)
        if not json_file.exists():
            if tensor_file.exists():
                self._reject(key, "tensor file without its JSON provenance")
            return None
        try:
            meta = json.loads(json_file.read_text())
            if meta.get("key") != key or meta.get("format") != FORMAT:
                raise ValueError("JSON belongs to another key or format")
            expected, provenance = meta["sha256"], meta["provenance"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._reject(key, f"provenance JSON unreadable: {e}")
            return None
        if not tensor_file.exists() or _sha256(tensor_file) != expected:
            self._reject(key, "tensor file missing or its sha256 does not match")
            return None
        try:
            return _read(tensor_file, provenance)
        except Exception as e:  # any parse failure means the entry cannot be trusted
            self._reject(key, f"tensor file unreadable: {type(e).__name__}: {e}")
            return None

    def put(self, key: str, features: TokenFeatures) -> Path:
        """Write ``features`` under ``key`` (tensors first, then the JSON that commits them)."""
        from safetensors.numpy import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        tensor_file, json_file = self.path_for(key)
        arrays = {a: np.ascontiguousarray(getattr(features, a)) for a in ARRAYS}
        rows = {
            "ids": features.ids,
            "captions": features.captions,
            "grid": features.grid,
            "class_names": features.class_names,
        }
        header = {"key": key, "rows": json.dumps(rows)}
        _atomic_write(tensor_file, lambda p: save_file(arrays, str(p), metadata=header))
        meta = {
            "format": FORMAT,
            "key": key,
            "tensor_file": tensor_file.name,
            "sha256": _sha256(tensor_file),
            "provenance": features.provenance,
        }
        text = json.dumps(meta, indent=1, sort_keys=True, default=str)
        _atomic_write(json_file, lambda p: p.write_text(text))
        return tensor_file


def _read(tensor_file: Path, provenance: dict[str, Any]) -> TokenFeatures:
    from safetensors import safe_open

    with safe_open(str(tensor_file), framework="numpy") as f:
        header = f.metadata() or {}
        arrays = {name: f.get_tensor(name) for name in f.keys()}
    rows = json.loads(header["rows"])
    return TokenFeatures(
        **{a: arrays[a] for a in ARRAYS},
        ids=rows["ids"],
        captions=rows["captions"],
        grid=None if rows["grid"] is None else tuple(rows["grid"]),
        class_names=rows["class_names"],
        provenance=provenance,
    )
