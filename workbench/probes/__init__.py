"""Probes: pure measurements on embeddings (numpy/torch/memmap in, small dataclasses out).

- spectra, effective ranks, power-law α, strong/weak/noise partitions (``spectrum``, ``partition``)
- cosine statistics, alignment/uniformity, subspace angles (``geometry``, ``subspace``)
- modality gap, ReAlign, fixed-frame decomposition, distribution metrics
  (``gap``, ``realign``, ``fixed_frame``, ``distribution``)
- D-ability / P-ability, compositional and retrieval scores
  (``separability``, ``perception``, ``compositional``, ``retrieval``)

A probe never trains and never decides what data to embed: benchmarks that run an encoder over
datasets live in :mod:`workbench.evals`, studies in :mod:`workbench.experiments`.

Every name in a submodule's ``__all__`` is available here, e.g. ``workbench.probes.spectrum``.
"""

from workbench._lazy import lazy_exports

_SUBMODULES = (
    "spectra",
    "ranks",
    "group_spectra",
    "partitions",
    "geometry",
    "subspace",
    "gap",
    "realign",
    "fixed_frame",
    "distribution",
    "separability",
    "perception",
    "compositional",
    "retrieval",
)

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
