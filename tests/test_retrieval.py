"""Retrieval recall on known similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.probes.retrieval import gt_ranks, retrieval_scores, similarity


def test_recall_on_known_square_matrix():
    # rows = images, cols = captions; caption i belongs to image i
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # image 0: own caption first
            [0.8, 0.5, 0.1],  # image 1: own caption second
            [0.7, 0.6, 0.3],  # image 2: own caption third
        ]
    )
    r = retrieval_scores(sim, ks=(1, 2))
    assert r["i2t_R@1"] == pytest.approx(1 / 3) and r["i2t_R@2"] == pytest.approx(2 / 3)
    # caption 0 → image 0 first; caption 1 → column [0.1,0.5,0.6]: image 1 second; caption 2 → [0.2,0.1,0.3]: first
    assert r["t2i_R@1"] == pytest.approx(2 / 3) and r["t2i_R@2"] == pytest.approx(1.0)
    assert r["rsum"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 2 / 3 + 1.0))


def test_identity_similarity_gives_perfect_recall_and_rsum_600():
    r = retrieval_scores(np.eye(20) + 0.01)
    assert all(v == 1.0 for k, v in r.items() if k != "rsum") and r["rsum"] == pytest.approx(600)


def test_multiple_captions_per_image():
    # 2 images, 4 captions: captions 0,1 -> image 0; 2,3 -> image 1
    sim = np.array([[0.1, 0.9, 0.5, 0.2], [0.3, 0.2, 0.1, 0.8]])
    r = retrieval_scores(sim, caption_owner=[0, 0, 1, 1], ks=(1,))
    assert r["i2t_R@1"] == 1.0  # any of the image's captions counts
    # captions: c0 [0.1,0.3] wrong, c1 right, c2 [0.5,0.1] wrong, c3 right
    assert r["t2i_R@1"] == 0.5


def test_ties_count_against_the_query():
    assert retrieval_scores(np.ones((5, 5)), ks=(1,))["i2t_R@1"] == 0.0
    assert gt_ranks(np.array([[0.5, 0.5, 0.1]]), np.array([[True, False, False]])).tolist() == [1]


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="caption_owner"):
        retrieval_scores(np.ones((2, 3)))
    with pytest.raises(ValueError, match="caption_owner entries must lie in"):
        retrieval_scores(np.ones((2, 3)), caption_owner=[0, 1, 2])


def test_similarity_is_cosine():
    s = similarity(np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([[1.0, 1.0], [5.0, 0.0]]))
    assert np.allclose(s, [[np.sqrt(0.5), 1.0], [np.sqrt(0.5), 0.0]])


def test_identical_captions_can_count_as_hits():
    # images 0 and 2 share the caption "a frog": strict R@1 cannot be 1 for both, keyed R@1 is
    sim = np.array([[0.9, 0.1, 0.8], [0.1, 0.9, 0.2], [0.95, 0.2, 0.9]])
    caps = ["a frog", "a car", "a frog"]
    strict = retrieval_scores(sim)
    keyed = retrieval_scores(sim, text_keys=caps)
    assert strict["i2t_R@1"] == pytest.approx(2 / 3) and keyed["i2t_R@1"] == 1.0
    assert strict["t2i_R@1"] == pytest.approx(2 / 3) and keyed["t2i_R@1"] == 1.0
    assert retrieval_scores(sim, text_keys=["x", "y", "z"]) == strict  # distinct keys: strict
    with pytest.raises(ValueError, match="one entry per caption"):
        retrieval_scores(sim, text_keys=caps[:2])
