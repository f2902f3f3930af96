"""Projection heads as one concept: the two maps from tower features into the shared space.

Every :class:`~workbench.encoders.base.Encoder` ends in ``image_head`` (D_img → E) and
``text_head`` (D_txt → E) plus a learned ``logit_scale``. Heads-only training (LiT) changes
nothing else, so re-scoring a trained model needs only these three on *cached tower features*:
no tower forward pass. This module is the one home of that idea:

* :data:`HEAD_PREFIXES` — the state-dict names that belong to the heads;
* :class:`Heads` — the heads detached from their towers (a copy after training, or a
  checkpoint's head tensors), with :meth:`Heads.project` and :meth:`Heads.on` (an encoder-like
  view: another encoder's towers under these heads);
* :func:`apply_head` / :func:`apply_heads` — run a head on (n, D) features / re-project an
  :class:`~workbench.encoders.embeddings.Embeddings` from its tower features;
* :func:`tower_fingerprint` — the identity of the towers alone (the same hashing as
  :attr:`Encoder.identity`, heads left out), so tower features cached for one encoder serve
  every encoder with the same towers.

>>> import torch
>>> from torch import nn
>>> heads = Heads(nn.Linear(4, 2, bias=False), nn.Linear(3, 2, bias=False), logit_scale=2.0)
>>> heads.project("image", torch.ones(5, 4).numpy()).shape
(5, 2)
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import hash_state_dict

#: State-dict names (prefixes) of the heads and the logit scale, relative to an encoder.
HEAD_PREFIXES: tuple[str, ...] = ("image_head.", "text_head.", "logit_scale")
SIDES: tuple[str, ...] = ("image", "text")


def is_head_key(name: str, prefix: str = "") -> bool:
    """Whether state-dict key ``name`` (under ``prefix``, e.g. ``"encoder."``) is a head tensor."""
    return name.startswith(tuple(prefix + p for p in HEAD_PREFIXES))


def apply_head(head: nn.Module | Any, X: np.ndarray | torch.Tensor) -> np.ndarray:
    """Run one projection head on features without gradient.

    Args:
        head: An ``nn.Module`` (run in eval mode, its mode restored afterwards), any callable on
            tensors, or ``None`` (identity).
        X: (n, D) tower features (numpy, memmap or tensor).

    Returns:
        (n, E) float32 numpy array of *raw* (un-normalised) head outputs.
    """
    if head is None:
        return np.asarray(X, dtype=np.float32)
    params = list(head.parameters()) if hasattr(head, "parameters") else []
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    was_training = bool(getattr(head, "training", False))
    if was_training:
        head.eval()
    try:
        with torch.no_grad():
            out = head(torch.as_tensor(np.asarray(X), dtype=dtype, device=device))
    finally:
        if was_training:
            head.train()
    return out.float().cpu().numpy()


class Heads:
    """Two projection heads and a log logit scale, apart from any towers.

    Args:
        image_head: Module mapping (n, D_img) image tower features to (n, E).
        text_head: Module mapping (n, D_txt) text tower features to (n, E).
        logit_scale: ``log`` of the similarity multiplier (CLIP: ``log(1/0.07)``).

    Use :meth:`of` for a copy of an encoder's heads, :meth:`from_tensors` for a checkpoint's,
    :meth:`load_into` to put them back, :meth:`on` to score with another encoder's towers.
    """

    def __init__(self, image_head: nn.Module, text_head: nn.Module, logit_scale: float) -> None:
        self.image_head = image_head
        self.text_head = text_head
        self.logit_scale = float(logit_scale)

    def __repr__(self) -> str:
        return (
            f"Heads(image={type(self.image_head).__name__}, text={type(self.text_head).__name__}, "
            f"logit_scale={self.logit_scale:.4f})"
        )

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def of(cls, encoder: Any) -> Heads:
        """Copies of ``encoder``'s heads (eval mode) and its current logit scale."""
        _check_has_heads(encoder)
        scale = getattr(encoder, "logit_scale", 0.0)
        return cls(
            copy.deepcopy(encoder.image_head).eval(),
            copy.deepcopy(encoder.text_head).eval(),
            float(scale.detach()) if torch.is_tensor(scale) else float(scale),
        )

    @classmethod
    def from_tensors(
        cls, like: Any, tensors: Mapping[str, torch.Tensor], prefix: str = ""
    ) -> Heads:
        """Heads shaped like ``like``'s (an encoder or :class:`Heads`), loaded from ``tensors``.

        Args:
            like: Supplies the head architectures (deep-copied; its weights are replaced).
            tensors: State-dict tensors, e.g. a checkpoint's ``model.safetensors``; keys outside
                the heads are ignored (check :func:`only_heads` first when that matters).
            prefix: Key prefix of the encoder's tensors (``"encoder."`` in run checkpoints).

        Raises:
            KeyError: A head parameter of ``like`` has no tensor in ``tensors``.
        """
        base = like if isinstance(like, Heads) else cls.of(like)
        out = []
        for side in SIDES:
            head = copy.deepcopy(getattr(base, f"{side}_head"))
            head_prefix = f"{prefix}{side}_head."
            state = {
                k[len(head_prefix) :]: v for k, v in tensors.items() if k.startswith(head_prefix)
            }
            missing = sorted(set(head.state_dict()) - set(state))
            if missing:
                raise KeyError(f"tensors lack {side}_head entries {missing} (prefix {prefix!r})")
            head.load_state_dict(state)
            out.append(head.eval())
        key = f"{prefix}logit_scale"
        scale = float(tensors[key]) if key in tensors else base.logit_scale
        return cls(out[0], out[1], scale)

    # -- use -----------------------------------------------------------------------------------
    def head(self, side: str) -> nn.Module:
        """The ``"image"`` or ``"text"`` head."""
        if side not in SIDES:
            raise ValueError(f"side must be 'image' or 'text', got {side!r}")
        return self.image_head if side == "image" else self.text_head

    def project(self, side: str, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """(n, D_side) tower features → (n, E) float32 raw embeddings through one head."""
        return apply_head(self.head(side), features)

    def load_into(self, encoder: Any) -> Any:
        """Copy these heads' weights and logit scale into ``encoder`` (same head shapes); return it."""
        _check_has_heads(encoder)
        encoder.image_head.load_state_dict(self.image_head.state_dict())
        encoder.text_head.load_state_dict(self.text_head.state_dict())
        if torch.is_tensor(getattr(encoder, "logit_scale", None)):
            with torch.no_grad():
                encoder.logit_scale.fill_(self.logit_scale)
        return encoder

    def on(self, base: Any) -> HeadsOnTowers:
        """An encoder-like view: ``base``'s towers followed by these heads (nothing copied)."""
        return HeadsOnTowers(base, self)

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Head tensors named as in an encoder's state dict (``image_head.weight``, ...)."""
        out = {f"{prefix}image_head.{k}": v for k, v in self.image_head.state_dict().items()}
        out.update({f"{prefix}text_head.{k}": v for k, v in self.text_head.state_dict().items()})
        out[f"{prefix}logit_scale"] = torch.tensor(self.logit_scale)
        return out


class HeadsOnTowers:
    """``base``'s towers (and preprocessing) followed by other :class:`Heads`.

    Quacks like an :class:`~workbench.encoders.base.Encoder` for scoring code that calls
    ``encode_images``/``encode_texts``/``image_features``/``text_features`` (zero-shot prompts,
    MMVP pairs), without copying any tower weight.
    """

    def __init__(self, base: Any, heads: Heads) -> None:
        self.base = base
        self.heads = heads
        self.image_head = heads.image_head
        self.text_head = heads.text_head
        self.logit_scale = torch.tensor(heads.logit_scale)
        self.name = getattr(base, "name", type(base).__name__)
        self.embed_dim = getattr(base, "embed_dim", None)

    @property
    def device(self) -> torch.device:
        return self.base.device

    def image_features(self, images: Any) -> torch.Tensor:
        return self.base.image_features(images)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        return self.base.text_features(texts)

    def encode_images(self, images: Any, normalize: bool = True) -> torch.Tensor:
        """Images → (B, E) through ``base``'s image tower and these heads."""
        return self._encode(self.image_head, self.base.image_features(images), normalize)

    def encode_texts(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Texts → (B, E) through ``base``'s text tower and these heads."""
        return self._encode(self.text_head, self.base.text_features(texts), normalize)

    @staticmethod
    def _encode(head: nn.Module, features: torch.Tensor, normalize: bool) -> torch.Tensor:
        p = next(head.parameters(), None)
        z = head(features.to(p.device, p.dtype) if p is not None else features)
        return nn.functional.normalize(z, dim=-1) if normalize else z


def as_heads(model: Any) -> Heads:
    """``model`` as :class:`Heads` without copying: a ``Heads``, or anything with
    ``image_head``/``text_head`` (an encoder, :class:`HeadsOnTowers`)."""
    if isinstance(model, Heads):
        return model
    _check_has_heads(model)
    scale = getattr(model, "logit_scale", 0.0)
    return Heads(
        model.image_head,
        model.text_head,
        float(scale.detach()) if torch.is_tensor(scale) else float(scale),
    )


def only_heads(tensors: Mapping[str, Any], prefix: str = "") -> bool:
    """True when every key of ``tensors`` under ``prefix`` is a head tensor (a heads-only checkpoint)."""
    keys = [k for k in tensors if k.startswith(prefix)]
    return bool(keys) and all(is_head_key(k, prefix) for k in keys)


def apply_heads(heads: Any, embeddings: Any, *, label: str | None = None) -> Any:
    """``embeddings`` re-projected by ``heads`` from its cached tower features.

    Args:
        heads: :class:`Heads`, or anything :func:`as_heads` accepts (an encoder).
        embeddings: :class:`~workbench.encoders.embeddings.Embeddings` with ``image_tower``
            (n, D_img) and ``text_tower`` (n, D_txt) (``embed(..., tower_features=True)``).
        label: Recorded as ``provenance["heads_from"]`` (default: the model's name).

    Returns:
        A new ``Embeddings`` (rows copied) whose ``image``/``text`` are (n, E) raw head outputs.
    """
    if embeddings.image_tower is None or embeddings.text_tower is None:
        raise ValueError(
            "apply_heads needs tower features; embed with tower_features=True "
            "(workbench.embed(encoder, data, tower_features=True))"
        )
    h = as_heads(heads)
    out = embeddings.subset(np.arange(len(embeddings)))
    out.image = h.project("image", embeddings.image_tower)
    out.text = h.project("text", embeddings.text_tower)
    out.provenance["heads_from"] = label or str(getattr(heads, "name", type(heads).__name__))
    return out


def tower_fingerprint(encoder: Any) -> str:
    """sha256 (hex) of ``encoder``'s towers: every tensor except :data:`HEAD_PREFIXES`, plus its
    preprocessing. Equal fingerprints ⇒ equal tower features for the same inputs."""
    h = hashlib.sha256(hash_state_dict(encoder, exclude=HEAD_PREFIXES).encode())
    h.update(
        json.dumps(getattr(encoder, "preprocess_config", {}), sort_keys=True, default=str).encode()
    )
    return h.hexdigest()


def _check_has_heads(model: Any) -> None:
    if not (hasattr(model, "image_head") and hasattr(model, "text_head")):
        raise TypeError(
            "expected an Encoder, Heads or an object with image_head/text_head; got "
            f"{type(model).__name__}"
        )


def head_input_width(head: nn.Module) -> int | None:
    """Input width of a projection head: ``in_features`` of a linear head, or of the first
    ``nn.Linear`` inside a composite one (the pretrained default's MLP); ``None`` if it has none.

    >>> head_input_width(nn.Sequential(nn.Linear(384, 1024), nn.GELU(), nn.Linear(1024, 256)))
    384
    """
    if isinstance(head, nn.Linear):
        return int(head.in_features)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return int(module.in_features)
    return None


__all__ = [
    "HEAD_PREFIXES",
    "SIDES",
    "Heads",
    "HeadsOnTowers",
    "apply_head",
    "apply_heads",
    "as_heads",
    "head_input_width",
    "is_head_key",
    "only_heads",
    "tower_fingerprint",
]
