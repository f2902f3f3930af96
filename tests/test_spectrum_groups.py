"""Per-modality and per-class spectra in one call."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from workbench.probes.group_spectra import spectra_by_group, spectra_by_modality
from workbench.probes.spectra import spectrum


def _pair(n: int = 120, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 1, rng.integers(-1, 3, n)


def test_group_spectra_equal_spectra_of_each_groups_rows():
    X, _, y = _pair()
    out = spectra_by_group(X, y, names=["cat", "dog", "cow"])
    assert list(out) == ["cat", "dog", "cow"]  # -1 ("no label") is skipped
    for i, name in enumerate(["cat", "dog", "cow"]):
        ref = spectrum(X[y == i])
        np.testing.assert_allclose(out[name].singular_values, ref.singular_values)
        assert out[name].n_samples == int((y == i).sum())


def test_group_min_count_and_string_groups():
    X, _, _ = _pair(10)
    g = np.array(["a"] * 6 + ["b"] * 3 + ["c"])
    assert set(spectra_by_group(X, g, min_count=4)) == {"a"}
    assert set(spectra_by_group(X, g)) == {"a", "b"}  # one row cannot have a spectrum


def test_modalities_joint_and_classes_in_one_call():
    X, Y, y = _pair()
    out = spectra_by_modality({"image": X, "text": Y}, labels=y, joint=True)
    assert {"image", "text", "joint", "image/0", "text/2"} <= set(out)
    np.testing.assert_allclose(
        out["joint"].energy, spectrum(np.vstack([X, Y]), method="svd").energy, rtol=1e-9
    )
    np.testing.assert_allclose(out["text/2"].energy, spectrum(Y[y == 2]).energy)


def test_embeddings_like_input_and_normalisation():
    X, Y, _ = _pair()
    emb = SimpleNamespace(image=X.astype(np.float32), text=Y.astype(np.float32))
    out = spectra_by_modality(emb, normalize=True)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(out["image"].singular_values, spectrum(U).singular_values, rtol=1e-5)


def test_bad_input_names_what_is_wrong():
    X, Y, y = _pair()
    with pytest.raises(ValueError, match="dimension"):
        spectra_by_modality({"image": X, "text": Y[:, :4]})
    with pytest.raises(ValueError, match="labels has"):
        spectra_by_modality({"image": X, "text": Y[:50]}, labels=y)
    with pytest.raises(ValueError, match="one entry per row"):
        spectra_by_group(X, y[:-1])
    Xn = X.copy()
    Xn[77, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*row 77"):
        spectra_by_group(Xn, y)
    with pytest.raises(ValueError, match="NaN"):
        spectra_by_modality({"image": Xn, "text": Y})
    with pytest.raises(ValueError, match="mapping"):
        spectra_by_modality({})
