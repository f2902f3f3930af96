"""The encoder contract shared by every registry entry (embedded default, open_clip, HF CLIP).

An encoder is an ``nn.Module`` made of two *towers* (image, text) that produce pre-projection
features, and two *heads* that project those features into the shared space. Training code
can therefore either run the towers (fine-tuning tower blocks) or train only the heads on cached
tower features — the cheap path on a CPU.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn


@dataclass
class TowerTokens:
    """Token-level tower outputs (before pooling and heads), for methods that work on tokens.

    Attributes:
        tokens: (B, L, C) patch tokens (image; row-major over the grid, class token excluded)
            or word tokens (text; padding positions included, see ``mask``).
        mask: (B, L) bool, ``True`` at real tokens (all ``True`` for image patches).
        grid: (H, W) of the patch grid for image tokens (``L == H * W``), ``None`` for text.
        cls: (B, C) the class token where the tower has one (ViT), else ``None``.
        layer: Index into :meth:`Encoder.tower_blocks` of the block whose output these are.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    grid: tuple[int, int] | None = None
    cls: torch.Tensor | None = None
    layer: int = -1


@dataclass(frozen=True)
class EncoderIdentity:
    """What makes two encoders produce the same embeddings; used verbatim in cache keys.

    Attributes:
        name: Registry name with its spec, e.g. ``"default"`` or ``"open_clip:ViT-B-32:/x.pt"``.
        weights_hash: sha256 (hex) over every parameter and buffer, in state-dict order.
        preprocess: Image preprocessing (resolution, mean, std, interpolation, ...) and text
            settings (max length, pooling) — anything that changes outputs.
    """

    name: str
    weights_hash: str
    preprocess: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Short stable digest of the whole identity."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def hash_state_dict(
    module: nn.Module, exclude: tuple[str, ...] = (), include: tuple[str, ...] | None = None
) -> str:
    """sha256 over names, shapes, dtypes and bytes of ``module.state_dict()``.

    Keys starting with any of ``exclude`` are left out, and with ``include`` only keys starting
    with one of those count (``heads.tower_fingerprint`` hashes the towers alone this way,
    ``embed`` the heads alone).
    """
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        if (exclude and name.startswith(exclude)) or (
            include is not None and not name.startswith(include)
        ):
            continue
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if t.numel():
            # flatten first: 0-d tensors (logit_scale, BN counters) cannot be viewed as bytes
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


class Encoder(nn.Module):
    """Two towers + two projection heads + a logit scale.

    Subclasses implement ``preprocess``, ``tokenize``, ``image_tower`` and ``text_tower`` and
    set ``image_head``, ``text_head`` (``nn.Module`` mapping tower features to ``embed_dim``),
    ``embed_dim`` and ``name``.
    """

    name: str = "encoder"
    embed_dim: int
    image_head: nn.Module
    text_head: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # log(1/0.07), as CLIP

    # -- subclass API -------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → pixel tensor (B, 3, H, W), resized and normalised for the image tower."""
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings → the text tower's inputs (a dict of (B, L) tensors)."""
        raise NotImplementedError

    def image_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels → (B, D_img) pre-projection image features."""
        raise NotImplementedError

    def text_tower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised batch → (B, D_txt) pre-projection text features."""
        raise NotImplementedError

    def tower_blocks(self, side: str) -> list[nn.Module]:
        """Ordered (input → output) blocks of the ``"image"`` or ``"text"`` tower.

        What "last N blocks" trains (``TrainConfig.trainable="image_blocks:N"``), where LoRA and
        Earth-Adapter insert themselves, and what ``tower_tokens(layer=i)`` indexes.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not list its tower blocks; implement tower_blocks(side)"
        )

    def _image_tokens(self, pixels: torch.Tensor, layer: int) -> TowerTokens:
        raise NotImplementedError(
            f"{type(self).__name__} does not expose image tokens; implement _image_tokens"
        )

    def _text_tokens(self, tokens: dict[str, torch.Tensor], layer: int) -> TowerTokens:
        raise NotImplementedError(
            f"{type(self).__name__} does not expose text tokens; implement _text_tokens"
        )

    @property
    def preprocess_config(self) -> dict[str, Any]:
        """Everything about preprocessing that changes outputs (goes into the identity)."""
        return {}

    # -- shared API ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def identity(self) -> EncoderIdentity:
        """Name, weights hash and preprocessing; recomputed on each access (weights may train)."""
        return EncoderIdentity(self.name, hash_state_dict(self), self.preprocess_config)

    def _pixels(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"pixel tensor must be (B, 3, H, W), got {tuple(images.shape)}")
            return images.to(self.device)
        if isinstance(images, Image.Image):
            raise ValueError("encode_images takes a list of images; wrap a single one as [image]")
        if len(images) == 0:
            raise ValueError("encode_images got an empty list of images")
        return self.preprocess(images).to(self.device)

    def image_features(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """Pre-projection tower features (B, D_img) for PIL images or a preprocessed pixel tensor."""
        return self.image_tower(self._pixels(images))

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Pre-projection tower features (B, D_txt) for a list of strings."""
        if isinstance(texts, str):
            raise ValueError("encode_texts takes a list of strings; wrap a single one as [text]")
        if len(texts) == 0:
            raise ValueError("encode_texts got an empty list of texts")
        tokens = {k: v.to(self.device) for k, v in self.tokenize(list(texts)).items()}
        return self.text_tower(tokens)

    def tower_tokens(self, side: str, inputs: Any, layer: int = -1) -> TowerTokens:
        """Token-level features of one tower: patch tokens (image) or word tokens (text).

        Args:
            side: ``"image"`` or ``"text"``.
            inputs: PIL images or a (B, 3, H, W) pixel tensor (image); a list of strings or a
                :meth:`tokenize` dict (text).
            layer: Output of block ``tower_blocks(side)[layer]`` (``-1``: the last block, after
                the tower's final norm where it has one).

        Returns:
            :class:`TowerTokens` with (B, L, C) tokens and their (B, L) mask.
        """
        if side == "image":
            pixels = self._pixels(inputs)
            return self._image_tokens(pixels, self._block_index(side, layer))
        if side == "text":
            if isinstance(inputs, dict):
                tokens = {k: v.to(self.device) for k, v in inputs.items()}
            else:
                if isinstance(inputs, str) or len(inputs) == 0:
                    raise ValueError("tower_tokens('text', ...) takes a non-empty list of strings")
                tokens = {k: v.to(self.device) for k, v in self.tokenize(list(inputs)).items()}
            return self._text_tokens(tokens, self._block_index(side, layer))
        raise ValueError(f"side must be 'image' or 'text', got {side!r}")

    def _block_index(self, side: str, layer: int) -> int:
        n = len(self.tower_blocks(side))
        if not isinstance(layer, int) or not -n <= layer < n:
            raise ValueError(
                f"layer must be an int in [-{n}, {n}) for the {side} tower, got {layer!r}"
            )
        return layer % n

    def encode_images(
        self, images: Sequence[Image.Image] | torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """Images → (B, embed_dim) embeddings in the shared space; L2-normalised unless ``normalize=False``."""
        z = self.image_head(self.image_features(images))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_texts(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Texts → (B, embed_dim) embeddings in the shared space; L2-normalised unless ``normalize=False``."""
        z = self.text_head(self.text_features(texts))
        return nn.functional.normalize(z, dim=-1) if normalize else z
