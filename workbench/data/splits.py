"""Held-out splits fixed by a hash of each item's id, so they never depend on order, size or seed.

>>> from workbench.data.splits import id_unit, in_split
>>> id_unit("openclipart-animals/frog.svg") == id_unit("openclipart-animals/frog.svg")
True
>>> [in_split(f"item-{i}", "test", 0.3) for i in range(10)]
[False, False, False, False, False, False, True, False, True, False]

An item's place in ``[0, 1)`` is ``sha256(salt + id)`` read as a fraction; the ``test`` split is the
items whose place is below ``test_fraction``. Adding or removing other items, subsetting, or a new
package version that reorders files never moves an item between train and test (a seeded
``random.sample`` would). A different ``salt`` gives an independent split of the same ids (e.g. a
validation split carved out of ``train``).
"""

from __future__ import annotations

import hashlib

SPLITS = ("all", "train", "test")


def id_unit(item_id: str, salt: str = "") -> float:
    """Uniform place of ``item_id`` in ``[0, 1)``: the first 8 bytes of ``sha256(salt + id)`` / 2⁶⁴."""
    digest = hashlib.sha256((salt + item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_split(item_id: str, split: str, test_fraction: float, salt: str = "") -> bool:
    """Whether ``item_id`` belongs to ``split`` (``"all"``, ``"train"`` or ``"test"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return True
    return (id_unit(item_id, salt) < test_fraction) == (split == "test")


def check_split(name: str, split: str, test_fraction: float) -> None:
    """Validate a hash-split dataset's ``split``/``test_fraction`` arguments (``ValueError``)."""
    if split not in SPLITS:
        raise ValueError(f"{name} split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"{name} test_fraction must be in (0, 1), got {test_fraction}")
