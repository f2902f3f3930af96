"""A tiny encoder and dataset for the training-harness tests (plus tests of the toy itself).

The toy follows the :class:`~workbench.encoders.base.Encoder` contract with real tower blocks
(so ``image_blocks:N`` / LoRA have something to act on) and costs microseconds per step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from workbench.data.base import Dataset, Item
from workbench.encoders.base import Encoder
from workbench.encoders.embeddings import Embeddings

WORDS = ["red", "blue", "green", "small", "large", "cube", "ball", "cone", "left", "right"]


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(x))


class ToyEncoder(Encoder):
    """8×8-pixel image tower and bag-of-characters text tower, 3 residual blocks each."""

    name = "toy"

    def __init__(self, d_img: int = 24, d_txt: int = 20, embed_dim: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed_dim = embed_dim
        self.image_in = nn.Linear(3 * 8 * 8, d_img)
        self.image_blocks = nn.ModuleList(_Block(d_img) for _ in range(3))
        self.text_in = nn.Embedding(128, d_txt)
        self.text_blocks = nn.ModuleList(_Block(d_txt) for _ in range(3))
        self.image_head = nn.Linear(d_img, embed_dim, bias=False)
        self.text_head = nn.Linear(d_txt, embed_dim, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                if p is not self.logit_scale:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def tower_blocks(self, side: str) -> list[nn.Module]:
        return list(self.image_blocks if side == "image" else self.text_blocks)

    def preprocess(self, images):
        arr = np.stack([np.asarray(im.resize((8, 8)), dtype=np.float32) / 255.0 for im in images])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def tokenize(self, texts):
        L = max(len(t) for t in texts)
        ids = torch.zeros(len(texts), L, dtype=torch.long)
        for i, t in enumerate(texts):
            ids[i, : len(t)] = torch.tensor([ord(ch) % 128 for ch in t])
        return {"input_ids": ids, "lengths": torch.tensor([len(t) for t in texts])}

    def image_tower(self, pixels):
        x = self.image_in(pixels.flatten(1))
        for b in self.image_blocks:
            x = b(x)
        return x

    def text_tower(self, tokens):
        ids, lengths = tokens["input_ids"], tokens["lengths"]
        mask = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
        m = mask.unsqueeze(-1).float()  # (B, L, 1)
        x = (self.text_in(ids) * m).sum(1) / m.sum(1).clamp(min=1)
        for b in self.text_blocks:
            x = b(x)
        return x


class ToyDataset(Dataset):
    """``n`` coloured 8×8 images whose caption names the colour and a position word."""

    name = "toy"

    def __init__(self, n: int = 96, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.colors = rng.integers(0, 3, n)
        self.sizes = rng.integers(0, 2, n)
        self.noise = rng.integers(0, 40, (n, 8, 8, 3))

    def __len__(self) -> int:
        return len(self.colors)

    def _get(self, i: int) -> Item:
        img = np.zeros((8, 8, 3), dtype=np.int64) + self.noise[i]
        c, s = int(self.colors[i]), int(self.sizes[i])
        w = 6 if s else 3
        img[:w, :w, c] += 200
        cap = f"a {WORDS[3 + s]} {WORDS[c]} {WORDS[5 + i % 3]} {i}"
        return Item(str(i), Image.fromarray(img.clip(0, 255).astype(np.uint8)), [cap], label=c)


def toy_embeddings(encoder: ToyEncoder, dataset: ToyDataset) -> Embeddings:
    """Cached tower features of ``dataset`` under ``encoder`` (as ``embed(tower_features=True)``)."""
    items = list(dataset)
    with torch.no_grad():
        it = encoder.image_features([x.image for x in items])
        tt = encoder.text_features([x.captions[0] for x in items])
        return Embeddings(
            image=encoder.image_head(it).numpy(),
            text=encoder.text_head(tt).numpy(),
            ids=[x.id for x in items],
            labels=np.array([x.label for x in items], dtype=np.int64),
            captions=[x.captions[0] for x in items],
            attributes=[{} for _ in items],
            image_tower=it.numpy(),
            text_tower=tt.numpy(),
        )


def test_toy_encoder_follows_the_contract():
    enc, data = ToyEncoder(), ToyDataset(8)
    z = enc.encode_images([it.image for it in data])
    t = enc.encode_texts([it.captions[0] for it in data])
    assert z.shape == t.shape == (8, 16)
    assert torch.allclose(z.norm(dim=1), torch.ones(8))


@pytest.mark.parametrize("seed", [0, 1])
def test_toy_embeddings_match_encoder(seed):
    enc, data = ToyEncoder(seed=seed), ToyDataset(6)
    emb = toy_embeddings(enc, data)
    direct = enc.encode_images([it.image for it in data], normalize=False).detach().numpy()
    np.testing.assert_allclose(emb.image, direct, rtol=1e-5, atol=1e-6)
