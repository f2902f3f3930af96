"""Training methods: loss modules (plus optional hooks) that plug into :mod:`workbench.train`.

>>> from workbench import methods
>>> loss = methods.get("infonce")                     # open_clip ClipLoss-compatible module
>>> vlm2vec = methods.get("infonce", temperature=0.02, symmetric=False)
>>> "infonce" in methods.names()
True

The contract (``Method``, ``BatchOutputs``, ``StepState``, ``LossOutput``, ``Stage``) lives in
:mod:`workbench.methods.base`; each method is one module registering itself in ``METHODS``.
Shared pieces a method builds on, one module each:

* :mod:`~workbench.methods.feature_loss` — ``info_nce`` and the ``FeatureLoss`` base (temperature,
  one-/two-way, query side, scale, logits); InfoNCE, SDE and FANoise override its ``loss``;
* :mod:`~workbench.methods.spectral` — ``batch_svd``, the no-grad SVD of a batch;
* :mod:`~workbench.methods.teachers` — ``EMATeacher``, an EMA or frozen copy of a module;
* :mod:`workbench.distributed` — ``gather_features`` (all-gather with gradients).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from workbench.methods.base import (
    METHODS,
    BatchOutputs,
    LossOutput,
    Method,
    Stage,
    StepState,
    mark_adapter,
)

# One module per method; a module not written yet is simply not registered.
_METHOD_MODULES = (
    "infonce",
    "sde",
    "fanoise",
    "cdds",
    "vse",
    "dcr",
    "proclip",
    "degla",
    "earth_adapter",
    "revision",
)
for _mod in _METHOD_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_mod}") is not None:
        importlib.import_module(f"{__name__}.{_mod}")


def get(name: str, **config: Any) -> Method:
    """A configured method by registry name, e.g. ``get("sde", alpha0=0.3)``.

    The full hyper-parameter set (defaults filled in) is stored on ``method.config`` and is what
    the training loop writes to ``config.json``. Unknown keyword arguments raise ``ValueError``
    listing the accepted ones.
    """
    canonical, factory, _ = METHODS.resolve(name)
    sig = inspect.signature(factory)
    try:
        bound = sig.bind(**config)
    except TypeError as err:
        accepted = ", ".join(p for p in sig.parameters if p != "self")
        raise ValueError(f"method {canonical!r}: {err}. Accepted arguments: {accepted}") from None
    bound.apply_defaults()
    method = factory(**bound.arguments)
    method.config = dict(bound.arguments)
    method.registry_name = canonical
    return method


def names() -> list[str]:
    """Registered method names, sorted (variants such as ``"infonce/vlm2vec"`` included)."""
    return METHODS.names()


__all__ = [
    "METHODS",
    "BatchOutputs",
    "LossOutput",
    "Method",
    "Stage",
    "StepState",
    "get",
    "mark_adapter",
    "names",
]
