"""SpectrumExplorer / GapExplorer without a browser: controllers, in-place updates, static mode.

What users rely on: moving a control updates the *same* FigureWidget (identity and trace count
kept, data changed); the static figures papermill shows are the figures the widgets show; the
shaded bands and markers agree with the probes; ReAlign toggles stay a valid prefix; revisiting
a control value does not recompute; feedback appears before any long recomputation; bad settings
fail with a clear message and leave the explorer as it was.
"""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.encoders.embeddings import Embeddings
from workbench.viz import _widgets
from workbench.viz._widgets import Debouncer, KeyedCache, wants_widgets
from workbench.viz.explorers import (
    REALIGN_CHOICES,
    EmbeddingsSource,
    ExploreConfig,
    GapController,
    GapExplorer,
    GapSettings,
    SpectrumController,
    SpectrumExplorer,
    SpectrumSettings,
    open_source,
)


def toy_embeddings(n: int = 120, d: int = 24, n_classes: int = 4, seed: int = 0) -> Embeddings:
    """Paired clouds with a modality offset along e_0 and a class signal (a gap to close)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    shared = rng.normal(size=(n, d)) + 2.0 * np.eye(d)[labels + 1]
    image = shared + 3.0 * np.eye(d)[0] + 0.3 * rng.normal(size=(n, d))
    text = shared - 3.0 * np.eye(d)[0] + 0.3 * rng.normal(size=(n, d))
    return Embeddings(
        image=image.astype(np.float32),
        text=text.astype(np.float32),
        ids=[f"item{i}" for i in range(n)],
        labels=labels.astype(np.int64),
        captions=[f"caption {i}" for i in range(n)],
        class_names=[f"class{c}" for c in range(n_classes)],
        provenance={"dataset": {"name": "toy"}, "encoder": {"name": "toy-encoder"}},
    )


class CountingSource(EmbeddingsSource):
    """Counts embedding requests and records the status text at the moment of each request."""

    def __init__(self, emb: Embeddings) -> None:
        super().__init__(emb)
        self.calls = 0
        self.explorer = None
        self.status_seen: list[str] = []

    def embeddings(self, dataset, size, step=0, progress=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.explorer is not None and hasattr(self.explorer, "status"):
            self.status_seen.append(self.explorer.status.value)
        return super().embeddings(dataset, size, step)


def trace_arrays(fig) -> list[tuple]:  # type: ignore[no-untyped-def]
    """Comparable (x, y) arrays of every trace."""
    out = []
    for tr in fig.data:
        x = None if tr.x is None else np.asarray(tr.x, dtype=object)
        y = None if tr.y is None else np.asarray(tr.y, dtype=object)
        out.append((x, y))
    return out


def same_arrays(a, b) -> bool:  # type: ignore[no-untyped-def]
    def eq(u, v) -> bool:  # type: ignore[no-untyped-def]
        if u is None or v is None:
            return u is v
        if np.shape(u) != np.shape(v):
            return False
        try:
            return np.allclose(u.astype(float), v.astype(float), equal_nan=True)
        except (TypeError, ValueError):
            return bool(np.all(u == v))

    return all(eq(x1, x2) and eq(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def emb() -> Embeddings:
    return toy_embeddings()


# --- SpectrumExplorer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "value", "figure"),
    [
        ("modality", "text", "spectrum"),
        ("modality", "image", "projection"),
        ("partition", "energy", "energy"),
        ("center", True, "spectrum"),
        ("sample_size", 64, "projection"),
        ("strong_fraction", 0.3, "energy"),
    ],
)
def test_spectrum_controls_update_figure_widgets_in_place(emb, control, value, figure) -> None:
    ex = SpectrumExplorer(
        emb, static=False, partition="fixed" if control == "strong_fraction" else "iqr-mp"
    )
    ex.widget  # noqa: B018  (builds the widgets)
    widgets_before = dict(ex.figure_widgets)
    counts = {k: len(f.data) for k, f in ex.figure_widgets.items()}
    before = trace_arrays(ex.figure_widgets[figure])
    ex.controls[control].value = value
    ex._debounced.flush()
    assert ex.controller.settings.__getattribute__(control) == value
    for name, fig in ex.figure_widgets.items():
        assert fig is widgets_before[name], f"{name} was rebuilt"
        assert len(fig.data) == counts[name], f"{name} changed its trace count"
    assert not same_arrays(before, trace_arrays(ex.figure_widgets[figure])), "data did not change"
    assert "✓" in ex.status.value


def test_log_scale_toggles_axis_type_in_place(emb) -> None:
    ex = SpectrumExplorer(emb, static=False)
    ex.widget  # noqa: B018
    fig = ex.figure_widgets["spectrum"]
    assert fig.layout.yaxis.type == "log"
    ex.controls["log_scale"].value = False
    ex._debounced.flush()
    assert ex.figure_widgets["spectrum"] is fig and fig.layout.yaxis.type == "linear"


def test_static_figures_equal_widget_figures(emb) -> None:
    ex = SpectrumExplorer(emb, static=False, modality="image", partition="energy")
    ex.widget  # noqa: B018
    ex.controls["center"].value = True
    ex._debounced.flush()
    static = ex.figures()
    assert set(static) == set(ex.figure_widgets)
    for name, fig in static.items():
        assert same_arrays(trace_arrays(fig), trace_arrays(ex.figure_widgets[name])), name
        assert fig.layout.title.text == ex.figure_widgets[name].layout.title.text


@pytest.mark.parametrize("method", ["iqr-mp", "energy", "fixed"])
@pytest.mark.parametrize("modality", ["image", "both"])
def test_bands_match_the_partition_probe(emb, method, modality) -> None:
    from workbench.probes.partitions import partition

    c = SpectrumController(emb, SpectrumSettings(modality=modality, partition=method))
    figs = c.figures()
    X = c.matrix()
    part = partition(X, method, center=False)
    shapes = figs["spectrum"].layout.shapes
    widths = [round(sh.x1 - sh.x0) for sh in shapes]
    assert widths == [part.counts[b] for b in ("strong", "weak", "noise")]
    assert shapes[0].x0 == 0.5 and shapes[-1].x1 == len(part.singular_values) + 0.5
    np.testing.assert_allclose(figs["spectrum"].data[0].y, part.singular_values, rtol=1e-9)
    if method == "iqr-mp":
        assert figs["spectrum"].data[3].y[0] == pytest.approx(part.thresholds["tau_noise"])


def test_energy_curve_and_effective_rank_marker(emb) -> None:
    from workbench.probes.ranks import effective_rank

    c = SpectrumController(
        emb, SpectrumSettings(modality="text", erank="erank/participation-ratio")
    )
    figs = c.figures()
    cum = np.asarray(figs["energy"].data[0].y)
    assert np.all(np.diff(cum) >= -1e-12) and cum[-1] == pytest.approx(1.0)
    marker = figs["energy"].data[3].x[0]
    assert marker == pytest.approx(effective_rank(c.matrix(), "participation-ratio", center=False))
    assert 1.0 <= marker <= len(cum)
    # rankme is defined on the uncentred spectrum: with centring on it keeps its own definition
    c.set(center=True, erank="erank/rankme")
    assert c.analysis()["erank_own"]
    assert c.analysis()["erank"] == pytest.approx(effective_rank(c.matrix(), "rankme"))


def test_projection_hides_the_unselected_modality(emb) -> None:
    c = SpectrumController(emb, SpectrumSettings(modality="image", colour_by="modality"))
    figs = c.figures()
    assert len(figs["projection"].data[0].x) == len(emb) and len(figs["projection"].data[1].x) == 0
    c.set(modality="both", colour_by="label")
    c.apply(figs)
    img, txt = figs["projection"].data
    assert len(img.x) == len(txt.x) == len(emb)
    colours = np.asarray(img.marker.color)
    assert len(set(colours.tolist())) == len(set(emb.labels.tolist()))  # one colour per class


def test_revisiting_a_setting_is_served_from_cache(emb) -> None:
    src = CountingSource(emb)
    c = SpectrumController(src)
    figs = c.figures()
    for modality in ("image", "text", "both", "image"):
        c.set(modality=modality)
        c.apply(figs)
    assert src.calls == 1  # one embedding request for all modality switches
    analysed = c._spec.misses
    c.set(modality="text")
    c.apply(figs)
    assert c._spec.misses == analysed  # text was analysed before: a cache hit


def test_feedback_is_shown_before_recomputation(emb) -> None:
    src = CountingSource(emb)
    ex = SpectrumExplorer(src, static=False)
    src.explorer = ex
    ex.widget  # noqa: B018
    ex.controls["sample_size"].value = 48
    ex._debounced.flush()
    assert src.status_seen[-1].startswith("<i>⏳"), src.status_seen
    assert "✓" in ex.status.value and ex.progress.layout.visibility == "hidden"


def test_bad_control_value_reports_and_keeps_state(emb) -> None:
    ex = SpectrumExplorer(emb, static=False, partition="fixed")
    ex.widget  # noqa: B018
    before = trace_arrays(ex.figure_widgets["energy"])
    ex.controls["strong_fraction"].value = 0.8  # + weak 0.4 > 1
    ex._debounced.flush()
    assert "ValueError" in ex.status.value and "strong_fraction" in ex.status.value
    assert ex.controller.settings.strong_fraction == 0.1  # nothing applied
    assert same_arrays(before, trace_arrays(ex.figure_widgets["energy"]))
    ex.controls["weak_fraction"].value = 0.1  # now the pair is valid: both apply together
    ex._debounced.flush()
    assert "✓" in ex.status.value
    assert (ex.controller.settings.strong_fraction, ex.controller.settings.weak_fraction) == (
        0.8,
        0.1,
    )
    assert not same_arrays(before, trace_arrays(ex.figure_widgets["energy"]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modality": "audio"}, "modality must be one of"),
        ({"erank": "entropy"}, "erank must be one of"),
        ({"partition": "otsu"}, "partition must be one of"),
        ({"strong_energy": 0.99, "weak_energy": 0.9}, "strong_energy <= weak_energy"),
        ({"sample_size": 2}, "sample_size"),
    ],
)
def test_spectrum_settings_validate(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SpectrumSettings(**kwargs)


def test_step_and_dataset_are_checked_against_the_source(emb) -> None:
    c = SpectrumController(emb)
    with pytest.raises(ValueError, match="not among"):
        c.set(step=5)
    with pytest.raises(ValueError, match="dataset cannot change"):
        c.set(dataset="digits")
    with pytest.raises(ValueError, match="not among this source's steps"):
        SpectrumController(emb, SpectrumSettings(step=3))


def test_open_source_rejects_what_it_cannot_explore(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a run directory"):
        open_source(tmp_path)
    with pytest.raises(TypeError, match="cannot explore"):
        open_source(42)
    assert open_source("default").kind == "encoder"  # resolved lazily: nothing loaded yet


# --- GapExplorer ------------------------------------------------------------------------------


def test_gap_lambda_slider_moves_clouds_in_place(emb) -> None:
    ex = GapExplorer(emb, static=False)
    ex.widget  # noqa: B018
    clouds = ex.figure_widgets["gap_clouds"]
    n_traces = len(clouds.data)
    before = trace_arrays(clouds)
    ex.controls["lam"].value = 0.5
    ex._debounced.flush()
    assert ex.figure_widgets["gap_clouds"] is clouds and len(clouds.data) == n_traces
    assert not same_arrays(before, trace_arrays(clouds))
    # the λ marker is the shift experiment at that λ
    from workbench.probes.gap import shift_experiment

    ref = shift_experiment(emb.image, emb.text, [0.5])
    marker = ex.figure_widgets["gap_metrics"].data[7]
    assert marker.x[0] == 0.5 and marker.y[0] == pytest.approx(ref.signed_gap[0])


def test_centroids_drawn_are_the_clouds_means(emb) -> None:
    c = GapController(emb, GapSettings(lam=0.25, max_points=10_000))
    figs = c.figures()
    img = figs["gap_clouds"].data[0]
    cen = figs["gap_clouds"].data[2]
    # projection is affine, so the projected mean is the mean of the projected points
    assert cen.x[0] == pytest.approx(np.mean(img.x)) and cen.y[0] == pytest.approx(np.mean(img.y))


@pytest.fixture(scope="module")
def small_gap_explorer() -> GapExplorer:
    ex = GapExplorer(toy_embeddings(n=24, d=8), static=False, sample_size=24)
    ex.widget  # noqa: B018
    return ex


@given(seq=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_realign_toggles_stay_a_prefix(small_gap_explorer, seq) -> None:
    ex = small_gap_explorer
    ex.toggles[0].value = False  # start each example from "no ReAlign"
    ex._debounced.flush()
    for i, value in seq:
        ex.toggles[i].value = value
        ex._debounced.flush()
        on = [t.value for t in ex.toggles]
        n_on = sum(on)
        assert on == [True] * n_on + [False] * (3 - n_on)  # Anchor → Trace → Centroid
        assert ex.controller.settings.realign == REALIGN_CHOICES[n_on]
        assert on[i] == value  # the step clicked is in the state asked for


def test_each_realign_step_shows_its_effect(emb) -> None:
    c = GapController(emb)
    ab = c.ablation()
    assert ab["full"]["gap"] < ab["anchor+trace"]["gap"] <= ab["none"]["gap"]
    figs = c.figures()
    before = trace_arrays(figs["gap_clouds"])
    c.set(realign="full")
    c.apply(figs)
    assert not same_arrays(before, trace_arrays(figs["gap_clouds"]))
    widths = list(figs["realign_steps"].data[0].marker.line.width)
    assert widths == [0, 0, 0, 3]  # the current choice is outlined


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"realign": "centroid"}, "realign must be one of"),
        ({"temperature": 0}, "temperature"),
        ({"lam_min": 1, "lam_max": 0}, "lam_min < lam_max"),
    ],
)
def test_gap_settings_validate(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        GapSettings(**kwargs)


# --- static vs widgets ------------------------------------------------------------------------


class FakeKernel:
    def __init__(self, allow_stdin: bool) -> None:
        self._allow_stdin = allow_stdin


class FakeShell:
    def __init__(self, kernel) -> None:  # type: ignore[no-untyped-def]
        self.kernel = kernel


@pytest.mark.parametrize(
    ("env", "shell", "static", "expected"),
    [
        (None, None, None, False),  # plain python
        (None, FakeShell(None), None, False),  # terminal IPython
        (None, FakeShell(FakeKernel(False)), None, False),  # papermill / nbclient
        (None, FakeShell(FakeKernel(True)), None, True),  # JupyterLab
        ("1", FakeShell(FakeKernel(True)), None, False),
        ("0", None, None, True),
        ("1", None, False, True),  # explicit override wins
        (None, FakeShell(FakeKernel(True)), True, False),
    ],
)
def test_wants_widgets(monkeypatch, env, shell, static, expected) -> None:
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    if env is None:
        monkeypatch.delenv(_widgets.STATIC_ENV, raising=False)
    else:
        monkeypatch.setenv(_widgets.STATIC_ENV, env)
    assert wants_widgets(static) is expected


def test_bad_static_env_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv(_widgets.STATIC_ENV, "maybe")
    with pytest.raises(ValueError, match="WORKBENCH_STATIC"):
        wants_widgets()


@pytest.mark.parametrize("cls", [SpectrumExplorer, GapExplorer])
def test_show_displays_static_figures_or_the_widget(monkeypatch, emb, cls) -> None:
    import IPython.display
    import ipywidgets
    import plotly.graph_objects as go

    shown: list = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    ex = cls(emb, static=True)
    ex._ipython_display_()
    assert shown and all(type(f) is go.Figure for f in shown)
    assert len(shown) == len(ex.controller.FIGURES)
    shown.clear()
    ex.show(static=False)
    assert len(shown) == 1 and isinstance(shown[0], ipywidgets.VBox)


def test_save_writes_every_figure(tmp_path, emb) -> None:
    ex = GapExplorer(emb)
    written = ex.save(tmp_path, prefix="toy_", png=False)
    assert set(written) == set(GapController.FIGURES)
    for paths in written.values():
        assert paths["html"].exists() and paths["html"].name.startswith("toy_")


# --- plumbing ---------------------------------------------------------------------------------


def test_debouncer_coalesces_a_burst_inside_a_loop() -> None:
    calls: list[int] = []
    deb = Debouncer(calls.append, wait=0.05)

    async def burst() -> None:
        for i in range(5):
            deb(i)
            await asyncio.sleep(0.001)
        assert deb.pending and calls == []
        await asyncio.sleep(0.2)

    asyncio.run(burst())
    assert calls == [4]  # once, with the last arguments


def test_debouncer_without_loop_runs_at_once() -> None:
    calls: list[int] = []
    Debouncer(calls.append, wait=10)(7)
    assert calls == [7]
    with pytest.raises(ValueError, match="wait"):
        Debouncer(calls.append, wait=-1)


def test_keyed_cache_evicts_least_recently_used() -> None:
    cache: KeyedCache[int] = KeyedCache(maxsize=2)
    computed: list[str] = []
    get = lambda k: cache.get(k, lambda: computed.append(k) or len(computed))  # noqa: E731
    get("a"), get("b"), get("a"), get("c")  # "b" is now the oldest
    assert "a" in cache and "c" in cache and "b" not in cache
    assert computed == ["a", "b", "c"] and cache.hits == 1


def test_explore_config_validates_and_builds_a_heads_only_train_config() -> None:
    cfg = ExploreConfig()
    tc = cfg.train_config()
    assert tc.trainable == "heads" and tc.steps == cfg.train_steps
    assert tc.snapshot_every == cfg.snapshot_every and tc.batch_size == cfg.batch_size
    with pytest.raises(ValueError, match="holdout"):
        ExploreConfig(sample_size=40, batch_size=32, holdout=16)
    with pytest.raises(ValueError, match="train_steps"):
        ExploreConfig(train_steps=0)


def test_embeddings_source_subsets_deterministically(emb) -> None:
    src = EmbeddingsSource(emb)
    a, b = src.embeddings("toy", 50), src.embeddings("toy", 50)
    assert a.ids == b.ids and len(a) == 50 and set(a.ids) <= set(emb.ids)
    assert src.embeddings("toy", 10_000) is emb
    assert copy.copy(src).fixed_dataset == "toy"


def test_figure_widget_patch_renders_each_view_from_its_own_model() -> None:
    """plotly's bundle renders every view from the last model (plotly.py#4998); ours must not."""
    import plotly.graph_objects as go

    from workbench.viz._widgets import _figure_widget_class, figure_widget

    cls = _figure_widget_class()
    fw = figure_widget(go.Figure(go.Scatter(y=[1, 2])))
    assert isinstance(fw, go.FigureWidget) and list(fw.data[0].y) == [1, 2]
    if cls is not go.FigureWidget:  # patched: render builds a wrapper of its own model
        assert "render({model:wbModel," in cls._esm
