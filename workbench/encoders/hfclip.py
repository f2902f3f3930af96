"""``"hf-clip:<local directory>"``: a transformers ``CLIPModel`` saved with ``save_pretrained``.

Towers: ``vision_model``/``text_model`` pooled outputs (the post-layernorm CLS token; the
EOS token's hidden state). Heads: ``visual_projection``/``text_projection``. The directory must
hold the model (``config.json`` + weights) and the processor (image processor + tokenizer
files); everything is read with ``local_files_only=True`` and safetensors weights are preferred,
so nothing is downloaded and no pickled code runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from .base import Encoder, TowerTokens
from .default import _quiet_transformers


class HFClipEncoder(Encoder):
    """A transformers ``CLIPModel`` + ``CLIPProcessor`` behind the :class:`Encoder` API.

    Towers are frozen (``requires_grad=False``); heads and ``logit_scale`` are trainable.

    Attributes:
        model: the ``CLIPModel``; its ``vision_model``/``text_model`` are the towers.
        image_head: ``model.visual_projection``, (B, vision hidden) → (B, projection_dim).
        text_head: ``model.text_projection``, (B, text hidden) → (B, projection_dim).
    """

    def __init__(self, model: Any, processor: Any, name: str) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.processor = processor
        model.requires_grad_(False)  # towers frozen, heads trainable, as for every encoder
        self.image_head = model.visual_projection.requires_grad_(True)
        self.text_head = model.text_projection.requires_grad_(True)
        self.embed_dim = int(model.config.projection_dim)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        with torch.no_grad():
            self.logit_scale.copy_(model.logit_scale.detach().reshape(()))
        self.train(False)

    @property
    def preprocess_config(self) -> dict[str, Any]:
        ip = self.processor.image_processor
        keep = ("size", "crop_size", "resample", "do_center_crop", "do_rescale", "rescale_factor")
        cfg = {k: _jsonable(getattr(ip, k, None)) for k in keep}
        cfg["mean"] = _jsonable(ip.image_mean)
        cfg["std"] = _jsonable(ip.image_std)
        cfg["text_max_length"] = self.max_length
        cfg["tokenizer"] = type(self.processor.tokenizer).__name__
        cfg["vocab_size"] = len(self.processor.tokenizer)
        return cfg

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → (B, 3, H, W) pixels via the saved ``CLIPImageProcessor``."""
        rgb = [im.convert("RGB") for im in images]
        return self.processor.image_processor(rgb, return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings → ``input_ids``/``attention_mask`` (B, L), padded, truncated to the model's positions."""
        out = self.processor.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: out[k] for k in ("input_ids", "attention_mask")}

    def image_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, vision hidden) pooled (post-layernorm CLS) features."""
        return self.model.vision_model(pixel_values=pixels).pooler_output

    def text_tower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens → (B, text hidden) pooled (EOS token) features."""
        return self.model.text_model(**tokens).pooler_output

    def tower_blocks(self, side: str) -> list[nn.Module]:
        """The vision or text encoder's transformer layers, input → output."""
        if side == "image":
            return list(self.model.vision_model.encoder.layers)
        if side == "text":
            return list(self.model.text_model.encoder.layers)
        raise ValueError(f"side must be 'image' or 'text', got {side!r}")

    def _image_tokens(self, pixels: torch.Tensor, layer: int) -> TowerTokens:
        """Vision-transformer patch tokens after layer ``layer`` (CLS split off)."""
        out = self.model.vision_model(pixel_values=pixels, output_hidden_states=True)
        hidden = out.hidden_states[layer + 1]  # (B, 1 + H·W, C); [0] is the embeddings
        patch = self.model.config.vision_config.patch_size
        grid = (pixels.shape[-2] // patch, pixels.shape[-1] // patch)
        tokens = hidden[:, 1:]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TowerTokens(tokens, mask, grid=grid, cls=hidden[:, 0], layer=layer)

    def _text_tokens(self, tokens: dict[str, torch.Tensor], layer: int) -> TowerTokens:
        """Text-transformer token states after layer ``layer`` (the final layer norm after the
        last), with the attention mask."""
        out = self.model.text_model(**tokens, output_hidden_states=True)
        last = layer == len(self.tower_blocks("text")) - 1
        hidden = out.last_hidden_state if last else out.hidden_states[layer + 1]
        return TowerTokens(hidden, tokens["attention_mask"].bool(), layer=layer)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. SizeDict
        value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def build_hf_clip(spec: str | None, **kwargs: Any) -> HFClipEncoder:
    """Registry factory for ``"hf-clip:<local directory>"``.

    Args:
        spec: Directory written by ``CLIPModel.save_pretrained`` and ``CLIPProcessor.save_pretrained``.
        **kwargs: Passed to ``CLIPModel.from_pretrained`` (e.g. ``dtype=``).

    Raises:
        ValueError: No directory given.
        FileNotFoundError: The directory or its ``config.json`` is missing.
    """
    from transformers import CLIPModel, CLIPProcessor

    if not spec:
        raise ValueError("'hf-clip:' needs a local directory, e.g. 'hf-clip:/models/clip-vit-b32'")
    path = Path(spec).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"hf-clip: {str(path)!r} is not a saved CLIPModel directory (no config.json). Save one "
            "with model.save_pretrained(dir) and CLIPProcessor.save_pretrained(dir); hub ids are "
            "not accepted because workbench never downloads."
        )
    with _quiet_transformers():
        model = CLIPModel.from_pretrained(path, local_files_only=True, **kwargs)
    processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    return HFClipEncoder(model, processor, f"hf-clip:{path}")


__all__ = ["HFClipEncoder", "build_hf_clip"]
