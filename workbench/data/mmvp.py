"""``mmvp-vlm``: the MMVP-VLM benchmark (Tong et al. 2024, "Eyes Wide Shut?") from its HF folder.

Layout of the ``MMVP/MMVP_VLM`` dataset folder, as read by the authors' ``scripts/evaluate_vlm.py``::

    <root>/Questions.csv                 # header "Question ID,Type,Statement"; 270 rows
    <root>/MLLM_VLM Images/<Type>/<Question ID>.jpg

Rows come in consecutive pairs (qid ``2k-1``, ``2k``) of the same ``Type`` — one of the nine
categories (:data:`~workbench.data.base.MMVP_CATEGORIES`, 15 pairs each). The statement of the
odd qid is true of the odd image, the even one of the even image. The original evaluation scores
``"a photo of " + statement`` (``statement_prefix``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from PIL import Image

from workbench.data.base import (
    MMVP_CATEGORIES,
    Dataset,
    Item,
    MMVPPair,
    missing_files_error,
    to_rgb,
)

IMAGE_DIR = "MLLM_VLM Images"


def _read_questions(path: Path) -> list[tuple[int, str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty")
    header = [h.strip() for h in rows[0]]
    try:
        cols = [header.index(h) for h in ("Question ID", "Type", "Statement")]
    except ValueError:
        raise ValueError(
            f"{path}: expected the header 'Question ID,Type,Statement', got {rows[0]}"
        ) from None
    out = []
    for row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        qid, qtype, statement = (row[c].strip() for c in cols)
        out.append((int(qid), qtype, statement))
    return sorted(out)


class MMVPVLM(Dataset):
    """``mmvp-vlm``: 135 image pairs (9 categories × 15) × 2 statements; one :class:`Item` per image.

    Args:
        root: The dataset folder (default ``$WORKBENCH_DATA/mmvp-vlm``).
        statement_prefix: Prepended to each statement (default ``"a photo of "``, as in the
            benchmark's evaluation script; ``""`` for the raw statement).
        split: ``"test"`` (the whole benchmark; ``"all"`` is accepted as a synonym).

    Items (in qid order): ``captions = [prefix + statement]``, ``label`` = category index in
    ``class_names`` (= :data:`MMVP_CATEGORIES` order), attributes
    ``{"qid", "category", "pair": k, "position": 0 | 1}``. :meth:`pairs` returns :class:`MMVPPair`.
    """

    name = "mmvp-vlm"
    split = "test"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        statement_prefix: str = "a photo of ",
        split: str = "test",
    ) -> None:
        if split not in ("test", "all"):
            raise ValueError(
                f"mmvp-vlm is a test set: split must be 'test' (or 'all'), got {split!r}"
            )
        if root is None:
            base = os.environ.get("WORKBENCH_DATA")
            root = Path(base) / "mmvp-vlm" if base else Path.cwd() / "data" / "mmvp-vlm"
        self.root = Path(root)
        self.class_names = list(MMVP_CATEGORIES)
        csv_path, image_dir = self.root / "Questions.csv", self.root / IMAGE_DIR
        if not csv_path.is_file() or not image_dir.is_dir():
            raise missing_files_error(
                "MMVP-VLM Questions.csv and 'MLLM_VLM Images/'",
                [csv_path, image_dir],
                "Download the MMVP/MMVP_VLM dataset folder from the Hugging Face Hub yourself "
                "and pass root= (the folder holding Questions.csv).",
            )
        rows = _read_questions(csv_path)
        if len(rows) % 2:
            raise ValueError(f"{csv_path}: {len(rows)} statements, expected pairs (an even number)")
        for (q0, t0, _), (q1, t1, _) in zip(rows[::2], rows[1::2]):
            if t0 != t1 or q1 != q0 + 1 or q0 % 2 != 1:
                raise ValueError(f"{csv_path}: questions {q0} and {q1} do not form a pair")
            if t0 not in MMVP_CATEGORIES:
                raise ValueError(f"{csv_path}: unknown Type {t0!r}; known: {MMVP_CATEGORIES}")
        self._rows = rows
        self.image_dir = image_dir
        self.statement_prefix = statement_prefix

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "root": str(self.root),
            "statement_prefix": self.statement_prefix,
        }

    def __len__(self) -> int:
        return len(self._rows)

    def _image(self, qid: int, category: str) -> Image.Image:
        path = self.image_dir / category / f"{qid}.jpg"
        if not path.is_file():
            raise missing_files_error(f"MMVP-VLM image {qid}.jpg", [path.parent], "Re-download it.")
        with Image.open(path) as raw:
            return to_rgb(raw)

    def _get(self, i: int) -> Item:
        qid, category, statement = self._rows[i]
        return Item(
            id=f"mmvp-vlm-{qid}",
            image=self._image(qid, category),
            captions=[self.statement_prefix + statement],
            label=MMVP_CATEGORIES.index(category),
            attributes={"qid": qid, "category": category, "pair": i // 2, "position": i % 2},
        )

    def pairs(self) -> list[MMVPPair]:
        """The benchmark as :class:`MMVPPair` (statement ``k`` true of image ``k``), in qid order."""
        out = []
        for (q0, cat, s0), (q1, _, s1) in zip(self._rows[::2], self._rows[1::2]):
            out.append(
                MMVPPair(
                    category=cat,
                    images=(self._image(q0, cat), self._image(q1, cat)),
                    statements=(self.statement_prefix + s0, self.statement_prefix + s1),
                    attributes=({"qid": q0}, {"qid": q1}),
                )
            )
        return out
