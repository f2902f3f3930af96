"""Figure builders: labelled axes, one trace per input, log scales and stacked bands."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.probes.geometry import cosine_distribution
from workbench.probes.partitions import partition
from workbench.probes.ranks import power_law_alpha
from workbench.probes.spectra import spectrum
from workbench.probes.subspace import singular_vector_alignment
from workbench.viz.spectrum import (
    cosine_distribution_figure,
    cumulative_energy_figure,
    effective_rank_figure,
    partition_proportions_figure,
    power_law_figure,
    singular_vector_alignment_figure,
    spectrum_figure,
)

X = np.random.default_rng(0).standard_normal((200, 10)) * np.arange(1, 11) ** -1.0


def _titled(fig: go.Figure) -> bool:
    return bool(fig.layout.xaxis.title.text) and bool(fig.layout.yaxis.title.text)


def test_spectrum_figure_overlays_log_y_and_matches_values():
    before, after = spectrum(X), spectrum(X * np.linspace(2, 1, 10))
    fig = spectrum_figure({"before": before, "after": after})
    assert isinstance(fig, go.Figure) and _titled(fig)
    assert fig.layout.yaxis.type == "log" and [t.name for t in fig.data] == ["before", "after"]
    np.testing.assert_allclose(fig.data[0].y, before.singular_values)
    norm = spectrum_figure([before, np.array([3.0, 2.0, 0.0])], quantity="normalized", top_k=5)
    assert norm.data[0].y[0] == pytest.approx(1.0) and len(norm.data[1].y) == 2  # 0 dropped on log
    with pytest.raises(ValueError, match="quantity"):
        spectrum_figure(before, quantity="sigma")


def test_cumulative_energy_figure_ends_at_one():
    fig = cumulative_energy_figure({"a": spectrum(X)})
    assert _titled(fig) and fig.data[0].y[-1] == pytest.approx(1.0)


def test_partition_proportions_stack_to_one_over_steps():
    rng = np.random.default_rng(1)
    log = [
        {"step": t, **partition(X + 0.05 * t * rng.standard_normal(X.shape)).to_dict()}
        for t in (20, 0, 10)
    ]
    fig = partition_proportions_figure(log)
    assert _titled(fig) and [t.name for t in fig.data] == ["strong", "weak", "noise"]
    assert all(t.stackgroup == "bands" for t in fig.data)
    assert list(fig.data[0].x) == [0, 10, 20]
    np.testing.assert_allclose(np.sum([t.y for t in fig.data], axis=0), 1.0)
    # the training loop's snapshot format: proportions under record[side]["partition"]
    snaps = [{"step": 5, "image": {"partition": {"strong": 0.1, "weak": 0.3, "noise": 0.6}}}]
    assert partition_proportions_figure(snaps, side="image").data[2].y[0] == 0.6
    pairs = partition_proportions_figure([(1, partition(X))], energy=True)
    assert sum(t.y[0] for t in pairs.data) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="step"):
        partition_proportions_figure([{"strong": 1.0}])
    with pytest.raises(ValueError, match="no strong"):
        partition_proportions_figure([{"step": 1, "loss": 0.3}])


def test_effective_rank_figure_picks_rank_keys_and_overlays_runs():
    log = [{"step": s, "erank/rankme": 5 - s, "loss": 1.0} for s in range(3)]
    fig = effective_rank_figure({"base": log, "sde": log})
    assert _titled(fig) and [t.name for t in fig.data] == ["base erank/rankme", "sde erank/rankme"]
    with pytest.raises(ValueError, match="keys"):
        effective_rank_figure([{"step": 0, "loss": 1.0}])


def test_other_builders_have_labelled_axes():
    rng = np.random.default_rng(2)
    figs = [
        power_law_figure({"x": power_law_alpha(X)}),
        singular_vector_alignment_figure(
            singular_vector_alignment(X, X + 1e-3 * rng.standard_normal(X.shape), k=4)
        ),
        cosine_distribution_figure({"x": cosine_distribution(X)}),
    ]
    for fig in figs:
        assert isinstance(fig, go.Figure) and _titled(fig)
    assert figs[0].layout.xaxis.type == "log" and "α" in figs[0].data[1].name
