"""Spectra per group of rows (class, dataset, modality) in one call, on one shared footing.

:func:`spectra_by_group` validates the whole input once and computes one
:func:`~workbench.probes.spectra.spectrum` per group label (FANoise Fig. 3's per-class spectra,
the explorers' per-modality panels); :func:`spectra_by_modality` does it for an image and a text
matrix.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from workbench._validate import (
    as_bool,
    as_int,
    as_labels,
    as_matrix,
    check_finite_rows,
    check_same_dim,
    l2_normalize,
    to_numpy,
)
from workbench.probes._rows import _array_chunks
from workbench.probes.spectra import Spectrum, spectrum

__all__ = ["spectra_by_group", "spectra_by_modality"]


def spectra_by_group(
    X: Any,
    groups: Any,
    *,
    names: Mapping[Hashable, str] | Sequence[str] | None = None,
    ignore: Iterable[Hashable] = (-1,),
    min_count: int = 2,
    center: bool = True,
    prefix: str = "",
    group: Any = None,
    **spectrum_kw: Any,
) -> dict[str, Spectrum]:
    """One :class:`Spectrum` per group of rows (e.g. per class label), in one call.

    Args:
        X: (n, d) embeddings (array, memmap or torch; rows of one group are gathered per group).
        groups: (n,) group id of each row (class labels, cluster ids, strings...).
        names: display names — a mapping id → name, or a sequence indexed by integer id (e.g.
            ``Embeddings.class_names``); default ``str(id)``.
        ignore: ids to skip (default ``-1``, the "no label" value of :class:`Embeddings`).
        min_count: groups with fewer rows are skipped (a spectrum needs ≥ 2 rows).
        center: passed to :func:`spectrum` (per-group centring: within-class spectra).
        prefix: prepended to each key (``spectra_by_modality`` uses ``"image/"``).
        group: a process group (or ``"auto"``) to sum over, as in :func:`spectrum`: ``X`` and
            ``groups`` are this rank's rows; group ids are the union over ranks and
            ``min_count`` counts every rank's rows. ``None``: this process only.
        **spectrum_kw: other :func:`spectrum` options.

    Returns:
        ``{key: Spectrum}`` in sorted group order.

    Raises:
        ValueError: ``groups`` not 1-D or of the wrong length, and every bad-input case of
            :func:`spectrum` (NaN rows are named by their row in ``X``).
    """
    name = spectrum_kw.pop("name", "X")
    A = to_numpy(X, name)
    as_matrix(A, name, min_rows=2, dtype=A.dtype, check_finite=False)
    g = as_labels(groups, spectrum_kw.pop("groups_name", "groups"), n=A.shape[0], rows_of=name)
    min_count = as_int(min_count, "min_count", lo=2)
    center = as_bool(center, "center")
    for offset, chunk in _array_chunks(A, None):  # name bad rows by their row in X
        check_finite_rows(np.asarray(chunk), name, row_offset=offset)
    skip = set(ignore)
    out: dict[str, Spectrum] = {}
    gids, counts = _ids_and_counts(g, group)
    for gid, count in zip(gids, counts):
        key = gid.item() if hasattr(gid, "item") else gid
        if key in skip:
            continue
        rows = np.flatnonzero(g == gid)
        if count < min_count:
            continue
        if names is None:
            label = str(key)
        elif isinstance(names, Mapping):
            label = str(names.get(key, key))
        else:
            label = str(names[int(key)])
        out[f"{prefix}{label}"] = spectrum(
            A[rows], center=center, name=name, group=group, **spectrum_kw
        )
    return out


def _ids_and_counts(g: np.ndarray, group: Any) -> tuple[list[Any], list[int]]:
    """Sorted group ids and their row counts — over every rank's rows when ``group`` is set
    (a rank may lack some ids; each id's spectrum is then still one collective on all ranks)."""
    from workbench.distributed import all_gather_checked, all_reduce_sums, resolve_group

    pg = resolve_group(group)
    if pg is None:
        ids, counts = np.unique(g, return_counts=True)
        return list(ids), [int(c) for c in counts]
    local = sorted(np.unique(g).tolist())
    union = sorted({i for part in all_gather_checked(lambda: local, pg, "group ids") for i in part})
    totals = all_reduce_sums(
        lambda: [[int(np.count_nonzero(g == i)) for i in union]], pg, "group counts"
    )
    return union, [int(c) for c in totals[0]] if totals else []


def spectra_by_modality(
    modalities: Any,
    *,
    labels: Any = None,
    class_names: Sequence[str] | Mapping[Hashable, str] | None = None,
    joint: bool = False,
    normalize: bool = False,
    center: bool = True,
    min_count: int = 2,
    group: Any = None,
    **spectrum_kw: Any,
) -> dict[str, Spectrum]:
    """Spectra of each modality — and optionally of their union and of each class — in one call.

    Args:
        modalities: ``{"image": X, "text": Y, ...}`` of (n_m, d) matrices in one shared space,
            or an :class:`~workbench.encoders.embeddings.Embeddings` (its raw ``image`` and
            ``text`` projected embeddings).
        labels: (n,) class labels shared by every modality (paired rows), or ``None``. With an
            Embeddings input, pass ``emb.labels`` (and ``class_names=emb.class_names``).
        class_names: display names of the labels.
        joint: add ``"joint"``: the spectrum of all modalities' rows stacked (one streaming
            pass, nothing concatenated).
        normalize: L2-normalise rows first (CLIP similarity space); default: as given.
        center: passed to :func:`spectrum`.
        min_count: per-class groups with fewer rows are skipped.
        group: a process group (or ``"auto"``) to sum over, as in :func:`spectrum`: each
            modality (and ``labels``) holds this rank's rows, at least 2 per modality.
        **spectrum_kw: other :func:`spectrum` options.

    Returns:
        ``{"image": ..., "text": ..., ["joint": ...], ["image/<class>": ...]}``.

    Raises:
        ValueError: modalities of different widths d, labels of the wrong length, and every
            bad-input case of :func:`spectrum`.
    """
    if hasattr(modalities, "image") and hasattr(modalities, "text"):
        mods = {"image": modalities.image, "text": modalities.text}
    elif isinstance(modalities, Mapping):
        if not modalities:
            raise ValueError("modalities is an empty mapping; pass {name: (n, d) matrix, ...}")
        mods = dict(modalities)
    else:
        raise TypeError(
            "modalities must be a non-empty {name: (n, d) matrix} mapping or Embeddings, got "
            f"{type(modalities).__name__}"
        )
    joint, normalize = as_bool(joint, "joint"), as_bool(normalize, "normalize")
    arrays: dict[str, Any] = {}
    for name, M in mods.items():
        if not isinstance(name, str):
            raise TypeError(f"modalities keys must be names (str), got {name!r}")
        A = to_numpy(M, name)
        as_matrix(A, name, min_rows=2, dtype=A.dtype, check_finite=False)
        arrays[name] = l2_normalize(as_matrix(A, name), name) if normalize else A
    first = next(iter(arrays))
    for name, A in arrays.items():
        check_same_dim(arrays[first], A, (first, name))
    out = {
        name: spectrum(A, center=center, name=name, group=group, **spectrum_kw)
        for name, A in arrays.items()
    }
    if joint:
        out["joint"] = spectrum(
            list(arrays.values()), center=center, name="joint", group=group, **spectrum_kw
        )
    if labels is not None:
        for name, A in arrays.items():
            y = as_labels(labels, "labels", n=A.shape[0], rows_of=name)
            out.update(
                spectra_by_group(
                    A,
                    y,
                    names=class_names,
                    min_count=min_count,
                    center=center,
                    prefix=f"{name}/",
                    name=name,
                    groups_name="labels",
                    group=group,
                    **spectrum_kw,
                )
            )
    return out
