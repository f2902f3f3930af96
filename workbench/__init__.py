"""workbench: spectral and geometric probes of CLIP-like contrastive representations.

Entry points::

    import workbench as wb
    enc = wb.load_encoder("default")             # EfficientNet-Lite0 + MiniLM towers, 256-d heads
    data = wb.load_dataset("synthetic-world", size=2000)
    emb = wb.embed(enc, data)                    # cached on disk, keyed by encoder identity + data
    wb.probes.spectrum(emb.image_normed)

Layout — data flows one way, and a module imports only from its own floor or lower ones
(``tests/test_architecture.py`` checks it)::

    data → encoders → probes → evals | methods → train → viz → experiments → cli

``data`` (datasets), ``encoders`` (towers, heads, ``embed``, caches), ``probes`` (pure
measurements), ``evals`` (benchmarks that run an encoder over data), ``methods`` (losses and
their hooks), ``train`` (the one loop), ``viz`` (figures, explorers), ``experiments`` (one study
module per notebook), ``cli``. Shared plumbing (``_registry``, ``_validate``, ``distributed``)
sits below them all. Nothing heavy is imported until used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_FUNCTIONS = {
    "load_encoder": "workbench.encoders",
    "load_dataset": "workbench.data",
    "embed": "workbench.encoders.embed",
    "open_embeddings": "workbench.encoders.embed",
    "Embeddings": "workbench.encoders.embeddings",
}
_SUBPACKAGES = ("data", "encoders", "probes", "evals", "methods", "train", "viz", "experiments")

__all__ = ["__version__", *_FUNCTIONS, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"workbench.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
