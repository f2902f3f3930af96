"""Bad input never produces a result: the battery of issue 19 over every public probe.

Every name in each ``workbench.probes`` submodule's ``__all__`` (and the estimators' methods) is
called with one argument at a time replaced by a bad input of its kind (``tests/probe_battery.py``
lists them). A call must either raise a ``ValueError``/``TypeError`` naming the argument, or
return a finite result — equal to the clean input's where the input means the same thing (a
list, a memmap, a bf16 or requires-grad tensor of the same values).

``python tests/probe_battery.py`` prints the counts; ``-v`` lists every failure.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from probe_battery import (
    Arg,
    Case,
    Mutation,
    cases,
    clean_kwargs,
    coverage_gaps,
    entries,
    non_finite,
    run_case,
)

ALL_CASES = cases()
BAD = ("unhelpful_error", "wrong_result")


def _report(outcomes) -> str:
    return "\n".join(f"{o.outcome}: {o.case.id}: {o.detail[:300]}" for o in outcomes)


def test_every_public_probe_is_in_the_battery():
    """A new probe must get a battery entry (or be listed as a result type / constant)."""
    assert coverage_gaps() == []


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e.name)
def test_clean_inputs_give_a_finite_result(entry):
    """The battery's reference calls work, so every 'equal to the clean result' check means it."""
    from probe_battery import _call

    if entry.clean_expect != "valid":
        pytest.skip("this entry's clean arguments are themselves the bad input")
    result = _call(entry, clean_kwargs(entry))
    assert non_finite(result, entry.nonfinite_ok) is None


def test_the_whole_battery_gives_no_unhelpful_error_and_no_wrong_result():
    """Every case of the battery (about 4,000 calls; a few seconds)."""
    torch.set_num_threads(1)
    outcomes = [run_case(c) for c in ALL_CASES]
    counts = Counter(o.outcome for o in outcomes)
    failures = [o for o in outcomes if o.outcome in BAD]
    assert not failures, f"{dict(counts)}\n{_report(failures)}"
    assert counts["clear_error"] > 2000 and counts["handled"] > 1000  # the battery ran


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(ALL_CASES))
def test_any_battery_case(case):
    """Hypothesis' draw of the battery: the same property, case by case (shrinks to one call)."""
    outcome = run_case(case)
    assert outcome.outcome not in BAD, f"{case.id}: {outcome.detail}"


# -- generated bad arrays: any position, any non-finite value, any shape and dtype ---------------
def _matrix_args() -> list[tuple[object, str]]:
    out = []
    for entry in entries():
        for name, arg in entry.args.items():
            clean = arg.clean()
            if isinstance(clean, np.ndarray) and clean.ndim == 2 and arg.mutations:
                out.append((entry, name))
    return out


MATRIX_ARGS = _matrix_args()


def _case(entry, name: str, value, expect: str) -> Case:
    return Case(entry, name, Mutation("generated", lambda _: value, expect))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(MATRIX_ARGS),
    where=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_a_non_finite_entry_anywhere_is_refused_by_name(target, where, value):
    entry, name = target
    A = np.array(entry.args[name].clean(), dtype=np.float64)
    A[where[0] % A.shape[0], where[1] % A.shape[1]] = value
    outcome = run_case(_case(entry, name, A, "invalid"))
    assert outcome.outcome == "clear_error", f"{entry.name}:{name}: {outcome.detail}"


_DTYPES = st.sampled_from(
    [np.float64, np.float32, np.float16, np.int64, np.int8, np.bool_, np.complex128]
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(MATRIX_ARGS),
    array=hnp.arrays(
        dtype=_DTYPES,
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
        elements={"allow_nan": True, "allow_infinity": True},
    ),
    as_tensor=st.booleans(),
)
def test_arbitrary_arrays_give_a_clear_error_or_a_finite_result(target, array, as_tensor):
    """Whatever array arrives (any rank, size, dtype, values), never an internal error."""
    entry, name = target
    value = array
    if as_tensor and array.dtype != np.complex128:
        value = torch.from_numpy(np.ascontiguousarray(array))
    outcome = run_case(_case(entry, name, value, "either"))
    assert outcome.outcome not in BAD, (
        f"{entry.name}:{name} {array.dtype}{array.shape}: {outcome.detail}"
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(MATRIX_ARGS),
    scale=st.sampled_from([1e-3, 1e3, 1e40, 1e-40, 1e100]),
)
def test_rescaled_data_inside_float64_range_is_measured(target, scale):
    """Scale-invariant probes (cosines) give the clean result on rescaled data; others a
    finite result (or refuse clearly)."""
    entry, name = target
    arg: Arg = entry.args[name]
    A = np.asarray(arg.clean(), dtype=np.float64) * scale
    outcome = run_case(Case(entry, name, Mutation("scale-generated", lambda _: A, "either")))
    assert outcome.outcome not in BAD, f"{entry.name}:{name} ×{scale:g}: {outcome.detail}"
