"""Earth-Adapter (Hu, Gong, Wang, Jia, Luo, Yang; AAAI 2026, arXiv 2504.06220): frequency-band
adapters inside a frozen image tower, for segmentation under image artifacts.

Spec ``methods-geometry.md`` §6 and §8 (the official ``earth_adapter.py`` read line by line).

=======================================  ================================================
registry name (alias)                    mixture layers' experts
=======================================  ================================================
``earth_adapter``                        spatial + low + high, per-token router [code]
``earth_adapter/spatial3`` (spatial3)    three spatial experts + router (paper ablation)
``earth_adapter/spatial1`` (rein-like)   one spatial expert on every adapted layer
``earth_adapter/head_only`` (frozen)     no adapters: frozen tower, segmentation head only
=======================================  ================================================

Modules: :mod:`.frequency` (``frequency_split``, the one pure function of the split),
:mod:`.layers` (experts, router, scale: ``mix_experts``, ``AdapterLayer``), :mod:`.segmenter`
(head, block-output capture, the segmentation and self-training losses), :mod:`.method`
(``EarthAdapter``: attach, registry entries). Training: :mod:`workbench.experiments.segtrain`.

>>> from workbench import methods
>>> methods.get("rein-like").experts
('spatial',)
>>> methods.get("spatial3").experts
('spatial', 'spatial', 'spatial')
>>> import torch
>>> low, high = frequency_split(torch.ones(1, 64, 3), (8, 8))   # a constant map: all low
>>> bool(high.abs().max() < 1e-6)
True
"""

from __future__ import annotations

import functools

from workbench.methods.base import METHODS
from workbench.methods.earth_adapter.frequency import (
    frequency_split,
    low_pass_cutoff,
    low_pass_mask,
)
from workbench.methods.earth_adapter.layers import (
    EXPERT_INPUTS,
    AdapterLayer,
    Expert,
    mix_experts,
)
from workbench.methods.earth_adapter.method import (
    ADAPTER_ATTR,
    EarthAdapter,
    layer_scales,
    probe_blocks,
)
from workbench.methods.earth_adapter.segmenter import (
    SegHead,
    Segmenter,
    class_balance_weights,
    dice_loss,
    segmentation_loss,
    self_training_loss,
)

#: Registry name → the ``experts`` of its mixture layers (the only thing the variants change).
VARIANTS: dict[str, tuple[str, ...]] = {
    "earth_adapter": ("spatial", "low", "high"),
    "earth_adapter/spatial3": ("spatial", "spatial", "spatial"),
    "earth_adapter/spatial1": ("spatial",),
    "earth_adapter/head_only": (),
}
_ALIASES = {
    "earth_adapter/spatial3": ("spatial3",),
    "earth_adapter/spatial1": ("rein-like",),
    "earth_adapter/head_only": ("frozen",),
}

METHODS.register("earth_adapter")(EarthAdapter)
for _name, _experts in VARIANTS.items():
    if _name != "earth_adapter":
        METHODS.register(_name, aliases=_ALIASES.get(_name, ()))(
            functools.partial(EarthAdapter, experts=_experts)
        )

__all__ = [
    "ADAPTER_ATTR",
    "EXPERT_INPUTS",
    "VARIANTS",
    "AdapterLayer",
    "EarthAdapter",
    "Expert",
    "SegHead",
    "Segmenter",
    "class_balance_weights",
    "dice_loss",
    "frequency_split",
    "layer_scales",
    "low_pass_cutoff",
    "low_pass_mask",
    "mix_experts",
    "probe_blocks",
    "segmentation_loss",
    "self_training_loss",
]
