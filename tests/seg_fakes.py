"""Tiny towers for the Earth-Adapter tests: a conv tower shaped like the default's EfficientNet
(feature maps, a last block given as a ModuleList group) and a tiny open_clip ViT (CLS token).

``TinyConvEncoder`` at 64 px: stem (stride 2) → blocks 0..3 with outputs
16×16×8 (stride 4), 8×8×16 (stride 8), 8×8×16 (stride 8), 4×4×24 (stride 16, a
``ModuleList([conv, bn])`` group). It is registered as the encoder ``"test-tiny-conv"`` so run
directories written with it reload through ``load_encoder("run:...")``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.encoders.base import Encoder
from workbench.encoders.registry import ENCODERS

TINY_VIT_ARCH = "wb-test-seg-vit"
TINY_VIT_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU())


class TinyConvEncoder(Encoder):
    """A 4-block conv image tower (see the module docstring) and a bag-of-characters text side."""

    name = "test-tiny-conv"

    def __init__(self, seed: int = 0, resolution: int = 64) -> None:
        super().__init__()
        self.resolution = resolution
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.stem = _conv(3, 8, 2)
            self.blocks = nn.ModuleList(
                [_conv(8, 8, 2), _conv(8, 16, 2), _conv(16, 16, 1),
                 nn.ModuleList([nn.Conv2d(16, 24, 3, 2, 1), nn.BatchNorm2d(24)])]
            )  # fmt: skip
            for m in self.modules():  # non-trivial BN statistics, as a pretrained tower has
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
            self.embedding = nn.Embedding(128, 12)
            self.image_head = nn.Linear(24, 8, bias=False)
            self.text_head = nn.Linear(12, 8, bias=False)
        self.embed_dim = 8
        self.requires_grad_(False)
        self.image_head.requires_grad_(True)
        self.text_head.requires_grad_(True)
        self.logit_scale.requires_grad_(True)
        self.eval()

    def train(self, mode: bool = True) -> TinyConvEncoder:
        super().train(mode)
        self.stem.eval()
        self.blocks.eval()  # frozen BN statistics, as the default encoder's
        return self

    def tower_blocks(self, side: str) -> list[nn.Module]:
        if side == "image":
            return list(self.blocks)
        raise ValueError("the tiny conv encoder has no text blocks")

    def preprocess(self, images):
        size = (self.resolution, self.resolution)
        arr = np.stack(
            [np.asarray(im.convert("RGB").resize(size), np.float32) / 255 for im in images]
        )
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous() - 0.5

    def tokenize(self, texts):
        length = max(len(t) for t in texts)
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids[i, : len(t)] = torch.tensor([ord(ch) % 128 for ch in t])
        return {"input_ids": ids}

    def image_tower(self, pixels):
        x = self.stem(pixels)
        for block in self.blocks:
            if isinstance(block, nn.ModuleList):
                for m in block:
                    x = m(x)
            else:
                x = block(x)
        return x.mean(dim=(2, 3))

    def text_tower(self, tokens):
        return self.embedding(tokens["input_ids"]).mean(1)


if "test-tiny-conv" not in ENCODERS:
    ENCODERS.register("test-tiny-conv")(lambda **kw: TinyConvEncoder(**kw))


def tiny_vit_encoder(root: Path, seed: int = 0):
    """The tiny open_clip ViT (2 blocks, 8×8 patch grid at 64 px, CLS token), random init."""
    import open_clip

    from workbench.encoders import load_encoder

    cfg = root / f"{TINY_VIT_ARCH}.json"
    if not cfg.exists():
        cfg.write_text(json.dumps(TINY_VIT_CONFIG))
    open_clip.add_model_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_encoder(f"open_clip:{TINY_VIT_ARCH}")
