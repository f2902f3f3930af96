"""The loop's periodic spectral snapshot: singular values and strong/weak/noise partition of
the global batch's features (``{"kind": "snapshot"}`` records in ``log.jsonl``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def _partition_kernels() -> tuple[Callable[..., Any], Callable[..., Any]] | str:
    """``(iqr_mp_partition, iqr_noise_scale)`` from ``workbench.probes.partitions``, or why not."""
    try:
        from workbench.probes.partitions import iqr_mp_partition, iqr_noise_scale
    except ImportError as err:
        return f"workbench.probes.partitions unavailable: {err}"
    return iqr_mp_partition, iqr_noise_scale


def spectral_snapshot(features: torch.Tensor, max_sv: int) -> dict[str, Any]:
    """Singular values (largest ``max_sv``) and strong/weak/noise partition of (B, D) features.

    Features are the global batch's L2-normalised post-head embeddings (uncentred, as SDE
    decomposes them). The partition is ``workbench.probes.partitions``'s ``"iqr-mp"`` rule
    (SDE spec §1.2 [our reading]) on these singular values, with the IQR noise scale of the
    column-centred entries; ``partition`` holds |S|/r, |W|/r, |N|/r.
    """
    x = features.detach().float()
    sv = torch.linalg.svdvals(x).cpu().numpy().astype(np.float64)  # (r,), descending
    out: dict[str, Any] = {"singular_values": sv[:max_sv].tolist()}
    kernels = _partition_kernels()
    if isinstance(kernels, str):
        return {**out, "partition": None, "partition_error": kernels}
    iqr_mp_partition, iqr_noise_scale = kernels
    x64 = x.cpu().numpy().astype(np.float64)
    res = iqr_mp_partition(sv, iqr_noise_scale(x64), x64.shape[0], x64.shape[1])
    out.update(
        partition=res.proportions,
        counts=res.counts,
        energy=res.energy_proportions,
        thresholds={k: float(v) for k, v in res.thresholds.items()},
    )
    return out
