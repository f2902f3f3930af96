"""``fashion-mnist`` from its idx files (Debian's ``dataset-fashion-mnist`` or any folder)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from workbench.data.base import Dataset, Item, missing_files_error, subset_indices

FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
#: Caption templates of every item, ``{}`` = "a t-shirt" / "an ankle boot". The first two are the
#: captions items always had (``captions[0]`` is what cached embeddings hold); the others vary the
#: wording and say what the pictures are (28 px greyscale product shots on black), so a
#: multi-caption option has real variety to sample from.
FASHION_TEMPLATES = (
    "a photo of {}",
    "a black and white photo of {}",
    "a greyscale photo of {}",
    "a low resolution photo of {}",
    "a product photo of {}",
    "{} on a plain black background",
    "a small picture of {}",
    "a photo of {}, an item of clothing",
)
_FILES = {"train": "train-{}-idx{}-ubyte", "test": "t10k-{}-idx{}-ubyte"}


def read_idx(path: Path | str) -> np.ndarray:
    """Parse an idx file (optionally ``.gz``) into a uint8 array of its declared shape.

    idx format: 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions, then each
    dimension as a big-endian int32, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (bad magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: header says {shape} ({expected} bytes) but holds {len(data) - offset}"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _find(root: Path, split: str, kind: str, ndim: int) -> Path | None:
    stem = _FILES[split].format(kind, ndim)
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


class FashionMNIST(Dataset):
    """``fashion-mnist``: Zalando's 28×28 greyscale clothing images, 10 named classes.

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (10,000, default).
        size: Keep a seeded random subset of this many items (``None``: all).
        seed: Seed of that subset.
        root: Folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. Default:
            ``$WORKBENCH_FASHION_MNIST``, else Debian's ``/usr/share/datasets/fashion-mnist``.
        image_size: Resize to this side (bilinear); ``None`` keeps 28 px.

    The idx files are read once on construction; only the selected rows are kept (a copy, so a
    small subset does not pin 47 MB), and PIL images are made on access. Images are kept as in the
    files: a light garment on a black background. Captions: :data:`FASHION_TEMPLATES` filled with the
    class ("a photo of a sneaker", "a black and white photo of a sneaker", ...).
    """

    name = "fashion-mnist"

    def __init__(
        self,
        split: str = "test",
        size: int | None = None,
        seed: int = 0,
        root: str | os.PathLike[str] | None = None,
        image_size: int | None = None,
    ) -> None:
        if split not in _FILES:
            raise ValueError(f"fashion-mnist split must be 'train' or 'test', got {split!r}")
        if root is None:
            root = os.environ.get("WORKBENCH_FASHION_MNIST", DEBIAN_ROOT)
        self.root = Path(root)
        self.class_names = list(FASHION_CLASSES)
        images_path = _find(self.root, split, "images", 3)
        labels_path = _find(self.root, split, "labels", 1)
        if images_path is None or labels_path is None:
            raise missing_files_error(
                f"fashion-mnist {split} idx files ({_FILES[split].format('images', 3)}.gz, ...)",
                [self.root],
                "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass "
                "root= (or set WORKBENCH_FASHION_MNIST) to a folder holding the four idx files.",
            )
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images_path} has {len(images)} images but {len(labels)} labels")
        rows = np.asarray(list(subset_indices(len(labels), size, seed)), dtype=np.int64)
        self._rows = rows
        self._images = images[rows]  # fancy indexing copies: the full buffer can be freed
        self._labels = labels[rows].astype(np.int64)
        self.split, self.size, self.seed, self.image_size = split, size, seed, image_size

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "seed": self.seed,
            "root": str(self.root),
            "image_size": self.image_size,
        }

    def __len__(self) -> int:
        return len(self._rows)

    def _get(self, i: int) -> Item:
        image = Image.fromarray(self._images[i]).convert("RGB")
        if self.image_size is not None:
            size = (self.image_size, self.image_size)
            image = image.resize(size, Image.Resampling.BILINEAR)
        label = int(self._labels[i])
        cls = FASHION_CLASSES[label]
        article = "an" if cls[0] in "aeiou" else "a"
        return Item(
            id=f"fashion-mnist-{self.split}-{int(self._rows[i])}",
            image=image,
            captions=[t.format(f"{article} {cls}") for t in FASHION_TEMPLATES],
            label=label,
            attributes={"index": int(self._rows[i])},
        )
