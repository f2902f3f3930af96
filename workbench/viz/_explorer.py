"""What both explorers share: their data sources and the widget/static display loop.

The public entry point and its documentation: :mod:`workbench.viz.explorers`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from workbench.viz._widgets import wants_widgets

__all__ = [
    "DATASET_CHOICES",
    "EmbeddingsSource",
    "EncoderSource",
    "ExplorerSource",
    "RunSource",
    "open_source",
]

ProgressFn = Callable[[str, "float | None"], None]
"""``progress(message, fraction)``: what is being computed, and how far (0–1, or ``None``)."""

DATASET_CHOICES = ("synthetic-world", "digits", "skimage-photos", "fashion-mnist", "openclipart")
"""Datasets offered in the explorers' dropdown (those that need no downloaded files)."""


def _no_progress(message: str, fraction: float | None = None) -> None:
    return None


def _subset_seeded(n: int, size: int, seed: int = 0) -> np.ndarray:
    from workbench.data.base import subset_indices

    return np.asarray(subset_indices(n, min(size, n), seed))


# --- sources ----------------------------------------------------------------------------------


class ExplorerSource:
    """Where an explorer's embeddings come from.

    Attributes:
        kind: ``"embeddings"``, ``"encoder"`` or ``"run"``.
        label: short human-readable name shown in the explorer.
        fixed_dataset: the dataset name when the source cannot change dataset (Embeddings).
        default_dataset: the dataset the explorer starts on.
    """

    kind = "source"
    label = ""
    fixed_dataset: str | None = None
    default_dataset = "synthetic-world"

    def steps(self) -> list[int]:
        """Training steps the step slider offers (``[0]`` for a source without training)."""
        return [0]

    def snapshots(self) -> list[dict[str, Any]]:
        """Logged spectral snapshots (run sources), else ``[]``."""
        return []

    def embeddings(
        self, dataset: Any, size: int, step: int = 0, progress: ProgressFn = _no_progress
    ) -> Any:
        """:class:`Embeddings` of ``size`` items of ``dataset`` at training ``step``."""
        raise NotImplementedError

    def class_text(self, class_names: list[str], step: int = 0) -> np.ndarray | None:
        """(K, D) L2-normalised class-prompt embeddings for zero-shot, or ``None`` without an encoder."""
        return None

    def describe_step(self, step: int) -> str:
        """What the embeddings at ``step`` come from (shown in the status line)."""
        return self.label


class EmbeddingsSource(ExplorerSource):
    """A fixed :class:`Embeddings`; ``sample_size`` takes a seeded subset of its rows.

    ``encoder`` (optional) is the encoder that made them, used only to embed class prompts for
    zero-shot accuracy.
    """

    kind = "embeddings"

    def __init__(self, emb: Any, encoder: Any = None) -> None:
        self.emb = emb
        self.encoder = encoder  # only for class prompts (zero-shot); may be None
        ds = emb.provenance.get("dataset", {}) if isinstance(emb.provenance, dict) else {}
        name = ds.get("name") if isinstance(ds, dict) else None
        self.fixed_dataset = str(name or "embeddings")
        self.default_dataset = self.fixed_dataset
        enc = emb.provenance.get("encoder", {}) if isinstance(emb.provenance, dict) else {}
        enc_name = enc.get("name") if isinstance(enc, dict) else None
        self.label = f"Embeddings({enc_name or 'given'}, n={len(emb)})"

    def embeddings(
        self, dataset: Any, size: int, step: int = 0, progress: ProgressFn = _no_progress
    ) -> Any:
        if size >= len(self.emb):
            return self.emb
        return self.emb.subset(np.sort(_subset_seeded(len(self.emb), size)))

    def class_text(self, class_names: list[str], step: int = 0) -> np.ndarray | None:
        return None if self.encoder is None else _class_text(self.encoder, class_names)


def validated_update(
    settings: Any, source: ExplorerSource, changes: dict[str, Any]
) -> tuple[Any, set[str]]:
    """Return ``(new_settings, changed_names)`` after checking ``changes`` against ``source``.

    Shared by both explorers' controllers: unknown fields, a step the source does not have, or a
    dataset change on fixed Embeddings raise ``ValueError`` and nothing changes.
    """
    current = dataclasses.asdict(settings)
    unknown = set(changes) - set(current)
    if unknown:
        raise ValueError(f"unknown {type(settings).__name__} fields {sorted(unknown)}")
    if "step" in changes and changes["step"] not in source.steps():
        raise ValueError(f"step {changes['step']} not among {source.steps()}")
    if (
        source.fixed_dataset
        and changes.get("dataset", source.fixed_dataset) != source.fixed_dataset
    ):
        raise ValueError("this explorer shows fixed Embeddings; its dataset cannot change")
    new = dataclasses.replace(settings, **changes)
    changed = {k for k, v in dataclasses.asdict(new).items() if current[k] != v}
    return new, changed


def _encoder_name(encoder: Any) -> str:
    return str(getattr(encoder, "name", None) or type(encoder).__name__)


def _dataset_obj(dataset: Any) -> Any:
    if isinstance(dataset, str):
        from workbench.data import load_dataset

        return load_dataset(dataset)
    return dataset


def _embed(encoder: Any, dataset: Any, size: int, tower_features: bool = False) -> Any:
    from workbench.encoders.embed import embed

    data = _dataset_obj(dataset)
    size = min(size, len(data))  # the explorer's size control is a cap
    return embed(encoder, data, size=size, tower_features=tower_features, progress=False)


class EncoderSource(ExplorerSource):
    """An encoder (registry name or object); embeds the chosen dataset (disk-cached by ``embed``)."""

    kind = "encoder"

    def __init__(self, encoder: Any) -> None:
        self._encoder = None if isinstance(encoder, str) else encoder
        self._name = encoder if isinstance(encoder, str) else _encoder_name(encoder)
        self.label = f"encoder {self._name}"

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from workbench.encoders import load_encoder

            self._encoder = load_encoder(self._name)
        return self._encoder

    def embeddings(
        self, dataset: Any, size: int, step: int = 0, progress: ProgressFn = _no_progress
    ) -> Any:
        if self._encoder is None:
            progress(f"loading encoder {self._name}…", None)
        enc = self.encoder
        progress(f"embedding {size} items of {_dataset_label(dataset)} with {self._name}…", None)
        return _embed(enc, dataset, size)

    def class_text(self, class_names: list[str], step: int = 0) -> np.ndarray | None:
        return _class_text(self.encoder, class_names)


def _dataset_label(dataset: Any) -> str:
    return dataset if isinstance(dataset, str) else str(getattr(dataset, "name", "dataset"))


def _class_text(encoder: Any, class_names: list[str] | None) -> np.ndarray | None:
    """(K, D) normalised template-averaged class prompts, or ``None`` (< 2 classes)."""
    if not class_names or len(class_names) < 2:
        return None
    from workbench.probes.separability import zero_shot_classifier

    Z = zero_shot_classifier(encoder, class_names).mean(axis=1)  # (K, D), templates averaged
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


class RunSource(ExplorerSource):
    """A run directory: steps are step 0 (the base encoder), logged snapshots and checkpoints.

    Embeddings at a step come from the newest checkpoint at or before it (step 0 = the untrained
    base encoder). When a checkpoint holds only head weights (heads-only runs), they are applied
    to the base encoder's cached tower features; otherwise the checkpoint's encoder is loaded
    with :func:`workbench.train.load_encoder_from_run` and the dataset re-embedded.

    Args:
        run_dir: a directory written by :func:`workbench.train.train`.
        encoder: the untrained base encoder, if already loaded (saves loading it again); required
            for runs trained on an encoder object (``config.encoder`` is ``None``).
    """

    kind = "run"

    def __init__(self, run_dir: str | os.PathLike, encoder: Any = None) -> None:
        from workbench.train.rundir import RunDir

        self.run = RunDir(run_dir)
        self.path = self.run.path
        config = self.run.config
        self.config = config
        self._base = encoder
        if encoder is None and config.encoder is None:
            raise ValueError(
                f"{self.path} was trained on an encoder object (config.encoder is None); pass "
                "encoder=<the untrained encoder> to the explorer"
            )
        self.label = f"run {self.path.name}"
        if config.dataset:
            self.default_dataset = config.dataset
        self._snapshots = self.run.snapshots()
        self._checkpoints = self.run.checkpoint_steps()
        self._heads: dict[int, Any] = {}

    def steps(self) -> list[int]:
        return sorted({0, *self._checkpoints, *(int(s["step"]) for s in self._snapshots)})

    def snapshots(self) -> list[dict[str, Any]]:
        return self._snapshots

    def checkpoint_for(self, step: int) -> int:
        """The newest checkpoint step ≤ ``step`` (0 = the base encoder)."""
        return max([0, *(c for c in self._checkpoints if c <= step)])

    def describe_step(self, step: int) -> str:
        ck = self.checkpoint_for(step)
        where = "base encoder" if ck == 0 else f"checkpoint {ck}"
        return f"{self.label} · step {step} (embeddings from {where})"

    @property
    def base(self) -> Any:
        if self._base is None:
            from workbench.encoders import load_encoder

            self._base = load_encoder(self.config.encoder, **self.config.encoder_kwargs)
        return self._base

    def _trained(self, step: int) -> Any:
        """Encoder-like object at checkpoint ``step``: the base towers under the checkpoint's
        :class:`~workbench.encoders.heads.Heads` (heads-only runs), or a full encoder."""
        if step in self._heads:
            return self._heads[step]
        from workbench.encoders.heads import Heads, only_heads
        from workbench.train.checkpoint import load_encoder_from_run, read_checkpoint

        tensors, _, _ = read_checkpoint(self.run.checkpoint_path(step))
        if only_heads(tensors, prefix="encoder."):
            out = Heads.from_tensors(self.base, tensors, prefix="encoder.").on(self.base)
        else:
            out = load_encoder_from_run(self.path, step, encoder=copy.deepcopy(self.base))
        self._heads[step] = out
        return out

    def embeddings(
        self, dataset: Any, size: int, step: int = 0, progress: ProgressFn = _no_progress
    ) -> Any:
        from workbench.encoders.heads import HeadsOnTowers, apply_heads

        ck = self.checkpoint_for(step)
        if self._base is None:
            progress(f"loading base encoder {self.config.encoder}…", 0.0)
        base = self.base
        if ck == 0:
            # tower features too: the same cache entry later steps (and train's input) use
            progress(f"embedding {size} items of {_dataset_label(dataset)} (base encoder)…", 0.3)
            return _embed(base, dataset, size, tower_features=True)
        progress(f"loading checkpoint {ck}…", 0.2)
        trained = self._trained(ck)
        if isinstance(trained, HeadsOnTowers):
            progress(f"tower features of {size} items of {_dataset_label(dataset)}…", 0.4)
            emb = _embed(base, dataset, size, tower_features=True)
            progress(f"trained heads of checkpoint {ck}…", 0.8)
            out = apply_heads(trained.heads, emb, label=f"{self.label} checkpoint {ck}")
            out.provenance.update(run=str(self.path), checkpoint_step=ck)
            return out
        progress(f"embedding {size} items with checkpoint {ck}…", 0.4)
        return _embed(trained, dataset, size)

    def class_text(self, class_names: list[str], step: int = 0) -> np.ndarray | None:
        ck = self.checkpoint_for(step)
        return _class_text(self.base if ck == 0 else self._trained(ck), class_names)


def open_source(source: Any, encoder: Any = None) -> ExplorerSource:
    """Turn what a user passes into an :class:`ExplorerSource`.

    Args:
        source: an :class:`ExplorerSource`; an :class:`Embeddings`; a run directory (a path
            holding ``config.json``); an encoder registry name (``"default"``, ``"open_clip:…"``);
            or an encoder object.
        encoder: for a run directory, its untrained base encoder (optional, avoids reloading
            it); for Embeddings, the encoder that made them (optional, for zero-shot prompts).
    """
    from workbench.encoders.embeddings import Embeddings

    if isinstance(source, ExplorerSource):
        return source
    if isinstance(source, Embeddings):
        return EmbeddingsSource(source, encoder=encoder)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if (path / "config.json").exists():
            return RunSource(path, encoder=encoder)
        if isinstance(source, os.PathLike) or (os.sep in str(source) and ":" not in str(source)):
            raise ValueError(
                f"{source!s} is not a run directory (no config.json there); pass a run directory, "
                "an encoder name such as 'default', an Encoder or an Embeddings"
            )
        return EncoderSource(str(source))
    if hasattr(source, "encode_images") and hasattr(source, "encode_texts"):
        return EncoderSource(source)
    raise TypeError(
        f"cannot explore a {type(source).__name__}; pass an encoder name or Encoder, a run "
        "directory, or an Embeddings"
    )


# --- display shared by both explorers ---------------------------------------------------------


class _ExplorerBase:
    """Widget-or-static display, the debounced control → figure loop, saving and summaries.

    Subclasses set ``controller`` and implement ``_make_controls`` and ``_layout``.
    """

    controller: Any
    debounce_s = 0.2  # one recomputation per burst of slider moves

    def __init__(self, static: bool | None) -> None:
        self._static = static
        self._widget: Any = None
        self._pending: dict[str, Any] = {}
        self._syncing = False
        self.figure_widgets: dict[str, Any] = {}
        self.controls: dict[str, Any] = {}

    # -- static ------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """The current figures as fresh static ``go.Figure`` objects, by name."""
        return self.controller.figures()

    def save(
        self, out_dir: str | Path, prefix: str = "", *, png: bool = True
    ) -> dict[str, dict[str, Path]]:
        """Save every current figure as ``<out_dir>/<prefix><name>.html`` (and ``.png``).

        Uses :func:`workbench.viz.save.save_figure`; returns ``{figure name: {"html": path,
        "png": path}}`` (``png`` absent when ``png=False`` or without chromium).
        """
        from workbench.viz.save import save_figure

        return {
            name: save_figure(fig, out_dir, f"{prefix}{name}", png=png)
            for name, fig in self.figures().items()
        }

    def summary(self) -> dict[str, Any]:
        """The numbers behind the current figures (JSON-able)."""
        return self.controller.summary()

    def show(self, static: bool | None = None) -> None:
        """Display the widgets, or static figures when non-interactive (see module docstring)."""
        from IPython.display import display

        use_static = self._static if static is None else static
        if wants_widgets(use_static):
            display(self.widget)
        else:
            for fig in self.figures().values():
                display(fig)

    def _ipython_display_(self) -> None:
        self.show()

    # -- widgets -----------------------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """The ipywidgets box: controls, status line and FigureWidgets (built on first use)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _make_controls(self, W: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _layout(self, W: Any) -> Any:
        raise NotImplementedError

    def _after_update(self) -> None:
        """Hook: bring controls in line with the controller after an update."""

    def _build(self) -> Any:
        import ipywidgets as W

        from workbench.viz._widgets import Debouncer, figure_widget

        self.status = W.HTML(value="")
        self.progress = W.FloatProgress(
            value=0, min=0, max=1, layout={"width": "160px", "visibility": "hidden"}
        )
        self.controls = self._make_controls(W)
        figs = self.controller.figures(progress=self._report)
        self.figure_widgets = {name: figure_widget(fig) for name, fig in figs.items()}
        self._debounced = Debouncer(self._recompute, self.debounce_s)
        for name, control in self.controls.items():
            control.observe(lambda change, name=name: self._on_control(name, change), names="value")
        self._after_update()
        self._done()
        return self._layout(W)

    def _sync(self, name: str, value: Any) -> None:
        """Set a control without triggering a recomputation."""
        self._syncing = True
        try:
            self.controls[name].value = value
        finally:
            self._syncing = False

    def _on_control(self, name: str, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        self._pending[name] = change["new"]
        self._report("updating…", None)  # feedback at once, before the debounced work
        self._debounced()

    def _recompute(self) -> None:
        changes, self._pending = self._pending, {}
        try:
            self.controller.set(**changes)
            self.controller.apply(self.figure_widgets, progress=self._report)
            self._after_update()
        except Exception as exc:  # shown in the explorer: a callback has nowhere else to raise
            import html

            # keep the rejected values queued: the controls show them, and the next change
            # (e.g. the other threshold) is applied together with them
            self._pending = {**changes, **self._pending}

            self.progress.layout.visibility = "hidden"
            self.status.value = (
                f"<span style='color:#b00020'><b>{type(exc).__name__}</b>: "
                f"{html.escape(str(exc))}</span>"
            )
            return
        self._done()

    def _report(self, message: str, fraction: float | None = None) -> None:
        """Progress callback: status text and bar (sent to the browser immediately)."""
        if not hasattr(self, "status"):
            return
        import html

        self.status.value = f"<i>⏳ {html.escape(message)}</i>"
        self.progress.layout.visibility = "visible"
        if fraction is not None:
            self.progress.value = float(fraction)

    def _done(self) -> None:
        import html

        self.progress.value = 1.0
        self.progress.layout.visibility = "hidden"
        self.status.value = f"<span>✓ {html.escape(self.controller.status_line())}</span>"
