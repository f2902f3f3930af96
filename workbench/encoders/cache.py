"""The on-disk embedding cache: safetensors tensors + a JSON provenance sidecar per key.

Layout under ``<cache_dir>/embeddings/``::

    <key>.safetensors   image, text, labels [, image_tower, text_tower] as tensors; row metadata
                        (ids, captions, attributes, class_names) as JSON in the safetensors header
    <key>.json          {"format", "key", "tensor_file", "sha256", "provenance"}

``key`` is a digest of the provenance minus its creation time (see :func:`cache_key`), so any
change in encoder weights, preprocessing, dataset config, subset, tower flag or workbench
version is a miss. The JSON is written last and names the sha256 of the tensor file: a
half-written, truncated or edited entry fails the check, is reported with a
:class:`CacheCorruptedWarning` and is recomputed, never returned. Both files are written to a
temporary name and moved into place with ``os.replace`` (atomic on POSIX), so concurrent
writers of one key leave one complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .embeddings import Embeddings

FORMAT = 1  # bump when the file layout changes; part of every key
_ARRAYS = ("image", "text", "labels", "image_tower", "text_tower")


class CacheCorruptedWarning(UserWarning):
    """A cache entry exists but failed a check; it is ignored and recomputed."""


def default_cache_dir() -> Path:
    """``$WORKBENCH_CACHE`` if set, else ``~/.cache/workbench``."""
    env = os.environ.get("WORKBENCH_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/workbench").expanduser()


def cache_key(provenance: dict[str, Any]) -> str:
    """32-hex digest of ``provenance`` without its ``created`` time (sorted-key JSON, sha256)."""
    core = {k: v for k, v in provenance.items() if k != "created"}
    blob = json.dumps({"format": FORMAT, **core}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars/small arrays → Python, paths → str.

    Values with no faithful JSON form (images, arrays over 256 elements, arbitrary objects) are
    dropped from dicts (they belong to the dataset, which can be indexed by id); this is applied
    before anything is cached *and* on freshly computed embeddings, so hits equal misses.
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = jsonable(v)
            if v is not _DROP:
                out[str(k)] = v
        return out
    if isinstance(value, (list, tuple)):
        items = [jsonable(v) for v in value]
        return _DROP if any(v is _DROP for v in items) else items
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 256:
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return _DROP


_DROP = object()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the temp file onto ``path`` in one ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddingCache:
    """Read/write :class:`Embeddings` keyed by :func:`cache_key`.

    Args:
        root: Cache directory (entries go in ``root/embeddings``); default
            :func:`default_cache_dir`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.dir = self.root / "embeddings"

    def path_for(self, key: str) -> tuple[Path, Path]:
        """``(tensor_file, json_file)`` of ``key`` (they need not exist)."""
        return self.dir / f"{key}.safetensors", self.dir / f"{key}.json"

    def _reject(self, key: str, why: str) -> None:
        warnings.warn(
            f"embedding cache entry {key} in {self.dir} is unusable ({why}); recomputing it",
            CacheCorruptedWarning,
            stacklevel=3,
        )

    def get(self, key: str) -> Embeddings | None:
        """The cached :class:`Embeddings` for ``key``, or ``None`` on a miss.

        A missing entry is a silent miss; an entry that exists but fails any check (JSON
        unreadable or for another key, tensor file missing, sha256 mismatch, unreadable
        safetensors header, inconsistent rows) warns with :class:`CacheCorruptedWarning` and
        is a miss.
        """
        tensor_file, json_file = self.path_for(key)
        if not json_file.exists():
            if tensor_file.exists():
                self._reject(key, "tensor file without its JSON provenance")
            return None
        try:
            meta = json.loads(json_file.read_text())
            if meta.get("key") != key or meta.get("format") != FORMAT:
                raise ValueError("JSON belongs to another key or format")
            expected = meta["sha256"]
            provenance = meta["provenance"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._reject(key, f"provenance JSON unreadable: {e}")
            return None
        if not tensor_file.exists():
            self._reject(key, "tensor file missing")
            return None
        if _sha256(tensor_file) != expected:
            self._reject(key, "sha256 of the tensor file does not match its provenance")
            return None
        try:
            return _read_entry(tensor_file, provenance)
        except Exception as e:  # any parse failure means the entry cannot be trusted
            self._reject(key, f"tensor file unreadable: {type(e).__name__}: {e}")
            return None

    def put(self, key: str, emb: Embeddings) -> Path:
        """Write ``emb`` under ``key`` (tensors first, then the JSON that commits them).

        ``emb.provenance`` is stored as the entry's provenance. Returns the tensor file path.
        """
        from safetensors.numpy import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        tensor_file, json_file = self.path_for(key)
        arrays = {
            name: np.ascontiguousarray(getattr(emb, name))
            for name in _ARRAYS
            if getattr(emb, name) is not None
        }
        rows = {
            "ids": list(emb.ids),
            "captions": list(emb.captions),
            "attributes": jsonable(list(emb.attributes)),
            "class_names": None if emb.class_names is None else list(emb.class_names),
        }
        header = {"key": key, "rows": json.dumps(rows)}
        _atomic_write(tensor_file, lambda p: save_file(arrays, str(p), metadata=header))
        meta = {
            "format": FORMAT,
            "key": key,
            "tensor_file": tensor_file.name,
            "sha256": _sha256(tensor_file),
            "provenance": emb.provenance,
        }
        text = json.dumps(meta, indent=1, sort_keys=True, default=str)
        _atomic_write(json_file, lambda p: p.write_text(text))
        return tensor_file


def _read_entry(tensor_file: Path, provenance: dict[str, Any]) -> Embeddings:
    from safetensors import safe_open

    with safe_open(str(tensor_file), framework="numpy") as f:
        header = f.metadata() or {}
        arrays = {name: f.get_tensor(name) for name in f.keys()}
    rows = json.loads(header["rows"])
    return Embeddings(
        image=arrays["image"],
        text=arrays["text"],
        ids=rows["ids"],
        labels=arrays["labels"],
        captions=rows["captions"],
        attributes=rows["attributes"],
        class_names=rows["class_names"],
        image_tower=arrays.get("image_tower"),
        text_tower=arrays.get("text_tower"),
        provenance=provenance,
    )


__all__ = [
    "CacheCorruptedWarning",
    "EmbeddingCache",
    "cache_key",
    "default_cache_dir",
    "jsonable",
]
