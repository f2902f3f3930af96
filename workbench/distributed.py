"""Everything distributed lives here: process-group setup, the feature gather, gradient averaging.

A floor below :mod:`workbench.methods` and :mod:`workbench.train`: a method may call
:func:`gather_features` (e.g. to gather extra per-sample tensors) without importing the loop.

Semantics follow open_clip with ``local_loss=False, gather_with_grad=True``: every rank
gathers the global batch *with gradients*, computes the same global loss, and back-propagates;
``all_gather``'s backward sums the per-rank gradients into each rank's local features, and
averaging parameter gradients across ranks then gives exactly the single-process gradient of the
global-batch loss. Gradients are averaged here explicitly (DDP's all-reduce, bucketed), rather
than through the ``DistributedDataParallel`` wrapper, so multi-stage runs with parameters that get
no gradient, methods that run extra forwards, and the gradient probe need no special cases.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """``rank``/``world_size`` of this process (0/1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistInfo:
    """Join the process group ``torchrun`` describes (env ``WORLD_SIZE`` > 1), or reuse one.

    Backend: ``nccl`` on CUDA, ``gloo`` on CPU. A single process without ``WORLD_SIZE`` runs
    undistributed.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def gather_features(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All-gather (B_local, ...) rows from every rank into (B_global, ...), keeping gradients.

    Rank r's rows land at ``[r·B_local, (r+1)·B_local)``, so the global batch has the same
    order as a single process's. Identity when not distributed.
    """
    if not info.enabled:
        return x
    import torch.distributed.nn as dist_nn

    with warnings.catch_warnings():
        # Deprecated in favour of a private functional API; still the public autograd gather.
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_nn.all_gather(x.contiguous()), dim=0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``p.grad`` over ranks for parameters that have one (flattened into one all-reduce).

    Every rank must pass the same parameters with the same ``grad is None`` pattern (true here:
    all ranks run the same global loss).
    """
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``x`` over ranks (a copy; identity when not distributed)."""
    if not info.enabled:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / info.world_size


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical starting points)."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run directory path it created)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()
