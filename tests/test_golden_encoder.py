"""Golden forward pass of the embedded default encoder on a fixed batch (see ``tests/goldens.py``).

Tolerance: each tensor may differ from the stored one by 1e-4 of its largest magnitude. Running
the same forward with 1 vs 2 torch threads moves the image tower by 2e-6 of its scale (measured),
and other CPUs' kernels reorder sums further; a changed weight, preprocessing step or pooling
moves these outputs by more than 1e-2 of their scale, so 1e-4 separates the two by orders of
magnitude.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from goldens import check_golden
from PIL import Image

TEXTS = [
    "a photo of a cat",
    "an astronaut in a white suit",
    "two red squares left of a blue circle",
    "",
    "long " * 300,  # past MiniLM's 256-token limit: truncation is part of the contract
    "A tabby cat.",
]


def _images() -> list[Image.Image]:
    from skimage import data

    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)) for _ in range(4)]
    return [*noise, Image.fromarray(data.chelsea()), Image.fromarray(data.astronaut())]


def _forward(enc) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "image_tower": enc.image_features(_images()),
            "text_tower": enc.text_features(TEXTS),
            "image": enc.encode_images(_images(), normalize=False),
            "text": enc.encode_texts(TEXTS, normalize=False),
        }


@pytest.mark.slow
def test_golden_default_encoder_forward() -> None:
    """The towers and the seeded random heads (the golden predates the shipped weights)."""
    from workbench.encoders import load_encoder

    out = _forward(load_encoder("default", heads="random"))
    atol = {k: 1e-4 * float(v.abs().max()) for k, v in out.items()}
    check_golden("default_encoder_forward", out, atol=atol)


@pytest.mark.slow
def test_golden_pretrained_default_forward() -> None:
    """The shipped pretrained heads on the same towers: a retrained or swapped head moves these."""
    from workbench.encoders import load_encoder

    enc = load_encoder("default")
    out = {k: v for k, v in _forward(enc).items() if k in ("image", "text")}
    out["logit_scale"] = enc.logit_scale.detach().reshape(1)
    atol = {k: 1e-4 * float(v.abs().max()) for k, v in out.items()}
    check_golden("pretrained_default_forward", out, atol=atol)
