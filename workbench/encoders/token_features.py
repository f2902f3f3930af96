"""The :class:`TokenFeatures` container: patch tokens per image, word tokens per caption.

What :func:`workbench.encoders.tokens.embed_tokens` returns and
:class:`workbench.encoders.token_cache.TokenCache` stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

__all__ = ["ARRAYS", "FORMAT", "TOKEN_DTYPES", "TokenFeatures"]

FORMAT = 1  # bump when the file layout changes; part of every key
TOKEN_DTYPES = {"float16": np.float16, "float32": np.float32}
#: The arrays of a :class:`TokenFeatures`, as the cache stores them.
ARRAYS = ("image_tokens", "image_mask", "text_tokens", "text_mask", "caption_owner", "labels")


@dataclass
class TokenFeatures:
    """Patch tokens of ``n_img`` images and word tokens of their ``n_cap`` captions.

    Attributes:
        image_tokens: (n_img, P, C_img) patch tokens (row-major grid, class token excluded),
            float16 or float32.
        image_mask: (n_img, P) bool, ``True`` at real tokens (all ``True`` for a patch grid).
        text_tokens: (n_cap, L, C_txt) word tokens, zero at padding.
        text_mask: (n_cap, L) bool, ``True`` at real tokens, left-aligned (real tokens first,
            then padding); every caption has at least one.
        caption_owner: (n_cap,) int64, image row of each caption.
        ids: n_img item ids.
        captions: n_cap caption strings.
        labels: (n_img,) int64 class labels, ``-1`` where none.
        grid: (H, W) of the patch grid, or ``None``.
        class_names: Class names indexed by label, or ``None``.
        provenance: What produced the tokens (towers, dataset, layers, limits, version, key).
    """

    image_tokens: np.ndarray
    image_mask: np.ndarray
    text_tokens: np.ndarray
    text_mask: np.ndarray
    caption_owner: np.ndarray
    ids: list[str]
    captions: list[str]
    labels: np.ndarray
    grid: tuple[int, int] | None = None
    class_names: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, m = len(self.ids), len(self.captions)
        checks = (
            (self.image_tokens.ndim == 3 and self.image_tokens.shape[0] == n, "image_tokens", "(n_img, P, C)"),
            (self.image_mask.shape == self.image_tokens.shape[:2], "image_mask", "(n_img, P)"),
            (self.text_tokens.ndim == 3 and self.text_tokens.shape[0] == m, "text_tokens", "(n_cap, L, C)"),
            (self.text_mask.shape == self.text_tokens.shape[:2], "text_mask", "(n_cap, L)"),
            (self.caption_owner.shape == (m,), "caption_owner", "(n_cap,)"),
            (len(self.labels) == n, "labels", "(n_img,)"),
        )  # fmt: skip
        for ok, name, want in checks:
            if not ok:
                raise ValueError(
                    f"TokenFeatures.{name} must be {want} for {n} images, {m} captions"
                )
        if self.image_mask.dtype != np.bool_ or self.text_mask.dtype != np.bool_:
            raise ValueError("TokenFeatures masks must be bool arrays")
        lengths = self.text_mask.sum(axis=1)
        if not (self.text_mask == (np.arange(self.text_mask.shape[1]) < lengths[:, None])).all():
            raise ValueError("text_mask rows must be left-aligned: real tokens first, then padding")
        if m and not self.text_mask.any(axis=1).all():
            raise ValueError(
                "every caption needs at least one real token (text_mask row all False)"
            )
        if n and not self.image_mask.any(axis=1).all():
            raise ValueError("every image needs at least one real token (image_mask row all False)")
        if m and (self.caption_owner.min() < 0 or self.caption_owner.max() >= n):
            raise ValueError(f"caption_owner entries must index images in [0, {n})")

    @property
    def n_images(self) -> int:
        return len(self.ids)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    @property
    def dims(self) -> tuple[int, int]:
        """``(C_img, C_txt)``: token widths of the two towers."""
        return int(self.image_tokens.shape[2]), int(self.text_tokens.shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes held by the token arrays (what the cache stores, headers aside)."""
        return int(sum(getattr(self, a).nbytes for a in ARRAYS))

    def subset(self, image_rows: Sequence[int] | np.ndarray) -> TokenFeatures:
        """Images ``image_rows`` (in that order) with all their captions; ``caption_owner`` is
        re-indexed into the new rows."""
        rows = np.asarray(image_rows, dtype=np.int64)
        if rows.ndim != 1 or len(np.unique(rows)) != len(rows):
            raise ValueError("image_rows must be a 1-D sequence of distinct image indices")
        new_index = np.full(self.n_images, -1, dtype=np.int64)
        new_index[rows] = np.arange(len(rows))
        keep = np.flatnonzero(new_index[self.caption_owner] >= 0)
        keep = keep[np.argsort(new_index[self.caption_owner[keep]], kind="stable")]
        length = max(1, int(self.text_mask[keep].sum(axis=1).max())) if len(keep) else 1
        return replace(
            self,
            image_tokens=self.image_tokens[rows],
            image_mask=self.image_mask[rows],
            text_tokens=self.text_tokens[keep, :length],
            text_mask=self.text_mask[keep, :length],
            caption_owner=new_index[self.caption_owner[keep]],
            ids=[self.ids[i] for i in rows],
            captions=[self.captions[i] for i in keep],
            labels=self.labels[rows],
            provenance=dict(self.provenance),
        )

    @classmethod
    def concat(cls, parts: Sequence[TokenFeatures]) -> TokenFeatures:
        """Rows of every part in order (captions padded to the longest; ``caption_owner``
        shifted). Token widths, grids and storage dtypes must agree; class names are kept only
        when every part has the same ones. ``provenance`` lists the parts'."""
        parts = list(parts)
        if not parts:
            raise ValueError("concat needs at least one TokenFeatures")
        first = parts[0]
        for p in parts[1:]:
            if p.dims != first.dims or p.image_tokens.shape[1] != first.image_tokens.shape[1]:
                raise ValueError("concat: token widths or patch counts differ between parts")
            if p.image_tokens.dtype != first.image_tokens.dtype:
                raise ValueError("concat: storage dtypes differ between parts")
        length = max(p.text_tokens.shape[1] for p in parts)
        pad = lambda a, fill: np.pad(  # noqa: E731
            a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=fill
        )
        offsets = np.cumsum([0] + [p.n_images for p in parts[:-1]])
        names = {tuple(p.class_names) if p.class_names else None for p in parts}
        return cls(
            image_tokens=np.concatenate([p.image_tokens for p in parts]),
            image_mask=np.concatenate([p.image_mask for p in parts]),
            text_tokens=np.concatenate([pad(p.text_tokens, 0) for p in parts]),
            text_mask=np.concatenate([pad(p.text_mask, False) for p in parts]),
            caption_owner=np.concatenate([p.caption_owner + o for p, o in zip(parts, offsets)]),
            ids=[i for p in parts for i in p.ids],
            captions=[c for p in parts for c in p.captions],
            labels=np.concatenate([p.labels for p in parts]),
            grid=first.grid,
            class_names=first.class_names if len(names) == 1 else None,
            provenance={"concat": [p.provenance for p in parts]},
        )

    def image_batch(
        self, rows: np.ndarray, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (B, P, C_img) float32, mask (B, P) bool)`` of images ``rows`` on ``device``."""
        return _batch(self.image_tokens, self.image_mask, rows, device)

    def text_batch(
        self, rows: np.ndarray, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (B, L_b, C_txt) float32, mask (B, L_b) bool)`` of captions ``rows``, trimmed
        to the longest caption among them."""
        return _batch(self.text_tokens, self.text_mask, rows, device)

    def pooled(self, side: str) -> np.ndarray:
        """Masked mean of each row's tokens, (n, C) float32 (``"image"`` or ``"text"``)."""
        tokens, mask = {
            "image": (self.image_tokens, self.image_mask),
            "text": (self.text_tokens, self.text_mask),
        }[_side(side)]
        w = mask[..., None].astype(np.float32)  # (n, L, 1)
        return (tokens.astype(np.float32) * w).sum(1) / w.sum(1)


def _side(side: str) -> str:
    if side not in ("image", "text"):
        raise ValueError(f"side must be 'image' or 'text', got {side!r}")
    return side


def _batch(
    tokens: np.ndarray, mask: np.ndarray, rows: np.ndarray, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.asarray(rows, dtype=np.int64)
    m = mask[rows]  # (B, L)
    length = max(1, int(m.any(axis=0).nonzero()[0].max()) + 1) if m.any() else 1
    t = torch.from_numpy(np.ascontiguousarray(tokens[rows, :length])).to(device).float()
    return t, torch.from_numpy(np.ascontiguousarray(m[:, :length])).to(device)
