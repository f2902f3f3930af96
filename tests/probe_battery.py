"""The bad-input battery of issue 19: every public probe and estimator method, every bad input.

Each entry of :data:`ENTRIES` says how to call one public entry point with clean inputs and what
each argument is (an (n, d) matrix, a label vector, a similarity matrix, a scalar...). The
battery mutates one argument at a time with the bad inputs of its kind (NaN/±Inf in one row,
empty, 1-D/3-D, int/bool/object/complex, lists, fp16/bf16/requires-grad tensors, memmaps, zero,
constant and duplicated rows, extreme magnitudes, mismatched modalities, bad labels, bad scalar
arguments) and classifies what happened:

- ``clear_error``: a ``ValueError``/``TypeError`` whose message names the argument;
- ``handled``: a result, equal to the clean input's where the input means the same thing (a list,
  a memmap, a bf16 tensor of the same values) and finite where it is a different, valid input;
- ``unhelpful_error``: any other exception, one that does not name the argument, or an error for
  an input that is valid (a memmap refused);
- ``wrong_result``: a result for an input that is invalid, a non-finite result, or a result that
  differs from the clean input's.

``python tests/probe_battery.py`` prints the counts (``-v`` lists every failure); the test module
``tests/test_probe_battery.py`` drives the same battery with hypothesis and exhaustively.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import math
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

SUBMODULES = (
    "spectra",
    "ranks",
    "group_spectra",
    "partitions",
    "geometry",
    "subspace",
    "gap",
    "realign",
    "fixed_frame",
    "distribution",
    "separability",
    "perception",
    "compositional",
    "retrieval",
)

# Exported names that are not entry points taking user input: result dataclasses, registries,
# constants. Everything else in a probes submodule's __all__ needs an entry below.
NOT_ENTRY_POINTS = {
    "Spectrum",  # its constructor is internal; Spectrum.from_singular_values has an entry
    "PowerLawFit",
    "EFFECTIVE_RANKS",
    "PARTITIONS",
    "Partition",
    "Anisotropy",
    "CosineDistribution",
    "SingularVectorAlignment",
    "ConeResult",
    "GapReport",
    "ShiftResult",
    "REALIGN_STEPS",
    "Decomposition",
    "PhantomDrift",
    "PobDrift",
    "UVCoupling",
    "CosineKDE",
    "KnnMixing",
    "PROMPT_TEMPLATES",
    "ClassScatter",
    "ClusteringScores",
    "LinearProbeResult",
    "MMVP_CATEGORIES",
    "MMVP_PREFIX",
    "MMVPResult",
    "CompositionalResult",
    "NegativeSet",
}

OUTCOMES = ("clear_error", "handled", "unhelpful_error", "wrong_result")


# -- clean data --------------------------------------------------------------------------------
N, D, K = 24, 6, 3


@cache
def _clean() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shift = np.zeros(D)
    shift[0] = 2.0
    X = rng.normal(size=(N, D)) + shift  # (N, D) images, a cone off the origin
    Y = 0.6 * X + rng.normal(size=(N, D)) - 2 * np.roll(shift, 1)  # (N, D) paired texts
    labels = np.repeat(np.arange(K), N // K)  # (N,) balanced
    X[labels == 1] += 1.5
    return {
        "X": X,
        "Y": Y,
        "X2": X + 0.3 * rng.normal(size=(N, D)),
        "Y2": Y + 0.3 * rng.normal(size=(N, D)),
        "Z": rng.normal(size=(10, D)) - 1.0,  # held-out text
        "labels": labels,
        "A": rng.normal(size=(D, 2)),  # subspace bases
        "B": rng.normal(size=(D, 3)),
        "prompts": rng.normal(size=(K, 2, D)),  # (K, T, D) class prompts
        "sv": np.sort(rng.uniform(0.1, 5.0, size=D))[::-1].copy(),
        "cov": np.cov(rng.normal(size=(40, D)), rowvar=False),
        "mu": rng.normal(size=D) + 3.0,
        "sim": rng.normal(size=(8, 8)) + 2 * np.eye(8),
        "logits": rng.normal(size=(9, 2, 2)) + np.eye(2) * 1.5,
        "emb3": rng.normal(size=(9, 2, D)),
        "ranks": rng.integers(0, 6, size=20),
    }


def data(key: str) -> np.ndarray:
    return _clean()[key].copy()


# -- fakes for the entry points that take an encoder, pairs or a dataset -----------------------
def _hash_vec(key: bytes, dim: int = D) -> np.ndarray:
    raw = hashlib.sha256(key).digest()
    return np.frombuffer(raw, dtype=np.uint8)[:dim].astype(np.float64) / 255.0 - 0.5


class FakeEncoder:
    """Deterministic encoder: texts and images map to hash-derived D-dim vectors."""

    def __init__(self) -> None:
        self.logit_scale = torch.tensor(math.log(100.0))

    def encode_texts(self, texts: Any, normalize: bool = True) -> torch.Tensor:
        T = torch.tensor(np.stack([_hash_vec(str(t).encode()) for t in texts]))
        return torch.nn.functional.normalize(T, dim=-1) if normalize else T

    def encode_images(self, images: Any, normalize: bool = True) -> torch.Tensor:
        I = torch.tensor(np.stack([_hash_vec(np.asarray(im).tobytes()) for im in images]))
        return torch.nn.functional.normalize(I, dim=-1) if normalize else I


@cache
def _images(n: int = 12) -> tuple[Any, ...]:
    from PIL import Image

    rng = np.random.default_rng(1)
    return tuple(
        Image.fromarray(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)) for _ in range(n)
    )


def _pairs() -> list[Any]:
    from workbench.data.base import MMVP_CATEGORIES, MMVPPair

    ims = _images(18)
    return [
        MMVPPair(MMVP_CATEGORIES[i], (ims[2 * i], ims[2 * i + 1]), (f"s{i} a", f"s{i} b"))
        for i in range(9)
    ]


CAPTIONS = tuple(
    f"a {c} {s} on the {p}"
    for c, s, p in zip(
        ("red", "blue", "green", "small", "large", "yellow", "black", "white", "pink", "grey"),
        ("circle", "square", "star", "cube", "ball", "cone", "ring", "disk", "box", "cross"),
        ("left", "right", "top", "bottom", "left", "right", "top", "bottom", "left", "right"),
    )
)


# -- arguments and their bad inputs ------------------------------------------------------------
@dataclass(frozen=True)
class Mutation:
    """One bad (or equivalent) input for an argument.

    ``expect``: ``"valid"`` (same meaning as the clean input: the result must equal the result on
    ``reference(clean)``), ``"invalid"`` (must raise a clear error) or ``"either"`` (a clear error
    or a finite result).
    """

    name: str
    apply: Callable[[Any], Any]
    expect: str
    reference: Callable[[Any], Any] | None = None


def _memmap(A: np.ndarray) -> np.ndarray:
    path = Path(_tmpdir()) / f"mm-{abs(hash(A.tobytes()))}-{A.dtype}-{A.shape}.npy"
    np.save(path, A)
    return np.load(path, mmap_mode="r")


@cache
def _tmpdir() -> str:
    return tempfile.mkdtemp(prefix="wb-battery-")


def _set(A: np.ndarray, index: Any, value: float) -> np.ndarray:
    B = np.array(A, dtype=np.float64)
    B[index] = value
    return B


def _round(dtype: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Reference input for a lower-precision version: the rounded values, as float32."""

    def ref(A: np.ndarray) -> np.ndarray:
        if dtype == "bf16":
            return torch.from_numpy(np.asarray(A, np.float32)).bfloat16().float().numpy()
        return np.asarray(np.asarray(A).astype(dtype), np.float32)

    return ref


def _torch(dtype: torch.dtype, grad: bool = False) -> Callable[[np.ndarray], torch.Tensor]:
    def f(A: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.asarray(A, np.float64), dtype=dtype, requires_grad=grad)

    return f


def array_mutations(
    *, rows: bool = True, ndim: int = 2, int_ok: bool = False, zero: str = "either"
) -> list[Mutation]:
    """Mutations of a float array; ``rows``: the first axis holds samples (n, ...)."""
    out = [
        Mutation("nan", lambda A: _set(A, (0,) * ndim, np.nan), "invalid"),
        Mutation("inf", lambda A: _set(A, (-1,) * ndim, np.inf), "invalid"),
        Mutation("-inf", lambda A: _set(A, (1,) * ndim, -np.inf), "invalid"),
        Mutation("empty", lambda A: np.asarray(A)[:0], "invalid"),
        Mutation("ndim-1", lambda A: np.asarray(A)[0], "invalid"),
        Mutation("ndim+1", lambda A: np.asarray(A)[None], "invalid"),
        Mutation(
            "int",
            lambda A: np.round(np.asarray(A) * 4).astype(np.int64),
            "either" if int_ok else "invalid",
        ),
        Mutation("bool", lambda A: np.asarray(A) > 0, "invalid"),
        Mutation("object", lambda A: np.asarray(A).astype(object), "either"),
        Mutation("complex", lambda A: np.asarray(A).astype(np.complex128), "invalid"),
        Mutation("str", lambda A: np.asarray(A).astype(str), "invalid"),
        Mutation("list", lambda A: np.asarray(A).tolist(), "valid", lambda A: A),
        Mutation("float32", lambda A: np.asarray(A, np.float32), "valid", _round(np.float32)),
        Mutation(
            "float16", lambda A: np.asarray(A).astype(np.float16), "valid", _round(np.float16)
        ),
        Mutation("torch-f64", _torch(torch.float64), "valid", lambda A: A),
        Mutation("torch-f16", _torch(torch.float16), "valid", _round(np.float16)),
        Mutation("torch-bf16", _torch(torch.bfloat16), "valid", _round("bf16")),
        Mutation("torch-grad", _torch(torch.float32, grad=True), "valid", _round(np.float32)),
        Mutation("memmap", lambda A: _memmap(np.asarray(A, np.float64)), "valid", lambda A: A),
        Mutation(
            "fortran",
            lambda A: np.asfortranarray(np.asarray(A, np.float64)),
            "valid",
            lambda A: A,
        ),
        Mutation("scale-1e200", lambda A: np.asarray(A) * 1e200, "either"),
        Mutation("scale-1e-200", lambda A: np.asarray(A) * 1e-200, "either"),
        Mutation("scale-1e160", lambda A: np.asarray(A) * 1e160, "either"),
        Mutation("none", lambda A: None, "invalid"),
        Mutation("scalar", lambda A: 1.0, "invalid"),
    ]
    if rows:
        out += [
            Mutation("zero-row", lambda A: _set(A, 1, 0.0), zero),
            Mutation(
                "constant-rows",
                lambda A: np.repeat(np.asarray(A, np.float64)[:1], len(A), axis=0),
                "either",
            ),
            Mutation(
                "duplicated-rows",
                lambda A: np.concatenate([np.asarray(A)[: len(A) // 2]] * 2),
                "either",
            ),
            Mutation("one-row", lambda A: np.asarray(A)[:1], "either"),
        ]
    return out


def labels_mutations(*, strings: str = "valid", negative: str = "invalid") -> list[Mutation]:
    def strs(y: np.ndarray) -> np.ndarray:
        return np.array([f"c{int(v)}" for v in y])

    return [
        Mutation("list", lambda y: np.asarray(y).tolist(), "valid", lambda y: y),
        Mutation("torch", lambda y: torch.tensor(y), "valid", lambda y: y),
        Mutation("float-integral", lambda y: np.asarray(y, np.float64), "valid", lambda y: y),
        Mutation("float-fraction", lambda y: np.asarray(y) + 0.5, "invalid"),
        Mutation("nan", lambda y: _set(y, 0, np.nan), "invalid"),
        Mutation("inf", lambda y: _set(y, 0, np.inf), "invalid"),
        Mutation("bool", lambda y: np.asarray(y) > 0, "invalid"),
        Mutation("complex", lambda y: np.asarray(y).astype(np.complex128), "invalid"),
        Mutation("2-D", lambda y: np.asarray(y)[:, None], "invalid"),
        Mutation("short", lambda y: np.asarray(y)[:-1], "invalid"),
        Mutation("empty", lambda y: np.asarray(y)[:0], "invalid"),
        Mutation("none", lambda y: None, "invalid"),
        Mutation("scalar", lambda y: 1, "invalid"),
        Mutation("one-class", lambda y: np.zeros_like(y), "invalid"),
        Mutation("negative", lambda y: np.where(np.arange(len(y)) == 0, -1, y), negative),
        Mutation("strings", strs, strings, (lambda y: y) if strings == "valid" else None),
        Mutation(
            "mixed-object", lambda y: np.array([1, "a"] * (len(y) // 2), dtype=object), "invalid"
        ),
    ]


def int_mutations(
    lo: int | None, hi: int | None, none_ok: bool, huge: str = "either"
) -> list[Mutation]:
    out = [
        Mutation("bool", lambda v: True, "invalid"),
        Mutation("fraction", lambda v: 2.5, "invalid"),
        Mutation("string", lambda v: "3", "invalid"),
        Mutation("nan", lambda v: float("nan"), "invalid"),
        Mutation("inf", lambda v: float("inf"), "invalid"),
        Mutation("list", lambda v: [v], "invalid"),
        Mutation("numpy-int", lambda v: v if v is None else np.int64(v), "valid", lambda v: v),
        Mutation("none", lambda v: None, "either" if none_ok else "invalid"),
    ]
    if huge != "skip":  # a count so large the call would run for hours is not probed
        out.append(Mutation("huge", lambda v: 10**12, "invalid" if hi is not None else huge))
    if lo is not None:
        out.append(Mutation("below", lambda v: lo - 1, "invalid"))
        out.append(Mutation("very-negative", lambda v: -(10**6), "invalid"))
    return out


def float_mutations(
    lo: float | None, hi: float | None, *, lo_open: bool, hi_open: bool = False, none_ok: bool
) -> list[Mutation]:
    out = [
        Mutation("bool", lambda v: True, "invalid"),
        Mutation("string", lambda v: "0.5", "invalid"),
        Mutation("nan", lambda v: float("nan"), "invalid"),
        Mutation("inf", lambda v: float("inf"), "invalid" if hi is not None else "either"),
        Mutation("-inf", lambda v: float("-inf"), "invalid"),
        Mutation("list", lambda v: [v], "invalid"),
        Mutation("numpy-float", lambda v: v if v is None else np.float64(v), "valid", lambda v: v),
        Mutation("none", lambda v: None, "either" if none_ok else "invalid"),
        Mutation("complex", lambda v: complex(v, 1), "invalid"),
    ]
    if lo is not None:
        out.append(Mutation("below", lambda v: lo - 1.0, "invalid"))
        out.append(Mutation("at-lo", lambda v: lo, "invalid" if lo_open else "either"))
    if hi is not None:
        out.append(Mutation("above", lambda v: hi + 1.0, "invalid"))
        out.append(Mutation("at-hi", lambda v: hi, "invalid" if hi_open else "either"))
    return out


def bool_mutations() -> list[Mutation]:
    return [
        Mutation("string", lambda v: "False", "invalid"),
        Mutation("none", lambda v: None, "invalid"),
        Mutation("two", lambda v: 2, "invalid"),
        Mutation("numpy-bool", lambda v: np.bool_(v), "valid", lambda v: v),
        Mutation("list", lambda v: [v], "invalid"),
    ]


def choice_mutations(none_ok: bool = False) -> list[Mutation]:
    return [
        Mutation("unknown", lambda v: "nope", "invalid"),
        Mutation("int", lambda v: 3, "invalid"),
        Mutation("none", lambda v: None, "either" if none_ok else "invalid"),
        Mutation("list", lambda v: [v], "invalid"),
    ]


def strings_mutations(*, none_ok: bool = False, min_len: int = 1) -> list[Mutation]:
    return [
        Mutation("bare-string", lambda v: "abc", "invalid"),
        Mutation("json-string", lambda v: '["abc", "def"]', "invalid"),
        Mutation("tuple", lambda v: tuple(v), "valid", lambda v: v),
        Mutation("numpy", lambda v: np.array(list(v)), "valid", lambda v: v),
        Mutation("ints", lambda v: list(range(len(v))), "invalid"),
        Mutation("empty", lambda v: [], "invalid" if min_len > 0 else "either"),
        Mutation("none", lambda v: None, "either" if none_ok else "invalid"),
        Mutation("with-none", lambda v: [*list(v)[:-1], None], "invalid"),
        Mutation("int", lambda v: 3, "invalid"),
    ]


def int_seq_mutations(*, lo: int | None = 0, min_len: int = 1) -> list[Mutation]:
    out = [
        Mutation("bare-int", lambda v: 3, "invalid"),
        Mutation("string", lambda v: "123", "invalid"),
        Mutation("tuple", lambda v: tuple(v), "valid", lambda v: v),
        Mutation("numpy", lambda v: np.asarray(v), "valid", lambda v: v),
        Mutation("fraction", lambda v: [1.5, *list(v)[1:]], "invalid"),
        Mutation("nan", lambda v: [float("nan"), *list(v)[1:]], "invalid"),
        Mutation("bools", lambda v: [True] * len(v), "invalid"),
        Mutation("empty", lambda v: [], "invalid" if min_len > 0 else "either"),
        Mutation("none", lambda v: None, "invalid"),
        Mutation("2-D", lambda v: [list(v)], "invalid"),
    ]
    if lo is not None:
        out.append(Mutation("below", lambda v: [lo - 1, *list(v)[1:]], "invalid"))
    return out


def vector_mutations(*, int_ok: bool = True) -> list[Mutation]:
    out = array_mutations(rows=False, ndim=1, int_ok=int_ok)
    out += [
        Mutation("short", lambda v: np.asarray(v)[:-1], "invalid"),
        Mutation("zero", lambda v: np.zeros_like(np.asarray(v, np.float64)), "either"),
    ]
    return out


def sv_mutations() -> list[Mutation]:
    out = array_mutations(rows=False, ndim=1, int_ok=True)
    out += [
        Mutation("negative", lambda v: _set(v, -1, -1.0), "invalid"),
        Mutation("all-zero", lambda v: np.zeros(len(v)), "either"),
        Mutation("unsorted", lambda v: np.asarray(v)[::-1], "either"),
    ]
    return out


def square_mutations() -> list[Mutation]:
    out = array_mutations(rows=False, ndim=2, int_ok=True)
    out += [
        Mutation("non-square", lambda M: np.asarray(M)[:-1], "invalid"),
        Mutation("asymmetric", lambda M: _set(M, (0, 1), 5.0), "invalid"),
        Mutation("negative-definite", lambda M: -np.eye(len(M)), "invalid"),
        Mutation("zero", lambda M: np.zeros_like(np.asarray(M, np.float64)), "either"),
    ]
    return out


def ranks_mutations() -> list[Mutation]:
    return [
        Mutation("list", lambda r: np.asarray(r).tolist(), "valid", lambda r: r),
        Mutation("torch", lambda r: torch.tensor(r), "valid", lambda r: r),
        Mutation("float-integral", lambda r: np.asarray(r, np.float64), "valid", lambda r: r),
        Mutation("float-fraction", lambda r: np.asarray(r) + 0.5, "invalid"),
        Mutation("nan", lambda r: _set(r, 0, np.nan), "invalid"),
        Mutation("negative", lambda r: _set(r, 0, -1), "invalid"),
        Mutation("bool", lambda r: np.asarray(r) > 0, "invalid"),
        Mutation("2-D", lambda r: np.asarray(r)[None], "invalid"),
        Mutation("empty", lambda r: np.asarray(r)[:0], "invalid"),
        Mutation("none", lambda r: None, "invalid"),
        Mutation("complex", lambda r: np.asarray(r).astype(complex), "invalid"),
        Mutation("strings", lambda r: np.asarray(r).astype(str), "invalid"),
    ]


def index_mutations(*, n: int, padding: bool = False, none_ok: bool = False) -> list[Mutation]:
    return [
        Mutation("list", lambda v: np.asarray(v).tolist(), "valid", lambda v: v),
        Mutation("torch", lambda v: torch.tensor(v), "valid", lambda v: v),
        Mutation(
            "out-of-range",
            lambda v: np.where(np.asarray(v) == np.asarray(v).flat[0], n, v),
            "invalid",
        ),
        Mutation(
            "negative",
            lambda v: _set(v, (0,) * np.ndim(v), -1 if padding else -2).astype(np.int64),
            "invalid",
        ),
        Mutation("float-fraction", lambda v: np.asarray(v) + 0.5, "invalid"),
        Mutation("nan", lambda v: _set(v, (0,) * np.ndim(v), np.nan), "invalid"),
        Mutation("bool", lambda v: np.asarray(v) > 0, "invalid"),
        Mutation("short", lambda v: np.asarray(v)[:-1], "invalid"),
        Mutation("extra-dim", lambda v: np.asarray(v)[..., None, None], "invalid"),
        Mutation("empty", lambda v: np.asarray(v)[:0], "invalid"),
        Mutation("none", lambda v: None, "either" if none_ok else "invalid"),
        Mutation("strings", lambda v: np.asarray(v).astype(str), "invalid"),
    ]


def object_mutations(empty: str = "invalid") -> list[Mutation]:
    return [
        Mutation("none", lambda v: None, "invalid"),
        Mutation("empty", lambda v: [], empty),
        Mutation("string", lambda v: "abc", "invalid"),
        Mutation("int", lambda v: 3, "invalid"),
    ]


@dataclass(frozen=True)
class Arg:
    """One argument of an entry: its clean value and the mutations that apply to it.

    Attributes:
        clean: zero-argument factory of the clean value.
        mutations: the bad inputs to try.
        names: strings an error about this argument may name (default: the argument's name).
        expect: overrides of a mutation's expectation, by mutation name.
        scale_invariant: results do not depend on the argument's scale (cosine probes): a
            rescaled input must then give the clean result (or a clear error).
    """

    clean: Callable[[], Any]
    mutations: tuple[Mutation, ...]
    names: tuple[str, ...] = ()
    expect: dict[str, str] = field(default_factory=dict)
    scale_invariant: bool = False


def M(
    key: str, *, names: tuple[str, ...] = (), scale_invariant: bool = False, **expect: str
) -> Arg:
    """An (n, d) matrix argument from clean data ``key``."""
    return Arg(lambda: data(key), tuple(array_mutations()), names, _keys(expect), scale_invariant)


def _keys(expect: dict[str, str]) -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in expect.items()}


def Lab(
    key: str = "labels",
    *,
    names: tuple[str, ...] = (),
    strings: str = "valid",
    negative: str = "invalid",
    **expect: str,
) -> Arg:
    return Arg(
        lambda: data(key),
        tuple(labels_mutations(strings=strings, negative=negative)),
        names,
        _keys(expect),
    )


def Int(
    value: int | None,
    lo: int | None = None,
    hi: int | None = None,
    *,
    none_ok: bool = False,
    huge: str = "either",
    names: tuple[str, ...] = (),
    **expect: str,
) -> Arg:
    return Arg(lambda: value, tuple(int_mutations(lo, hi, none_ok, huge)), names, _keys(expect))


def Float(
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    none_ok: bool = False,
    names: tuple[str, ...] = (),
    **expect: str,
) -> Arg:
    return Arg(
        lambda: value,
        tuple(float_mutations(lo, hi, lo_open=lo_open, hi_open=hi_open, none_ok=none_ok)),
        names,
        _keys(expect),
    )


def Bool(value: bool, **expect: str) -> Arg:
    return Arg(lambda: value, tuple(bool_mutations()), (), _keys(expect))


def Choice(value: str, *, none_ok: bool = False, names: tuple[str, ...] = ()) -> Arg:
    return Arg(lambda: value, tuple(choice_mutations(none_ok)), names)


def Strings(
    value: Any,
    *,
    none_ok: bool = False,
    min_len: int = 1,
    names: tuple[str, ...] = (),
    **expect: str,
) -> Arg:
    return Arg(
        lambda: list(value),
        tuple(strings_mutations(none_ok=none_ok, min_len=min_len)),
        names,
        _keys(expect),
    )


def IntSeq(value: Any, *, lo: int | None = 0, names: tuple[str, ...] = (), **expect: str) -> Arg:
    return Arg(lambda: list(value), tuple(int_seq_mutations(lo=lo)), names, _keys(expect))


def Vec(key: str, *, names: tuple[str, ...] = (), int_ok: bool = True, **expect: str) -> Arg:
    return Arg(lambda: data(key), tuple(vector_mutations(int_ok=int_ok)), names, _keys(expect))


def SV(key: str = "sv", *, names: tuple[str, ...] = (), **expect: str) -> Arg:
    return Arg(lambda: data(key), tuple(sv_mutations()), names, _keys(expect))


def Square(key: str = "cov", *, names: tuple[str, ...] = (), **expect: str) -> Arg:
    return Arg(lambda: data(key), tuple(square_mutations()), names, _keys(expect))


def Arr(
    key: str,
    ndim: int,
    *,
    rows: bool = False,
    int_ok: bool = False,
    names: tuple[str, ...] = (),
    scale_invariant: bool = False,
    **expect: str,
) -> Arg:
    return Arg(
        lambda: data(key),
        tuple(array_mutations(rows=rows, ndim=ndim, int_ok=int_ok)),
        names,
        _keys(expect),
        scale_invariant,
    )


def Ranks(key: str = "ranks") -> Arg:
    return Arg(lambda: data(key), tuple(ranks_mutations()))


def Index(
    value: Callable[[], Any],
    n: int,
    *,
    padding: bool = False,
    none_ok: bool = False,
    names: tuple[str, ...] = (),
    **expect: str,
) -> Arg:
    return Arg(
        value, tuple(index_mutations(n=n, padding=padding, none_ok=none_ok)), names, _keys(expect)
    )


def Obj(value: Callable[[], Any], *, empty: str = "invalid", names: tuple[str, ...] = ()) -> Arg:
    return Arg(value, tuple(object_mutations(empty)), names)


@dataclass(frozen=True)
class Entry:
    """One public entry point: ``call(**kwargs)`` with ``args`` mutated one at a time.

    Attributes:
        name: ``"<submodule>.<name>"`` (``"<submodule>.<Class>.<method>"`` for methods).
        call: the call; its keyword names are the argument names.
        args: the arguments, by keyword name.
        paired: groups of arguments whose first axes must agree (rows i pair up).
        same_dim: groups of arguments whose last axes must agree (one embedding space).
        covers: exported names this entry covers (default: the second part of ``name``).
        finite: result must be finite everywhere except in these result fields.
    """

    name: str
    call: Callable[..., Any]
    args: dict[str, Arg]
    paired: tuple[tuple[str, ...], ...] = ()
    same_dim: tuple[tuple[str, ...], ...] = ()
    covers: tuple[str, ...] = ()
    nonfinite_ok: tuple[str, ...] = ()
    clean_expect: str = "valid"  # "invalid": the clean arguments themselves are bad input

    @property
    def exported(self) -> tuple[str, ...]:
        return self.covers or (self.name.split(".")[1],)


# -- the entries ---------------------------------------------------------------------------------
def _p(module: str) -> Any:
    return importlib.import_module(f"workbench.probes.{module}")


def _entries() -> list[Entry]:
    sp, rk, gs, pt = _p("spectra"), _p("ranks"), _p("group_spectra"), _p("partitions")
    ge, ss, gp, ra = _p("geometry"), _p("subspace"), _p("gap"), _p("realign")
    ff, di, se, pe = _p("fixed_frame"), _p("distribution"), _p("separability"), _p("perception")
    co, rt = _p("compositional"), _p("retrieval")
    X = lambda **kw: M("X", **kw)  # noqa: E731
    inv = "invalid"
    E: list[Entry] = []

    # spectra
    for method in ("auto", "gram", "svd"):
        E.append(
            Entry(
                f"spectra.spectrum[{method}]",
                lambda X, center, chunk_rows, return_components, method=method: sp.spectrum(
                    X,
                    center=center,
                    method=method,
                    chunk_rows=chunk_rows,
                    return_components=return_components,
                ),
                {
                    "X": X(),
                    "center": Bool(True),
                    "chunk_rows": Int(None, 1, none_ok=True),
                    "return_components": Bool(False),
                },
                covers=("spectrum",),
            )
        )
    E.append(
        Entry(
            "spectra.Spectrum.from_singular_values",
            lambda singular_values, n_samples, n_features, center: sp.Spectrum.from_singular_values(
                singular_values, n_samples, n_features, center=center
            ),
            {
                "singular_values": SV(),
                "n_samples": Int(N, 2),
                "n_features": Int(D, 1, huge="skip"),
                "center": Bool(False),
            },
            covers=("Spectrum",),
        )
    )
    E.append(
        Entry(
            "spectra.cumulative_energy",
            sp.cumulative_energy,
            {"singular_values": SV(negative="either")},  # documented: signs are ignored
        )
    )

    # ranks
    centred = {"constant_rows": inv}
    for variant, const in (
        ("rankme", {}),
        ("erank-cov", centred),
        ("participation-ratio", centred),
        ("stable-rank", centred),
        ("numerical-rank", centred),
    ):
        E.append(
            Entry(
                f"ranks.effective_rank[{variant}]",
                lambda X_or_spectrum, tol, variant=variant: rk.effective_rank(
                    X_or_spectrum, variant, tol=tol
                ),
                {
                    "X_or_spectrum": X(names=("X_or_spectrum", "X"), **const),
                    "tol": Float(None, 0.0, none_ok=True),
                },
                covers=("effective_rank",),
            )
        )
    E.append(
        Entry(
            "ranks.effective_rank[variant]",
            lambda variant: rk.effective_rank(data("X"), variant),
            {"variant": Choice("rankme")},
            covers=("effective_rank",),
        )
    )
    E.append(
        Entry(
            "ranks.power_law_alpha[data]",
            lambda spectrum_or_X, center: rk.power_law_alpha(spectrum_or_X, center=center),
            {
                "spectrum_or_X": X(names=("spectrum_or_X", "X"), constant_rows=inv),
                "center": Bool(True),
            },
            covers=("power_law_alpha",),
        )
    )
    E.append(
        Entry(
            "ranks.power_law_alpha[eigenvalues]",
            lambda eigenvalues: rk.power_law_alpha(eigenvalues),
            {"eigenvalues": SV(names=("eigenvalues", "spectrum_or_X"), all_zero=inv)},
            covers=("power_law_alpha",),
        )
    )

    # group spectra
    E.append(
        Entry(
            "group_spectra.spectra_by_group",
            lambda X, groups, min_count, center: gs.spectra_by_group(
                X, groups, min_count=min_count, center=center
            ),
            {
                "X": X(),
                "groups": Lab(
                    names=("groups",), negative="either", one_class="either", strings="either"
                ),
                "min_count": Int(2, 2),
                "center": Bool(True),
            },
            paired=(("X", "groups"),),
        )
    )
    E.append(
        Entry(
            "group_spectra.spectra_by_modality",
            lambda image, text, labels, joint, normalize: gs.spectra_by_modality(
                {"image": image, "text": text}, labels=labels, joint=joint, normalize=normalize
            ),
            {
                "image": X(),
                "text": M("Y"),
                "labels": Lab(
                    negative="either", one_class="either", strings="either", none="either"
                ),
                "joint": Bool(True),
                "normalize": Bool(False),
            },
            paired=(("image", "labels"), ("text", "labels")),
            same_dim=(("image", "text"),),
        )
    )

    # partitions
    E.append(Entry("partitions.iqr_noise_scale", lambda X: pt.iqr_noise_scale(X), {"X": X()}))
    E.append(
        Entry(
            "partitions.iqr_mp_partition",
            lambda singular_values, noise_scale, n_rows, n_cols, tukey_k, min_strong: (
                pt.iqr_mp_partition(
                    singular_values,
                    noise_scale,
                    n_rows,
                    n_cols,
                    tukey_k=tukey_k,
                    min_strong=min_strong,
                )
            ),
            {
                "singular_values": SV(),
                "noise_scale": Float(0.3, 0.0, none_ok=False),
                "n_rows": Int(N, 1),
                "n_cols": Int(D, 1),
                "tukey_k": Float(1.5, 0.0),
                "min_strong": Int(1, 0),
            },
        )
    )
    for method, params in (
        ("iqr-mp", {"tukey_k": Float(1.5, 0.0), "min_strong": Int(1, 0)}),
        ("energy", {"strong_energy": Float(0.9, 0.0, 1.0, lo_open=True), "min_strong": Int(1, 0)}),
        ("fixed", {"strong_fraction": Float(0.1, 0.0, 1.0), "min_strong": Int(1, 0)}),
    ):
        E.append(
            Entry(
                f"partitions.partition[{method}]",
                lambda X_or_spectrum, center, method=method, **kw: pt.partition(
                    X_or_spectrum, method, center=center, **kw
                ),
                {
                    "X_or_spectrum": X(names=("X_or_spectrum", "X")),
                    "center": Bool(False),
                    **params,
                },
                covers=("partition",),
            )
        )

    # geometry
    E.append(
        Entry(
            "geometry.cosine_distribution",
            lambda X, bins, max_pairs, seed: ge.cosine_distribution(
                X, bins=bins, max_pairs=max_pairs, seed=seed
            ),
            {
                "X": X(scale_invariant=True),
                "bins": Int(50, 1, huge="skip"),
                "max_pairs": Int(200, 1),
                "seed": Int(0, 0),
            },
        )
    )
    E.append(
        Entry(
            "geometry.cosine_distribution[cross]",
            lambda X, Y: ge.cosine_distribution(X, Y),
            {"X": X(scale_invariant=True), "Y": M("Z", scale_invariant=True, none="either")},
            same_dim=(("X", "Y"),),
            covers=("cosine_distribution",),
        )
    )
    E.append(
        Entry(
            "geometry.cone_width",
            lambda X, chunk_rows: ge.cone_width(X, chunk_rows=chunk_rows),
            {"X": X(scale_invariant=True), "chunk_rows": Int(None, 1, none_ok=True)},
        )
    )
    E.append(
        Entry(
            "geometry.alignment",
            lambda X, Y, alpha: ge.alignment(X, Y, alpha),
            {
                "X": X(scale_invariant=True),
                "Y": M("Y", scale_invariant=True),
                "alpha": Float(2.0, 0.0, lo_open=True),
            },
            paired=(("X", "Y"),),
            same_dim=(("X", "Y"),),
        )
    )
    E.append(
        Entry(
            "geometry.uniformity",
            lambda X, t, max_samples, seed, block: ge.uniformity(
                X, t, max_samples=max_samples, seed=seed, block=block
            ),
            {
                "X": X(scale_invariant=True),
                "t": Float(2.0, 0.0, lo_open=True),
                "max_samples": Int(4096, 2),
                "seed": Int(0, 0),
                "block": Int(1024, 1),
            },
        )
    )
    E.append(Entry("geometry.anisotropy", ge.anisotropy, {"X": X(scale_invariant=True)}))

    # subspace
    basis = {"constant_rows": "either", "zero_row": "either"}
    E.append(
        Entry(
            "subspace.principal_angles",
            ss.principal_angles,
            {
                "A": M("A", scale_invariant=True, **basis),
                "B": M("B", scale_invariant=True, **basis),
            },
            paired=(("A", "B"),),  # columns are the basis vectors: the rows (d) must agree
        )
    )
    E.append(
        Entry(
            "subspace.subspace_overlap",
            ss.subspace_overlap,
            {
                "A": M("A", scale_invariant=True, **basis),
                "B": M("B", scale_invariant=True, **basis),
            },
            paired=(("A", "B"),),  # columns are the basis vectors: the rows (d) must agree
        )
    )
    E.append(
        Entry(
            "subspace.top_subspace",
            lambda X, k, center: ss.top_subspace(X, k, center=center),
            {"X": X(constant_rows=inv), "k": Int(2, 1, D), "center": Bool(True)},
        )
    )
    E.append(
        Entry(
            "subspace.singular_vector_alignment",
            lambda X_clean, X_perturbed, k, center: ss.singular_vector_alignment(
                X_clean, X_perturbed, k, center=center
            ),
            {
                "X_clean": X(),
                "X_perturbed": M("X2"),
                "k": Int(3, 1, D, none_ok=True),
                "center": Bool(False),
            },
            paired=(("X_clean", "X_perturbed"),),
            same_dim=(("X_clean", "X_perturbed"),),
            nonfinite_ok=("relative_change",),
        )
    )

    # gap
    E.append(
        Entry(
            "gap.clip_loss",
            gp.clip_loss,
            {
                "image_emb": X(scale_invariant=True),
                "text_emb": M("Y", scale_invariant=True),
                "temperature": Float(0.01, 0.0, lo_open=True),
            },
            paired=(("image_emb", "text_emb"),),
            same_dim=(("image_emb", "text_emb"),),
        )
    )
    E.append(
        Entry(
            "gap.cone_effect",
            lambda depths, activations, n_samples, dim, n_inits, n_show, seed: gp.cone_effect(
                depths,
                activations,
                n_samples=n_samples,
                dim=dim,
                n_inits=n_inits,
                n_show=n_show,
                seed=seed,
            ),
            {
                "depths": IntSeq((0, 1, 2)),
                "activations": Strings(("relu", "tanh")),
                "n_samples": Int(20, 2, huge="skip"),
                "dim": Int(8, 1, huge="skip"),
                "n_inits": Int(2, 2, huge="skip"),
                "n_show": Int(5, 1),
                "seed": Int(0, 0),
            },
        )
    )
    E.append(
        Entry(
            "gap.modality_gap",
            lambda image_emb, text_emb, with_spectra: gp.modality_gap(
                image_emb, text_emb, with_spectra=with_spectra
            ),
            {
                "image_emb": X(scale_invariant=True, constant_rows=inv),
                "text_emb": M("Y", scale_invariant=True, constant_rows=inv),
                "with_spectra": Bool(True),
            },
            same_dim=(("image_emb", "text_emb"),),
        )
    )
    E.append(
        Entry(
            "gap.retrieval_accuracy",
            gp.retrieval_accuracy,
            {"image_emb": X(scale_invariant=True), "text_emb": M("Y", scale_invariant=True)},
            paired=(("image_emb", "text_emb"),),
            same_dim=(("image_emb", "text_emb"),),
        )
    )
    E.append(
        Entry(
            "gap.shift_experiment",
            lambda image_emb, text_emb, lambdas, temperature, labels, class_text_emb: (
                gp.shift_experiment(
                    image_emb,
                    text_emb,
                    lambdas,
                    temperature=temperature,
                    labels=labels,
                    class_text_emb=class_text_emb,
                )
            ),
            {
                "image_emb": X(scale_invariant=True),
                "text_emb": M("Y", scale_invariant=True),
                "lambdas": Arg(
                    lambda: [-0.5, 0.0, 0.5, 1.0],
                    tuple(vector_mutations()),
                    expect={"short": "either", "zero": "either", "none": "either"},
                ),
                "temperature": Float(0.01, 0.0, lo_open=True),
                "labels": Lab(strings=inv, one_class="either"),
                "class_text_emb": Arr(
                    "prompts", 3, names=("class_text_emb",), scale_invariant=True
                ),
            },
            paired=(("image_emb", "labels"),),
            same_dim=(("image_emb", "text_emb", "class_text_emb"),),
        )
    )
    E.append(
        Entry(
            "gap.signed_centroid_distance",
            gp.signed_centroid_distance,
            {
                "image_normed": X(),
                "text_normed": M("Y"),
                "delta": Vec("mu", names=("delta",), zero="invalid", short="invalid"),
            },
            same_dim=(("image_normed", "text_normed", "delta"),),
        )
    )

    # realign
    const_var = {"constant_rows": inv}
    E.append(
        Entry(
            "realign.ReAlign.fit",
            lambda image_emb, text_emb, steps, eps, chunk_size: ra.ReAlign(
                steps=steps, eps=eps, chunk_size=chunk_size
            ).fit(image_emb, text_emb),
            {
                "image_emb": X(scale_invariant=True, **const_var),
                "text_emb": M("Y", scale_invariant=True, **const_var),
                "steps": Choice("full"),
                "eps": Float(1e-10, 0.0),
                "chunk_size": Int(7, 1),
            },
            same_dim=(("image_emb", "text_emb"),),
            covers=("ReAlign",),
        )
    )
    E.append(
        Entry(
            "realign.ReAlign.transform",
            lambda text_emb, steps: _fitted("realign").transform(text_emb, steps=steps),
            {"text_emb": M("Z", scale_invariant=True), "steps": Choice("full", none_ok=True)},
            covers=("ReAlign",),
        )
    )
    E.append(
        Entry(
            "realign.ReAlign.fit_transform",
            lambda image_emb, text_emb: ra.ReAlign().fit_transform(image_emb, text_emb),
            {
                "image_emb": X(scale_invariant=True, **const_var),
                "text_emb": M("Y", scale_invariant=True, **const_var),
            },
            same_dim=(("image_emb", "text_emb"),),
            covers=("ReAlign",),
        )
    )
    E.append(
        Entry(
            "realign.C3.fit",
            lambda image_emb, text_emb, sigma, seed: ra.C3(sigma=sigma, seed=seed).fit(
                image_emb, text_emb
            ),
            {
                "image_emb": X(scale_invariant=True),
                "text_emb": M("Y", scale_invariant=True),
                "sigma": Float(0.02, 0.0),
                "seed": Int(0, 0),
            },
            same_dim=(("image_emb", "text_emb"),),
            covers=("C3",),
        )
    )
    E.append(
        Entry(
            "realign.C3.transform",
            lambda text_emb: _fitted("c3").transform(text_emb),
            {"text_emb": M("Z", scale_invariant=True)},
            covers=("C3",),
        )
    )
    E.append(
        Entry(
            "realign.C3.transform_image",
            lambda image_emb: _fitted("c3").transform_image(image_emb),
            {"image_emb": M("Z", scale_invariant=True)},
            covers=("C3",),
        )
    )
    E.append(
        Entry(
            "realign.iter_chunks",
            lambda data, chunk_size: list(ra.iter_chunks(data, "data", chunk_size)),
            {"data": X(scale_invariant=True), "chunk_size": Int(5, 1)},
        )
    )

    # fixed frame
    E.append(
        Entry(
            "fixed_frame.FixedFrame.fit",
            lambda probe_image, probe_text, energy, rank: ff.FixedFrame(energy, rank).fit(
                probe_image, probe_text
            ),
            {
                "probe_image": X(scale_invariant=True),
                "probe_text": M("Y", scale_invariant=True),
                "energy": Float(0.9, 0.0, 1.0, lo_open=True),
                "rank": Int(None, 1, D, none_ok=True),
            },
            same_dim=(("probe_image", "probe_text"),),
            covers=("FixedFrame",),
        )
    )
    E.append(
        Entry(
            "fixed_frame.FixedFrame.fit[constant]",
            lambda probe_image, probe_text: ff.FixedFrame().fit(probe_image, probe_text),
            {
                "probe_image": Arg(
                    lambda: np.repeat(data("X")[:1], N, axis=0), (), ("probe_image", "probe")
                ),
                "probe_text": Arg(lambda: np.repeat(data("Y")[:1], N, axis=0), ()),
            },
            covers=("FixedFrame",),
            clean_expect=inv,
        )
    )
    E.append(
        Entry(
            "fixed_frame.FixedFrame.project_u",
            lambda V: _fitted("frame").project_u(V),
            {"V": M("Z", **{"ndim_1": "either", "ndim+1": "either", "empty": "either"})},
            covers=("FixedFrame",),
        )
    )
    E.append(
        Entry(
            "fixed_frame.FixedFrame.decompose",
            lambda image, text: _fitted("frame").decompose(image, text),
            {"image": M("X2", scale_invariant=True), "text": M("Y2", scale_invariant=True)},
            paired=(("image", "text"),),
            same_dim=(("image", "text"),),
            covers=("FixedFrame",),
        )
    )
    E.append(
        Entry(
            "fixed_frame.pob_drift",
            lambda reference_image, reference_text, current_image, current_text: ff.pob_drift(
                _fitted("frame"), (reference_image, reference_text), (current_image, current_text)
            ),
            {
                "reference_image": X(names=("reference",), scale_invariant=True),
                "reference_text": M("Y", names=("reference",), scale_invariant=True),
                "current_image": M("X2", names=("current",), scale_invariant=True),
                "current_text": M("Y2", names=("current",), scale_invariant=True),
            },
            paired=(("reference_image", "reference_text"), ("current_image", "current_text")),
            same_dim=(("reference_image", "reference_text", "current_image", "current_text"),),
        )
    )
    E.append(
        Entry(
            "fixed_frame.pob_drift[full-rank]",
            lambda reference_image: ff.pob_drift(
                _fitted("frame-full"), (reference_image, data("Y")), (data("X2"), data("Y2"))
            ),
            {"reference_image": Arg(lambda: data("X"), (), ("reference", "γ", "gamma"))},
            covers=("pob_drift",),
            clean_expect=inv,
        )
    )
    E.append(
        Entry(
            "fixed_frame.kappa_eff",
            ff.kappa_eff,
            {"matrix": Square(), "mass": Float(0.99, 0.0, 1.0, lo_open=True)},
        )
    )
    E.append(
        Entry(
            "fixed_frame.phantom_drift",
            ff.phantom_drift,
            {"mu": Vec("mu", zero="invalid"), "cov": Square(zero="either")},
            same_dim=(("mu", "cov"),),
        )
    )
    E.append(
        Entry(
            "fixed_frame.phantom_drift_monte_carlo",
            ff.phantom_drift_monte_carlo,
            {
                "mu": Vec("mu", zero="invalid"),
                "cov": Square(zero="either"),
                "n_samples": Int(500, 1, huge="skip"),
                "seed": Int(0, 0),
            },
            same_dim=(("mu", "cov"),),
        )
    )
    E.append(
        Entry(
            "fixed_frame.uv_coupling",
            lambda alpha: ff.uv_coupling(_fitted("frame"), _fitted("decomposition"), alpha),
            {"alpha": Float(1e-3, 0.0)},
        )
    )

    # distribution
    E.append(
        Entry(
            "distribution.trace_normalized_spectrum_alpha",
            di.trace_normalized_spectrum_alpha,
            {"X": X(constant_rows=inv)},
        )
    )
    E.append(
        Entry(
            "distribution.pairwise_cosine_sample",
            lambda X, n_pairs, seed: di.pairwise_cosine_sample(X, n_pairs, seed),
            {"X": X(scale_invariant=True), "n_pairs": Int(100, 1), "seed": Int(0, 0)},
        )
    )
    E.append(
        Entry(
            "distribution.cosine_js_divergence",
            lambda a_emb, b_emb, n_pairs, grid_size, base, seed: di.cosine_js_divergence(
                a_emb, b_emb, n_pairs=n_pairs, grid_size=grid_size, base=base, seed=seed
            ),
            {
                "a_emb": X(scale_invariant=True, constant_rows=inv),
                "b_emb": M("Y", scale_invariant=True, constant_rows=inv),
                "n_pairs": Int(200, 1),
                "grid_size": Int(64, 2, huge="skip"),
                "base": Float(2.0, 1.0, lo_open=True),
                "seed": Int(0, 0),
            },
        )
    )
    E.append(
        Entry(
            "distribution.knn_mixing_rate",
            lambda image_emb, text_emb, k, chunk: di.knn_mixing_rate(image_emb, text_emb, k, chunk),
            {
                "image_emb": X(scale_invariant=True),
                "text_emb": M("Z", scale_invariant=True),
                "k": Int(5, 1, huge="invalid"),
                "chunk": Int(7, 1),
            },
            same_dim=(("image_emb", "text_emb"),),
        )
    )
    E.append(
        Entry(
            "distribution.knn_overlap",
            lambda before, after, k, chunk: di.knn_overlap(before, after, k, chunk),
            {
                "before": X(scale_invariant=True),
                "after": M("Y", scale_invariant=True),
                "k": Int(4, 1, huge="invalid"),
                "chunk": Int(7, 1),
            },
            paired=(("before", "after"),),
        )
    )

    # separability
    sep_const = {"constant_rows": inv}
    E.append(
        Entry(
            "separability.class_scatter",
            lambda X, labels, normalize: se.class_scatter(X, labels, normalize=normalize),
            {"X": X(**sep_const), "labels": Lab(), "normalize": Bool(True)},
            paired=(("X", "labels"),),
        )
    )
    E.append(
        Entry(
            "separability.fisher_ratio",
            lambda X, labels: se.fisher_ratio(X, labels),
            {"X": X(**sep_const), "labels": Lab()},
            paired=(("X", "labels"),),
        )
    )
    E.append(
        Entry(
            "separability.knn_accuracy",
            lambda X, labels, k: se.knn_accuracy(X, labels, k=k),
            {"X": X(scale_invariant=True), "labels": Lab(), "k": Int(3, 1, huge="invalid")},
            paired=(("X", "labels"),),
        )
    )
    E.append(
        Entry(
            "separability.split_indices",
            lambda labels, test_fraction, seed: se.split_indices(
                labels, test_fraction=test_fraction, seed=seed
            ),
            {
                "labels": Lab(one_class="either", negative="either", short="either"),
                "test_fraction": Float(0.3, 0.0, 1.0, lo_open=True, hi_open=True),
                "seed": Int(0, 0),
            },
        )
    )
    E.append(
        Entry(
            "separability.linear_probe",
            lambda X, labels, test_fraction, C, max_iter, normalize: se.linear_probe(
                X,
                labels,
                test_fraction=test_fraction,
                C=C,
                max_iter=max_iter,
                normalize=normalize,
            ),
            {
                "X": X(),
                "labels": Lab(),
                "test_fraction": Float(0.3, 0.0, 1.0, lo_open=True, hi_open=True),
                "C": Float(1.0, 0.0, lo_open=True),
                "max_iter": Int(100, 1, huge="skip"),
                "normalize": Bool(True),
            },
            paired=(("X", "labels"),),
        )
    )
    E.append(
        Entry(
            "separability.linear_probe[split]",
            lambda train_idx, test_idx: se.linear_probe(
                data("X"), data("labels"), train_idx=train_idx, test_idx=test_idx
            ),
            {
                "train_idx": Index(lambda: np.arange(0, N, 2), N, short="either"),
                "test_idx": Index(lambda: np.arange(1, N, 2), N, short="either"),
            },
            covers=("linear_probe",),
        )
    )
    E.append(
        Entry(
            "separability.clustering_accuracy",
            se.clustering_accuracy,
            {
                "y_true": Lab(names=("y_true",), one_class="either", negative="either"),
                "y_pred": Lab("labels", names=("y_pred",), one_class="either", negative="either"),
            },
            paired=(("y_true", "y_pred"),),
        )
    )
    E.append(
        Entry(
            "separability.clustering_scores",
            lambda X, labels, seeds, n_clusters, n_init, normalize: se.clustering_scores(
                X, labels, seeds=seeds, n_clusters=n_clusters, n_init=n_init, normalize=normalize
            ),
            {
                "X": X(),
                "labels": Lab(),
                "seeds": IntSeq((0,)),
                "n_clusters": Int(None, 2, none_ok=True, huge="invalid"),
                "n_init": Int(1, 1, huge="skip"),
                "normalize": Bool(True),
            },
            paired=(("X", "labels"),),
        )
    )
    E.append(
        Entry(
            "separability.zero_shot_classifier",
            lambda class_names, templates: se.zero_shot_classifier(
                FakeEncoder(), class_names, templates
            ),
            {
                "class_names": Strings(("cat", "dog", "bird")),
                "templates": Strings(("a photo of a {}.", "a {}.")),
            },
        )
    )
    E.append(
        Entry(
            "separability.zero_shot_accuracy",
            lambda image, class_text, labels, mean_per_class: se.zero_shot_accuracy(
                image, class_text, labels, mean_per_class=mean_per_class
            ),
            {
                "image": X(scale_invariant=True),
                "class_text": Arr("prompts", 3, names=("class_text",), scale_invariant=True),
                "labels": Lab(strings=inv, one_class="either"),
                "mean_per_class": Bool(False),
            },
            paired=(("image", "labels"),),
            same_dim=(("image", "class_text"),),
        )
    )

    # perception
    logits_expect = {"int": "either"}
    E.append(
        Entry(
            "perception.mmvp_pair_correct",
            se_call(pe.mmvp_pair_correct),
            {"logits_per_text": Arr("logits", 3, rows=False, int_ok=True, **logits_expect)},
        )
    )
    E.append(
        Entry(
            "perception.mmvp_categories_by_index",
            pe.mmvp_categories_by_index,
            {"n_pairs": Int(20, 1, 135)},
        )
    )
    E.append(
        Entry(
            "perception.mmvp_scores",
            pe.mmvp_scores,
            {
                "logits_per_text": Arr("logits", 3, int_ok=True, **logits_expect),
                "categories": Strings([f"cat{i % 3}" for i in range(9)], none_ok=True),
            },
            paired=(("logits_per_text", "categories"),),
        )
    )
    E.append(
        Entry(
            "perception.mmvp_logits_from_embeddings",
            pe.mmvp_logits_from_embeddings,
            {
                "image": Arr("emb3", 3, scale_invariant=True),
                "text": Arr("emb3", 3, scale_invariant=True),
                "logit_scale": Float(100.0, 0.0, lo_open=True),
            },
            paired=(("image", "text"),),
            same_dim=(("image", "text"),),
        )
    )
    E.append(
        Entry(
            "perception.mmvp_logits",
            lambda pairs, prefix, batch_size: pe.mmvp_logits(
                FakeEncoder(), pairs, prefix=prefix, batch_size=batch_size
            ),
            {
                "pairs": Obj(_pairs),
                "prefix": Arg(lambda: "a photo of ", tuple(choice_mutations()[1:])),
                "batch_size": Int(4, 1),
            },
        )
    )
    E.append(
        Entry(
            "perception.score_mmvp",
            lambda pairs: pe.score_mmvp(FakeEncoder(), pairs),
            {"pairs": Obj(_pairs)},
        )
    )
    E.append(
        Entry(
            "perception.mmvp_pairs_from_dataset",
            lambda dataset: pe.mmvp_pairs_from_dataset(dataset),
            {"dataset": Obj(_items)},
        )
    )

    # compositional
    E.append(
        Entry(
            "compositional.build_negatives",
            lambda captions, kinds, seed, max_per_kind: co.build_negatives(
                captions, kinds=kinds, seed=seed, max_per_kind=max_per_kind
            ),
            {
                "captions": Strings(CAPTIONS),
                "kinds": Strings(("swap_attributes", "replace_noun"), none_ok=True),
                "seed": Int(0, 0),
                "max_per_kind": Int(2, 1, none_ok=True),
            },
        )
    )
    E.append(
        Entry(
            "compositional.compositional_scores",
            lambda image, positive_text, negative_text: co.compositional_scores(
                image, positive_text, negative_text, _negatives()
            ),
            {
                "image": Arr("X", 2, rows=True, scale_invariant=True),
                "positive_text": Arr("Y", 2, rows=True, scale_invariant=True),
                "negative_text": Arg(
                    lambda: _negative_text(),
                    tuple(array_mutations()),
                    (),
                    {"duplicated-rows": "either", "one-row": "invalid"},
                    True,
                ),
            },
            paired=(("image", "positive_text"),),
            same_dim=(("image", "positive_text", "negative_text"),),
        )
    )
    E.append(
        Entry(
            "compositional.score_compositional",
            lambda captions, batch_size: co.score_compositional(
                FakeEncoder(), _images(10), captions, batch_size=batch_size
            ),
            {"captions": Strings(CAPTIONS, short="invalid"), "batch_size": Int(4, 1)},
        )
    )

    # retrieval
    E.append(
        Entry(
            "retrieval.similarity",
            rt.similarity,
            {"image": X(scale_invariant=True), "text": M("Z", scale_invariant=True)},
            same_dim=(("image", "text"),),
        )
    )
    E.append(
        Entry(
            "retrieval.gt_ranks",
            lambda scores, positives: rt.gt_ranks(scores, positives),
            {
                "scores": Arr("sim", 2, rows=True),
                "positives": Arg(
                    lambda: np.eye(8, dtype=bool),
                    (
                        Mutation("int", lambda P: np.asarray(P, np.int64), "either"),
                        Mutation("float", lambda P: np.asarray(P, np.float64), "either"),
                        Mutation("nan", lambda P: _set(P, (0, 0), np.nan), "invalid"),
                        Mutation(
                            "no-positive", lambda P: _set(P, (0, 0), 0).astype(bool), "invalid"
                        ),
                        Mutation("short", lambda P: np.asarray(P)[:-1], "invalid"),
                        Mutation("1-D", lambda P: np.asarray(P)[0], "invalid"),
                        Mutation("none", lambda P: None, "invalid"),
                        Mutation("list", lambda P: np.asarray(P).tolist(), "valid", lambda P: P),
                        Mutation("strings", lambda P: np.asarray(P).astype(str), "invalid"),
                    ),
                ),
            },
        )
    )
    E.append(
        Entry(
            "retrieval.recall_at_k",
            lambda ranks, k: rt.recall_at_k(ranks, k),
            {"ranks": Ranks(), "k": Int(3, 1)},
        )
    )
    E.append(
        Entry(
            "retrieval.retrieval_scores",
            lambda sim, caption_owner, ks: rt.retrieval_scores(sim, caption_owner, ks),
            {
                "sim": Arr("sim", 2, rows=True, constant_rows="either"),
                "caption_owner": Index(lambda: np.arange(8), 8, none_ok=True),
                "ks": IntSeq((1, 5), lo=1),
            },
            paired=(),
        )
    )
    E.append(
        Entry(
            "retrieval.precision_at_1",
            lambda sim, target, candidates: rt.precision_at_1(sim, target, candidates),
            {
                "sim": Arr("sim", 2, rows=True),
                "target": Index(lambda: np.arange(8), 8),
                "candidates": Index(
                    lambda: np.stack([np.arange(8), (np.arange(8) + 1) % 8, np.full(8, -1)], 1),
                    8,
                    padding=True,
                    none_ok=True,
                    negative="either",
                    short="invalid",
                ),
            },
            paired=(("sim", "target"),),
        )
    )
    return E


def se_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda logits_per_text: fn(logits_per_text)


def _items() -> list[Any]:
    from workbench.data.base import Item

    ims = _images(4)
    return [
        Item(f"i{i}", ims[i], [f"statement {i}"], None, {"category": f"cat{i // 2}"})
        for i in range(4)
    ]


@cache
def _negatives() -> Any:
    from workbench.probes.compositional import NegativeSet

    owner = np.repeat(np.arange(N), 2)
    kinds = ["a", "b"] * N
    return NegativeSet(owner, kinds, [f"neg {i}" for i in range(2 * N)])


def _negative_text() -> np.ndarray:
    rng = np.random.default_rng(5)
    return data("Y")[np.repeat(np.arange(N), 2)] + rng.normal(size=(2 * N, D))


_FITTED: dict[str, Any] = {}


def _fitted(kind: str) -> Any:
    if kind not in _FITTED:
        from workbench.probes.fixed_frame import FixedFrame
        from workbench.probes.realign import C3, ReAlign

        if kind == "realign":
            _FITTED[kind] = ReAlign().fit(data("X"), data("Y"))
        elif kind == "c3":
            _FITTED[kind] = C3().fit(data("X"), data("Y"))
        elif kind == "frame":
            _FITTED[kind] = FixedFrame(energy=0.9).fit(data("X"), data("Y"))
        elif kind == "frame-full":
            _FITTED[kind] = FixedFrame(rank=D).fit(data("X"), data("Y"))
        elif kind == "decomposition":
            _FITTED[kind] = _fitted("frame").decompose(data("X"), data("Y"))
    return _FITTED[kind]


@cache
def entries() -> tuple[Entry, ...]:
    return tuple(_entries())


# -- relational mutations: mismatched modalities / lengths ----------------------------------------
def relational(entry: Entry) -> list[tuple[str, Mutation]]:
    """Mutations that break an agreement between arguments (paired rows, one embedding space)."""
    out: list[tuple[str, Mutation]] = []
    for group in entry.paired:
        arg = group[0]
        out.append(
            (arg, Mutation("fewer-rows-than-partner", lambda A: np.asarray(A)[:-2], "invalid"))
        )
    for group in entry.same_dim:
        for arg in group[:2]:
            out.append(
                (
                    arg,
                    Mutation(
                        "other-dim-than-partner", lambda A: np.asarray(A)[..., :-1], "invalid"
                    ),
                )
            )
    return out


# -- running one case ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    entry: Entry
    arg: str
    mutation: Mutation
    partner_names: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.entry.name}:{self.arg}:{self.mutation.name}"


def cases(entry_list: tuple[Entry, ...] | None = None) -> list[Case]:
    out = []
    for entry in entry_list or entries():
        if entry.clean_expect != "valid":
            first = next(iter(entry.args))
            out.append(Case(entry, first, Mutation("as-given", lambda v: v, entry.clean_expect)))
        for name, arg in entry.args.items():
            for m in arg.mutations:
                out.append(Case(entry, name, m))
        for name, m in relational(entry):
            group = [g for g in (*entry.paired, *entry.same_dim) if name in g]
            partners = tuple(n for g in group for n in g)
            out.append(Case(entry, name, m, partners))
    return out


def _expectation(case: Case) -> str:
    arg = case.entry.args[case.arg]
    expect = arg.expect.get(case.mutation.name, case.mutation.expect)
    return expect


def clean_kwargs(entry: Entry) -> dict[str, Any]:
    return {k: a.clean() for k, a in entry.args.items()}


class CallTimeout(Exception):
    """A call ran past :data:`TIME_LIMIT` seconds (counted as an unhelpful outcome: a hang)."""


TIME_LIMIT = 20.0


def _alarm(signum: int, frame: Any) -> None:
    raise CallTimeout(f"the call ran past {TIME_LIMIT:g} s")


def _call(entry: Entry, kwargs: dict[str, Any]) -> Any:
    use_alarm = (
        hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return entry.call(**kwargs)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# -- comparing results ---------------------------------------------------------------------------
def leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every number, array and string inside a result."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if obj is None or isinstance(obj, (str, bool, np.bool_)):
        yield path, obj
    elif isinstance(obj, (int, float, np.number)):
        yield path, float(obj)
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            for i, v in enumerate(obj.ravel()):
                yield from leaves(v, f"{path}[{i}]")
        else:
            yield path, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from leaves(obj[k], f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from leaves(getattr(obj, f.name), f"{path}.{f.name}")
    elif hasattr(obj, "__dict__"):  # fitted estimators: their fitted attributes
        for k, v in sorted(vars(obj).items()):
            if k.endswith("_") and not k.startswith("_"):
                yield from leaves(v, f"{path}.{k}")
    else:
        yield path, repr(type(obj))


def non_finite(result: Any, allowed: tuple[str, ...]) -> str | None:
    for path, v in leaves(result):
        if any(a in path for a in allowed):
            continue
        if (
            isinstance(v, float)
            and not math.isfinite(v)
            and not (math.isinf(v) and "fisher" in path)
        ):
            return path
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.number):
            if not np.isfinite(v.astype(np.complex128)).all():
                return path
    return None


# Result fields that record how a value was computed, not what it is (the route a memmap takes).
BOOKKEEPING = (".method", ".resolution")


def same_result(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """``None`` when ``a`` and ``b`` agree leaf by leaf, else the first differing path.

    Arrays agree within ``atol`` of their largest entry (the Gram route resolves singular values
    to about 1e-8 of the largest).
    """
    la = [(p, v) for p, v in leaves(a) if not p.endswith(BOOKKEEPING)]
    lb = [(p, v) for p, v in leaves(b) if not p.endswith(BOOKKEEPING)]
    if [p for p, _ in la] != [p for p, _ in lb]:
        return "structure"
    for (path, x), (_, y) in zip(la, lb):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape:
                return path
            if x.dtype.kind in "fciu" and y.dtype.kind in "fciu":
                scale = (
                    max(1.0, float(np.nanmax(np.abs(y))))
                    if y.size and np.isfinite(y).any()
                    else 1.0
                )
                if not np.allclose(x, y, rtol=rtol, atol=atol * scale, equal_nan=True):
                    return path
            elif not np.array_equal(x, y):
                return path
        elif isinstance(x, float) and isinstance(y, float):
            if not (
                math.isclose(x, y, rel_tol=rtol, abs_tol=atol) or (math.isnan(x) and math.isnan(y))
            ):
                return path
        elif x != y and not (isinstance(x, float) and isinstance(y, float)):
            return path
    return None


# -- classification ------------------------------------------------------------------------------
@dataclass
class Outcome:
    case: Case
    outcome: str
    detail: str


_REFERENCE: dict[tuple[str, str], Any] = {}


def _reference(entry: Entry, kwargs: dict[str, Any], key: str) -> Any:
    cache_key = (entry.name, key)
    if cache_key not in _REFERENCE:
        try:
            _REFERENCE[cache_key] = ("ok", _call(entry, kwargs))
        except Exception as err:  # the clean call itself failed: report it
            _REFERENCE[cache_key] = ("error", err)
    return _REFERENCE[cache_key]


def run_case(case: Case) -> Outcome:
    entry, arg = case.entry, case.entry.args[case.arg]
    kwargs = clean_kwargs(entry)
    clean_value = kwargs[case.arg]
    expect = _expectation(case)
    try:
        bad = case.mutation.apply(clean_value)
    except Exception as err:  # the mutation does not apply to this value: skip
        return Outcome(case, "skipped", f"mutation failed: {err!r}")
    kwargs[case.arg] = bad
    names = arg.names or (case.arg,)
    names = (*names, *(n for p in case.partner_names for n in (entry.args[p].names or (p,))))
    try:
        result = _call(entry, kwargs)
    except (ValueError, TypeError) as err:
        msg = str(err)
        if expect == "valid":
            return Outcome(
                case, "unhelpful_error", f"valid input refused: {type(err).__name__}: {msg}"
            )
        if not any(n in msg for n in names):
            return Outcome(
                case, "unhelpful_error", f"does not name {names}: {type(err).__name__}: {msg}"
            )
        return Outcome(case, "clear_error", msg)
    except Exception as err:
        return Outcome(case, "unhelpful_error", f"{type(err).__name__}: {err}")
    if expect == "invalid":
        return Outcome(case, "wrong_result", "a result for an invalid input")
    bad_path = non_finite(result, entry.nonfinite_ok)
    if bad_path is not None:
        return Outcome(case, "wrong_result", f"non-finite result at {bad_path}")
    ref_input = None
    if expect == "valid" and case.mutation.reference is not None:
        ref_input = case.mutation.reference(clean_value)
        key = f"{case.arg}:{case.mutation.name}"
    elif case.mutation.name.startswith("scale-") and arg.scale_invariant:
        ref_input, key = clean_value, "clean"
    if ref_input is not None:
        ref_kwargs = clean_kwargs(entry)
        ref_kwargs[case.arg] = ref_input
        status, ref = _reference(entry, ref_kwargs, key)
        if status == "error":
            return Outcome(case, "unhelpful_error", f"clean reference call failed: {ref!r}")
        diff = same_result(result, ref)
        if diff is not None:
            return Outcome(case, "wrong_result", f"differs from the clean input's result at {diff}")
    return Outcome(case, "handled", "")


def run(
    case_list: list[Case] | None = None, timings: dict[str, float] | None = None
) -> list[Outcome]:
    out = []
    for c in case_list if case_list is not None else cases():
        t0 = time.perf_counter()
        out.append(run_case(c))
        if timings is not None:
            timings[c.entry.name] = timings.get(c.entry.name, 0.0) + time.perf_counter() - t0
    return out


def coverage_gaps() -> list[str]:
    """Exported names of probes submodules with no battery entry (and not listed as data)."""
    covered = {n for e in entries() for n in e.exported}
    missing = []
    for mod in SUBMODULES:
        for name in _p(mod).__all__:
            if name not in covered and name not in NOT_ENTRY_POINTS:
                missing.append(f"{mod}.{name}")
    return missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="list every failure")
    ap.add_argument("-k", "--filter", default="", help="only entries whose name contains this")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    chosen = tuple(e for e in entries() if args.filter in e.name)
    timings: dict[str, float] = {}
    outcomes = run(cases(chosen), timings)
    counts = Counter(o.outcome for o in outcomes)
    total = sum(v for k, v in counts.items() if k != "skipped")
    if args.verbose:
        for o in outcomes:
            if o.outcome in ("unhelpful_error", "wrong_result"):
                print(f"{o.outcome:16s} {o.case.id}  {o.detail[:200]}")
    if args.verbose:
        for name, t in sorted(timings.items(), key=lambda kv: -kv[1])[:10]:
            print(f"slowest: {name} {t:.1f} s")
    gaps = coverage_gaps()
    print(f"entries: {len(chosen)}  calls: {total}  skipped: {counts.get('skipped', 0)}")
    for k in OUTCOMES:
        print(f"  {k:16s} {counts.get(k, 0)}")
    if gaps:
        print("no battery entry:", ", ".join(gaps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
