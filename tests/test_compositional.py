"""Image-to-caption accuracy against hard negatives, per negative kind."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.probes.compositional import NegativeSet, build_negatives, compositional_scores


def test_hand_made_scores_per_kind():
    image = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    positive = np.array([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    negs = NegativeSet(
        owner=[0, 0, 1, 2, 2],
        kinds=["swap", "swap", "swap", "replace", "replace"],
        texts=["a", "b", "c", "d", "e"],
    )
    negative = np.array(
        [
            [0.5, 0.5, 0.0],  # item 0 swap: cos 0.71 < pos 0.99
            [1.0, 0.0, 0.0],  # item 0 swap: cos 1.0 > pos → item 0 wrong for "swap"
            [0.0, 1.0, 0.0],  # item 1 swap: tie with pos (1.0) → wrong (strict)
            [0.0, 0.2, 1.0],  # item 2 replace: 0.98 > 0.71 → wrong
            [1.0, 0.0, 0.0],  # item 2 replace: 0 < 0.71
        ]
    )
    res = compositional_scores(image, positive, negative, negs)
    assert res.per_kind == {"swap": 0.0, "replace": 0.0}
    assert res.n_items == {"swap": 2, "replace": 1}
    negative[1] = [0.0, 0.0, 1.0]
    negative[2] = [0.0, 0.5, 0.5]
    negative[3] = [1.0, 0.0, 0.0]
    res = compositional_scores(image, positive, negative, negs)
    assert res.per_kind == {"swap": 1.0, "replace": 1.0} and res.mean == 1.0


def test_items_without_a_kind_are_not_scored_for_it():
    image = np.eye(3)
    negs = NegativeSet(owner=[2], kinds=["reorder"], texts=["x"])
    res = compositional_scores(image, np.eye(3), np.array([[1.0, 0.0, 0.0]]), negs)
    assert res.n_items == {"reorder": 1} and res.per_kind["reorder"] == 1.0


def test_build_negatives_uses_attributes_and_is_deterministic():
    from workbench.data.synthetic import caption, sample_attributes

    attrs = [sample_attributes(np.random.default_rng(i)) for i in range(5)]
    caps = [caption(a) for a in attrs]
    a = build_negatives(caps, attrs, seed=3)
    b = build_negatives(caps, attrs, seed=3)
    assert a.texts == b.texts and a.kinds == b.kinds and np.array_equal(a.owner, b.owner)
    assert len(a) > 0 and set(a.owner) <= set(range(5))
    for o, t in zip(a.owner, a.texts):
        assert t != caps[o]  # a negative never equals its positive
    only = build_negatives(caps, attrs, kinds=["reorder"], seed=3)
    assert set(only.kinds) <= {"reorder"}


def test_bad_inputs():
    negs = NegativeSet(owner=[5], kinds=["k"], texts=["x"])
    with pytest.raises(ValueError, match="owner"):
        compositional_scores(np.eye(2), np.eye(2), np.ones((1, 2)), negs)
    with pytest.raises(ValueError, match="same length"):
        NegativeSet(owner=[0, 1], kinds=["k"], texts=["x"])
