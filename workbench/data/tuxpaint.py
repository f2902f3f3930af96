"""``tuxpaint-stamps``: Tux Paint's rubber stamps, most of them cut-out photographs, with their
English descriptions (Debian's ``tuxpaint-stamps-default``).

Layout: ``<root>/<category>[/<sub>...]/<stem>.png`` beside ``<stem>.txt``, whose first line is the
English description ("A frog.", "An Indian blackbuck.", "A mince pie is a traditional Christmas
food in the UK. ...") and whose other lines are translations (``de.utf8=Ein Frosch.``);
``<stem>.dat`` holds Tux Paint flags (``colorable``: a silhouette the child colours in,
``tintable``, ``noflip``...). ``<stem>_mirror.png`` files are pre-flipped copies and are skipped.

Checked on tuxpaint-stamps-default 2022.06.04: 952 described stamps, 785 of them with a PNG (the
other 167 are SVG-only, mostly cartoons, and are not part of the dataset); 16 top-level
categories (animals, food, vehicles, ...). Directories named ``cartoon`` hold drawings; most other
stamps in animals, food, plants, household, vehicles are photographs with a transparent
background, which is composited on white here. ``photo_like`` marks the stamps that are not
symbols, cartoons, road signs or colour-in/tintable silhouettes: 370 stamps, by eye about three in
four of them photographs (the rest are drawings such as a sombrero or a traffic light), the
held-out real-photo set of the pretraining recipe (``photos_only=True``).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image

from workbench.data.base import Dataset, Item, missing_files_error, subset_indices, to_rgb
from workbench.data.splits import check_split, in_split

DEBIAN_ROOT = Path("/usr/share/tuxpaint/stamps")
_FLAGS = ("colorable", "tintable")


def first_sentence(text: str) -> str:
    """``"A frog."`` → ``"A frog"``; ``"Knight. The only piece ..."`` → ``"Knight"``."""
    head = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    return head.rstrip(".").strip()


def description_captions(text: str) -> list[str]:
    """``[first sentence, whole description]``, the second only when it says more."""
    text = " ".join(text.split())
    head = first_sentence(text)
    return [head] if text.rstrip(".") == head else [head, text]


@functools.lru_cache(maxsize=4)
def build_index(root: str) -> tuple[dict[str, Any], ...]:
    """Every stamp under ``root`` with a PNG and an English description, sorted by path."""
    records = []
    base = Path(root)
    for dirpath, _dirs, files in os.walk(base):
        names = set(files)
        for name in files:
            if not name.endswith(".png") or name.endswith("_mirror.png"):
                continue
            stem = name[: -len(".png")]
            if stem + ".txt" not in names:
                continue
            folder = Path(dirpath)
            with open(folder / (stem + ".txt"), encoding="utf-8", errors="replace") as f:
                description = f.readline().strip()
            if not re.search(r"[A-Za-z]{2}", description):
                continue
            flags = ""
            if stem + ".dat" in names:
                flags = (folder / (stem + ".dat")).read_text(encoding="utf-8", errors="replace")
            rel = (folder / name).relative_to(base)
            record = {
                "path": rel.as_posix(),
                "category": rel.parts[0],
                "description": description,
                "cartoon": "cartoon" in rel.parts[:-1],
                **{flag: flag in flags.split() for flag in _FLAGS},
            }
            record["photo_like"] = not (
                record["category"] == "symbols"
                or record["cartoon"]
                or "roadsigns" in rel.parts
                or any(record[flag] for flag in _FLAGS)
            )
            records.append(record)
    records.sort(key=lambda r: r["path"])
    return tuple(records)


class TuxPaintStamps(Dataset):
    """``tuxpaint-stamps``: Tux Paint's stamps (photos and drawings) with English descriptions.

    Args:
        root: The ``stamps/`` folder (default ``$WORKBENCH_TUXPAINT_STAMPS``, else Debian's
            ``/usr/share/tuxpaint/stamps``).
        split: ``"all"`` (default), ``"train"`` or ``"test"``, fixed by a hash of each id
            (:mod:`workbench.data.splits`).
        test_fraction: Share of stamps in ``"test"`` (0.3).
        size: Keep a seeded random subset of this many stamps (``None``: all).
        seed: Seed of that subset.
        max_side: Downscale so the longer side is at most this (default 512; ``None``: as is).
        photos_only: Keep only the ``photo_like`` stamps (module docstring).

    Items: RGB image (transparency composited on white), captions from
    :func:`description_captions`, ``label`` = index of the top-level category in
    ``class_names``, attributes ``{"path", "category", "description", "cartoon", "colorable",
    "tintable", "photo_like"}``.
    """

    name = "tuxpaint-stamps"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "all",
        test_fraction: float = 0.3,
        size: int | None = None,
        seed: int = 0,
        max_side: int | None = 512,
        photos_only: bool = False,
    ) -> None:
        check_split("tuxpaint-stamps", split, test_fraction)
        self.root = Path(root or os.environ.get("WORKBENCH_TUXPAINT_STAMPS", DEBIAN_ROOT))
        records = build_index(str(self.root.resolve())) if self.root.is_dir() else ()
        if not records:
            raise missing_files_error(
                "Tux Paint stamps (<category>/<stem>.png with <stem>.txt)",
                [self.root],
                "Install them with `apt-get install tuxpaint-stamps-default` (Debian/Ubuntu) or "
                "pass root= (or set WORKBENCH_TUXPAINT_STAMPS) to a stamps folder.",
            )
        self.class_names = sorted({r["category"] for r in records})
        records = tuple(
            r
            for r in records
            if in_split(_item_id(r), split, test_fraction) and (r["photo_like"] or not photos_only)
        )
        self._records = [records[i] for i in subset_indices(len(records), size, seed)]
        self.split, self.test_fraction = split, test_fraction
        self.size, self.seed, self.max_side, self.photos_only = size, seed, max_side, photos_only

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "seed": self.seed,
            "root": str(self.root),
            "test_fraction": self.test_fraction,
            "max_side": self.max_side,
            "photos_only": self.photos_only,
        }

    def __len__(self) -> int:
        return len(self._records)

    def _get(self, i: int) -> Item:
        rec = self._records[i]
        with Image.open(self.root / rec["path"]) as raw:
            image = to_rgb(raw)
        if self.max_side is not None and max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        return Item(
            id=_item_id(rec),
            image=image,
            captions=description_captions(rec["description"]),
            label=self.class_names.index(rec["category"]),
            attributes={
                k: rec[k]
                for k in ("path", "category", "description", *_FLAGS, "cartoon", "photo_like")
            },
        )


def _item_id(record: dict[str, Any]) -> str:
    return f"tuxpaint-{record['path']}"
