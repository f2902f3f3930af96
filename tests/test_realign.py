"""ReAlign (Anchor → Trace → Centroid, spec §2.2) and the C3 baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from workbench.probes.realign import C3, ReAlign


def _unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _gaussian_modalities(
    n_x: int, n_y: int, d: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Image and text clouds with different centres, anisotropies and total variances."""
    rng = np.random.default_rng(seed)
    cx = np.eye(d)[0] + 0.4 * np.eye(d)[2]
    cy = np.eye(d)[1] + 0.2 * np.eye(d)[3]
    X = cx + 0.08 * rng.standard_normal((n_x, d)) * np.linspace(1.5, 0.2, d)
    Y = cy + 0.06 * rng.standard_normal((n_y, d)) * np.linspace(0.3, 1.2, d)
    return X, Y


def test_fit_statistics_follow_the_spec_equations() -> None:
    X, Y = _gaussian_modalities(700, 500)
    ra = ReAlign().fit(X, Y)  # unpaired: different sizes
    Xn, Yn = _unit(X), _unit(Y)
    np.testing.assert_allclose(ra.mu_x_, Xn.mean(0), atol=1e-14)
    np.testing.assert_allclose(ra.mu_y_, Yn.mean(0), atol=1e-14)
    t_x = np.square(Xn - Xn.mean(0)).sum(1).mean()
    t_y = np.square(Yn - Yn.mean(0)).sum(1).mean()
    assert ra.trace_x_ == pytest.approx(t_x, rel=1e-12)
    assert ra.trace_y_ == pytest.approx(t_y, rel=1e-12)
    assert ra.scale_ == pytest.approx(np.sqrt(t_x / (t_y + 1e-10)), rel=1e-12)  # the square root
    e1 = _unit(Xn.mean(0) + ra.scale_ * (Yn - Yn.mean(0)))
    np.testing.assert_allclose(ra.mu_y_prime_, e1.mean(0), atol=1e-14)
    assert (ra.n_image_, ra.n_text_, ra.n_features_in_) == (700, 500, 32)


def test_each_step_does_what_the_spec_says() -> None:
    X, Y = _gaussian_modalities(600, 600, seed=1)
    ra = ReAlign().fit(X, Y)
    anchor = ra.transform(Y, steps="anchor")
    # Anchor moves the fit text's centroid exactly onto µ_x and keeps the spread
    np.testing.assert_allclose(anchor.mean(0), ra.mu_x_, atol=1e-14)
    np.testing.assert_allclose(anchor - anchor.mean(0), _unit(Y) - _unit(Y).mean(0), atol=1e-14)
    trace = ra.transform(Y, steps="anchor+trace")
    np.testing.assert_allclose(np.linalg.norm(trace, axis=1), 1.0, atol=1e-14)
    # before renormalisation the trace step matches the image total variance exactly
    tilde = ra.mu_x_ + ra.scale_ * (_unit(Y) - ra.mu_y_)
    assert np.square(tilde - tilde.mean(0)).sum(1).mean() == pytest.approx(ra.trace_x_, rel=1e-8)
    full = ra.transform(Y)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-14)
    expected = _unit(trace - ra.mu_y_prime_ + ra.mu_x_)
    np.testing.assert_allclose(full, expected, atol=1e-14)
    # each added step brings the fit text's centroid closer to the image centroid
    gaps = [np.linalg.norm(ra.mu_x_ - _unit(Y).mean(0))]
    gaps += [np.linalg.norm(ra.mu_x_ - Z.mean(0)) for Z in (trace, full)]
    assert gaps[0] > gaps[1] > gaps[2]


def test_streaming_and_in_memory_fits_agree() -> None:
    X, Y = _gaussian_modalities(2300, 1700, seed=2)
    whole = ReAlign().fit(X, Y)
    x_chunks = [X[:1000], X[1000:1001], X[1001:]]
    y_chunks = [Y[i : i + 333] for i in range(0, len(Y), 333)]
    listed = ReAlign().fit(x_chunks, y_chunks)
    factory = ReAlign().fit(lambda: iter(x_chunks), lambda: (c for c in y_chunks))
    small = ReAlign(chunk_size=97).fit(X.astype(np.float32), Y.astype(np.float32))
    ref = ReAlign().fit(
        X.astype(np.float32).astype(np.float64), Y.astype(np.float32).astype(np.float64)
    )
    for a, b in [(whole, listed), (whole, factory), (ref, small)]:
        for attr in ("mu_x_", "mu_y_", "mu_y_prime_"):
            np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=0, atol=1e-12)
        for attr in ("trace_x_", "trace_y_", "scale_"):
            assert getattr(a, attr) == pytest.approx(getattr(b, attr), rel=1e-12)
    held = Y[:50] + 0.01
    np.testing.assert_allclose(whole.transform(held), listed.transform(held), atol=1e-12)
    np.testing.assert_allclose(
        whole.transform(held), factory.transform([held[:20], held[20:]]), atol=1e-12
    )


def test_realign_shrinks_held_out_gap_by_orders_of_magnitude() -> None:
    X, Y = _gaussian_modalities(25_000, 25_000, seed=3)
    fit_x, fit_y = X[:5000], Y[5000:10_000]  # disjoint, unpaired fit sets
    held_y = Y[10_000:]
    ra = ReAlign().fit(fit_x, fit_y)
    before = np.linalg.norm(ra.mu_x_ - _unit(held_y).mean(0))
    after = np.linalg.norm(ra.mu_x_ - ra.transform(held_y).mean(0))
    assert before / after > 100
    # also against the centroid of images never seen in the fit
    held_x_centroid = _unit(X[10_000:]).mean(0)
    after_heldout = np.linalg.norm(held_x_centroid - ra.transform(held_y).mean(0))
    assert np.linalg.norm(held_x_centroid - _unit(held_y).mean(0)) / after_heldout > 100


def test_transform_before_fit_raises() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        ReAlign().transform(np.ones((3, 4)))
    with pytest.raises(ValueError):  # NotFittedError is also a ValueError, as in scikit-learn
        C3().transform(np.ones((3, 4)))


@pytest.mark.parametrize(
    ("image", "text", "match"),
    [
        (np.ones((5, 4)), np.ones((5, 3)), "dimension"),
        (
            np.ones((5, 4)),
            np.vstack([np.ones((3, 4)), np.zeros((1, 4))]),
            r"zero-norm row\(s\) \(first at row 3",
        ),
        (
            np.ones((5, 4)),
            [np.ones((3, 4)), np.array([[1, np.nan, 1, 1.0]])],
            "NaN values .first at row 3",
        ),
        (np.ones((5, 4)), (c for c in [np.ones((3, 4))]), "one-shot iterator"),
        (np.ones((1, 4)), np.ones((5, 4)), "at least 2 rows"),
        (np.ones((5, 4), dtype=int), np.ones((5, 4)), "dtype"),
    ],
)
def test_bad_inputs_raise_clear_errors(image: object, text: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReAlign().fit(image, text)


def test_bad_hyperparameters_and_transform_width() -> None:
    X, Y = _gaussian_modalities(50, 50)
    with pytest.raises(ValueError, match="steps must be one of"):
        ReAlign(steps="trace").fit(X, Y)
    ra = ReAlign().fit(X, Y)
    with pytest.raises(ValueError, match="steps must be one of"):
        ra.transform(Y, steps="centroid")
    with pytest.raises(ValueError, match="fitted on 32-d"):
        ra.transform(np.ones((3, 5)))


def test_c3_is_seeded_centred_and_noised() -> None:
    X, Y = _gaussian_modalities(400, 300)
    a = C3(sigma=0.05, seed=7).fit(X, Y)
    b = C3(sigma=0.05, seed=7).fit(X, Y)
    np.testing.assert_array_equal(a.transform(Y), b.transform(Y))
    assert not np.allclose(a.transform(Y), C3(sigma=0.05, seed=8).fit(X, Y).transform(Y))
    np.testing.assert_allclose(a.transform_image(X).mean(0), 0.0, atol=1e-14)
    noiseless = C3(sigma=0.0).fit(X, Y).transform(Y)
    np.testing.assert_allclose(noiseless.mean(0), 0.0, atol=1e-14)
    assert np.std(a.transform(Y) - noiseless) == pytest.approx(0.05, rel=0.05)
    with pytest.raises(ValueError, match="sigma"):
        C3(sigma=-1).fit(X, Y)


def _fake_study(n_fit: int = 3000, n_eval: int = 2000, seed: int = 0):
    """A labelled two-modality study with a planted gap, as load_gap_data would return it."""
    from workbench.encoders.embeddings import Embeddings
    from workbench.experiments.modality_gap import GapData

    rng = np.random.default_rng(seed)
    d, K = 16, 4
    centres = 0.4 * rng.standard_normal((K, d))
    a_x, a_y = np.eye(d)[0], np.eye(d)[1]

    def items(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.integers(0, K, n)
        return (
            a_x + centres[y] + 0.1 * rng.standard_normal((n, d)),
            a_y + centres[y] + 0.1 * rng.standard_normal((n, d)),
            y,
        )

    fx, _, _ = items(n_fit)
    _, ft, fl = items(n_fit)
    ex, et, el = items(n_eval)
    ev = Embeddings(
        image=ex.astype(np.float32), text=et.astype(np.float32), ids=[str(i) for i in range(n_eval)],
        labels=el.astype(np.int64), captions=[""] * n_eval, class_names=[f"c{k}" for k in range(K)],
    )  # fmt: skip
    prompts = (a_y + centres)[:, None, :] + 0.01 * rng.standard_normal((K, 2, d))
    return GapData(fx, ft, fl.astype(np.int64), ev, prompts, 0.0)


def test_ablation_rows_and_stability_curve_on_a_planted_study() -> None:
    from workbench.experiments.modality_gap import (
        ablation_rows,
        alignment_variants,
        stability_curve,
    )

    data = _fake_study()
    ra = ReAlign().fit(data.fit_image, data.fit_text)
    variants = alignment_variants(data, ra, C3(sigma=0.01).fit(data.fit_image, data.fit_text))
    assert list(variants) == ["original", "C3", "anchor", "anchor+trace", "ReAlign"]
    rows = {r["variant"]: r for r in ablation_rows(variants, data)}
    assert rows["ReAlign"]["gap_to_target"] < rows["original"]["gap_to_target"] / 30
    assert rows["C3"]["gap_to_target"] < rows["original"]["gap_to_target"] / 30
    for r in rows.values():
        assert (
            0 <= r["t2i_r1"] <= 1 and 0 <= r["zero_shot"] <= 1 and 0 <= r["text_trained_acc"] <= 1
        )
    # aligned captions stand in for images: a text-trained classifier works on real images
    assert rows["ReAlign"]["text_trained_acc"] > 0.8
    stab = stability_curve(
        data.fit_image, data.fit_text, [10, 100, 1000, 5000], eval_text=data.eval.text
    )
    assert stab["sizes"] == [10, 100, 1000]  # sizes above the fit pool are dropped
    for key in ("mu_x", "mu_y", "mu_y_prime", "heldout_gap"):
        assert stab[key][0] > stab[key][-1]  # more unpaired samples, better statistics
