"""The on-disk tower-feature cache: row chunks of safetensors, each verified, one commit file.

What is cached is what is expensive: the *towers'* features of a dataset (pre-projection image
and text features with the rows' metadata). Heads are cheap and change with every fit, so
:func:`~workbench.encoders.embed.embed` applies them on the fly; the key names the towers alone
(:func:`~workbench.encoders.heads.tower_fingerprint`), so a new set of heads never re-runs a
tower.

Layout under ``<cache_dir>/towers/<key>/``::

    chunk-<start>-<stop>.safetensors  rows [start, stop): image_tower, text_tower, labels; the
                                      rows' ids, captions and attributes as JSON in the header
    chunk-<start>-<stop>.json         {"format", "key", "start", "stop", "sha256"}: the chunk is
                                      done (written after its tensor file)
    entry.json                        {"format", "key", "n_rows", "chunks": [{start, stop,
                                      sha256}], "class_names", "provenance"}: the entry is
                                      complete (written last)

``key`` is a digest of the provenance minus its creation time (:func:`cache_key`): any change
in the towers' weights, preprocessing, dataset config, subset, caption choice or format is a
miss. Every file is written to a temporary name and moved into place with ``os.replace``
(atomic on POSIX). Extraction writes chunk by chunk, so a crash loses at most the chunk in
flight and the next call computes only the missing chunks. A chunk whose sha256, header or row
count fails a check is reported with a :class:`CacheCorruptedWarning` and recomputed, never
returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 2  # 2: chunked tower features (1: whole embeddings per file); part of every key
_ARRAYS = ("image_tower", "text_tower", "labels")


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


@dataclass
class TowerRows:
    """Tower features and row metadata of rows ``[start, stop)`` of one extraction.

    Attributes:
        image_tower: (n, D_img) float32 pre-projection image features.
        text_tower: (n, D_txt) float32 pre-projection text features.
        labels: (n,) int64, ``-1`` where an item has no label.
        ids, captions, attributes: per row.
    """

    image_tower: np.ndarray
    text_tower: np.ndarray
    labels: np.ndarray
    ids: list[str]
    captions: list[str]
    attributes: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: list[TowerRows]) -> TowerRows:
        """Rows of ``parts`` one after another."""
        return cls(
            np.concatenate([p.image_tower for p in parts]),
            np.concatenate([p.text_tower for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [i for p in parts for i in p.ids],
            [c for p in parts for c in p.captions],
            [a for p in parts for a in p.attributes],
        )


class EmbeddingCache:
    """Chunked tower-feature entries keyed by :func:`cache_key` (see the module docstring).

    Args:
        root: Cache directory (entries go in ``root/towers``); default :func:`default_cache_dir`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.dir = self.root / "towers"

    def path_for(self, key: str) -> Path:
        """The entry directory of ``key`` (it need not exist)."""
        return self.dir / key

    def _reject(self, key: str, why: str) -> None:
        warnings.warn(
            f"embedding cache entry {key} in {self.dir} is unusable ({why}); recomputing it",
            CacheCorruptedWarning,
            stacklevel=3,
        )

    # -- reading -------------------------------------------------------------------------------
    def entry(self, key: str) -> dict[str, Any] | None:
        """The committed ``entry.json`` of ``key`` if it is readable and for this key, else
        ``None`` (silently when absent, with a warning when damaged)."""
        path = self.path_for(key) / "entry.json"
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text())
            if not isinstance(meta, dict):
                raise ValueError(f"entry.json holds a {type(meta).__name__}, not an object")
            if meta.get("key") != key or meta.get("format") != FORMAT:
                raise ValueError("entry.json belongs to another key or format")
            if not isinstance(meta.get("chunks"), list) or not isinstance(meta.get("n_rows"), int):
                raise ValueError("entry.json lacks its chunk list or row count")
        except (OSError, ValueError) as e:
            self._reject(key, f"entry.json unreadable: {e}")
            return None
        return meta

    def done_chunks(self, key: str) -> dict[tuple[int, int], str]:
        """``{(start, stop): sha256}`` of chunks whose tensor file and sidecar are both present and
        agree (what a resumed extraction may skip). Damaged chunks warn and are left out."""
        out: dict[tuple[int, int], str] = {}
        folder = self.path_for(key)
        if not folder.is_dir():
            return out
        for sidecar in sorted(folder.glob("chunk-*.json")):
            try:
                meta = json.loads(sidecar.read_text())
                if not isinstance(meta, dict) or meta.get("key") != key:
                    raise ValueError("sidecar belongs to another key")
                start, stop, sha = int(meta["start"]), int(meta["stop"]), str(meta["sha256"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                self._reject(key, f"{sidecar.name} unreadable: {e}")
                continue
            tensor = folder / _chunk_name(start, stop)
            if not tensor.exists():
                self._reject(key, f"{tensor.name} missing")
                continue
            if _sha256(tensor) != sha:
                self._reject(key, f"sha256 of {tensor.name} does not match its sidecar")
                continue
            out[(start, stop)] = sha
        return out

    def read_chunk(
        self, key: str, start: int, stop: int, sha256: str | None = None
    ) -> TowerRows | None:
        """Rows ``[start, stop)`` of ``key``, or ``None`` (with a warning) if the chunk is damaged."""
        path = self.path_for(key) / _chunk_name(start, stop)
        try:
            if sha256 is not None and _sha256(path) != sha256:
                raise ValueError("sha256 does not match the entry")
            rows = _read_chunk(path)
            if len(rows) != stop - start:
                raise ValueError(f"{len(rows)} rows where {stop - start} were written")
        except Exception as e:  # any parse failure means the chunk cannot be trusted
            self._reject(key, f"{path.name}: {type(e).__name__}: {e}")
            return None
        return rows

    def get(self, key: str) -> tuple[TowerRows, dict[str, Any]] | None:
        """``(rows, entry)`` of a complete, verified entry, or ``None`` on a miss."""
        meta = self.entry(key)
        if meta is None:
            return None
        parts = []
        for c in meta["chunks"]:
            part = self.read_chunk(key, int(c["start"]), int(c["stop"]), c.get("sha256"))
            if part is None:
                return None
            parts.append(part)
        rows = TowerRows.concat(parts) if parts else None
        if rows is None or len(rows) != meta["n_rows"]:
            self._reject(key, "chunks do not cover the entry's rows")
            return None
        return rows, meta

    # -- writing -------------------------------------------------------------------------------
    def put_chunk(self, key: str, start: int, rows: TowerRows) -> str:
        """Write rows ``[start, start + len(rows))`` of ``key``: tensor file, then its sidecar.
        Returns the chunk's sha256."""
        from safetensors.numpy import save_file

        folder = self.path_for(key)
        folder.mkdir(parents=True, exist_ok=True)
        stop = start + len(rows)
        tensor = folder / _chunk_name(start, stop)
        arrays = {name: np.ascontiguousarray(getattr(rows, name)) for name in _ARRAYS}
        header = {
            "key": key,
            "rows": json.dumps(
                {
                    "ids": rows.ids,
                    "captions": rows.captions,
                    "attributes": jsonable(rows.attributes),
                }
            ),
        }
        _atomic_write(tensor, lambda p: save_file(arrays, str(p), metadata=header))
        sha = _sha256(tensor)
        meta = {"format": FORMAT, "key": key, "start": start, "stop": stop, "sha256": sha}
        sidecar = folder / f"{tensor.stem}.json"
        _atomic_write(sidecar, lambda p: p.write_text(json.dumps(meta, sort_keys=True)))
        return sha

    def commit(
        self,
        key: str,
        chunks: dict[tuple[int, int], str],
        *,
        n_rows: int,
        class_names: list[str] | None,
        provenance: dict[str, Any],
    ) -> Path:
        """Write ``entry.json``: the entry is complete. ``chunks`` must tile ``[0, n_rows)``."""
        spans = sorted(chunks)
        covered = 0
        for a, b in spans:
            if a != covered:
                raise ValueError(f"chunks of {key} leave rows [{covered}, {a}) uncovered")
            covered = b
        if covered != n_rows:
            raise ValueError(f"chunks of {key} cover {covered} of {n_rows} rows")
        meta = {
            "format": FORMAT,
            "key": key,
            "n_rows": n_rows,
            "chunks": [{"start": a, "stop": b, "sha256": chunks[(a, b)]} for a, b in spans],
            "class_names": class_names,
            "provenance": provenance,
        }
        path = self.path_for(key) / "entry.json"
        text = json.dumps(meta, indent=1, sort_keys=True, default=str)
        _atomic_write(path, lambda p: p.write_text(text))
        return path


def _chunk_name(start: int, stop: int) -> str:
    return f"chunk-{start:09d}-{stop:09d}.safetensors"


def _read_chunk(path: Path) -> TowerRows:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
        arrays = {name: f.get_tensor(name) for name in f.keys()}
    rows = json.loads(header["rows"])
    if not isinstance(rows, dict):
        raise ValueError("row metadata is not an object")
    return TowerRows(
        arrays["image_tower"],
        arrays["text_tower"],
        arrays["labels"],
        list(rows["ids"]),
        list(rows["captions"]),
        list(rows["attributes"]),
    )


__all__ = [
    "CacheCorruptedWarning",
    "EmbeddingCache",
    "TowerRows",
    "cache_key",
    "default_cache_dir",
    "jsonable",
]
