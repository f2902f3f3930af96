"""``GapExplorer``: walk along the modality gap and switch ReAlign's steps on and off.

Three figures, all computed on L2-normalised paired embeddings (image x, text y):

* ``gap_clouds`` — both point clouds in a fixed 2-D PCA frame (fitted once on the unshifted,
  un-aligned clouds, so movement is visible), their centroids and the gap between them, after
  the chosen ReAlign steps and a shift by λ along the gap Δ = mean(x̂) − mean(ŷ):
  x' = norm(x − λΔ), y' = norm(y + λΔ) (Mind the Gap Fig. 3; ``probes.gap.shift_experiment``).
* ``gap_metrics`` — over the λ grid: signed remaining centroid distance, CLIP loss at τ and
  accuracy (Recall@1 both ways; zero-shot when the source has an encoder and class names), for
  the current ReAlign steps (solid) and without ReAlign (dotted), with λ marked.
* ``realign_steps`` — gap, loss and accuracy at λ = 0 after none / Anchor / +Trace / +Centroid
  (ReAlign Tab. 5 ablation; ``probes.realign.ReAlign``), the current choice highlighted.

ReAlign's steps are a prefix (Anchor → Trace → Centroid): switching Trace on switches Anchor on,
switching Anchor off switches the later steps off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from workbench.viz._explorer import (
    DATASET_CHOICES,
    ExplorerSource,
    ProgressFn,
    _ExplorerBase,
    _no_progress,
    open_source,
    validated_update,
)
from workbench.viz._gap_panels import REALIGN_CHOICES, _GapPanels
from workbench.viz._widgets import KeyedCache

__all__ = ["REALIGN_CHOICES", "GapController", "GapExplorer", "GapSettings"]


@dataclass
class GapSettings:
    """What a :class:`GapExplorer` shows; every field is a control.

    Attributes:
        dataset: dataset registry name (ignored for an Embeddings source).
        sample_size: pairs used (seeded subset); 256 keeps every update well under a second.
        step: training step of a run source (0 = the base encoder; -1 = the latest).
        lam: λ, the shift along the gap; 0 = unshifted, ≈0.5 closes the gap.
        realign: ReAlign prefix, one of :data:`REALIGN_CHOICES`.
        temperature: τ of the CLIP loss (0.01 = CLIP's learned 1/100).
        lam_min, lam_max, lam_step: the λ grid of the metric curves (Mind the Gap's −1…1.5).
        max_points: points drawn per cloud (metrics always use every pair).
        seed: seed of the drawn subset.
    """

    dataset: str = "synthetic-world"
    sample_size: int = 256
    step: int = -1
    lam: float = 0.0
    realign: str = "none"
    temperature: float = 0.01
    lam_min: float = -1.0
    lam_max: float = 1.5
    lam_step: float = 0.125
    max_points: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and what would be valid."""
        if self.realign not in REALIGN_CHOICES:
            raise ValueError(f"realign must be one of {REALIGN_CHOICES}, got {self.realign!r}")
        if int(self.sample_size) < 4:
            raise ValueError(f"sample_size must be >= 4 pairs, got {self.sample_size}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (self.lam_min < self.lam_max and self.lam_step > 0):
            raise ValueError(
                f"need lam_min < lam_max and lam_step > 0, got {self.lam_min}, {self.lam_max}, "
                f"{self.lam_step}"
            )
        if not np.isfinite(self.lam):
            raise ValueError(f"lam must be finite, got {self.lam}")
        if int(self.max_points) < 1:
            raise ValueError(f"max_points must be >= 1, got {self.max_points}")

    @property
    def lambdas(self) -> np.ndarray:
        """The λ grid of the metric curves."""
        return np.arange(self.lam_min, self.lam_max + self.lam_step / 2, self.lam_step)


def _unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


class GapController(_GapPanels):
    """Settings → gap figures, with no widgets (what the tests drive).

    Args:
        source: anything :func:`~workbench.viz.explorers.open_source` accepts.
        settings: initial :class:`GapSettings` (dataset defaults to the source's).
        encoder: base encoder for a run directory (optional).
    """

    FIGURES = ("gap_clouds", "gap_metrics", "realign_steps")

    def __init__(
        self, source: Any, settings: GapSettings | None = None, *, encoder: Any = None
    ) -> None:
        self.source: ExplorerSource = open_source(source, encoder=encoder)
        if settings is None:
            settings = GapSettings(dataset=self.source.default_dataset)
        if self.source.fixed_dataset:
            settings = replace(settings, dataset=self.source.fixed_dataset)
        steps = self.source.steps()
        if settings.step == -1:
            settings = replace(settings, step=steps[-1])
        elif settings.step not in steps:
            raise ValueError(f"step {settings.step} is not among this source's steps {steps}")
        self.settings = settings
        self._data_cache: KeyedCache[dict[str, Any]] = KeyedCache(8)
        self._sweeps: KeyedCache[Any] = KeyedCache(32)
        self._aligned: KeyedCache[tuple[np.ndarray, np.ndarray | None]] = KeyedCache(32)

    # -- settings -----------------------------------------------------------------------------

    def set(self, **changes: Any) -> set[str]:
        """Change settings (validated); returns the names that actually changed."""
        self.settings, changed = validated_update(self.settings, self.source, changes)
        return changed

    # -- computation --------------------------------------------------------------------------

    def _data_key(self) -> tuple[Any, ...]:
        s = self.settings
        return (s.dataset, int(s.sample_size), int(s.step))

    def data(self, progress: ProgressFn = _no_progress) -> dict[str, Any]:
        """Normalised clouds, labels, class prompts and the fixed PCA frame for the current data."""
        s = self.settings

        def load() -> dict[str, Any]:
            emb = self.source.embeddings(s.dataset, int(s.sample_size), int(s.step), progress)
            X, Y = _unit(emb.image.astype(np.float64)), _unit(emb.text.astype(np.float64))
            labels = np.asarray(emb.labels)
            C = None
            if emb.class_names and (labels >= 0).all():
                progress("class prompts for zero-shot…", 0.9)
                C = self.source.class_text(list(emb.class_names), int(s.step))
            Z = np.vstack([X, Y])  # (2n, d)
            mean = Z.mean(axis=0)
            _, _, Vt = np.linalg.svd(Z - mean, full_matrices=False)
            rng = np.random.default_rng(s.seed)
            show = np.sort(rng.permutation(len(X))[: int(s.max_points)])
            return {
                "X": X,
                "Y": Y,
                "labels": labels if C is not None else None,
                "C": C,
                "mean": mean,
                "frame": Vt[:2],
                "show": show,
                "captions": emb.captions,
            }

        return self._data_cache.get(self._data_key(), load)

    def aligned(self, steps: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Text (n, d) and class prompts (K, d) after ReAlign ``steps``, L2-normalised."""
        d = self.data()

        def fit() -> tuple[np.ndarray, np.ndarray | None]:
            if steps == "none":
                return d["Y"], d["C"]
            from workbench.probes.realign import ReAlign

            ra = ReAlign(steps=steps).fit(d["X"], d["Y"])
            C = None if d["C"] is None else _unit(ra.transform(d["C"]))
            return _unit(ra.transform(d["Y"])), C

        return self._aligned.get((*self._data_key(), steps), fit)

    def sweep(self, steps: str, lambdas: np.ndarray | None = None) -> Any:
        """:class:`~workbench.probes.gap.ShiftResult` over ``lambdas`` (default: the grid)."""
        from workbench.probes.gap import shift_experiment

        s = self.settings
        grid = s.lambdas if lambdas is None else np.asarray(lambdas, dtype=np.float64)
        d = self.data()

        def run() -> Any:
            Y, C = self.aligned(steps)
            zs = {} if C is None else {"labels": d["labels"], "class_text_emb": C}
            return shift_experiment(d["X"], Y, grid, temperature=s.temperature, **zs)

        return self._sweeps.get((*self._data_key(), steps, s.temperature, tuple(grid)), run)

    def clouds(self) -> dict[str, np.ndarray]:
        """2-D coordinates of the shifted clouds and centroids in the fixed PCA frame."""
        s, d = self.settings, self.data()
        Y, _ = self.aligned(s.realign)
        delta = d["X"].mean(axis=0) - Y.mean(axis=0)  # Δ of the clouds being shifted
        Xs = _unit(d["X"] - s.lam * delta)
        Ys = _unit(Y + s.lam * delta)
        P = lambda A: (A - d["mean"]) @ d["frame"].T  # noqa: E731  (m, 2)
        show = d["show"]
        return {
            "image": P(Xs[show]),
            "text": P(Ys[show]),
            "image_centroid": P(Xs.mean(axis=0, keepdims=True))[0],
            "text_centroid": P(Ys.mean(axis=0, keepdims=True))[0],
        }

    def metrics_at(self) -> dict[str, float]:
        """Remaining signed gap, loss, Recall@1 and zero-shot at the current λ and steps."""
        r = self.sweep(self.settings.realign, [self.settings.lam])
        return {
            "lambda": float(self.settings.lam),
            "signed_gap": float(r.signed_gap[0]),
            "loss": float(r.loss[0]),
            "i2t_r1": float(r.i2t[0]),
            "t2i_r1": float(r.t2i[0]),
            "zero_shot": float(r.zero_shot[0]),
            "gap_norm_before_shift": float(r.gap_norm),
        }

    def ablation(self) -> dict[str, dict[str, float]]:
        """Metrics at λ = 0 for each ReAlign prefix (ReAlign Tab. 5)."""
        out = {}
        for steps in REALIGN_CHOICES:
            r = self.sweep(steps, [0.0])
            out[steps] = {
                "gap": float(r.gap_norm),
                "loss": float(r.loss[0]),
                "i2t_r1": float(r.i2t[0]),
                "t2i_r1": float(r.t2i[0]),
                "zero_shot": float(r.zero_shot[0]),
            }
        return out

    # -- figures ------------------------------------------------------------------------------

    def figures(self, progress: ProgressFn = _no_progress) -> dict[str, Any]:
        """Fresh static ``go.Figure`` objects for the current settings."""
        figs = self._empty_figures()
        self.apply(figs, progress)
        return figs

    def apply(self, figs: dict[str, Any], progress: ProgressFn = _no_progress) -> None:
        """Rewrite the traces and layout of ``figs`` (Figure or FigureWidget) in place."""
        self.data(progress)
        progress("shift experiment and ReAlign…", 0.95)
        for name, (traces, layout) in self._updates().items():
            fig = figs[name]
            with fig.batch_update():
                for trace, upd in zip(fig.data, traces, strict=True):
                    trace.update(upd)
                if layout:
                    fig.layout.update(layout)

    def status_line(self) -> str:
        """One line for the explorer's status: source, data and the metrics at λ."""
        s, at = self.settings, self.metrics_at()
        return (
            f"{self.source.describe_step(s.step)} · {s.dataset}, {len(self.data()['X'])} pairs · "
            f"λ {s.lam:+.3g}: gap {at['signed_gap']:+.3f}, loss {at['loss']:.3f}"
        )

    def summary(self) -> dict[str, Any]:
        """Current settings, metrics at λ, the λ-crossing and the ReAlign ablation."""
        s = self.settings
        return {
            "source": self.source.label,
            "settings": asdict(s),
            "at_lambda": self.metrics_at(),
            "crossing_lambda": self.sweep(s.realign).crossing(),
            "realign_ablation": self.ablation(),
        }


class GapExplorer(_ExplorerBase):
    """λ slider along the modality gap and ReAlign step toggles, in JupyterLab.

    Args:
        source: an encoder name or Encoder, a run directory, or an Embeddings.
        static: ``True`` → always static figures; ``False`` → always widgets; ``None`` → widgets
            only in an interactive kernel (not under papermill/nbconvert; env
            ``WORKBENCH_STATIC``). See :mod:`workbench.viz.explorers`.
        encoder: base encoder of a run directory, if already loaded.
        **settings: initial :class:`GapSettings` fields (``lam``, ``realign``, ``sample_size``…).

    Attributes:
        controller: the :class:`GapController` (settings → figure data).
        widget: the ipywidgets box (built on first access).
        figure_widgets: ``{name: go.FigureWidget}``, updated in place.
        controls: ``{setting name: widget}``; ``realign`` is driven by the three step toggles.
    """

    def __init__(
        self, source: Any, *, static: bool | None = None, encoder: Any = None, **settings: Any
    ) -> None:
        super().__init__(static)
        src = open_source(source, encoder=encoder)
        base = GapSettings(dataset=src.fixed_dataset or src.default_dataset)
        self.controller = GapController(src, replace(base, **settings))

    def _make_controls(self, W: Any) -> dict[str, Any]:
        c = self.controller
        s, src = c.settings, c.source
        datasets = list(dict.fromkeys([s.dataset, *DATASET_CHOICES]))
        steps = src.steps()
        controls = {
            "dataset": W.Dropdown(
                options=datasets,
                value=s.dataset,
                description="dataset",
                disabled=bool(src.fixed_dataset),
            ),
            "sample_size": W.IntSlider(
                value=s.sample_size,
                min=16,
                max=max(2048, s.sample_size),
                step=16,
                description="pairs",
                continuous_update=False,
            ),
            "step": W.SelectionSlider(
                options=steps,
                value=s.step,
                description="step",
                disabled=len(steps) < 2,
            ),
            "lam": W.FloatSlider(
                value=s.lam,
                min=s.lam_min,
                max=s.lam_max,
                step=s.lam_step / 5,
                description="λ",
                readout_format="+.3f",
            ),
            "temperature": W.FloatLogSlider(
                value=s.temperature,
                base=10,
                min=-3,
                max=0,
                step=0.1,
                description="τ",
            ),
        }
        on = REALIGN_CHOICES.index(s.realign)
        tips = (
            "Anchor: ė_y = (e_y − µ_y) + µ_x",
            "Trace: rescale by s = sqrt(T_x / T_y), renormalise (needs Anchor)",
            "Centroid: re-centre on µ_x after renormalising (needs Trace)",
        )
        self.toggles = [
            W.ToggleButton(value=on > i, description=name, tooltip=tip)
            for i, (name, tip) in enumerate(zip(("Anchor", "Trace", "Centroid"), tips))
        ]
        for i, toggle in enumerate(self.toggles):
            toggle.observe(lambda change, i=i: self._on_toggle(i, change), names="value")
        return controls

    def _on_toggle(self, i: int, change: dict[str, Any]) -> None:
        """Keep the toggles a prefix (Anchor → Trace → Centroid) and request that prefix."""
        if self._syncing:
            return
        n_on = i + 1 if change["new"] else i  # on: this and all before; off: all before only
        self._syncing = True
        try:
            for j, toggle in enumerate(self.toggles):
                toggle.value = j < n_on
        finally:
            self._syncing = False
        self._on_control("realign", {"new": REALIGN_CHOICES[n_on]})

    def _layout(self, W: Any) -> Any:
        k = self.controls
        f = self.figure_widgets
        head = W.HTML(f"<b>GapExplorer</b> · {self.controller.source.label}")
        realign = W.HBox([W.Label("ReAlign steps:"), *self.toggles])
        box = W.VBox(
            [
                head,
                W.HBox([k["dataset"], k["sample_size"], k["step"]]),
                W.HBox([k["lam"], k["temperature"]]),
                realign,
                W.HBox([self.status, self.progress]),
                W.HBox([f["gap_clouds"], f["gap_metrics"]]),
                f["realign_steps"],
            ]
        )
        box.add_class("wb-gap-explorer")  # a stable hook for browser tests and styling
        return box
