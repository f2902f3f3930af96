"""The pretrained heads shipped with the embedded default, and their model card.

``workbench/encoders/weights/`` holds what ``notebooks/pretrain_default.ipynb`` (the recipe in
:mod:`workbench.experiments.pretrain`) produced: ``default_heads.safetensors`` (the two projection
heads and the logit scale), ``default_heads.json`` (the card as data: recipe, data mixture and
counts, seed, library versions, held-out metrics, and the sha256 of the tensor file) and
``default_heads.md`` (the same card for people). :func:`load_shipped_heads` refuses a tensor file
whose sha256 differs from its card's, naming both, so a damaged or swapped file never loads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
HEADS_FILE = WEIGHTS_DIR / "default_heads.safetensors"
CARD_JSON = WEIGHTS_DIR / "default_heads.json"
CARD_MD = WEIGHTS_DIR / "default_heads.md"

__all__ = ["CARD_JSON", "CARD_MD", "HEADS_FILE", "load_card", "load_shipped_heads", "sha256_of"]


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_card(card: str | Path | None = None) -> dict[str, Any]:
    """The shipped model card as a dict (``default_heads.json`` unless ``card`` names another)."""
    path = Path(card) if card is not None else CARD_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"the default encoder's model card {path} is missing; reinstall workbench, or use "
            "load_encoder('default', heads='random') for untrained heads"
        )
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "sha256" not in data or "architecture" not in data:
        raise ValueError(f"{path} is not a workbench model card (no sha256/architecture)")
    return data


def load_shipped_heads(
    encoder: nn.Module, weights: str | Path | None = None, card: str | Path | None = None
) -> dict[str, Any]:
    """Load the shipped heads and logit scale into ``encoder`` after checking them; return the card.

    Args:
        encoder: A default encoder whose heads have the card's architecture.
        weights: The tensor file (default: the shipped ``default_heads.safetensors``).
        card: The card naming its sha256 (default: the shipped ``default_heads.json``).

    Raises:
        FileNotFoundError: Missing weights or card.
        ValueError: The file's sha256 differs from the card's, or the tensors do not fit the heads.
    """
    import torch
    from safetensors.torch import load_file

    info = load_card(card)
    path = Path(weights) if weights is not None else HEADS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the default encoder's pretrained heads {path} are missing; reinstall workbench, or "
            "use load_encoder('default', heads='random') for untrained heads"
        )
    digest = sha256_of(path)
    if digest != info["sha256"]:
        raise ValueError(
            f"{path} has sha256 {digest}, but its model card says {info['sha256']}: the file is "
            "damaged or not the one the card describes; reinstall workbench (or regenerate both "
            "with notebooks/pretrain_default.ipynb)"
        )
    tensors = load_file(str(path))
    state = {k: v for k, v in tensors.items() if k != "logit_scale"}
    expected = {f"{side}.{k}" for side in ("image_head", "text_head")
                for k in getattr(encoder, side).state_dict()}  # fmt: skip
    if set(state) != expected:
        raise ValueError(
            f"{path} holds {sorted(state)}, but the encoder's heads need {sorted(expected)}: build "
            f"the encoder with the card's architecture {info['architecture']}"
        )
    for side in ("image_head", "text_head"):
        prefix = f"{side}."
        getattr(encoder, side).load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    with torch.no_grad():
        encoder.logit_scale.copy_(tensors["logit_scale"].reshape(()))
    return info
