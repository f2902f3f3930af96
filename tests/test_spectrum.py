"""Spectrum, effective rank and power-law α: invariances, streaming = in-memory, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.probes.ranks import EFFECTIVE_RANKS, effective_rank, power_law_alpha
from workbench.probes.spectra import Spectrum, spectrum

VARIANTS = ["rankme", "erank-cov", "participation-ratio", "stable-rank", "numerical-rank"]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _data(n: int, d: int, seed: int, rank: int | None = None) -> np.ndarray:
    """(n, d) float64 with a decaying spectrum, a non-zero mean and optionally rank < d."""
    rng = np.random.default_rng(seed)
    k = d if rank is None else rank
    Z = rng.standard_normal((n, k)) * np.arange(1, k + 1) ** -0.7
    W = rng.standard_normal((k, d))
    return Z @ W + rng.standard_normal(d)


def _chunks(X: np.ndarray, seed: int) -> list[np.ndarray]:
    cuts = np.sort(np.random.default_rng(seed).integers(0, len(X), size=3))
    return [c for c in np.split(X, cuts)]


shapes = st.tuples(st.integers(3, 40), st.integers(1, 12), st.integers(0, 10_000))


@FAST
@given(shapes, st.booleans())
def test_singular_values_are_rotation_invariant(shape, center):
    n, d, seed = shape
    X = _data(n, d, seed)
    Q, _ = np.linalg.qr(np.random.default_rng(seed + 1).standard_normal((d, d)))
    a, b = spectrum(X, center=center), spectrum(X @ Q, center=center)
    np.testing.assert_allclose(
        b.singular_values, a.singular_values, atol=1e-9 * a.singular_values[0]
    )


@FAST
@given(shapes, st.booleans(), st.sampled_from(["svd", "gram"]))
def test_cumulative_energy_is_nondecreasing_and_ends_at_one(shape, center, method):
    n, d, seed = shape
    s = spectrum(_data(n, d, seed), center=center, method=method)
    assert len(s) == min(n, d)
    assert np.all(np.diff(s.cumulative_energy) >= 0)
    assert s.cumulative_energy[-1] == 1.0
    assert np.all(np.diff(s.singular_values) <= 0)
    np.testing.assert_allclose(s.energy, s.singular_values**2)


@FAST
@given(shapes, st.integers(1, 12), st.sampled_from(VARIANTS))
def test_effective_rank_lies_between_one_and_rank(shape, rank, variant):
    n, d, seed = shape
    X = _data(n, d, seed, rank=min(rank, d))
    center = variant != "rankme"
    s = spectrum(X, center=center)
    er = effective_rank(s, variant)
    assert 1.0 - 1e-12 <= er <= s.rank + 1e-9


@FAST
@given(shapes, st.booleans(), st.sampled_from([np.float64, np.float32]))
def test_streaming_chunks_equal_in_memory(shape, center, dtype):
    n, d, seed = shape
    X = _data(n, d, seed).astype(dtype)
    exact = spectrum(X.astype(np.float64), center=center, method="svd")
    streamed = spectrum(iter(_chunks(X, seed)), center=center)
    assert streamed.method == "gram" and streamed.n_samples == n
    tol = 1e-10 if dtype == np.float64 else 1e-6
    assert np.max(np.abs(streamed.energy - exact.energy)) <= tol * exact.total_energy
    np.testing.assert_allclose(streamed.mean, exact.mean, atol=tol * np.abs(X).max())


def test_float32_gram_route_matches_float64_svd_on_top_values_despite_large_mean():
    # A cone-like offset 100x the spread: naive uncentred accumulation would cancel badly.
    rng = np.random.default_rng(0)
    n, d = 20_000, 64
    X = (rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.6 + 100.0).astype(np.float32)
    ref = np.linalg.svd(X.astype(np.float64) - X.astype(np.float64).mean(0), compute_uv=False)
    s = spectrum(X, method="gram", chunk_rows=4096)
    assert np.max(np.abs(s.singular_values[:50] - ref[:50]) / ref[:50]) < 1e-6


def test_components_are_orthonormal_and_reproduce_singular_values():
    X = _data(500, 8, 3)
    for method in ("svd", "gram"):
        s = spectrum(X, method=method, return_components=True)
        V = s.components
        np.testing.assert_allclose(V @ V.T, np.eye(8), atol=1e-10)
        proj = np.linalg.norm((X - s.mean) @ V.T, axis=0)
        np.testing.assert_allclose(proj, s.singular_values, rtol=1e-9)


def test_rankme_is_uncentred_and_erank_cov_is_centred():
    X = _data(200, 6, 1)
    assert effective_rank(X, "rankme") == pytest.approx(
        effective_rank(spectrum(X, center=False), "rankme")
    )
    with pytest.raises(ValueError, match="uncentred"):
        effective_rank(spectrum(X, center=True), "rankme")
    with pytest.raises(ValueError, match="centred"):
        effective_rank(spectrum(X, center=False), "erank-cov")
    assert effective_rank(X, "erank/cov") == effective_rank(spectrum(X), "erank-cov")


def test_effective_ranks_of_isotropic_spectrum_equal_dimension():
    s = spectrum(np.vstack([np.eye(5), -np.eye(5)]), center=True)
    for variant in VARIANTS[1:]:
        assert effective_rank(s, variant) == pytest.approx(5.0)
    assert effective_rank(np.eye(5), "rankme") == pytest.approx(5.0)
    with pytest.raises(ValueError, match="center=False"):
        effective_rank(np.eye(5), "rankme", center=True)


def test_numerical_rank_counts_exact_rank_on_both_routes():
    X = _data(3000, 20, 7, rank=6)
    assert effective_rank(spectrum(X, method="svd"), "numerical-rank") == 6
    assert effective_rank(spectrum(X, method="gram"), "numerical-rank") == 6
    assert effective_rank(spectrum(X), "numerical-rank", tol=np.inf) == 0


def test_every_variant_is_registered_with_its_source():
    assert set(EFFECTIVE_RANKS.names()) == {
        "erank/rankme",
        "erank/cov",
        "erank/participation-ratio",
        "erank/stable-rank",
        "erank/numerical-rank",
    }
    for name in EFFECTIVE_RANKS.names():
        assert EFFECTIVE_RANKS.get(name).source


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.83])
def test_power_law_alpha_recovers_exact_exponent(alpha):
    lam = 3.0 * np.arange(1, 101, dtype=float) ** -alpha
    fit = power_law_alpha(lam, k_range=(1, 100))
    assert fit.alpha == pytest.approx(alpha, abs=1e-10)
    assert float(fit) == fit.alpha and fit.r_squared == pytest.approx(1.0)
    np.testing.assert_allclose(fit.predict(fit.ranks), lam / lam.sum(), rtol=1e-9)


def test_power_law_alpha_on_data_and_range_checks():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8_000, 40)) * np.arange(1, 41) ** -0.5  # λ_k ∝ k^-1
    fit = power_law_alpha(X, k_range=(1, 30))
    assert fit.alpha == pytest.approx(1.0, abs=0.1)
    assert (fit.k_min, fit.k_max) == (1, 30)
    with pytest.raises(ValueError, match="k_range"):
        power_law_alpha(X, k_range=(5, 2))
    with pytest.raises(ValueError, match="exceeds"):
        power_law_alpha(X, k_range=(1, 41))


def test_torch_bf16_and_fp16_are_upcast():
    t = torch.randn(300, 10, dtype=torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        s = spectrum(t.to(dtype))
        ref = spectrum(t.to(dtype).float().numpy())
        np.testing.assert_allclose(s.singular_values, ref.singular_values, rtol=1e-6)
    assert isinstance(spectrum(t.requires_grad_(True)), Spectrum)
    big = torch.randn(3000, 800).to(torch.bfloat16)  # Gram route: converted chunk by chunk
    s = spectrum(big, chunk_rows=1000)
    assert s.method == "gram"
    ref = spectrum(big.float().numpy(), method="svd")
    assert np.max(np.abs(s.energy - ref.energy)) <= 1e-6 * ref.total_energy
    bad = torch.zeros(5, 3)
    bad[4, 1] = float("inf")
    with pytest.raises(ValueError, match=r"Inf.*row 4"):
        spectrum(bad, method="gram", chunk_rows=2)
    with pytest.raises(ValueError, match="int32"):
        spectrum(torch.ones(4, 3, dtype=torch.int32))


def test_memmap_input_streams_and_equals_in_memory(tmp_path):
    X = _data(5000, 16, 11).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    s = spectrum(mm, chunk_rows=700)
    assert s.method == "gram"
    ref = spectrum(X.astype(np.float64), method="svd")
    # float32 GEMMs summed in float64: error ~1e-7 of σ₁ (see Spectrum.resolution)
    np.testing.assert_allclose(
        s.singular_values, ref.singular_values, atol=1e-6 * ref.singular_values[0]
    )
    np.testing.assert_array_equal(mm, X)  # releasing pages never changes the data
    transposed = np.load(tmp_path / "x.npy", mmap_mode="r").T.T[:, ::2]  # strided view
    np.testing.assert_allclose(
        spectrum(transposed, chunk_rows=900).energy,
        spectrum(X[:, ::2].astype(np.float64), method="svd").energy,
        atol=1e-6 * ref.total_energy,
    )


def test_memmap_nan_is_reported_at_its_global_row(tmp_path):
    X = _data(3000, 4, 2)
    X[2345, 1] = np.nan
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError, match=r"NaN.*row 2345"):
        spectrum(np.load(tmp_path / "x.npy", mmap_mode="r"), chunk_rows=500)


def test_from_singular_values_sorts_and_feeds_every_probe():
    s = Spectrum.from_singular_values(torch.tensor([1.0, 3.0, 2.0]), 10, 3)
    np.testing.assert_array_equal(s.singular_values, [3.0, 2.0, 1.0])
    assert s.cumulative_energy[-1] == 1.0 and not s.center
    assert effective_rank(s, "stable-rank") == pytest.approx(14 / 9)
    with pytest.raises(ValueError, match="singular_values must be ≥ 0"):
        Spectrum.from_singular_values([1.0, -1.0], 2, 2)


def test_package_attribute_is_the_function_even_after_its_module_is_imported():
    # the modules are named after their concept (spectra, partitions), not after a function,
    # so importing them never rebinds workbench.probes.spectrum / .partition to a module
    import workbench.probes as probes
    import workbench.probes.partitions
    import workbench.probes.spectra  # noqa: F401

    X = _data(50, 4, 0)
    assert callable(probes.spectrum) and callable(probes.partition)
    np.testing.assert_array_equal(probes.spectrum(X).singular_values, spectrum(X).singular_values)
    assert probes.partition(X).proportions == probes.partitions.partition(X).proportions


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.zeros(5), "2-D"),
        (np.zeros((1, 3)), "at least 2"),
        (np.ones((4, 3), dtype=np.int64), "int64"),
        (np.ones((4, 3), dtype=bool), "bool"),
        (np.array([[1.0, 2.0], [3.0, 4.0], [np.inf, 1.0]]), "Inf.*row 2"),
        (np.array([[1.0, 2.0], [3.0, np.nan], [1.0, 1.0]]), "NaN.*row 1"),
    ],
)
@pytest.mark.parametrize("method", ["auto", "gram"])
def test_bad_input_raises_naming_the_problem(X, match, method):
    with pytest.raises(ValueError, match=match):
        spectrum(X, method=method)


def test_bad_chunks_raise_with_global_rows_and_widths():
    good = np.ones((5, 3))
    bad = np.ones((4, 3))
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*row 7"):
        spectrum(iter([good, bad]))
    with pytest.raises(ValueError, match="columns"):
        spectrum(iter([good, np.ones((4, 2))]))
    with pytest.raises(ValueError, match="empty"):
        spectrum(iter([np.ones((0, 3))]))
    with pytest.raises(ValueError, match="at least 2"):
        spectrum(iter([np.ones((1, 3))]))
    with pytest.raises(ValueError, match="int"):
        spectrum(iter([np.ones((3, 3), dtype=np.int32)]))


def test_bad_options_raise():
    X = _data(20, 3, 0)
    with pytest.raises(ValueError, match="method"):
        spectrum(X, method="qr")
    with pytest.raises(ValueError, match="unknown"):
        effective_rank(X, "entropy")
    with pytest.raises(ValueError, match="all zero"):
        effective_rank(np.ones((5, 3)), "erank-cov")
