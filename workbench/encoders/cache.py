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

Reading (:meth:`EmbeddingCache.open`) memory-maps the tensors instead of loading them:
safetensors stores each tensor as raw little-endian bytes at an offset its JSON header gives, so
a chunk's ``image_tower`` is an ``np.memmap`` of that byte range. An entry of one chunk is that
memmap; an entry of several is a :class:`~workbench.encoders.chunked.ChunkedRows` that maps one
chunk at a time. Several ranks of a distributed extraction write disjoint chunks of one entry
(:mod:`workbench.encoders.sharded`); rank 0 commits it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .chunked import ChunkedRows

FORMAT = 2  # 2: chunked tower features (1: whole embeddings per file); part of every key
_ARRAYS = ("image_tower", "text_tower", "labels")


class CacheCorruptedWarning(UserWarning):
    """A cache entry exists but failed a check; it is ignored and recomputed."""


def default_cache_dir() -> Path:
    """``$WORKBENCH_CACHE`` if set, else ``~/.cache/workbench``."""
    env = os.environ.get("WORKBENCH_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/workbench").expanduser()


def dataset_provenance(dataset: Any, size: int | None, seed: int, n_rows: int) -> dict[str, Any]:
    """The ``"dataset"`` part of a cache entry's provenance (embeddings and token caches alike):
    name, split, config, requested size and seed, and the rows it holds."""
    return {
        "name": dataset.name,
        "split": dataset.split,
        "config": jsonable(dataset.config),
        "size": size,
        "seed": seed,
        "n_rows": n_rows,
    }


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
        image_tower: (n, D_img) float32 pre-projection image features (in memory, an
            ``np.memmap`` or a :class:`~workbench.encoders.chunked.ChunkedRows` when opened
            memory-mapped).
        text_tower: (n, D_txt) float32 pre-projection text features (likewise).
        labels: (n,) int64, ``-1`` where an item has no label.
        ids, captions, attributes: per row (``captions`` = each item's canonical ``captions[0]``).
        more_captions: per row, the item's other captions (``captions[1:]``), whose text
            features :func:`~workbench.encoders.embed.embed` reads from the text cache.
    """

    image_tower: np.ndarray | ChunkedRows
    text_tower: np.ndarray | ChunkedRows
    labels: np.ndarray
    ids: list[str]
    captions: list[str]
    attributes: list[dict[str, Any]]
    more_captions: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def loaded(self) -> TowerRows:
        """These rows with both feature matrices in memory (memory maps copied out)."""
        return TowerRows(
            np.array(self.image_tower),
            np.array(self.text_tower),
            self.labels,
            self.ids,
            self.captions,
            self.attributes,
            self.more_captions,
        )

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
            [m for p in parts for m in (p.more_captions or [[] for _ in range(len(p))])],
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

    def finished_spans(self, key: str) -> set[tuple[int, int]]:
        """``(start, stop)`` of chunks whose sidecar exists, from the file names alone (no
        verification: cheap enough to poll for a progress bar)."""
        out = set()
        for sidecar in self.path_for(key).glob("chunk-*-*.json"):
            parts = sidecar.stem.split("-")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out.add((int(parts[1]), int(parts[2])))
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
        """``(rows, entry)`` of a complete, verified entry in memory, or ``None`` on a miss."""
        hit = self.open(key)
        return None if hit is None else (hit[0].loaded(), hit[1])

    def open(self, key: str, *, verify: bool = True) -> tuple[TowerRows, dict[str, Any]] | None:
        """``(rows, entry)`` of a complete entry with its features memory-mapped, or ``None``.

        ``rows.image_tower``/``text_tower`` are an ``np.memmap`` (one chunk) or a
        :class:`~workbench.encoders.chunked.ChunkedRows` over per-chunk maps (several); labels,
        ids, captions and attributes are read into memory. ``verify`` checks every chunk's
        sha256 against the entry first (a streaming read of every byte, not a load); headers,
        sizes and row counts are always checked. A failed check warns and returns ``None``.
        """
        meta = self.entry(key)
        if meta is None:
            return None
        folder, parts = self.path_for(key), []
        for c in meta["chunks"]:
            start, stop = int(c["start"]), int(c["stop"])
            path = folder / _chunk_name(start, stop)
            try:
                if verify and _sha256(path) != c.get("sha256"):
                    raise ValueError("sha256 does not match the entry")
                parts.append(_map_chunk(path, key, stop - start))
            except Exception as e:  # any parse failure means the chunk cannot be trusted
                self._reject(key, f"{path.name}: {type(e).__name__}: {e}")
                return None
        try:
            if not parts or sum(len(p.ids) for p in parts) != meta["n_rows"]:
                raise ValueError("chunks do not cover the entry's rows")
            return _join_mapped(parts), meta
        except ValueError as e:
            self._reject(key, str(e))
            return None

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
                    "more_captions": rows.more_captions,
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
        [list(m) for m in rows.get("more_captions", [[] for _ in rows["ids"]])],
    )


# -- memory-mapped reading ---------------------------------------------------------------------
_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8"}


@dataclass
class _MappedChunk:
    path: Path
    tensors: dict[str, tuple[np.dtype, tuple[int, ...], int]]  # name → (dtype, shape, offset)
    ids: list[str]
    captions: list[str]
    attributes: list[dict[str, Any]]
    more_captions: list[list[str]]

    def array(self, name: str) -> np.ndarray:
        dtype, shape, offset = self.tensors[name]
        if 0 in shape:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _map_chunk(path: Path, key: str, n_rows: int) -> _MappedChunk:
    """Parse a chunk's safetensors header (checked against the file size) without its data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file is shorter than a safetensors header")
        n_header = int.from_bytes(raw, "little")
        if n_header > size - 8:
            raise ValueError(f"header length {n_header} exceeds the file ({size} bytes)")
        header = json.loads(f.read(n_header))
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    extra = header.pop("__metadata__", None) or {}
    if extra.get("key") != key:
        raise ValueError("chunk belongs to another key")
    tensors = {}
    for name in _ARRAYS:
        info = header[name]
        dtype = np.dtype(_DTYPES[info["dtype"]])
        shape = tuple(int(x) for x in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        if end - begin != int(np.prod(shape)) * dtype.itemsize or 8 + n_header + end > size:
            raise ValueError(f"{name}'s byte range does not match its shape or the file")
        if not shape or shape[0] != n_rows:
            raise ValueError(f"{name} has shape {shape} where {n_rows} rows were written")
        tensors[name] = (dtype, shape, 8 + n_header + begin)
    rows = json.loads(extra["rows"])
    if not isinstance(rows, dict) or len(rows["ids"]) != n_rows:
        raise ValueError("row metadata is not an object of one id per row")
    more = rows.get("more_captions") or [[] for _ in rows["ids"]]
    return _MappedChunk(
        path,
        tensors,
        list(rows["ids"]),
        list(rows["captions"]),
        list(rows["attributes"]),
        [list(m) for m in more],
    )


def _mapped_matrix(parts: list[_MappedChunk], name: str) -> np.ndarray | ChunkedRows:
    if len(parts) == 1:
        return parts[0].array(name)
    dtype, shape, _ = parts[0].tensors[name]
    if any(p.tensors[name][0] != dtype or p.tensors[name][1][1:] != shape[1:] for p in parts):
        raise ValueError(f"chunks disagree on the width or dtype of {name}")
    return ChunkedRows(
        [lambda p=p: p.array(name) for p in parts],
        [p.tensors[name][1][0] for p in parts],
        shape[1],
        dtype,
    )


def _join_mapped(parts: list[_MappedChunk]) -> TowerRows:
    return TowerRows(
        _mapped_matrix(parts, "image_tower"),
        _mapped_matrix(parts, "text_tower"),
        np.concatenate([np.array(p.array("labels")) for p in parts]),
        [i for p in parts for i in p.ids],
        [c for p in parts for c in p.captions],
        [a for p in parts for a in p.attributes],
        [m for p in parts for m in p.more_captions],
    )


__all__ = [
    "CacheCorruptedWarning",
    "EmbeddingCache",
    "TowerRows",
    "cache_key",
    "default_cache_dir",
    "jsonable",
]
