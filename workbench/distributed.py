"""Everything distributed lives here: process-group setup, the feature gather, gradient averaging,
and the collectives of the sharded ``embed`` and the streaming probes (``group=`` resolution,
float64 sums over ranks, gathers whose errors reach every rank instead of hanging the others).

A floor below :mod:`workbench.methods` and :mod:`workbench.train`: a method may call
:func:`gather_features` (e.g. to gather extra per-sample tensors) without importing the loop.

Semantics follow open_clip with ``local_loss=False, gather_with_grad=True``: every rank
gathers the global batch *with gradients*, computes the same global loss, and back-propagates;
``all_gather``'s backward sums the per-rank gradients into each rank's local features, and
averaging parameter gradients across ranks then gives exactly the single-process gradient of the
global-batch loss. Gradients are averaged here explicitly (DDP's all-reduce, bucketed), rather
than through the ``DistributedDataParallel`` wrapper, so multi-stage runs with parameters that get
no gradient, methods that run extra forwards, and the gradient probe need no special cases.

The probes' statistics (a d×d Gram, column sums, counts) combine exactly by summation, so a
probe given ``group=`` computes its local sums, :func:`all_reduce_sums` adds them across ranks,
and every rank finishes with the single-process result.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
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


# -- process groups for the streaming probes and the sharded embed ---------------------------
#: ``group=`` values the probes and ``embed`` take: a ``ProcessGroup``, ``"auto"`` (the default
#: group when ``torch.distributed`` is initialised with more than one process) or ``None``.
Group = Any


def resolve_group(group: Group) -> Any:
    """The process group ``group`` names, or ``None`` when the work stays in this process.

    ``None`` stays local (the default everywhere: inside a DDP training run every rank may call
    a probe on the same gathered rows, or only rank 0 may, and neither must silently
    all-reduce). ``"auto"`` is the default group of an initialised ``torch.distributed`` (what a
    script under ``torchrun`` wants), else local. A ``ProcessGroup`` is used as is. A group of
    one process is local.

    Raises:
        ValueError: Any other string. TypeError: Any other object.
    """
    if group is None:
        return None
    if isinstance(group, str):
        if group != "auto":
            raise ValueError(f"group must be a ProcessGroup, 'auto' or None, got {group!r}")
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = dist.group.WORLD
    elif not (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        raise TypeError(
            f"group must be a torch.distributed ProcessGroup, 'auto' or None, got "
            f"{type(group).__name__}"
        )
    return group if dist.get_world_size(group) > 1 else None


def group_info(group: Group) -> DistInfo:
    """``DistInfo(rank, world_size)`` of this process within ``group`` (0/1 when local)."""
    pg = resolve_group(group)
    if pg is None:
        return DistInfo()
    return DistInfo(dist.get_rank(pg), dist.get_world_size(pg))


def _device_of(group: Any) -> torch.device:
    """Where ``group``'s collectives need their tensors (NCCL: this process's CUDA device)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_checked(compute: Any, group: Group, what: str) -> list[Any]:
    """Every rank's ``compute()`` (a small picklable value), in rank order; errors reach all ranks.

    ``compute`` runs inside a ``try``: when it raises on some rank, every rank raises — that
    rank its own exception, the others a ``RuntimeError`` naming it — instead of the others
    waiting forever in the next collective (the classic distributed hang). Local: ``[compute()]``.
    """
    pg = resolve_group(group)
    if pg is None:
        return [compute()]
    error: BaseException | None = None
    value: Any = None
    try:
        value = compute()
    except Exception as e:  # re-raised below, after every rank has heard of it
        error = e
    mine = ("error", f"{type(error).__name__}: {error}") if error else ("ok", value)
    states: list[Any] = [None] * dist.get_world_size(pg)
    dist.all_gather_object(states, mine, group=pg)
    failed = [(r, s[1]) for r, s in enumerate(states) if s[0] == "error"]
    if error is not None:
        raise error
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"{what} failed on rank {rank} of {len(states)}: {message}")
    return [s[1] for s in states]


def all_reduce_sums(compute: Any, group: Group, what: str) -> list[np.ndarray] | None:
    """Element-wise float64 sums over ranks of the arrays ``compute()`` returns on each rank.

    Args:
        compute: Zero-argument callable returning a sequence of arrays (a rank's local sums:
            a Gram matrix, a column sum, a count...) or ``None`` for a rank without rows (it
            then contributes zeros).
        group: See :func:`resolve_group`.
        what: Names the statistic in errors.

    Returns:
        The summed arrays (float64, the shapes ``compute`` returned; the same bits on every
        rank), or ``None`` when no rank had rows. Errors in ``compute`` reach every rank as in
        :func:`all_gather_checked`; ranks returning different shapes raise ``ValueError``.
    """
    pg = resolve_group(group)
    if pg is None:
        local = compute()
        return None if local is None else [np.array(a, dtype=np.float64) for a in local]
    box: list[list[np.ndarray] | None] = [None]

    def shapes() -> list[tuple[int, ...]] | None:
        local = compute()
        box[0] = None if local is None else [np.asarray(a, dtype=np.float64) for a in local]
        return None if box[0] is None else [a.shape for a in box[0]]

    seen = [s for s in all_gather_checked(shapes, pg, what) if s is not None]
    if not seen:
        return None
    if any(s != seen[0] for s in seen):
        raise ValueError(f"{what}: ranks hold statistics of different shapes {seen}")
    parts = box[0] or [np.zeros(s) for s in seen[0]]
    flat = torch.from_numpy(np.concatenate([p.ravel() for p in parts])).to(_device_of(pg))
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=pg)
    out, offset = [], 0
    flat_np = flat.cpu().numpy()
    for shape in seen[0]:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(flat_np[offset : offset + size].reshape(shape).copy())
        offset += size
    return out


def barrier_polling(group: Group, poll: Any, interval: float = 0.5) -> None:
    """Wait for every rank of ``group``, calling ``poll()`` every ``interval`` s meanwhile
    (rank 0 refreshing a progress bar from other ranks' files). Local: one ``poll()``."""
    pg = resolve_group(group)
    if pg is None:
        poll()
        return
    work = dist.barrier(group=pg, async_op=True)
    while not work.is_completed():
        poll()
        time.sleep(interval)
    work.wait()
    poll()
