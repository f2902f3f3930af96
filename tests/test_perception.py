"""MMVP-VLM scoring pinned on hand-made logits."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.probes.perception import (
    MMVP_CATEGORIES,
    mmvp_categories_by_index,
    mmvp_logits_from_embeddings,
    mmvp_pair_correct,
    mmvp_scores,
)


def test_hand_made_logits_give_hand_computed_pair_accuracy():
    # [pair, statement, image]; statement j is true of image j
    logits = np.array(
        [
            [[2.0, 1.0], [0.0, 3.0]],  # both right
            [[2.0, 1.0], [3.0, 0.0]],  # statement 1 picks img1: pair wrong
            [[1.0, 2.0], [0.0, 3.0]],  # statement 0 picks img2: pair wrong
            [[5.0, 5.0], [5.0, 5.0]],  # ties: p = 0.5 -> img2 for both -> s0 wrong
            [[9.0, 0.0], [-1.0, 1.0]],  # both right
            [[1.0, 1.0], [1.0, 1.0]],  # ties again: wrong
        ]
    )
    assert mmvp_pair_correct(logits).tolist() == [True, False, False, False, True, False]
    ori, qty, col = MMVP_CATEGORIES[0], MMVP_CATEGORIES[3], MMVP_CATEGORIES[5]
    res = mmvp_scores(logits, [col, col, col, qty, qty, ori])
    assert res.per_category == {ori: 0.0, qty: 0.5, col: pytest.approx(1 / 3)}
    assert list(res.per_category) == [ori, qty, col]  # benchmark order
    assert res.mean == pytest.approx((0.0 + 0.5 + 1 / 3) / 3)  # mean over categories, not pairs
    assert res.pair_accuracy == pytest.approx(2 / 6)
    assert res.n_pairs == {ori: 1, qty: 2, col: 3}


def test_logit_scale_does_not_change_decisions():
    rng = np.random.default_rng(0)
    L = rng.standard_normal((50, 2, 2))
    assert np.array_equal(mmvp_pair_correct(L), mmvp_pair_correct(100 * L))


def test_real_benchmark_category_rule():
    cats = mmvp_categories_by_index(135)
    assert cats[0] == cats[14] == MMVP_CATEGORIES[0] and cats[15] == MMVP_CATEGORIES[1]
    assert cats[-1] == MMVP_CATEGORIES[-1] and len(set(cats)) == 9
    logits = np.tile(np.array([[1.0, 0.0], [0.0, 1.0]]), (135, 1, 1))
    res = mmvp_scores(logits)
    assert list(res.per_category) == list(MMVP_CATEGORIES) and res.mean == 1.0


def test_embeddings_to_logits_match_cosines():
    img = np.array([[[1.0, 0.0], [0.0, 2.0]]])
    txt = np.array([[[3.0, 0.0], [1.0, 1.0]]])
    L = mmvp_logits_from_embeddings(img, txt, logit_scale=10.0)
    assert np.allclose(L, [[[10.0, 0.0], [10 * np.sqrt(0.5), 10 * np.sqrt(0.5)]]])


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(n_pairs, 2, 2\)"):
        mmvp_pair_correct(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="categories"):
        mmvp_scores(np.zeros((3, 2, 2)), ["Texts"])


def test_real_mmvp_folder_scored_with_exactly_one_prompt_prefix(tmp_path):
    """A miniature MMVP-VLM folder: pairs in qid order, categories from the CSV, one prefix."""
    from dp_fakes import TinyEncoder
    from PIL import Image

    from workbench.data import load_dataset
    from workbench.probes.perception import mmvp_pairs_from_dataset, score_mmvp

    rows = ["Question ID,Type,Statement"]
    for qid, cat in ((1, 0), (2, 0), (3, 5), (4, 5)):
        category = MMVP_CATEGORIES[cat]
        rows.append(f"{qid},{category},statement {qid}")
        folder = tmp_path / "MLLM_VLM Images" / category
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (60 * qid, 0, 0)).save(folder / f"{qid}.jpg")
    (tmp_path / "Questions.csv").write_text("\n".join(rows) + "\n")

    pairs = mmvp_pairs_from_dataset(load_dataset("mmvp-vlm", root=tmp_path, statement_prefix=""))
    assert [p.category for p in pairs] == [MMVP_CATEGORIES[0], MMVP_CATEGORIES[5]]
    assert pairs[1].statements == ("statement 3", "statement 4")

    enc = TinyEncoder()
    seen: list[str] = []
    real = enc.encode_texts
    enc.encode_texts = lambda texts, **kw: seen.extend(texts) or real(texts, **kw)
    res = score_mmvp(enc, pairs)
    assert seen == [f"a photo of statement {q}" for q in range(1, 5)]
    assert list(res.n_pairs.values()) == [1, 1]
