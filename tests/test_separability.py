"""D-ability metrics pinned on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.probes.separability import (
    class_scatter,
    clustering_accuracy,
    clustering_scores,
    fisher_ratio,
    knn_accuracy,
    linear_probe,
    split_indices,
    zero_shot_accuracy,
)


def blobs(n_per=30, k=3, d=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:k] * 3.0
    X = np.concatenate([c + spread * rng.standard_normal((n_per, d)) for c in centres])
    y = np.repeat(np.arange(k), n_per)
    return X, y


def test_scatter_matches_hand_computed_two_class_case():
    X = np.array([[0.0, 1.0], [0.0, 3.0], [4.0, 0.0], [6.0, 0.0]])
    y = np.array([0, 0, 1, 1])
    sc = class_scatter(X, y, normalize=False)
    # centroids (0,2) and (5,0): within = 1 each; global mean of centroids (2.5,1)
    assert sc.s_inner == pytest.approx(1.0)
    assert sc.s_inter == pytest.approx(2.5**2 + 1.0)
    assert sc.fisher == pytest.approx(7.25)
    assert sc.n_classes == 2


def test_scatter_class_balanced_and_fisher_grows_with_separation():
    X, y = blobs(spread=0.3)
    assert fisher_ratio(X, y) > fisher_ratio(
        X + 2.0 * np.random.default_rng(1).standard_normal(X.shape), y
    )


def test_scatter_rejects_unlabelled_rows():
    X, y = blobs()
    y[0] = -1
    with pytest.raises(ValueError, match="negative"):
        class_scatter(X, y)


@given(perm=st.permutations(list(range(4))), seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_clustering_acc_is_one_under_label_permutation(perm, seed):
    y = np.random.default_rng(seed).integers(0, 4, size=40)
    relabelled = np.asarray(perm)[y]
    assert clustering_accuracy(y, relabelled) == 1.0


def test_clustering_acc_hand_computed():
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([5, 5, 7, 7, 7, 7])  # best map 5->0, 7->1: 5/6 right
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(5 / 6)


def test_clustering_scores_perfect_on_separated_blobs_every_seed():
    X, y = blobs(spread=0.01)
    scores = clustering_scores(X, y, seeds=(0, 1, 2), n_init=3)
    assert [s.seed for s in scores] == [0, 1, 2]
    for s in scores:
        assert (
            s.acc == pytest.approx(1.0)
            and s.nmi == pytest.approx(1.0)
            and s.ari == pytest.approx(1.0)
        )


def test_knn_accuracy_perfect_and_chance():
    X, y = blobs(spread=0.01)
    assert knn_accuracy(X, y, k=5) == 1.0
    rng = np.random.default_rng(0)
    assert knn_accuracy(rng.standard_normal((300, 16)), rng.integers(0, 3, 300), k=5) < 0.6
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(X, y, k=len(y))


def test_knn_excludes_the_query_itself():
    # each point's only same-label partner is far; with k=1 a self-match would give 100 %
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.99, 0.1], [0.1, 0.99]])
    y = np.array([0, 0, 1, 1])
    assert knn_accuracy(X, y, k=1) == 0.0


def test_split_indices_disjoint_stratified_deterministic():
    y = np.repeat(np.arange(3), [10, 5, 2])
    tr, te = split_indices(y, test_fraction=0.3, seed=4)
    assert np.intersect1d(tr, te).size == 0
    assert np.union1d(tr, te).tolist() == list(range(len(y)))
    for c in range(3):
        assert (y[te] == c).any() and (y[tr] == c).any()
    tr2, te2 = split_indices(y, test_fraction=0.3, seed=4)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)


def test_linear_probe_never_sees_held_out_labels():
    X, y = blobs(spread=0.5, seed=3)
    res = linear_probe(X, y, seed=0)
    poisoned = y.copy()
    poisoned[res.test_idx] = (poisoned[res.test_idx] + 1) % 3  # every held-out label wrong
    res_p = linear_probe(X, poisoned, seed=0, train_idx=res.train_idx, test_idx=res.test_idx)
    clf, clf_p = res.model[-1], res_p.model[-1]
    assert np.array_equal(clf.coef_, clf_p.coef_) and np.array_equal(
        clf.intercept_, clf_p.intercept_
    )
    assert res.accuracy == 1.0 and res_p.accuracy == 0.0  # held-out labels only score


def test_linear_probe_fit_receives_train_rows_only(monkeypatch):
    from sklearn.pipeline import Pipeline

    seen = {}
    real_fit = Pipeline.fit

    def spy(self, X, y=None, **kw):
        seen["X"], seen["y"] = np.array(X), np.array(y)
        return real_fit(self, X, y, **kw)

    monkeypatch.setattr(Pipeline, "fit", spy)
    X, y = blobs()
    res = linear_probe(X, y, normalize=False, seed=1)
    assert np.array_equal(seen["X"], X[res.train_idx]) and np.array_equal(
        seen["y"], y[res.train_idx]
    )
    with pytest.raises(ValueError, match="overlap"):
        linear_probe(X, y, train_idx=[0, 1, 2, 40], test_idx=[2, 50])


def test_zero_shot_constructed_case_and_template_averaging():
    class_text = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    image = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.0], [0.6, 0.5, 0.0], [0.1, 0.2, 5.0]])
    labels = np.array([0, 1, 1, 1])  # row 2 leans to class 0 (wrong); row 3: 0.2 > 0.1 → class 1
    assert zero_shot_accuracy(image, class_text, labels) == pytest.approx(3 / 4)
    assert zero_shot_accuracy(image, class_text, labels, mean_per_class=True) == pytest.approx(
        (1.0 + 2 / 3) / 2
    )
    # two templates per class whose mean points along the class axis
    templ = np.array([[[1.0, 1.0, 0.0], [1.0, -1.0, 0.0]], [[1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]])
    assert zero_shot_accuracy(np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0]]), templ, [0, 1]) == 1.0
    with pytest.raises(ValueError, match="labels must be integers"):
        zero_shot_accuracy(image, class_text, [0, 1, 2, 0])
