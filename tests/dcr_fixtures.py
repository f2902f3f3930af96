"""Shared pieces of the DCR tests: a pixel batch on the toy encoder, a tiny saved SD pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from test_train_toy import ToyDataset, ToyEncoder

from workbench.methods import BatchOutputs


def pixel_batch(b: int = 8, seed: int = 0, encoder: ToyEncoder | None = None) -> BatchOutputs:
    """``BatchOutputs`` for ``b`` toy images: pixels (B, 3, 8, 8) in [0, 1], features from the
    toy encoder's image tower and head (with gradient where it trains), the encoder itself."""
    enc = encoder or ToyEncoder(seed=seed)
    data = ToyDataset(max(b, 16), seed=seed)
    px = enc.preprocess([data[i].image for i in range(b)]).to(next(enc.parameters()).device)
    raw = enc.image_head(enc.image_tower(px))  # (B, D)
    return BatchOutputs(
        F.normalize(raw, dim=-1), F.normalize(raw, dim=-1), torch.tensor(10.0), raw, raw,
        pixels=px, encoder=enc,
    )  # fmt: skip


def save_tiny_sd_pipeline(root: Path, seed: int = 0) -> Path:
    """A random-init Stable-Diffusion-layout directory (UNet, VAE, CLIP text encoder, tokenizer,
    scheduler), small enough to run on CPU in milliseconds. Returns ``root``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=24,
        attention_head_dim=8, norm_num_groups=8,
    ).save_pretrained(root / "unet")  # fmt: skip
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=16,
    ).save_pretrained(root / "vae")  # fmt: skip
    vocab = {
        "<|startoftext|>": 0,
        "<|endoftext|>": 1,
        "a</w>": 2,
        "b</w>": 3,
        "a": 4,
        "b": 5,
        "ab": 6,
    }
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=24, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
            pad_token_id=1,
        )
    ).save_pretrained(root / "text_encoder")  # fmt: skip
    tok = root / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\na b\n")
    (tok / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8}))
    sched = root / "scheduler"
    sched.mkdir(parents=True, exist_ok=True)
    (sched / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "PNDMScheduler",
                "beta_start": 0.00085,
                "beta_end": 0.012,
                "beta_schedule": "scaled_linear",
                "num_train_timesteps": 1000,
                "prediction_type": "epsilon",
                "steps_offset": 1,
            }
        )
    )
    return root


class NormalisedToy(ToyEncoder):
    """The toy encoder with ImageNet normalisation in its preprocessing (and its
    ``preprocess_config``), so the code's augmentation quirk differs from the option."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    @property
    def preprocess_config(self) -> dict:
        return {"mean": list(self.MEAN), "std": list(self.STD)}

    def preprocess(self, images):
        px = super().preprocess(images)
        mean, std = (
            torch.tensor(self.MEAN).view(1, 3, 1, 1),
            torch.tensor(self.STD).view(1, 3, 1, 1),
        )
        return (px - mean) / std
