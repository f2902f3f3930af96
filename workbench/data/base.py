"""The dataset contract: every dataset is a sequence of :class:`Item` with the same fields."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Item:
    """One image with its caption(s).

    Attributes:
        id: Stable identifier within the dataset (used in caches and row metadata).
        image: RGB PIL image (datasets convert greyscale/RGBA on load).
        captions: One or more captions; ``captions[0]`` is the canonical one.
        label: Integer class label, or ``None`` where the dataset has no classes.
        attributes: Free-form metadata (synthetic-world factors, file path, keywords, ...).
    """

    id: str
    image: Image.Image
    captions: list[str]
    label: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class Dataset(Sequence[Item]):
    """Base class: a named, indexable collection of :class:`Item`.

    Subclasses set ``name``, ``split``, ``class_names`` (``None`` when unlabelled) and implement
    ``__len__`` and ``_get(i)``. ``config`` is what identifies the data in cache keys
    (name, split, size, seed, root path...).
    """

    name: str = "dataset"
    split: str = "all"
    class_names: list[str] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description that identifies this data (goes into cache keys)."""
        return {"name": self.name, "split": self.split, "size": len(self)}

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _get(self, i: int) -> Item:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> Item:  # type: ignore[override]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} items")
        return self._get(i % n)

    def __iter__(self) -> Iterator[Item]:
        for i in range(len(self)):
            yield self._get(i)

    def __repr__(self) -> str:
        classes = f", {len(self.class_names)} classes" if self.class_names else ""
        return f"<{type(self).__name__} {self.name!r} split={self.split!r}: {len(self)} items{classes}>"


def subset_indices(n: int, size: int | None, seed: int) -> Sequence[int]:
    """Deterministic subset of ``range(n)``: all of it when ``size`` is None or ≥ n, else a seeded sample (sorted)."""
    import numpy as np

    if size is None or size >= n:
        return range(n)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=size, replace=False).tolist())


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL image to RGB, compositing transparency (RGBA, LA, palette+transparency) on ``background``."""
    if image.mode == "RGB":
        image.load()  # read the pixels now: callers close the file right after
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def missing_files_error(what: str, looked_in: Sequence[object], fix: str) -> FileNotFoundError:
    """A ``FileNotFoundError`` naming what is missing, where it was looked for and how to fix it."""
    places = ", ".join(str(p) for p in looked_in) or "(nowhere)"
    return FileNotFoundError(f"{what} not found (looked in: {places}). {fix}")


#: MMVP-VLM's nine visual-pattern categories, in the benchmark's fixed order (Tong et al. 2024,
#: "Eyes Wide Shut?", Questions.csv ``Type`` column / image sub-folder names).
MMVP_CATEGORIES: tuple[str, ...] = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)


@dataclass(frozen=True)
class MMVPPair:
    """Two images that differ in one visual pattern, each with the statement that is true of it.

    MMVP protocol: for statement ``k``, softmax the similarity over the pair's two images; the pair
    counts as correct only when statement 0 picks image 0 *and* statement 1 picks image 1.

    Attributes:
        category: One of :data:`MMVP_CATEGORIES`.
        images: ``(image_0, image_1)``, RGB PIL images.
        statements: ``(statement_0, statement_1)``; statement ``k`` is true of image ``k``.
        attributes: ``(attrs_0, attrs_1)`` metadata of each image (synthetic factors, question ids...).
    """

    category: str
    images: tuple[Image.Image, Image.Image]
    statements: tuple[str, str]
    attributes: tuple[dict[str, Any], dict[str, Any]] = field(default_factory=lambda: ({}, {}))
