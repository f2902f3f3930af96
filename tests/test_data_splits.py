"""Id-hash splits: fixed by the id alone, disjoint, near the asked fraction, independent per salt."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from workbench.data import splits
from workbench.data.splits import check_split, id_unit, in_split

IDS = [f"item-{i}" for i in range(4000)]


def test_docstring_examples_run():
    assert doctest.testmod(splits, raise_on_error=False).failed == 0


def test_id_unit_is_a_deterministic_uniform_place():
    u = np.asarray([id_unit(i) for i in IDS])
    assert ((u >= 0) & (u < 1)).all()
    assert u.tolist() == [id_unit(i) for i in IDS]  # no hidden state
    assert abs(u.mean() - 0.5) < 0.02 and abs(np.mean(u < 0.3) - 0.3) < 0.03


def test_train_and_test_partition_all_and_ignore_the_other_items():
    test = {i for i in IDS if in_split(i, "test", 0.3)}
    train = {i for i in IDS if in_split(i, "train", 0.3)}
    assert not test & train and test | train == set(IDS)
    assert all(in_split(i, "all", 0.3) for i in IDS)
    # an item's side depends on its id only: a subset or reordering keeps it
    assert {i for i in reversed(IDS[:500]) if in_split(i, "test", 0.3)} == test & set(IDS[:500])


def test_a_salt_gives_an_independent_split():
    a = np.asarray([in_split(i, "test", 0.5) for i in IDS])
    b = np.asarray([in_split(i, "test", 0.5, salt="val") for i in IDS])
    assert abs(np.mean(a & b) - 0.25) < 0.03  # independent halves overlap on a quarter


def test_bad_split_arguments_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        in_split("x", "validation", 0.3)
    with pytest.raises(ValueError, match="split must be one of"):
        check_split("emoji", "val", 0.2)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        check_split("emoji", "test", 1.0)
