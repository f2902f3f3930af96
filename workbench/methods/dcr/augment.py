"""DCR's augmentation for the positive view x⁺, and the pixel-space conversions around it.

The official code [code: ``clip_models/CLIP_bank.py``] builds x⁺ per image with torchvision's
``ColorJitter(0.1, 0.1, 0.1, 0.05) → RandomHorizontalFlip(.5) → RandomVerticalFlip(.5) →
RandomResizedCrop(size, scale=(0.9, 1), ratio=(0.9, 1.1))`` applied to the **already
CLIP-normalised** tensor. That is a quirk with a visible effect: torchvision's colour ops on a
float tensor assume [0, 1] and clamp to it, so every normalised value below 0 (about half of
them) becomes 0 and every value above 1 becomes 1 before the flips and the crop. x⁺ is then a
heavily clipped image, not a mild jitter. ``before_normalise=True`` applies the same transforms
to the [0, 1] image and normalises afterwards (what the code presumably meant).

Randomness comes from torch's global RNG (as torchvision's does), which the training loop seeds
and checkpoints, so resumed runs repeat the same views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The code's jitter strengths and crop ranges [code].
COLOR_JITTER = (0.1, 0.1, 0.1, 0.05)
FLIP_P = 0.5
CROP_SCALE = (0.9, 1.0)
CROP_RATIO = (0.9, 1.1)


def code_augmentation(size: int | tuple[int, int]):
    """The official torchvision pipeline for one (3, H, W) tensor → (3, *size)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.ColorJitter(*COLOR_JITTER),
            T.RandomHorizontalFlip(p=FLIP_P),
            T.RandomVerticalFlip(p=FLIP_P),
            T.RandomResizedCrop(size=size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
        ]
    )


def normalisation(encoder: object, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) mean and std of ``encoder.preprocess_config`` (0 and 1 when it has none,
    i.e. pixels already in [0, 1], as the test toy's), on ``like``'s device and dtype."""
    cfg = getattr(encoder, "preprocess_config", {}) or {}
    mean = torch.tensor(cfg.get("mean", (0.0, 0.0, 0.0)), dtype=like.dtype, device=like.device)
    std = torch.tensor(cfg.get("std", (1.0, 1.0, 1.0)), dtype=like.dtype, device=like.device)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def to_unit_range(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Encoder-normalised (B, 3, H, W) pixels → images in [0, 1] (clamped)."""
    return (pixels * std + mean).clamp(0, 1)


def augment_view(
    pixels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    before_normalise: bool = False,
) -> torch.Tensor:
    """x⁺ for a batch: (B, 3, H, W) encoder-normalised pixels → the same shape, normalised.

    Args:
        pixels: What the encoder's ``preprocess`` produced (``BatchOutputs.pixels``).
        mean, std: (1, 3, 1, 1) the encoder's normalisation (:func:`normalisation`).
        before_normalise: ``False`` = the code's quirk (transforms on the normalised tensor);
            ``True`` = un-normalise, transform in [0, 1], normalise again.
    """
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be (B, 3, H, W), got {tuple(pixels.shape)}")
    aug = code_augmentation(tuple(pixels.shape[-2:]))
    with torch.no_grad():
        src = to_unit_range(pixels, mean, std) if before_normalise else pixels
        views = torch.stack([aug(img.detach().float().cpu()) for img in src])  # (B, 3, H, W)
        views = views.to(device=pixels.device, dtype=pixels.dtype)
        return (views - mean) / std if before_normalise else views


def clipped_fraction(pixels: torch.Tensor) -> float:
    """Share of values outside [0, 1] in encoder-normalised ``pixels``: what the code's quirk
    clamps away (logged so a reader sees how strong the 'mild' augmentation really is)."""
    return float(((pixels < 0) | (pixels > 1)).float().mean())


__all__: Sequence[str] = [
    "COLOR_JITTER",
    "augment_view",
    "clipped_fraction",
    "code_augmentation",
    "normalisation",
    "to_unit_range",
]
