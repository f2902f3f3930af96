"""Input checks shared by every public entry point: one place that names what is wrong.

Every public probe accepts numpy arrays, torch tensors on any device (fp16/bf16 are upcast,
``requires_grad`` tensors are detached), memory-mapped arrays, and array-likes (lists). Errors
are ``ValueError`` (a bad value) or ``TypeError`` (a value of the wrong kind) whose message says
*which* argument is bad, *what* is wrong and, where it helps, *where* (first offending row) and
how to fix it. The checks, by kind of argument:

==================  ==========================================================================
arrays              :func:`as_matrix` (n, d), :func:`as_vector` (d,), :func:`as_array` (any
                    fixed rank): real floats, finite, non-empty, magnitudes inside float64's
                    square range (:data:`MAX_ABS`)
label vectors       :func:`as_labels`: integer (or string) class ids, one per row;
                    :func:`as_class_ids` when they index class prompts
class prompts       :func:`as_class_prompts`: (K, D) or (K, T, D) real floats
similarity / ranks  :func:`as_matrix` (finite floats, ``min_rows=1``) / :func:`as_indices`
index vectors       :func:`as_indices`: integer positions in ``[0, n)`` (``-1`` padding opt-in)
scalars             :func:`as_int`, :func:`as_float`, :func:`as_bool`, :func:`as_choice`
names / sequences   :func:`as_names` (a bare string is refused, never split into characters),
                    :func:`as_int_tuple`, :func:`as_float_tuple`
degenerate spectra  :func:`roundoff` and :func:`spectral_floor`: the one scale-relative
                    tolerance below which a norm, variance or singular value is round-off
==================  ==========================================================================

Methods check their hyper-parameters with :func:`require` in ``__init__``.
"""

from __future__ import annotations

from typing import Any

from workbench._validate.arrays import (
    MAX_ABS,
    as_array,
    as_class_prompts,
    as_matrix,
    as_vector,
    check_finite_rows,
    check_magnitude,
    check_paired,
    check_same_dim,
    l2_normalize,
    row_norms,
    to_numpy,
)
from workbench._validate.tolerance import roundoff, spectral_floor
from workbench._validate.values import (
    as_bool,
    as_choice,
    as_class_ids,
    as_float,
    as_float_tuple,
    as_indices,
    as_int,
    as_int_tuple,
    as_labels,
    as_names,
)

__all__ = [
    "MAX_ABS",
    "as_array",
    "as_bool",
    "as_choice",
    "as_class_ids",
    "as_class_prompts",
    "as_float",
    "as_float_tuple",
    "as_indices",
    "as_int",
    "as_int_tuple",
    "as_labels",
    "as_matrix",
    "as_mixture",
    "as_names",
    "as_vector",
    "check_finite_rows",
    "check_magnitude",
    "check_paired",
    "check_same_dim",
    "l2_normalize",
    "require",
    "roundoff",
    "row_norms",
    "spectral_floor",
    "to_numpy",
]


def require(ok: bool, owner: str, name: str, value: Any, want: str) -> None:
    """Raise ``ValueError("<owner>: <name> must be <want>, got <value!r>")`` unless ``ok``.

    >>> require(0.1 > 0, "sde", "alpha0", 0.1, ">= 0")
    >>> require(-1 >= 0, "sde", "alpha0", -1, ">= 0")
    Traceback (most recent call last):
    ...
    ValueError: sde: alpha0 must be >= 0, got -1
    """
    if not ok:
        raise ValueError(f"{owner}: {name} must be {want}, got {value!r}")


def as_mixture(value: Any, owner: str, name: str = "mixture") -> tuple[tuple[Any, ...], ...]:
    """A training mixture as a tuple of ``(dataset, split, size)`` triples, or a ``ValueError``
    naming ``owner`` and ``name`` (a bare string, an empty sequence, a non-triple entry).

    >>> as_mixture([("digits", "train", 100)], "Recipe")
    (('digits', 'train', 100),)
    >>> as_mixture(["digits"], "Recipe")
    Traceback (most recent call last):
    ...
    ValueError: Recipe: mixture must be a non-empty sequence of (dataset, split, size) triples, got ['digits']
    """
    want = "a non-empty sequence of (dataset, split, size) triples"
    ok = not isinstance(value, str) and isinstance(value, (list, tuple)) and len(value) > 0
    ok = ok and all(
        isinstance(m, (list, tuple)) and len(m) == 3 and isinstance(m[0], str) for m in value
    )
    require(ok, owner, name, value, want)
    return tuple(tuple(m) for m in value)
