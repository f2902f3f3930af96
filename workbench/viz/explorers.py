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
