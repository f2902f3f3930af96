"""``coco-captions`` and ``flickr30k``: Karpathy-split JSON + an image folder (nothing downloads).

The Karpathy split files (``dataset_coco.json``, ``dataset_flickr30k.json``) look like::

    {"images": [{"filepath": "val2014",          # COCO only: sub-folder of the image root
                 "filename": "COCO_val2014_000000391895.jpg",
                 "split": "test",                # train | val | test | restval
                 "sentences": [{"raw": "A man riding a bike ...", "tokens": [...]}, ...],
                 "cocoid": 391895, "imgid": 0}, ...],
     "dataset": "coco"}

An image lives at ``<image_root>/<filepath>/<filename>`` (``filepath`` omitted for Flickr30k).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from workbench.data.base import Dataset, Item, missing_files_error, subset_indices, to_rgb

KARPATHY_SPLITS = ("train", "val", "test", "restval")


def _parse_split(split: str | Sequence[str]) -> tuple[str, ...]:
    parts = split.split("+") if isinstance(split, str) else list(split)
    if parts == ["all"]:
        return KARPATHY_SPLITS
    bad = [p for p in parts if p not in KARPATHY_SPLITS]
    if bad or not parts:
        raise ValueError(
            f"split must be 'all' or '+'-joined Karpathy splits {KARPATHY_SPLITS} "
            f"(e.g. 'train+restval'), got {split!r}"
        )
    return tuple(parts)


class KarpathyCaptions(Dataset):
    """Image–caption pairs from a Karpathy-split JSON (COCO Captions, Flickr30k, Flickr8k).

    Args:
        root: Folder holding the JSON and the images. Default ``$WORKBENCH_DATA/<name>``.
        split: ``"test"`` (default), ``"val"``, ``"train"``, ``"restval"``, ``"all"`` or a
            ``+``-join such as ``"train+restval"``.
        size: Keep a seeded random subset of this many images (``None``: all).
        seed: Seed of that subset.
        json_path: The split file (default ``<root>/<json_name>``, also looked for in
            ``<root>/annotations/``).
        image_root: Folder the ``filepath``/``filename`` are relative to (default: the first of
            ``<root>/images``, ``<root>/<image_dir>``, ``<root>`` where the first image exists).

    Items: all raw sentences as ``captions`` (``[0]`` canonical), no label, attributes
    ``{"filename", "split", "imgid", "cocoid"?}``.
    """

    name = "karpathy-captions"
    json_name = "dataset.json"
    image_dir = "images"
    install_hint = "Download the Karpathy split JSON and the images yourself"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str | Sequence[str] = "test",
        size: int | None = None,
        seed: int = 0,
        json_path: str | os.PathLike[str] | None = None,
        image_root: str | os.PathLike[str] | None = None,
    ) -> None:
        splits = _parse_split(split)
        if root is None:
            base = os.environ.get("WORKBENCH_DATA")
            root = Path(base) / self.name if base else Path.cwd() / "data" / self.name
        self.root = Path(root)
        candidates = (
            [Path(json_path)]
            if json_path is not None
            else [self.root / self.json_name, self.root / "annotations" / self.json_name]
        )
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise missing_files_error(
                f"{self.name} Karpathy split file {self.json_name}",
                candidates,
                f"{self.install_hint}, then pass root= (the folder holding {self.json_name} "
                f"and the images) or json_path= and image_root=.",
            )
        with open(found, encoding="utf-8") as f:
            entries = json.load(f)["images"]
        entries = [e for e in entries if e.get("split") in splits and e.get("sentences")]
        entries = [entries[i] for i in subset_indices(len(entries), size, seed)]
        self.json_path = found
        self.image_root = self._find_image_root(entries, image_root)
        self._entries = entries
        self.split = "+".join(splits) if splits != KARPATHY_SPLITS else "all"
        self.size, self.seed = size, seed

    def _relpath(self, entry: dict[str, Any]) -> Path:
        return Path(entry.get("filepath") or "") / entry["filename"]

    def _find_image_root(
        self, entries: list[dict[str, Any]], image_root: str | os.PathLike[str] | None
    ) -> Path:
        if image_root is not None:
            roots = [Path(image_root)]
        else:
            roots = [self.root / "images", self.root / self.image_dir, self.root]
        if not entries:
            return roots[0]
        probe = self._relpath(entries[0])
        for r in roots:
            if (r / probe).is_file():
                return r
        raise missing_files_error(
            f"{self.name} image {probe}",
            roots,
            "Pass image_root= (the folder the JSON's filepath/filename are relative to).",
        )

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "seed": self.seed,
            "root": str(self.root),
            "json": str(self.json_path),
        }

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, i: int) -> Item:
        e = self._entries[i]
        path = self.image_root / self._relpath(e)
        with Image.open(path) as raw:
            image = to_rgb(raw)
        image_id = e.get("cocoid", e.get("imgid", i))
        attrs = {"filename": e["filename"], "split": e["split"], "imgid": e.get("imgid")}
        if "cocoid" in e:
            attrs["cocoid"] = e["cocoid"]
        return Item(
            id=f"{self.name}-{image_id}",
            image=image,
            captions=[s["raw"].strip() for s in e["sentences"]],
            label=None,
            attributes=attrs,
        )


class CocoCaptions(KarpathyCaptions):
    """``coco-captions``: MS-COCO 2014 images with the Karpathy split (5k test, 5k val, 113k train)."""

    name = "coco-captions"
    json_name = "dataset_coco.json"
    image_dir = "coco"
    install_hint = (
        "Download dataset_coco.json (Karpathy splits) and the COCO 2014 train/val images "
        "(train2014/, val2014/)"
    )


class Flickr30k(KarpathyCaptions):
    """``flickr30k``: Flickr30k images with the Karpathy split (1k test, 1k val, 29k train)."""

    name = "flickr30k"
    json_name = "dataset_flickr30k.json"
    image_dir = "flickr30k-images"
    install_hint = "Download dataset_flickr30k.json (Karpathy splits) and flickr30k-images/"
