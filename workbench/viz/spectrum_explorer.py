"""``SpectrumExplorer``: spectra, strong/weak/noise partitions and a 2-D view, under widgets.

Four figures of the chosen embeddings (L2-normalised rows; ``modality="both"`` stacks image
over text, (2n, d)):

* ``spectrum`` — sorted singular values σ_i (``probes.spectra``), the strong / weak / noise
  bands of ``probes.partitions`` shaded, the iqr-mp edges τ_strong and τ_noise, and for a run the
  spectrum of the training batch logged at that step (dashed);
* ``energy`` — cumulative energy Σ_{j≤k} σ_j² / Σσ² (SDE Fig. 3c) with the band edges and the
  effective rank (``probes.ranks.effective_rank``, chosen variant) marked;
* ``proportions`` — |S|/r, |W|/r, |N|/r over training steps from a run's logged snapshots
  (SDE Fig. 3a), recomputed with the chosen partition method where the log allows it, and the
  current embeddings' proportions at the current step (markers);
* ``projection`` — 2-D PCA (or UMAP) of the rows, coloured by label or by modality.
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
from workbench.viz._spectrum_panels import _SpectrumPanels
from workbench.viz._widgets import KeyedCache

__all__ = ["SpectrumController", "SpectrumExplorer", "SpectrumSettings"]

MODALITIES = ("image", "text", "both")
PROJECTIONS = ("pca", "umap")
COLOUR_BY = ("label", "modality")

# Which settings field each partition method reads, with the name it has in probes.partitions.
PARTITION_PARAMS = {
    "iqr-mp": {"tukey_k": "tukey_k"},
    "energy": {"strong_energy": "strong_energy", "weak_energy": "weak_energy"},
    "fixed": {"strong_fraction": "strong_fraction", "weak_fraction": "weak_fraction"},
}


@dataclass
class SpectrumSettings:
    """What a :class:`SpectrumExplorer` shows; every field is a control.

    Attributes:
        dataset: dataset registry name (ignored for an Embeddings source).
        modality: ``"image"``, ``"text"`` or ``"both"`` (image rows stacked over text rows).
        step: training step of a run source (0 = the base encoder; -1 = the latest).
        center: column-centre before the SVD. Default ``False``: SDE partitions the raw batch
            matrix (``probes.partitions`` default).
        erank: effective-rank variant (``probes.ranks.EFFECTIVE_RANKS``). Variants defined
            on one centring (rankme: uncentred, erank/cov: centred) use it whatever ``center``.
        partition: ``"iqr-mp"`` (SDE [our reading]), ``"energy"`` or ``"fixed"``.
        tukey_k: iqr-mp Tukey fence multiplier in Q3(σ) + k·IQR(σ).
        strong_energy, weak_energy: energy method's cumulative-energy cut-offs.
        strong_fraction, weak_fraction: fixed method's fractions of the r directions.
        log_scale: log y axis for the spectrum.
        sample_size: items embedded (seeded subset); 256 keeps updates interactive on a CPU.
        projection: ``"pca"`` or ``"umap"`` (UMAP's first call compiles: tens of seconds).
        colour_by: ``"label"`` or ``"modality"`` for the 2-D view.
        max_points: points drawn per modality in the 2-D view.
        seed: seed of the UMAP layout and of the drawn subset.
    """

    dataset: str = "synthetic-world"
    modality: str = "both"
    step: int = -1
    center: bool = False
    erank: str = "erank/rankme"
    partition: str = "iqr-mp"
    tukey_k: float = 1.5
    strong_energy: float = 0.9
    weak_energy: float = 0.99
    strong_fraction: float = 0.1
    weak_fraction: float = 0.4
    log_scale: bool = True
    sample_size: int = 256
    projection: str = "pca"
    colour_by: str = "label"
    max_points: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the valid choices."""
        from workbench.probes.partitions import PARTITIONS
        from workbench.probes.ranks import EFFECTIVE_RANKS

        for name, choices in (
            ("modality", MODALITIES),
            ("projection", PROJECTIONS),
            ("colour_by", COLOUR_BY),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.erank not in EFFECTIVE_RANKS:
            raise ValueError(f"erank must be one of {EFFECTIVE_RANKS.names()}, got {self.erank!r}")
        if self.partition not in PARTITIONS:
            raise ValueError(
                f"partition must be one of {PARTITIONS.names()}, got {self.partition!r}"
            )
        if not self.tukey_k >= 0:
            raise ValueError(f"tukey_k must be >= 0, got {self.tukey_k}")
        if not 0 < self.strong_energy <= self.weak_energy <= 1:
            raise ValueError(
                "need 0 < strong_energy <= weak_energy <= 1, got "
                f"{self.strong_energy}, {self.weak_energy}"
            )
        if (
            not (0 <= self.strong_fraction and 0 <= self.weak_fraction)
            or self.strong_fraction + self.weak_fraction > 1
        ):
            raise ValueError(
                "need strong_fraction, weak_fraction >= 0 with sum <= 1, got "
                f"{self.strong_fraction}, {self.weak_fraction}"
            )
        if int(self.sample_size) < 4:
            raise ValueError(f"sample_size must be >= 4 items, got {self.sample_size}")
        if int(self.max_points) < 1:
            raise ValueError(f"max_points must be >= 1, got {self.max_points}")

    def partition_params(self) -> dict[str, float]:
        """Keyword arguments of ``probes.partitions`` for the chosen method."""
        from workbench.probes.partitions import PARTITIONS

        method = PARTITIONS.resolve(self.partition)[0]
        return {arg: getattr(self, f) for f, arg in PARTITION_PARAMS.get(method, {}).items()}


def _unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _spectrum_of_values(sv: np.ndarray, n_rows: int, n_cols: int) -> Any:
    """A :class:`~workbench.probes.spectra.Spectrum` from logged singular values (uncentred)."""
    from workbench.probes.spectra import Spectrum

    sv = np.sort(np.asarray(sv, dtype=np.float64))[::-1].copy()
    energy = sv**2
    total = energy.sum()
    frac = energy / total if total > 0 else np.zeros_like(energy)
    return Spectrum(
        singular_values=sv,
        energy=energy,
        energy_fraction=frac,
        cumulative_energy=np.cumsum(frac),
        center=False,
        n_samples=int(n_rows),
        n_features=int(n_cols),
        mean=np.zeros(int(n_cols)),
        method="svd",
        resolution=0.0,
    )


class SpectrumController(_SpectrumPanels):
    """Settings → spectrum figures, with no widgets (what the tests drive).

    Args:
        source: anything :func:`~workbench.viz.explorers.open_source` accepts.
        settings: initial :class:`SpectrumSettings` (dataset defaults to the source's).
        encoder: base encoder for a run directory (optional).
    """

    FIGURES = ("spectrum", "energy", "proportions", "projection")

    def __init__(
        self, source: Any, settings: SpectrumSettings | None = None, *, encoder: Any = None
    ) -> None:
        self.source: ExplorerSource = open_source(source, encoder=encoder)
        if settings is None:
            settings = SpectrumSettings(dataset=self.source.default_dataset)
        if self.source.fixed_dataset:
            settings = replace(settings, dataset=self.source.fixed_dataset)
        steps = self.source.steps()
        if settings.step == -1:
            settings = replace(settings, step=steps[-1])
        elif settings.step not in steps:
            raise ValueError(f"step {settings.step} is not among this source's steps {steps}")
        self.settings = settings
        self._emb: KeyedCache[Any] = KeyedCache(8)
        self._spec: KeyedCache[Any] = KeyedCache(32)
        self._proj: KeyedCache[np.ndarray] = KeyedCache(16)
        self._logged: KeyedCache[dict[str, np.ndarray]] = KeyedCache(16)

    # -- settings -----------------------------------------------------------------------------

    def set(self, **changes: Any) -> set[str]:
        """Change settings (validated first; on error nothing changes); returns what changed."""
        self.settings, changed = validated_update(self.settings, self.source, changes)
        return changed

    # -- computation --------------------------------------------------------------------------

    def _data_key(self) -> tuple[Any, ...]:
        s = self.settings
        return (s.dataset, int(s.sample_size), int(s.step))

    def embeddings(self, progress: ProgressFn = _no_progress) -> Any:
        """The :class:`Embeddings` for the current dataset, sample size and step (cached)."""
        s = self.settings
        return self._emb.get(
            self._data_key(),
            lambda: self.source.embeddings(s.dataset, int(s.sample_size), int(s.step), progress),
        )

    def matrix(self) -> np.ndarray:
        """(n, d) L2-normalised rows of the chosen modality; ``both`` → (2n, d) image over text."""
        emb = self.embeddings()
        X, Y = _unit(emb.image.astype(np.float64)), _unit(emb.text.astype(np.float64))
        return {"image": X, "text": Y, "both": np.vstack([X, Y])}[self.settings.modality]

    def analysis(self) -> dict[str, Any]:
        """Spectrum, partition and effective rank of :meth:`matrix` under the current settings."""
        from workbench.probes.partitions import partition
        from workbench.probes.ranks import EFFECTIVE_RANKS, effective_rank
        from workbench.probes.spectra import spectrum

        s = self.settings
        params = s.partition_params()
        key = (
            *self._data_key(), s.modality, s.center, s.erank, s.partition,
            tuple(sorted(params.items())),
        )  # fmt: skip

        def compute() -> dict[str, Any]:
            M = self.matrix()
            spec = spectrum(M, center=s.center)
            part = partition(M, s.partition, center=s.center, **params)
            need = EFFECTIVE_RANKS.get(s.erank).center
            # rankme / erank-cov are defined on one centring; use theirs, say so in the title
            own = need is not None and need != s.center
            erank = effective_rank(M, s.erank) if own else effective_rank(spec, s.erank)
            return {"spectrum": spec, "partition": part, "erank": float(erank), "erank_own": own}

        return self._spec.get(key, compute)

    def projection(self, progress: ProgressFn = _no_progress) -> dict[str, np.ndarray]:
        """2-D coordinates of the drawn image and text rows (empty arrays for a hidden modality)."""
        s = self.settings
        emb = self.embeddings()
        n = len(emb.ids)
        rng = np.random.default_rng(s.seed)
        show = np.sort(rng.permutation(n)[: int(s.max_points)])

        def compute() -> np.ndarray:
            M = self.matrix()
            if s.projection == "pca":
                from workbench.probes.spectra import spectrum

                comps = spectrum(M, center=True, return_components=True).components[:2]
                return (M - M.mean(axis=0)) @ comps.T  # (rows, 2)
            progress("UMAP layout (the first call compiles numba code)…", None)
            import umap

            n_neighbors = max(2, min(15, len(M) - 1))
            reducer = umap.UMAP(
                n_components=2, n_neighbors=n_neighbors, random_state=s.seed, n_jobs=1
            )
            return reducer.fit_transform(M)

        Z = self._proj.get((*self._data_key(), s.modality, s.projection, s.seed), compute)
        image = Z[:n][show] if s.modality in ("image", "both") else np.empty((0, 2))
        if s.modality == "text":
            text = Z[show]
        elif s.modality == "both":
            text = Z[n:][show]
        else:
            text = np.empty((0, 2))
        return {"image": image, "text": text, "rows": show}

    def logged(self) -> dict[str, np.ndarray]:
        """Strong/weak/noise proportions per logged snapshot step, for image and text (run sources).

        Recomputed from the logged singular values with the current method and thresholds;
        ``iqr-mp`` needs the logged noise scale (written with the partition since it exists),
        else the logged proportions are used when their method matches, else NaN.
        """
        from workbench.probes.partitions import PARTITIONS, iqr_mp_partition, partition

        s = self.settings
        params = s.partition_params()
        method = PARTITIONS.resolve(s.partition)[0]
        snaps = self.source.snapshots()
        key = (method, tuple(sorted(params.items())), len(snaps))

        def compute() -> dict[str, np.ndarray]:
            steps = np.array([int(r["step"]) for r in snaps], dtype=np.int64)
            out: dict[str, np.ndarray] = {"steps": steps}
            for side in ("image", "text"):
                props = np.full((len(snaps), 3), np.nan)
                for i, rec in enumerate(snaps):
                    snap = rec.get(side) or {}
                    sv = snap.get("singular_values")
                    if not sv:
                        continue
                    thr = snap.get("thresholds") or {}
                    logged = snap.get("partition")
                    if method == "iqr-mp":
                        if thr.get("tau_noise") is not None:
                            # only τ_noise = ŝ(√m + √n) enters; with m = n = 1 it is 2ŝ
                            p = iqr_mp_partition(
                                np.asarray(sv), thr["tau_noise"] / 2, 1, 1, **params
                            )
                            props[i] = list(p.proportions.values())
                        elif logged and params.get("tukey_k", 1.5) == 1.5:
                            props[i] = [logged[b] for b in ("strong", "weak", "noise")]
                    else:
                        spec = _spectrum_of_values(np.asarray(sv), len(sv), len(sv))
                        p = partition(spec, method, **params)
                        props[i] = list(p.proportions.values())
                out[side] = props
            return out

        return self._logged.get(key, compute)

    def logged_spectrum(self) -> np.ndarray | None:
        """Singular values of the training batch logged at the current step, if any."""
        s = self.settings
        if s.modality == "both":
            return None
        for rec in self.source.snapshots():
            if int(rec["step"]) == int(s.step):
                sv = (rec.get(s.modality) or {}).get("singular_values")
                return None if not sv else np.asarray(sv, dtype=np.float64)
        return None

    # -- figures ------------------------------------------------------------------------------

    def figures(self, progress: ProgressFn = _no_progress) -> dict[str, Any]:
        """Fresh static ``go.Figure`` objects for the current settings."""
        figs = self._empty_figures()
        self.apply(figs, progress)
        return figs

    def apply(self, figs: dict[str, Any], progress: ProgressFn = _no_progress) -> None:
        """Rewrite the traces and layout of ``figs`` (Figure or FigureWidget) in place."""
        self.embeddings(progress)
        progress("spectrum, partition, effective rank…", 0.85)
        self.analysis()
        self.projection(progress)
        for name, (traces, layout) in self._updates().items():
            fig = figs[name]
            with fig.batch_update():
                for trace, upd in zip(fig.data, traces, strict=True):
                    trace.update(upd)
                fig.layout.update(layout)

    def status_line(self) -> str:
        """One line for the explorer's status: source, data and the partition."""
        s, a = self.settings, self.analysis()
        c = a["partition"].counts
        return (
            f"{self.source.describe_step(s.step)} · {s.dataset}, {len(self.embeddings().ids)} "
            f"items · {s.modality} · S/W/N = {c['strong']}/{c['weak']}/{c['noise']} · "
            f"{s.erank.split('/', 1)[-1]} {a['erank']:.1f}"
        )

    def summary(self) -> dict[str, Any]:
        """Settings, spectrum numbers, partition and effective rank (JSON-able)."""
        s, a = self.settings, self.analysis()
        part = a["partition"]
        logged = self.logged()
        return {
            "source": self.source.label,
            "settings": asdict(s),
            "n_rows": int(self.matrix().shape[0]),
            "singular_values": np.asarray(a["spectrum"].singular_values).tolist(),
            "partition": part.to_dict(),
            "effective_rank": {s.erank: a["erank"]},
            "logged_steps": logged["steps"].tolist(),
        }


class SpectrumExplorer(_ExplorerBase):
    """Spectra, partitions and a 2-D view of embeddings, runs and encoders, in JupyterLab.

    Args:
        source: an encoder name (``"default"``) or Encoder, a run directory written by
            :func:`workbench.train.train` (step slider over its snapshots and checkpoints), or
            an :class:`~workbench.encoders.embeddings.Embeddings`.
        static: ``True`` → always static figures; ``False`` → always widgets; ``None`` → widgets
            only in an interactive kernel (not under papermill/nbconvert; env
            ``WORKBENCH_STATIC``). See :mod:`workbench.viz.explorers`.
        encoder: base encoder of a run directory, if already loaded.
        **settings: initial :class:`SpectrumSettings` fields (``modality``, ``partition``…).

    Attributes:
        controller: the :class:`SpectrumController` (settings → figure data).
        widget: the ipywidgets box (built on first access).
        figure_widgets: ``{name: go.FigureWidget}``, updated in place.
        controls: ``{setting name: widget}`` plus ``"source"`` (encoder name or run directory).

    Example:
        >>> from workbench.viz import SpectrumExplorer
        >>> SpectrumExplorer("runs/infonce-20260101-120000-0")  # doctest: +SKIP
    """

    def __init__(
        self, source: Any, *, static: bool | None = None, encoder: Any = None, **settings: Any
    ) -> None:
        super().__init__(static)
        self._encoder = encoder
        src = open_source(source, encoder=encoder)
        base = SpectrumSettings(dataset=src.fixed_dataset or src.default_dataset)
        self.controller = SpectrumController(src, replace(base, **settings))

    def _make_controls(self, W: Any) -> dict[str, Any]:
        from workbench.probes.partitions import PARTITIONS
        from workbench.probes.ranks import EFFECTIVE_RANKS

        c = self.controller
        s, src = c.settings, c.source
        datasets = list(dict.fromkeys([s.dataset, *DATASET_CHOICES]))
        steps = src.steps()
        source_text = str(getattr(src, "path", "")) or getattr(src, "_name", "") or src.label
        slider = {"continuous_update": False, "style": {"description_width": "110px"}}
        controls = {
            "dataset": W.Dropdown(options=datasets, value=s.dataset, description="dataset", disabled=bool(src.fixed_dataset)),
            "modality": W.ToggleButtons(options=list(MODALITIES), value=s.modality, description="modality"),
            "step": W.SelectionSlider(options=steps, value=s.step, description="step", disabled=len(steps) < 2, continuous_update=False),
            "center": W.Checkbox(value=s.center, description="centre columns"),
            "erank": W.Dropdown(options=EFFECTIVE_RANKS.names(), value=s.erank, description="eff. rank"),
            "partition": W.Dropdown(options=PARTITIONS.names(), value=s.partition, description="partition"),
            "tukey_k": W.FloatSlider(value=s.tukey_k, min=0, max=5, step=0.1, description="Tukey k", **slider),
            "strong_energy": W.FloatSlider(value=s.strong_energy, min=0.05, max=1, step=0.01, description="strong energy", **slider),
            "weak_energy": W.FloatSlider(value=s.weak_energy, min=0.05, max=1, step=0.005, description="weak energy", **slider),
            "strong_fraction": W.FloatSlider(value=s.strong_fraction, min=0, max=1, step=0.01, description="strong frac.", **slider),
            "weak_fraction": W.FloatSlider(value=s.weak_fraction, min=0, max=1, step=0.01, description="weak frac.", **slider),
            "log_scale": W.Checkbox(value=s.log_scale, description="log scale"),
            "sample_size": W.IntSlider(value=s.sample_size, min=16, max=max(4096, s.sample_size), step=16, description="sample size", **slider),
            "projection": W.ToggleButtons(options=list(PROJECTIONS), value=s.projection, description="2-D view"),
            "colour_by": W.ToggleButtons(options=list(COLOUR_BY), value=s.colour_by, description="colour by"),
        }  # fmt: skip
        self.source_box = W.Text(
            value=source_text,
            description="source",
            placeholder="encoder name or run directory",
            disabled=src.kind == "embeddings",
            layout={"width": "520px"},
        )
        self.source_box.observe(self._on_source, names="value")
        return controls

    def _on_source(self, change: dict[str, Any]) -> None:
        """Swap the source (an encoder name or a run directory typed into the box)."""
        import html

        text = str(change["new"]).strip()
        if not text:
            return
        try:
            self._report(f"opening {text}…", None)
            src = open_source(text, encoder=self._encoder if "/" in text else None)
            old = self.controller.settings
            dataset = old.dataset if not src.fixed_dataset else src.fixed_dataset
            steps = src.steps()
            new = replace(old, dataset=dataset, step=steps[-1])
            controller = SpectrumController(src, new)
            controller.apply(self.figure_widgets, progress=self._report)
        except Exception as exc:
            self.progress.layout.visibility = "hidden"
            self.status.value = (
                f"<span style='color:#b00020'><b>{type(exc).__name__}</b>: "
                f"{html.escape(str(exc))}</span>"
            )
            return
        self.controller = controller
        self._syncing = True
        try:
            step = self.controls["step"]
            step.options = steps
            step.value = new.step
            step.disabled = len(steps) < 2
            self.controls["dataset"].value = dataset
        finally:
            self._syncing = False
        self._done()

    def _after_update(self) -> None:
        from workbench.probes.partitions import PARTITIONS

        method = PARTITIONS.resolve(self.controller.settings.partition)[0]
        used = set(PARTITION_PARAMS.get(method, {}))
        for names in PARTITION_PARAMS.values():
            for name in names:
                self.controls[name].layout.display = None if name in used else "none"

    def _layout(self, W: Any) -> Any:
        k = self.controls
        f = self.figure_widgets
        head = W.HTML(f"<b>SpectrumExplorer</b> · {self.controller.source.label}")
        thresholds = W.HBox([k[n] for names in PARTITION_PARAMS.values() for n in names])
        box = W.VBox(
            [
                head,
                W.HBox([self.source_box, k["dataset"]]),
                W.HBox([k["modality"], k["step"]]),
                W.HBox([k["partition"], thresholds]),
                W.HBox([k["erank"], k["center"], k["log_scale"], k["sample_size"]]),
                W.HBox([k["projection"], k["colour_by"]]),
                W.HBox([self.status, self.progress]),
                W.HBox([f["spectrum"], f["energy"]]),
                W.HBox([f["proportions"], f["projection"]]),
            ]
        )
        box.add_class("wb-spectrum-explorer")  # a stable hook for browser tests and styling
        return box
