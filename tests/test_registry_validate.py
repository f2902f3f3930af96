"""The shared registry and input checks behave as every probe and loader relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench._registry import Registry
from workbench._validate import as_matrix, check_paired, l2_normalize


def test_registry_aliases_specs_and_suggestions() -> None:
    reg: Registry = Registry("widget")
    reg.register("alpha", aliases=("a",))(lambda: 1)
    reg.register("prefix", takes_spec=True)(lambda spec: spec)
    assert reg.resolve("a")[0] == "alpha"
    name, entry, spec = reg.resolve("prefix:x:y/z.pt")
    assert (name, spec) == ("prefix", "x:y/z.pt")
    assert entry(spec) == "x:y/z.pt"
    with pytest.raises(KeyError, match="Did you mean 'alpha'"):
        reg.resolve("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)
    assert "alpha" in reg and "nope" not in reg
    assert reg.names() == ["alpha", "prefix"]


def test_as_matrix_accepts_torch_half_and_memmap(tmp_path) -> None:
    x = torch.randn(5, 3, dtype=torch.bfloat16)
    out = as_matrix(x)
    assert out.dtype == np.float64 and out.shape == (5, 3)
    np.testing.assert_allclose(out, x.float().numpy())
    path = tmp_path / "m.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(4, 3))
    mm = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(as_matrix(mm), np.arange(12).reshape(4, 3))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.zeros(3), "2-D"),
        (np.zeros((1, 3)), "at least 2"),
        (np.zeros((3, 3), dtype=np.int64), "dtype int64"),
        (np.zeros((3, 3), dtype=bool), "dtype bool"),
    ],
)
def test_as_matrix_names_the_problem(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_matrix(bad, "feats")


def test_nan_error_names_first_bad_row() -> None:
    x = np.ones((6, 2))
    x[4, 1] = np.nan
    x[5, 0] = np.inf
    with pytest.raises(ValueError, match=r"feats contains NaN values \(first at row 4"):
        as_matrix(x, "feats")


def test_paired_and_normalise_errors() -> None:
    with pytest.raises(ValueError, match="dimension 3 but text embeddings have 4"):
        check_paired(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="rows"):
        check_paired(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"zero-norm row.*row 1"):
        l2_normalize(np.array([[1.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(np.array([[3.0, 4.0]])), axis=1), 1.0)
