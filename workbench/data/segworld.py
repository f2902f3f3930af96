"""``synthetic-world-seg``: synthetic-world scenes as a semantic-segmentation task, per domain.

Dense labels come from synthetic-world's instance masks (:func:`~workbench.data.synthetic.
render_scene`): each object's pixels get its *shape* class, the text glyph its own class, the
rest background (:data:`SEG_CLASSES`, 10 classes). A domain is one artifact of
:mod:`workbench.data.artifacts` applied to the rendered image (``"clean"`` = the source
domain); the labels never change with the domain. Item ``i`` of ``(split, seed)`` shows the same
scene in every domain.

The footgun: image edges are anti-aliased (drawn at 2× and box-downsampled) while the mask is
downsampled by nearest neighbour, so a one-pixel rim of each object is labelled by majority, not
by its blended colour — the same for every domain and every method.

>>> ds = SegWorld(size=4, image_size=64, artifact="jpeg")
>>> item, labels = ds.item_and_labels(0)
>>> item.image.size, labels.shape, labels.dtype.name, SEG_CLASSES[0]
((64, 64), (64, 64), 'uint8', 'background')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from workbench.data.artifacts import ARTIFACTS, apply_artifact
from workbench.data.base import Dataset, Item
from workbench.data.synthetic import (
    FACTORS,
    GLYPH_MASK_ID,
    SyntheticWorld,
    caption,
    render_scene,
    short_caption,
)

__all__ = ["SEG_CLASSES", "SegArrays", "SegWorld", "semantic_labels"]

#: Segmentation classes: background, the eight shapes, the text glyph.
SEG_CLASSES: tuple[str, ...] = ("background", *FACTORS["shape"], "glyph")
_GLYPH_CLASS = len(SEG_CLASSES) - 1


def semantic_labels(instance_mask: np.ndarray, shape: str) -> np.ndarray:
    """(S, S) uint8 class map from a synthetic-world instance mask (0 background, 1..3 objects,
    255 glyph) and the scene's shape name."""
    out = np.zeros_like(instance_mask, dtype=np.uint8)
    out[(instance_mask > 0) & (instance_mask != GLYPH_MASK_ID)] = 1 + FACTORS["shape"].index(shape)
    out[instance_mask == GLYPH_MASK_ID] = _GLYPH_CLASS
    return out


@dataclass
class SegArrays:
    """A domain's images and labels as arrays (what the segmentation trainer reads).

    Attributes:
        images: (N, S, S, 3) uint8 RGB.
        labels: (N, S, S) uint8 class indices into ``class_names``.
        class_names: :data:`SEG_CLASSES`.
        domain: The artifact name.
        config: The :attr:`SegWorld.config` it came from.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    domain: str
    config: dict[str, Any]

    def __len__(self) -> int:
        return len(self.images)

    def pil(self, rows: Any) -> list[Image.Image]:
        """The images at ``rows`` as PIL images (for ``encoder.preprocess``)."""
        return [Image.fromarray(self.images[int(i)]) for i in np.atleast_1d(rows)]


class SegWorld(Dataset):
    """Synthetic-world scenes under one artifact, with per-pixel class labels.

    Args:
        size: Number of scenes.
        seed: World seed (scenes) — also the artifact's noise seed unless ``artifact_seed``.
        split: ``"train"`` or ``"test"`` (independent scene streams).
        image_size: Side in pixels (≥ 48).
        artifact: Domain, a name in ``workbench.data.artifacts.ARTIFACTS`` (``"clean"``: source).
        artifact_seed: Seed of the artifact's noise (default ``seed``).
        offset: First scene index (a disjoint range of the same stream, e.g. unlabelled
            target images that share no scene with the labelled source).
        solid: Draw every object filled (synthetic-world draws half of them as 3-px outlines,
            which stride-8 features cannot resolve); the other factors are the world's own
            [our reading].

    Items are synthetic-world items with the degraded image; ``label`` is the shape index and
    ``attributes`` the scene factors plus ``"artifact"``. Labels: :meth:`label_map`.
    """

    name = "synthetic-world-seg"

    def __init__(
        self,
        size: int = 1000,
        seed: int = 0,
        split: str = "train",
        image_size: int = 128,
        artifact: str = "clean",
        artifact_seed: int | None = None,
        offset: int = 0,
        solid: bool = True,
    ) -> None:
        canonical, _, _ = ARTIFACTS.resolve(artifact)
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int ≥ 0, got {offset!r}")
        self.world = SyntheticWorld(size=offset + size, seed=seed, split=split,
                                    image_size=image_size)  # fmt: skip
        self.size, self.seed, self.split, self.image_size = size, seed, split, image_size
        self.artifact, self.offset, self.solid = canonical, offset, bool(solid)
        self.artifact_seed = seed if artifact_seed is None else int(artifact_seed)
        self.class_names = list(SEG_CLASSES)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name, "split": self.split, "size": self.size, "seed": self.seed,
            "image_size": self.image_size, "artifact": self.artifact,
            "artifact_seed": self.artifact_seed, "offset": self.offset, "solid": self.solid,
        }  # fmt: skip

    def __len__(self) -> int:
        return self.size

    def item_and_labels(self, i: int) -> tuple[Item, np.ndarray]:
        """Item ``i`` and its (S, S) uint8 label map, from one rendering."""
        if not 0 <= i < self.size:
            raise IndexError(f"{self.name}: index {i} out of range for {self.size} items")
        j = self.offset + i
        attrs = self.world.attributes(j)
        if self.solid:
            attrs["fill"] = "solid"  # fill is drawn on its own, so the rest of the scene stays
        image, instances = render_scene(attrs, self.image_size)
        pixels = apply_artifact(np.asarray(image), self.artifact, self.artifact_seed, j)
        item = Item(
            id=f"{self.name}-{self.split}-{self.seed}-{self.artifact}-{j}",
            image=Image.fromarray(pixels),
            captions=[caption(attrs), short_caption(attrs)],
            label=FACTORS["shape"].index(attrs["shape"]),
            attributes={**attrs, "artifact": self.artifact},
        )
        return item, semantic_labels(instances, attrs["shape"])

    def label_map(self, i: int) -> np.ndarray:
        """(S, S) uint8 class indices of item ``i`` (see :data:`SEG_CLASSES`)."""
        return self.item_and_labels(i)[1]

    def _get(self, i: int) -> Item:
        return self.item_and_labels(i)[0]

    def arrays(self) -> SegArrays:
        """Every item rendered once, as :class:`SegArrays`."""
        images, labels = [], []
        for i in range(self.size):
            item, lab = self.item_and_labels(i)
            images.append(np.asarray(item.image, dtype=np.uint8))
            labels.append(lab)
        return SegArrays(np.stack(images), np.stack(labels), SEG_CLASSES, self.artifact,
                         self.config)  # fmt: skip
