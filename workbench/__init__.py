"""workbench: spectral and geometric probes of CLIP-like contrastive representations.

Entry points::

    import workbench as wb
    enc = wb.load_encoder("default")             # EfficientNet-Lite0 + MiniLM towers, 256-d heads
    data = wb.load_dataset("synthetic-world", size=2000)
    emb = wb.embed(enc, data)                    # cached on disk, keyed by encoder identity + data
    wb.probes.spectrum(emb.image_normed)

Subpackages: ``data``, ``encoders``, ``probes``, ``methods``, ``train``, ``viz``. Nothing heavy
is imported until used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_FUNCTIONS = {
    "load_encoder": "workbench.encoders",
    "load_dataset": "workbench.data",
    "embed": "workbench.encoders.embed",
    "Embeddings": "workbench.encoders.embeddings",
}
_SUBPACKAGES = ("data", "encoders", "probes", "methods", "train", "viz")

__all__ = ["__version__", *_FUNCTIONS, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"workbench.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
