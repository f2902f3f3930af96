"""Datasets bundled with pip packages: ``digits`` (scikit-learn) and ``skimage-photos`` (scikit-image)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from workbench.data.base import Dataset, Item, subset_indices, to_rgb

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class Digits(Dataset):
    """``digits``: scikit-learn's 1,797 8×8 handwritten digits, drawn black on white and upsampled.

    Args:
        split: ``"all"``, or ``"train"``/``"test"``: a deterministic stratified split
            (``test_fraction`` of each class, chosen with ``split_seed``).
        size: Keep a seeded random subset of this many items (``None``: all).
        seed: Seed of that subset.
        image_size: Output side in pixels (bilinear upsampling of the 8×8 grid; default 64).
        test_fraction: Fraction of each class held out for ``"test"`` (default 0.25).
        split_seed: Seed of the train/test split (fixed so that train and test never overlap).

    Items: captions ``["a handwritten digit seven", "a photo of the number 7"]``, ``label`` = digit,
    ``attributes = {"digit": 7, "index": <row in load_digits()>}``.
    """

    name = "digits"

    def __init__(
        self,
        split: str = "all",
        size: int | None = None,
        seed: int = 0,
        image_size: int = 64,
        test_fraction: float = 0.25,
        split_seed: int = 0,
    ) -> None:
        from sklearn.datasets import load_digits

        if split not in ("all", "train", "test"):
            raise ValueError(f"digits split must be 'all', 'train' or 'test', got {split!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.class_names = list(DIGIT_NAMES)
        bunch = load_digits()
        images, target = bunch.images, bunch.target  # (1797, 8, 8) in [0, 16], (1797,)
        rows = np.arange(len(target))
        if split != "all":
            rng = np.random.default_rng(split_seed)
            is_test = np.zeros(len(target), bool)
            for digit in range(10):
                members = rows[target == digit]
                n_test = round(test_fraction * len(members))
                is_test[rng.choice(members, size=n_test, replace=False)] = True
            rows = rows[is_test if split == "test" else ~is_test]
        rows = rows[list(subset_indices(len(rows), size, seed))]
        self.split, self.size, self.seed = split, size, seed
        self.image_size, self.test_fraction, self.split_seed = image_size, test_fraction, split_seed
        self._rows = rows
        self._images = images[rows]
        self._labels = target[rows]

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "seed": self.seed,
            "image_size": self.image_size,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
        }

    def __len__(self) -> int:
        return len(self._rows)

    def _get(self, i: int) -> Item:
        ink = self._images[i] / 16.0  # (8, 8) in [0, 1]
        grey = Image.fromarray(np.round(255 * (1 - ink)).astype(np.uint8))
        side = self.image_size
        image = grey.resize((side, side), Image.Resampling.BILINEAR).convert("RGB")
        digit = int(self._labels[i])
        return Item(
            id=f"digits-{int(self._rows[i])}",
            image=image,
            captions=[
                f"a handwritten digit {DIGIT_NAMES[digit]}",
                f"a photo of the number {digit}",
            ],
            label=digit,
            attributes={"digit": digit, "index": int(self._rows[i])},
        )


#: scikit-image photos that ship inside the wheel (no pooch download), each with a human-written
#: caption and a class name for zero-shot checks. Checked against scikit-image 0.26: ``eagle``,
#: ``lily``, ``kidney``, ... need the optional download and are left out.
SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": (
        "astronaut",
        "a portrait of a smiling astronaut in an orange spacesuit next to a flag",
    ),
    "camera": (
        "cameraman",
        "a black and white photo of a man looking through a camera on a tripod",
    ),
    "coffee": ("coffee cup", "a red cup of espresso on a saucer on a wooden table"),
    "chelsea": ("cat", "a photo of a tabby cat"),
    "rocket": ("rocket", "a rocket on its launch pad at night"),
    "coins": ("coins", "a black and white photo of old coins lying on a table"),
    "horse": ("horse", "a black silhouette of a horse on a white background"),
    "hubble_deep_field": ("galaxy", "a deep space photo full of distant galaxies"),
    "immunohistochemistry": ("tissue", "a microscope image of stained tissue"),
    "moon": ("moon", "a black and white close-up of the surface of the moon"),
    "page": ("page of text", "a scanned page of printed text"),
    "clock": ("clock", "a blurry black and white photo of a wall clock"),
    "colorwheel": ("colour wheel", "a colour wheel showing the hues of the rainbow"),
    "retina": ("retina", "a medical photo of the back of a human eye"),
    "brick": ("brick wall", "a black and white close-up of a brick wall"),
    "grass": ("grass", "a black and white close-up of grass"),
    "gravel": ("gravel", "a black and white close-up of gravel"),
    "cell": ("cell", "a microscope image of a single cell floating in saline"),
    "stereo_motorcycle": ("motorcycle", "a photo of a red motorcycle parked in a garage"),
}


def _skimage_array(key: str) -> np.ndarray:
    import skimage.data

    array = getattr(skimage.data, key)()
    if key == "stereo_motorcycle":  # (left, right, disparity): keep the left view
        array = array[0]
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)  # horse: False = horse → black on white
    return array


class SkimagePhotos(Dataset):
    """``skimage-photos``: scikit-image's bundled photos (:data:`SKIMAGE_PHOTOS`), one class each.

    Args:
        names: Which photos (default: all of :data:`SKIMAGE_PHOTOS`, in that order).
        split: Only ``"all"`` (accepted so generic code can pass it).

    Items: captions ``[human caption, "a photo of a <class>"]``, ``label`` = index of the photo's class
    in ``class_names`` (e.g. ``chelsea`` → ``"cat"``), ``attributes = {"skimage_name": ...}``.
    """

    name = "skimage-photos"
    split = "all"

    def __init__(
        self, names: list[str] | tuple[str, ...] | None = None, split: str = "all"
    ) -> None:
        if split != "all":
            raise ValueError(f"skimage-photos has only the split 'all', got {split!r}")
        names = list(SKIMAGE_PHOTOS) if names is None else list(names)
        unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
        if unknown:
            raise ValueError(f"unknown skimage photos {unknown}; available: {list(SKIMAGE_PHOTOS)}")
        self.names = names
        self.class_names = [SKIMAGE_PHOTOS[n][0] for n in names]

    @property
    def config(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "size": len(self), "names": self.names}

    def __len__(self) -> int:
        return len(self.names)

    def _get(self, i: int) -> Item:
        key = self.names[i]
        cls, text = SKIMAGE_PHOTOS[key]
        image = to_rgb(Image.fromarray(_skimage_array(key)))
        article = "an" if cls[0] in "aeiou" else "a"
        return Item(
            id=f"skimage-{key}",
            image=image,
            captions=[text, f"a photo of {article} {cls}"],
            label=i,
            attributes={"skimage_name": key},
        )
