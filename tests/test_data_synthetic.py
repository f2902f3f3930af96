"""synthetic-world: determinism, the item contract, masks, and MMVP pairs that differ in one factor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.data import MMVP_CATEGORIES, load_dataset
from workbench.data.synthetic import (
    FACTORS,
    GLYPH_MASK_ID,
    LABEL_FACTORS,
    MMVP_FACTOR,
    RGB,
    caption,
    check_attributes,
    mmvp_pairs,
    render_scene,
    sample_attributes,
)


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


def test_same_seed_gives_pixel_identical_items_and_size_only_extends():
    a = load_dataset("synthetic-world", size=12, seed=3)
    b = load_dataset("synthetic-world", size=12, seed=3)
    longer = load_dataset("synthetic-world", size=20, seed=3)
    for i in range(12):
        assert np.array_equal(_pixels(a[i].image), _pixels(b[i].image))
        assert np.array_equal(_pixels(a[i].image), _pixels(longer[i].image))
        assert a[i].captions == b[i].captions and a[i].attributes == b[i].attributes
        assert np.array_equal(a.mask(i), b.mask(i))
    assert a.config == b.config and a.config != longer.config


def test_seed_and_split_change_the_data():
    base = load_dataset("synthetic-world", size=10, seed=0)
    other_seed = load_dataset("synthetic-world", size=10, seed=1)
    test_split = load_dataset("synthetic-world", size=10, seed=0, split="test")
    caps = [it.captions[0] for it in base]
    assert caps != [it.captions[0] for it in other_seed]
    assert caps != [it.captions[0] for it in test_split]
    assert base.config != test_split.config


def test_items_follow_the_dataset_contract():
    ds = load_dataset("synthetic-world", size=30, seed=0, image_size=64)
    assert ds.class_names == list(FACTORS["shape"])
    for item in ds:
        assert item.image.mode == "RGB" and item.image.size == (64, 64)
        assert item.captions[0] == caption(item.attributes)
        assert len(item.captions) >= 2 and all(item.captions)
        assert ds.class_names[item.label] == item.attributes["shape"]
        check_attributes(item.attributes)


@pytest.mark.parametrize("factor", LABEL_FACTORS)
def test_label_by_any_factor_names_the_attribute(factor):
    ds = load_dataset("synthetic-world", size=6, seed=2, label_by=factor)
    for item in ds:
        assert ds._values[item.label] == item.attributes[factor]
        assert len(ds.class_names) == len(FACTORS[factor])


def test_caption_states_every_factor():
    attrs = {
        "shape": "triangle", "colour": "red", "size": "small", "count": 2,
        "position": "top right", "orientation": "left", "fill": "outlined", "dot": False,
        "arrangement": "row", "text": "K", "view": "head-on",
    }  # fmt: skip
    assert caption(attrs) == (
        "two small outlined red triangles pointing left in a row at the top right, "
        "with no dot, seen head-on, and the letter K"
    )


def test_mask_marks_each_object_and_the_glyph():
    rng = np.random.default_rng(0)
    for _ in range(20):
        attrs = sample_attributes(rng, view="head-on", fill="solid")
        image, mask = render_scene(attrs, 96)
        assert mask.shape == (96, 96) and mask.dtype == np.uint8
        ids = set(np.unique(mask).tolist())
        assert ids == {0, GLYPH_MASK_ID, *range(1, attrs["count"] + 1)}
        px = _pixels(image).astype(int)
        # object pixels away from the dot carry the object's colour; background stays white
        obj = np.isin(mask, list(range(1, attrs["count"] + 1)))
        near_colour = np.abs(px - np.array(RGB[attrs["colour"]])).sum(-1) < 60
        assert near_colour[obj].mean() > 0.5
        assert (px[mask == 0] > 200).all(axis=-1).mean() > 0.95


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="label_by"):
        load_dataset("synthetic-world", label_by="mood")
    with pytest.raises(ValueError, match="split"):
        load_dataset("synthetic-world", split="val")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("synthetic-world", image_size=16)
    bad = sample_attributes(np.random.default_rng(0), shape="circle")
    bad["orientation"] = "up"
    with pytest.raises(ValueError, match="no orientation"):
        check_attributes(bad)


def test_mmvp_pairs_differ_in_exactly_the_categorys_factor():
    n = 4
    pairs = mmvp_pairs(n, seed=0, image_size=64)
    assert len(pairs) == 9 * n
    assert [p.category for p in pairs] == [c for c in MMVP_CATEGORIES for _ in range(n)]
    for p in pairs:
        a0, a1 = p.attributes
        check_attributes(a0)
        check_attributes(a1)
        differing = {k for k in FACTORS if a0[k] != a1[k]}
        assert differing == {MMVP_FACTOR[p.category]}, p.category
        assert p.statements == (caption(a0), caption(a1))
        assert p.statements[0] != p.statements[1]
        assert not np.array_equal(_pixels(p.images[0]), _pixels(p.images[1]))


def test_mmvp_pairs_are_deterministic():
    a, b = mmvp_pairs(1, seed=5), mmvp_pairs(1, seed=5)
    for p, q in zip(a, b):
        assert p.statements == q.statements
        assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(p.images, q.images))
    assert [p.statements for p in mmvp_pairs(1, seed=6)] != [p.statements for p in a]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_sampled_attributes_are_always_consistent(seed):
    attrs = sample_attributes(np.random.default_rng(seed))
    check_attributes(attrs)
    assert (attrs["orientation"] is None) == (attrs["shape"] not in ("triangle", "star", "arrow"))
    assert (attrs["arrangement"] is None) == (attrs["count"] == 1)
