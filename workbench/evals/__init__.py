"""Evaluation: run an encoder over data and score it (benchmarks, not measurements).

Where :mod:`workbench.probes` measures arrays it is given, ``evals`` decides *what* to embed and
*how* to score it:

- :mod:`~workbench.evals.task_suite` / :mod:`~workbench.evals.task_builder` — the MMEB-style
  Precision@1 suite (classification, retrieval, perception, compositional) over cached tower
  features, so scoring a set of trained heads costs only the heads;
- :mod:`~workbench.evals.dp_suite` — the D-ability / P-ability table of one encoder
  (``score_encoder``: separability, k-means, zero-shot, retrieval, MMVP-style pairs);
- :mod:`~workbench.evals.hooks` — the same two as ``eval_hooks`` for :func:`workbench.train.train`;
- :mod:`~workbench.evals.segmentation` — confusion matrix, per-class IoU and mIoU of a per-pixel
  predictor (the Earth-Adapter study).

Every name in a submodule's ``__all__`` is available here, e.g. ``workbench.evals.build_task_suite``.
"""

from workbench._lazy import lazy_exports

_SUBMODULES = ("task_suite", "task_builder", "dp_suite", "hooks", "diagnostics", "segmentation")

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
