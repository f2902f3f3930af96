"""``imagefolder``: ``root/<class>/*.{jpg,png,...}``, captions from class-name templates."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from workbench.data.base import Dataset, Item, missing_files_error, subset_indices, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.")


class ImageFolder(Dataset):
    """Images sorted into one sub-folder per class.

    Args:
        root: Folder whose sub-folders are the classes (sorted by name → label index).
        templates: Caption templates, ``{}`` replaced by the class name (folder name with ``_``/``-``
            turned into spaces); one caption per template, ``[0]`` canonical.
        size: Keep a seeded random subset of this many images (``None``: all).
        seed: Seed of that subset.
        split: Optional sub-folder of ``root`` to read (e.g. ``"train"`` for ``root/train/<class>``);
            ``"all"`` (default) reads ``root`` itself.

    Items: attributes ``{"path": <relative to root>, "class_dir": <folder name>}``.
    """

    name = "imagefolder"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        size: int | None = None,
        seed: int = 0,
        split: str = "all",
    ) -> None:
        if root is None:
            raise ValueError("imagefolder needs root= (a folder with one sub-folder per class)")
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"every template needs a '{{}}' for the class name, got {templates!r}")
        self.root = Path(root)
        folder = self.root if split == "all" else self.root / split
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        files = [
            (f, k)
            for k, d in enumerate(class_dirs)
            for f in sorted(d.rglob("*"))
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
        ]
        if not files:
            raise missing_files_error(
                f"images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders",
                [folder],
                "Pass root= a folder laid out as root/<class name>/<image files>.",
            )
        self.folder = folder
        self.class_dirs = [d.name for d in class_dirs]
        self.class_names = [
            " ".join(d.replace("_", " ").replace("-", " ").split()) for d in self.class_dirs
        ]
        self._files = [files[i] for i in subset_indices(len(files), size, seed)]
        self.templates = tuple(templates)
        self.split, self.size, self.seed = split, size, seed

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "seed": self.seed,
            "root": str(self.root),
            "templates": list(self.templates),
        }

    def __len__(self) -> int:
        return len(self._files)

    def _get(self, i: int) -> Item:
        path, label = self._files[i]
        with Image.open(path) as raw:
            image = to_rgb(raw)
        rel = path.relative_to(self.folder).as_posix()
        cls = self.class_names[label]
        return Item(
            id=f"imagefolder-{rel}",
            image=image,
            captions=[t.format(cls) for t in self.templates],
            label=label,
            attributes={"path": rel, "class_dir": self.class_dirs[label]},
        )
