"""Strong / weak / noise partitions: set algebra, analytic cases (low rank, Marchenko–Pastur)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.probes.partitions import (
    PARTITIONS,
    iqr_mp_partition,
    iqr_noise_scale,
    partition,
)
from workbench.probes.spectra import spectrum

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _low_rank_plus_noise(m: int, n: int, k: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((n, k)))
    sig = np.linspace(1.0, 0.6, k) * math.sqrt(m * n / k)  # comparable signal directions
    return (U * sig) @ V.T + noise * rng.standard_normal((m, n))


@FAST
@given(
    st.integers(3, 40),
    st.integers(2, 12),
    st.integers(0, 10_000),
    st.sampled_from(["iqr-mp", "energy", "fixed"]),
    st.integers(0, 3),
)
def test_sets_are_disjoint_cover_all_directions_and_respect_min_strong(m, n, seed, method, k):
    X = np.random.default_rng(seed).standard_normal((m, n)) * np.arange(1, n + 1) ** -1.0
    p = partition(X, method, min_strong=k)
    r = min(m, n)
    allidx = np.concatenate([p.strong, p.weak, p.noise])
    assert sorted(allidx.tolist()) == list(range(r))
    assert sum(p.counts.values()) == r
    assert sum(p.proportions.values()) == pytest.approx(1.0)
    assert len(p.strong) >= min(k, r)
    assert np.all((p.labels == 0) == p.mask("strong"))


@FAST
@given(
    st.lists(st.floats(0, 1e3), min_size=1, max_size=60),
    st.floats(0, 10),
    st.integers(1, 500),
    st.integers(1, 500),
)
def test_iqr_mp_kernel_thresholds_are_ordered_and_sets_follow_them(sv, scale, m, n):
    s = np.asarray(sv)
    p = iqr_mp_partition(s, scale, m, n)
    t = p.thresholds
    assert t["tau_strong"] >= t["tau_noise"] == pytest.approx(scale * (math.sqrt(m) + math.sqrt(n)))
    assert len(p.strong) >= 1
    natural = s > t["tau_strong"]
    assert np.all(s[p.weak] <= t["tau_strong"]) and np.all(s[p.weak] > t["tau_noise"])
    assert np.all(s[p.noise] <= t["tau_noise"])
    assert p.forced_strong == len(p.strong) - int(natural.sum())


@pytest.mark.parametrize("k", [1, 3, 6])
def test_rank_k_plus_small_noise_gives_k_strong_components(k):
    X = _low_rank_plus_noise(600, 100, k, noise=0.05, seed=k)
    for center in (False, True):
        p = partition(X, center=center)
        assert p.counts["strong"] == k
        np.testing.assert_array_equal(p.strong, np.arange(k))
        assert p.forced_strong == 0


def test_isotropic_gaussian_noise_edge_matches_marchenko_pastur():
    m, n, sd = 1200, 240, 0.3
    X = np.random.default_rng(0).standard_normal((m, n)) * sd
    p = partition(X, center=True)
    mp_edge = sd * (math.sqrt(m) + math.sqrt(n))
    top = spectrum(X).singular_values[0]
    assert p.thresholds["tau_noise"] == pytest.approx(mp_edge, rel=0.05)
    assert p.thresholds["tau_noise"] == pytest.approx(top, rel=0.05)
    assert iqr_noise_scale(X) == pytest.approx(sd, rel=0.05)
    # pure noise: nothing genuinely strong; the single strong one is the promoted top direction
    assert p.counts["strong"] == 1 and p.counts["noise"] >= 0.9 * n


def test_kernel_accepts_torch_and_matches_data_route():
    X = _low_rank_plus_noise(300, 50, 3, noise=0.1, seed=1)
    s = torch.linalg.svdvals(torch.from_numpy(X))
    kern = iqr_mp_partition(s, iqr_noise_scale(torch.from_numpy(X)), 300, 50)
    data = partition(X)
    np.testing.assert_array_equal(kern.strong, data.strong)
    np.testing.assert_array_equal(kern.noise, data.noise)
    via_torch = partition(torch.from_numpy(X).to(torch.float32))
    assert via_torch.counts == data.counts


def test_spectrum_input_needs_noise_scale_for_iqr_mp():
    X = _low_rank_plus_noise(300, 50, 2, noise=0.1, seed=2)
    s = spectrum(X, center=False)
    with pytest.raises(ValueError, match="noise_scale"):
        partition(s)
    via_spec = partition(s, noise_scale=iqr_noise_scale(X))
    np.testing.assert_array_equal(via_spec.strong, partition(X).strong)
    assert partition(s, "energy").method == "energy"


def test_streaming_partition_matches_in_memory():
    X = _low_rank_plus_noise(3000, 60, 4, noise=0.1, seed=3)
    a = partition(X)
    b = partition(iter(np.array_split(X, 7)))
    assert a.counts == b.counts
    assert b.thresholds["noise_scale"] == pytest.approx(a.thresholds["noise_scale"], rel=0.05)


def test_energy_method_takes_the_smallest_prefix_reaching_each_threshold():
    X = np.random.default_rng(0).standard_normal((500, 30)) * np.arange(1, 31) ** -0.8
    s = spectrum(X)
    p = partition(s, "energy", strong_energy=0.8, weak_energy=0.95)
    ns, nw = p.counts["strong"], p.counts["weak"]
    cum = s.cumulative_energy
    assert cum[ns - 1] >= 0.8 and (ns == 1 or cum[ns - 2] < 0.8)
    assert cum[ns + nw - 1] >= 0.95 and cum[ns + nw - 2] < 0.95
    assert p.energy_proportions["strong"] == pytest.approx(cum[ns - 1])


def test_fixed_method_uses_fractions():
    p = partition(np.random.default_rng(0).standard_normal((100, 20)), "fixed")
    assert p.counts == {"strong": 2, "weak": 8, "noise": 10}
    assert p.to_dict()["strong"] == pytest.approx(0.1)


def test_registry_and_bad_input():
    assert set(PARTITIONS.names()) == {"iqr-mp", "energy", "fixed"}
    X = np.ones((10, 3))
    X[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*row 4"):
        partition(X)
    with pytest.raises(ValueError, match="unknown"):
        partition(np.eye(3), "kmeans")
    with pytest.raises(ValueError, match="1-D"):
        iqr_mp_partition(np.ones((2, 2)), 1.0, 2, 2)
    with pytest.raises(ValueError, match="≥ 0"):
        iqr_mp_partition(np.array([1.0, -1.0]), 1.0, 2, 2)
    with pytest.raises(ValueError, match="noise_scale"):
        iqr_mp_partition(np.array([1.0]), float("nan"), 2, 2)
    with pytest.raises(ValueError, match="strong_energy"):
        partition(np.eye(4), "energy", strong_energy=0.99, weak_energy=0.9)
    with pytest.raises(ValueError, match="band"):
        partition(np.eye(4), "fixed").mask("signal")
