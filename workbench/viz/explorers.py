"""Interactive explorers for JupyterLab: :class:`SpectrumExplorer` and :class:`GapExplorer`.

Both take a *source* — an encoder name or :class:`~workbench.encoders.base.Encoder`, a run
directory written by :func:`workbench.train.train`, or an
:class:`~workbench.encoders.embeddings.Embeddings` — and show plotly figures driven by
ipywidgets controls::

    from workbench.viz import SpectrumExplorer, GapExplorer
    SpectrumExplorer("runs/infonce-20260101-120000-0")   # step slider over the run
    GapExplorer(wb.embed("default", "synthetic-world", size=256))

Design (why it is split this way):

* A *controller* (``SpectrumController``, ``GapController``) holds the settings and turns them
  into figure data — pure python, testable without a browser. Its ``figures()`` builds plotly
  figures once; ``apply(figures)`` rewrites their trace data and layout *in place* inside
  ``batch_update``, so a FigureWidget keeps its identity and trace count when a control moves.
* The explorer wraps a controller in ipywidgets. Control changes are debounced (one
  recomputation per burst of slider moves), results are cached by the settings they depend on,
  and a status label + progress bar say what is being computed before any long step starts.
* Under papermill, ``nbconvert --execute``, plain python or with ``static=True`` (or env
  ``WORKBENCH_STATIC=1``) an explorer displays the same figures as static plotly figures
  instead of widgets; see :func:`workbench.viz._widgets.wants_widgets` for the rule.

Showing an explorer
-------------------
Make it the last expression of a cell (or call ``explorer.show()``). Which form appears:

* ``static=True`` / ``static=False`` passed to the explorer or to ``show`` decides;
* else env ``WORKBENCH_STATIC=1`` (static) / ``WORKBENCH_STATIC=0`` (widgets) decides;
* else widgets appear only in a kernel whose current cell came from a person's frontend
  (JupyterLab, Notebook, VS Code send ``allow_stdin=True``); papermill, nbclient and
  ``nbconvert --execute`` send ``allow_stdin=False`` and get the static figures — the same
  figures the widgets start from, so executed notebooks keep their plots and raise nothing.

``explorer.figures()`` returns the current figures, ``explorer.save(out_dir)`` writes them with
``save_figure`` and ``explorer.summary()`` the numbers behind them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.viz._explorer import (
    DATASET_CHOICES,
    EmbeddingsSource,
    EncoderSource,
    ExplorerSource,
    RunSource,
    open_source,
)
from workbench.viz.gap_explorer import (
    REALIGN_CHOICES,
    GapController,
    GapExplorer,
    GapSettings,
)
from workbench.viz.spectrum_explorer import (
    SpectrumController,
    SpectrumExplorer,
    SpectrumSettings,
)

__all__ = [
    "DATASET_CHOICES",
    "REALIGN_CHOICES",
    "EmbeddingsSource",
    "EncoderSource",
    "ExploreConfig",
    "ExplorerSource",
    "GapController",
    "GapExplorer",
    "GapSettings",
    "RunSource",
    "SpectrumController",
    "SpectrumExplorer",
    "SpectrumSettings",
    "open_source",
]


@dataclass
class ExploreConfig:
    """Parameters of ``notebooks/explore_spectra.ipynb`` (its ``parameters`` cell repeats them).

    The defaults keep the whole notebook — embedding, a heads-only fine-tuning run and four
    explorers — around a minute on two CPU cores.

    Attributes:
        encoder: encoder registry name (``"default"``: EfficientNet-Lite0 + MiniLM, offline).
        dataset: dataset registry name.
        sample_size: pairs embedded and explored (the explorers' sample size).
        train_steps: optimiser steps of the heads-only run.
        batch_size: its global batch; also the rows of each logged spectral snapshot.
        snapshot_every: spectral snapshot cadence (points of the proportions-over-steps plot).
        checkpoint_every: checkpoint cadence (steps whose embeddings the explorers can show).
        holdout: held-out pairs for the run's built-in evaluation.
        lr: peak learning rate (heads-only runs on a few hundred pairs move fast at 1e-3).
        seed: seed of the run.
        run_root: where the run directory is created.
        output_dir: where figures and ``summary.json`` go.
    """

    encoder: str = "default"
    dataset: str = "synthetic-world"
    sample_size: int = 96
    train_steps: int = 20
    batch_size: int = 32
    snapshot_every: int = 5
    checkpoint_every: int = 10
    holdout: int = 16
    lr: float = 1e-3
    seed: int = 0
    run_root: str = "runs/explore_spectra"
    output_dir: str = "figures/explore_spectra"

    def __post_init__(self) -> None:
        from workbench._validate import as_float, as_int
        from workbench.data import check_dataset_name
        from workbench.encoders.registry import check_encoder_name

        own = "ExploreConfig"
        check_encoder_name(self.encoder, "encoder", owner=own)
        check_dataset_name(self.dataset, "dataset", owner=own)
        for name in ("sample_size", "train_steps", "batch_size", "snapshot_every"):
            setattr(self, name, as_int(getattr(self, name), f"{own}: {name}", lo=1))
        self.checkpoint_every = as_int(self.checkpoint_every, f"{own}: checkpoint_every", lo=0)
        self.holdout = as_int(self.holdout, f"{own}: holdout", lo=0)
        self.seed = as_int(self.seed, f"{own}: seed", lo=0)
        self.lr = as_float(self.lr, f"{own}: lr", lo=0.0, lo_open=True)
        for name in ("run_root", "output_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise TypeError(
                    f"{own}: {name} must be a non-empty path, got {getattr(self, name)!r}"
                )
        if not 0 <= self.holdout < self.sample_size - self.batch_size + 1:
            raise ValueError(
                f"holdout ({self.holdout}) must leave at least one batch ({self.batch_size}) of "
                f"the {self.sample_size} pairs for training"
            )

    def train_config(self) -> Any:
        """The :class:`~workbench.train.TrainConfig` of the notebook's heads-only run."""
        from workbench.train import TrainConfig

        return TrainConfig(
            encoder=self.encoder,
            dataset=self.dataset,
            steps=self.train_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup=max(1, self.train_steps // 10),
            trainable="heads",
            holdout=self.holdout,
            snapshot_every=self.snapshot_every,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            run_root=self.run_root,
            run_name="explore_spectra",
        )
