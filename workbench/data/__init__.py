"""Datasets: a string-keyed registry of :class:`~workbench.data.base.Dataset` factories.

>>> from workbench.data import load_dataset
>>> ds = load_dataset("synthetic-world", size=8, seed=0)
>>> item = ds[0]
>>> item.image.size, ds.class_names[item.label] == item.attributes["shape"]
((96, 96), True)

Every item carries an RGB PIL image, ``captions`` (``[0]`` canonical), a ``label`` where the
dataset has classes (``ds.class_names``) and an ``attributes`` dict; ``ds.config`` identifies the
data in cache keys. Nothing here downloads: missing files raise ``FileNotFoundError`` saying what
to install or which ``root=`` to pass.
"""

from __future__ import annotations

import inspect
from typing import Any

from workbench._registry import Registry
from workbench.data.base import MMVP_CATEGORIES, Dataset, Item, MMVPPair, subset_indices
from workbench.data.builtin import Digits, SkimagePhotos
from workbench.data.captions import CocoCaptions, Flickr30k
from workbench.data.emoji import Emoji
from workbench.data.fashion_mnist import FashionMNIST
from workbench.data.imagefolder import ImageFolder
from workbench.data.mmvp import MMVPVLM
from workbench.data.negatives import hard_negatives
from workbench.data.openclipart import OpenClipart
from workbench.data.segworld import SegWorld
from workbench.data.synthetic import SyntheticWorld, mmvp_pairs
from workbench.data.tuxpaint import TuxPaintStamps

DATASETS: Registry[type[Dataset]] = Registry("dataset")
for _name, _cls, _aliases in (
    ("synthetic-world", SyntheticWorld, ("synthetic",)),
    ("digits", Digits, ()),
    ("skimage-photos", SkimagePhotos, ("skimage",)),
    ("fashion-mnist", FashionMNIST, ("fashion_mnist",)),
    ("openclipart", OpenClipart, ()),
    ("emoji", Emoji, ("noto-emoji",)),
    ("tuxpaint-stamps", TuxPaintStamps, ("tuxpaint",)),
    ("coco-captions", CocoCaptions, ("coco",)),
    ("flickr30k", Flickr30k, ()),
    ("mmvp-vlm", MMVPVLM, ("mmvp",)),
    ("imagefolder", ImageFolder, ()),
    ("synthetic-world-seg", SegWorld, ("segworld",)),
):
    DATASETS.register(_name, aliases=_aliases)(_cls)


def dataset_names(value: Any, field: str = "datasets", *, owner: str = "") -> tuple[str, ...]:
    """Validate a config's sequence of dataset names against :data:`DATASETS`.

    A bare string is refused (never split into characters), and an unknown name raises with
    the registry's "did you mean". Returns the names as a tuple (aliases kept as written).

    >>> dataset_names(["digits"])
    ('digits',)
    >>> dataset_names(["digts"], owner="SuiteRunConfig")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: SuiteRunConfig: datasets: unknown dataset 'digts'. Did you mean 'digits'? ...
    """
    from workbench._validate import as_names

    names = as_names(value, field, owner=owner, unique=True)
    for name in names:
        check_dataset_name(name, field, owner=owner)
    return names


def check_dataset_name(name: Any, field: str = "dataset", *, owner: str = "") -> str:
    """Validate one dataset name against :data:`DATASETS` (``ValueError`` with suggestions)."""
    prefix = f"{owner}: " if owner else ""
    if isinstance(name, str) and not name:
        raise ValueError(f"{prefix}{field} is empty; name one (see the registry's names)")
    if not isinstance(name, str):
        raise TypeError(f"{prefix}{field} must be a dataset name (str), got {name!r}")
    try:
        DATASETS.resolve(name)
    except KeyError as err:
        raise ValueError(f"{prefix}{field}: {err.args[0]}") from None
    return name


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Build the dataset registered as ``name`` (see ``DATASETS.names()``) with ``kwargs``.

    Common keyword arguments (where the dataset supports them): ``split``, ``size``, ``seed``,
    ``root``. Unknown names raise ``KeyError`` with suggestions; unknown kwargs ``TypeError``.
    """
    canonical, cls, _ = DATASETS.resolve(name)
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {canonical!r} does not take {unknown}; it takes {list(accepted)}")
    return cls(**kwargs)


__all__ = [
    "DATASETS",
    "MMVP_CATEGORIES",
    "Dataset",
    "Item",
    "MMVPPair",
    "check_dataset_name",
    "dataset_names",
    "hard_negatives",
    "load_dataset",
    "mmvp_pairs",
    "subset_indices",
]
