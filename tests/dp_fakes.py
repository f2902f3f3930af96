"""A tiny deterministic encoder for fast D/P probe and task-suite tests (no weights to load)."""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

from workbench.encoders.base import Encoder


class TinyEncoder(Encoder):
    """4×4-pixel image tower and a hashed bag-of-words text tower, both random linear maps.

    Image tower: (B, 3, 4, 4) pixels → (B, 16); text tower: mean of hashed word embeddings (B, 16);
    heads: bias-free linear 16 → ``embed_dim``. Seeded, so two instances with one seed are equal.
    """

    name = "tiny"
    vocab = 97

    def __init__(self, seed: int = 0, embed_dim: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed_dim = embed_dim
        self.img_proj = nn.Parameter(torch.randn(48, 16, generator=g))
        self.word = nn.Parameter(torch.randn(self.vocab, 16, generator=g))
        self.image_head = nn.Linear(16, embed_dim, bias=False)
        self.text_head = nn.Linear(16, embed_dim, bias=False)
        with torch.no_grad():
            self.image_head.weight.copy_(torch.randn(embed_dim, 16, generator=g))
            self.text_head.weight.copy_(torch.randn(embed_dim, 16, generator=g))

    def preprocess(self, images):
        arrs = [
            np.asarray(im.convert("RGB").resize((4, 4)), dtype=np.float32) / 255.0 for im in images
        ]
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()

    def tokenize(self, texts):
        ids = [
            [zlib.crc32(w.encode()) % self.vocab for w in t.lower().split()] or [0] for t in texts
        ]
        width = max(map(len, ids))
        out = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros(len(ids), width)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1.0
        return {"input_ids": out, "attention_mask": mask}

    def image_tower(self, pixels):
        return (pixels.flatten(1) - 0.5) @ self.img_proj

    def text_tower(self, tokens):
        e = self.word[tokens["input_ids"]] * tokens["attention_mask"].unsqueeze(-1)
        return e.sum(1) / tokens["attention_mask"].sum(1, keepdim=True)
