"""Encoders: one interface over the embedded default, open_clip and Hugging Face CLIP models.

Use :func:`load_encoder` (re-exported as ``workbench.load_encoder``) with a registry id;
:func:`workbench.encoders.embed.embed` (re-exported as ``workbench.embed``; not re-exported
here, where it would shadow its module) turns an encoder and a dataset into cached
:class:`Embeddings`.
"""

from .base import Encoder, EncoderIdentity
from .cache import CacheCorruptedWarning, EmbeddingCache
from .default import DefaultEncoderConfig
from .embeddings import Embeddings
from .registry import ENCODERS, load_encoder

__all__ = [
    "ENCODERS",
    "CacheCorruptedWarning",
    "DefaultEncoderConfig",
    "EmbeddingCache",
    "Embeddings",
    "Encoder",
    "EncoderIdentity",
    "load_encoder",
]
