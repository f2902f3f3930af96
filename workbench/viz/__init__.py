"""Figures and explorers: plotly figure builders, ipywidgets explorers, saving helpers.

Every name in a submodule's ``__all__`` is available here, e.g.
``from workbench.viz import SpectrumExplorer, save_figure``.
"""

from workbench._lazy import lazy_exports

_SUBMODULES = ("save", "spectrum", "gap", "dp", "explorers", "tradeoff", "segmentation")

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
