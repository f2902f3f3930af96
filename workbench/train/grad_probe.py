"""The gradient probe (DCR Fig. 2): cosine between the gradients of two loss terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from workbench.distributed import DistInfo, all_reduce_mean


def gradient_cosine(
    terms: Mapping[str, torch.Tensor],
    names: tuple[str, str],
    params: Sequence[nn.Parameter],
    info: DistInfo,
) -> dict[str, float]:
    """``{"<a>~<b>": cos(∇θ terms[a], ∇θ terms[b])}`` over the flattened gradients of ``params``
    (a parameter a term does not reach counts as a zero gradient), averaged across ranks first.

    The graph is retained, so the step's backward pass still runs afterwards.
    """
    a, b = names
    missing = [t for t in (a, b) if t not in terms]
    if missing:
        raise ValueError(f"grad_probe names terms {missing} the method did not return")
    flat = []
    for name in (a, b):
        grads = torch.autograd.grad(terms[name], params, retain_graph=True, allow_unused=True)
        vec = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(grads, params)
            ]
        )  # (n_params,)
        flat.append(all_reduce_mean(vec, info))
    cos = F.cosine_similarity(flat[0], flat[1], dim=0, eps=1e-12)
    return {f"{a}~{b}": float(cos)}
