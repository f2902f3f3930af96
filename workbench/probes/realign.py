"""ReAlign: training-free text → image distribution alignment from unpaired statistics, and C3.

ReAlign (Yu et al., arXiv 2602.07026 v3, §4; code ``Yu-xm/ReVision embed_ReAlign.py``) moves text
embeddings onto the image distribution in three steps (spec ``methods-geometry.md`` §2.2):

1. **Anchor**   ė_y = (e_y − µ_y) + µ_x
2. **Trace**    s = sqrt(T_x / (T_y + ε)),  ẽ_y = µ_x + s(e_y − µ_y),  e'_y = ẽ_y / ‖ẽ_y‖
3. **Centroid** µ'_y = E[e'_y] (over the *fit* text),  e''_y = e'_y − µ'_y + µ_x,  ê_y = e''_y / ‖e''_y‖

µ are means of L2-normalised embeddings and T = E‖e − µ‖² = tr Σ the total variance. Images are
never changed. Only first and second moments of each modality are used, so image and text fit
sets need not be paired or even the same size.

C3 (Zhang et al., ICLR 2024: connect, collapse, corrupt) is the baseline beside it: mean-centring
of each modality plus isotropic Gaussian noise on text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import NotFittedError

from workbench._validate import (
    as_choice,
    as_float,
    as_int,
    as_matrix,
    check_finite_rows,
    check_magnitude,
    l2_normalize,
    roundoff,
    row_norms,
    to_numpy,
)
from workbench.distributed import all_reduce_sums
from workbench.encoders.chunked import ChunkedRows

__all__ = ["C3", "REALIGN_STEPS", "ReAlign", "iter_chunks"]

REALIGN_STEPS = ("anchor", "anchor+trace", "full")
"""Valid ``steps`` values: each runs a prefix of Anchor → Trace → Centroid (Tab. 5 ablation)."""

Steps = Literal["anchor", "anchor+trace", "full"]
Chunks = (
    Any  # (n, d) array-like, a re-iterable of (m, d) chunks, or a zero-arg callable returning one
)


def _check_steps(steps: str) -> str:
    return as_choice(steps, "steps", REALIGN_STEPS)


def iter_chunks(
    data: Chunks, name: str, chunk_size: int, *, allow_empty: bool = False
) -> Iterator[np.ndarray]:
    """Yield validated, L2-normalised float64 (m, d) chunks of ``data``; may be called repeatedly.

    ``data`` is an (n, d) array-like (numpy, memmap, torch tensor), sliced into ``chunk_size``
    rows; or a re-iterable of (m, d) chunks (a list, or a zero-arg callable returning a fresh
    iterator — needed because ReAlign reads its input up to three times). One-shot iterators
    (generators) are refused with an explanation rather than silently giving wrong statistics.
    A list whose elements are not 2-D (a list of rows) is one (n, d) array. NaN/Inf and zero rows
    raise ``ValueError`` naming the global row index, and so does no row at all unless
    ``allow_empty`` (a rank's share of a sharded set may be empty; the caller counts all ranks).
    """
    chunk_size = as_int(chunk_size, "chunk_size", lo=1)
    # a list of 2-D chunks, or a list of rows (one (n, d) array written as lists)
    is_rows = isinstance(data, (list, tuple)) and not all(np.ndim(c) == 2 for c in data)
    if data is None:
        raise TypeError(f"{name} is None; pass an (n, d) array or an iterable of (m, d) chunks")
    if callable(data):
        source: Iterable[Any] = data()
    elif isinstance(data, ChunkedRows):  # cached rows: read chunk by chunk, never loaded whole
        source = data
    elif (
        is_rows
        or isinstance(data, np.ndarray)
        or hasattr(data, "__array__")
        or hasattr(data, "shape")
    ):
        arr = to_numpy(data, name)
        if arr.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D (n, d) or an iterable of 2-D chunks, got {arr.shape}"
            )
        source = (arr[s : s + chunk_size] for s in range(0, arr.shape[0], chunk_size))
    elif isinstance(data, Iterator):
        raise ValueError(
            f"{name} is a one-shot iterator (e.g. a generator), but ReAlign reads its input in "
            f"several passes; pass a list of chunks or a zero-arg callable returning a new iterator"
        )
    elif isinstance(data, Iterable):
        source = data
    else:
        raise TypeError(f"{name} must be an (n, d) array or an iterable of (m, d) chunks")
    offset = 0
    for chunk in source:
        A = as_matrix(chunk, name, min_rows=1, check_finite=False)
        check_finite_rows(A, name, row_offset=offset)
        check_magnitude(A, name)
        zero = np.flatnonzero(row_norms(A) == 0)
        if zero.size:
            raise ValueError(
                f"{name} has zero-norm row(s) (first at row {offset + int(zero[0])}); "
                f"they cannot be L2-normalised — drop them"
            )
        offset += A.shape[0]
        yield l2_normalize(A, name)
    if offset == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (no rows in any chunk)")


def _mean_and_count(
    data: Chunks, name: str, chunk_size: int, group: Any = None
) -> tuple[np.ndarray, int]:
    def local() -> list[Any] | None:
        total: np.ndarray | None = None
        n = 0
        for A in iter_chunks(data, name, chunk_size, allow_empty=True):
            s = A.sum(axis=0)  # float64 accumulation
            total = s if total is None else total + s
            n += A.shape[0]
        return None if total is None else [total, [n]]

    sums = all_reduce_sums(local, group, f"the mean of {name}")  # local sums when group is None
    n = 0 if sums is None else int(sums[1][0])
    if n < 2:
        raise ValueError(f"{name} needs at least 2 rows to estimate a mean and a total variance")
    return sums[0] / n, n


def _trace(
    data: Chunks, name: str, chunk_size: int, mu: np.ndarray, n: int, group: Any = None
) -> float:
    """T = (1/n) Σ ‖e − µ‖², the per-sample mean squared distance to the mean [code].

    Raises ``ValueError`` when T is round-off of unit rows (all rows point the same way): the
    trace scale s = sqrt(T_x / T_y) would then be noise divided by noise.
    """

    def local() -> list[Any]:
        acc = 0.0
        for A in iter_chunks(data, name, chunk_size, allow_empty=True):
            if A.shape[1] != mu.shape[0]:
                raise ValueError(f"{name} chunks change width: {A.shape[1]} vs {mu.shape[0]}")
            acc += float(np.square(A - mu).sum())
        return [[acc]]

    total = float(all_reduce_sums(local, group, f"the trace of {name}")[0][0]) / n
    if math.sqrt(total) <= roundoff(1.0, max(n, mu.shape[0])):  # rows are unit vectors
        raise ValueError(
            f"{name} has zero total variance (every row points the same way, up to round-off); "
            f"ReAlign's trace scale is undefined"
        )
    return total


class ReAlign:
    """Training-free text → image alignment (ReAlign, spec §2.2), scikit-learn style.

    Args:
        steps: which prefix of Anchor → Trace → Centroid ``transform`` runs by default:
            ``"anchor"`` (output *not* unit-norm, as in the spec's step 1), ``"anchor+trace"``
            (unit-norm e'_y) or ``"full"`` (unit-norm ê_y, the method).
        eps: ε in s = sqrt(T_x / (T_y + ε)); 1e-10 as in the code [code].
        chunk_size: rows per streamed block when arrays are given (10k in the code [code]).

    Fitted attributes (float64):
        mu_x_, mu_y_: (d,) means of the L2-normalised image / text fit sets.
        trace_x_, trace_y_: total variances T_x, T_y.
        scale_: s = sqrt(T_x / (T_y + ε)) — the square root: the paper's PDF shows s without it,
            but s²T_y ≈ T_x, the README and the code all imply the root [spec §2.2].
        mu_y_prime_: (d,) µ'_y = mean of e'_y over the *fit* text, used for held-out text too.
        n_image_, n_text_, n_features_in_: fit sizes and width.

    Example (unpaired fit sets of any sizes; held-out text comes out unit-norm, on the images'
    centroid):

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> images = rng.normal(size=(500, 8)) + 3.0          # (n_x, d) raw embeddings
        >>> texts = rng.normal(size=(300, 8)) - 3.0           # (n_y, d), other items
        >>> ra = ReAlign().fit(images, texts)
        >>> aligned = ra.transform(rng.normal(size=(50, 8)) - 3.0)
        >>> aligned.shape, bool(np.allclose(np.linalg.norm(aligned, axis=1), 1.0))
        ((50, 8), True)
    """

    def __init__(self, steps: Steps = "full", eps: float = 1e-10, chunk_size: int = 10_000) -> None:
        self.steps = steps
        self.eps = eps
        self.chunk_size = chunk_size

    def _check_params(self) -> None:
        _check_steps(self.steps)
        as_float(self.eps, "eps", lo=0.0)
        as_int(self.chunk_size, "chunk_size", lo=1)

    def fit(self, image_emb: Chunks, text_emb: Chunks, *, group: Any = None) -> ReAlign:
        """Estimate µ_x, µ_y, T_x, T_y, s and µ'_y from unpaired image and text sets.

        Args:
            image_emb: (n_x, d) raw image embeddings, or a re-iterable of (m, d) chunks.
            text_emb: (n_y, d) raw text embeddings or chunks; n_y need not equal n_x.
            group: ``None`` (this process's rows), ``"auto"`` or a ``ProcessGroup``: the
                inputs are this rank's rows (any number, none included), every float64 sum is
                all-reduced, and every rank is fitted on all ranks' rows together (the
                single-process fit to float64 round-off). Call on every rank.

        The passes follow the code [code]: (1) means, (2) traces around those means, (3) µ'_y
        by applying Anchor+Trace to the fit text; (4) is ``transform``. All sums are float64
        (float32 accumulation leaves an error floor ≈ 1e-7 at N = 5e5 [paper]).
        """
        self._check_params()
        cs = int(self.chunk_size)
        mu_x, n_x = _mean_and_count(image_emb, "image_emb", cs, group)
        mu_y, n_y = _mean_and_count(text_emb, "text_emb", cs, group)
        if mu_x.shape != mu_y.shape:
            raise ValueError(
                f"image_emb has dimension {mu_x.shape[0]} but text_emb has {mu_y.shape[0]}; "
                f"both modalities must live in the same space"
            )
        t_x = _trace(image_emb, "image_emb", cs, mu_x, n_x, group)
        t_y = _trace(text_emb, "text_emb", cs, mu_y, n_y, group)
        self.mu_x_, self.mu_y_ = mu_x, mu_y
        self.trace_x_, self.trace_y_ = t_x, t_y
        self.scale_ = float(np.sqrt(t_x / (t_y + self.eps)))
        self.n_image_, self.n_text_, self.n_features_in_ = n_x, n_y, mu_x.shape[0]

        def anchored() -> list[np.ndarray]:
            acc = np.zeros_like(mu_x)
            for A in iter_chunks(text_emb, "text_emb", cs):
                acc += self._anchor_trace(A).sum(axis=0)
            return [acc]

        self.mu_y_prime_ = all_reduce_sums(anchored, group, "ReAlign's µ'_y")[0] / n_y
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "mu_y_prime_"):
            raise NotFittedError(
                "This ReAlign instance is not fitted yet; call fit(image_emb, text_emb) first"
            )

    def _anchor_trace(self, E: np.ndarray) -> np.ndarray:
        """Steps 1–2 on L2-normalised text rows E (m, d) → e'_y (m, d), unit-norm."""
        tilde = self.mu_x_ + self.scale_ * (E - self.mu_y_)  # ẽ_y
        return l2_normalize(tilde, "trace-scaled text (ẽ_y)")

    def _apply(self, E: np.ndarray, steps: str) -> np.ndarray:
        if steps == "anchor":
            return E - self.mu_y_ + self.mu_x_  # ė_y, not renormalised (spec step 1)
        e1 = self._anchor_trace(E)  # e'_y
        if steps == "anchor+trace":
            return e1
        return l2_normalize(e1 - self.mu_y_prime_ + self.mu_x_, "centred text (e''_y)")  # ê_y

    def transform(self, text_emb: Chunks, steps: Steps | None = None) -> np.ndarray:
        """Map text embeddings onto the image distribution.

        Args:
            text_emb: (m, d) raw text embeddings (or chunks), L2-normalised here; any text,
                fit set or held-out.
            steps: override the instance's ``steps`` for this call (for the ablation).

        Returns:
            (m, d) float64 aligned text: ê_y for ``"full"``; e'_y for ``"anchor+trace"``;
            ė_y (not unit-norm) for ``"anchor"``.
        """
        self._check_fitted()
        steps = _check_steps(self.steps if steps is None else steps)
        out = []
        for A in iter_chunks(text_emb, "text_emb", int(self.chunk_size)):
            if A.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"text_emb has dimension {A.shape[1]} but ReAlign was fitted on "
                    f"{self.n_features_in_}-d embeddings"
                )
            out.append(self._apply(A, steps))
        if not out:
            raise ValueError("text_emb is empty; nothing to transform")
        return np.concatenate(out, axis=0)

    def fit_transform(self, image_emb: Chunks, text_emb: Chunks) -> np.ndarray:
        """``fit(image_emb, text_emb).transform(text_emb)`` — the aligned fit text."""
        return self.fit(image_emb, text_emb).transform(text_emb)

    def statistics(self) -> dict[str, Any]:
        """Fitted statistics as plain Python (for summary.json and stability plots)."""
        self._check_fitted()
        return {
            "n_image": self.n_image_,
            "n_text": self.n_text_,
            "trace_x": self.trace_x_,
            "trace_y": self.trace_y_,
            "scale": self.scale_,
            "fit_gap": float(np.linalg.norm(self.mu_x_ - self.mu_y_)),
        }


class C3:
    """C3 baseline (collapse + corrupt): mean-centre each modality, add Gaussian noise to text.

    ``transform(text)`` = (ŷ − µ_y) + σ·N(0, I) and ``transform_image(image)`` = x̂ − µ_x, with x̂,
    ŷ L2-normalised and µ their fit means. Outputs are *not* renormalised, so the two modalities
    meet at the origin: compare C3 text against ``transform_image`` images, not raw images.

    Args:
        sigma: per-coordinate noise std. ReAlign does not give C3's σ [our reading: a parameter;
            the default 0.02 adds noise of norm ≈ 0.02·sqrt(d), comparable to the residual
            spread of a 384–512-d CLIP-like space].
        seed: seeds the noise; ``transform`` on the same input gives the same output.
    """

    def __init__(self, sigma: float = 0.02, seed: int = 0) -> None:
        self.sigma = sigma
        self.seed = seed

    def fit(self, image_emb: Any, text_emb: Any, *, group: Any = None) -> C3:
        """Estimate µ_x, µ_y from unpaired (n_x, d) / (n_y, d) raw embeddings (or chunks).

        ``group``: as in :meth:`ReAlign.fit` (this rank's rows; means over all ranks' rows).
        """
        as_float(self.sigma, "sigma", lo=0.0)
        as_int(self.seed, "seed", lo=0)
        self.mu_x_, n_x = _mean_and_count(image_emb, "image_emb", 10_000, group)
        self.mu_y_, n_y = _mean_and_count(text_emb, "text_emb", 10_000, group)
        if self.mu_x_.shape != self.mu_y_.shape:
            raise ValueError(
                f"image_emb has dimension {self.mu_x_.shape[0]} but text_emb has "
                f"{self.mu_y_.shape[0]}; both modalities must live in the same space"
            )
        self.n_image_, self.n_text_, self.n_features_in_ = n_x, n_y, self.mu_x_.shape[0]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "mu_x_"):
            raise NotFittedError(
                "This C3 instance is not fitted yet; call fit(image_emb, text_emb)"
            )

    def _rows(self, X: Any, name: str) -> np.ndarray:
        A = l2_normalize(as_matrix(X, name, min_rows=1), name)
        if A.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has dimension {A.shape[1]}, C3 was fitted on {self.n_features_in_}"
            )
        return A

    def transform(self, text_emb: Any) -> np.ndarray:
        """(m, d) raw text → (m, d) centred, noised text (float64, not unit-norm)."""
        self._check_fitted()
        Y = self._rows(text_emb, "text_emb")
        noise = np.random.default_rng(self.seed).standard_normal(Y.shape)
        return Y - self.mu_y_ + self.sigma * noise

    def transform_image(self, image_emb: Any) -> np.ndarray:
        """(m, d) raw images → (m, d) mean-centred images (no noise: C3 corrupts only text)."""
        self._check_fitted()
        return self._rows(image_emb, "image_emb") - self.mu_x_
