"""ProCLIP's arithmetic: the stage 1 distillation and stage 2 regulariser terms (spec
``methods-geometry.md`` §4 [paper], §8 [code]) as pure functions of tensors.

>>> import torch, torch.nn.functional as F
>>> s = F.normalize(torch.eye(3)[:, :2] + 0.1, dim=-1)
>>> sorted(proclip_distill_terms(s, s))
['ins', 'struct']
>>> float(proclip_distill_terms(s, s)["ins"])
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from workbench._validate import require

__all__ = ["STRUCT_FORMS", "proclip_distill_terms", "proclip_reg_terms", "structure_term"]

StructForm = Literal["smooth_l1", "squared"]
STRUCT_FORMS: tuple[str, ...] = ("smooth_l1", "squared")


# -- the arithmetic (§4, §8) ----------------------------------------------------------------------
def _check_rows(owner: str, pairs: Sequence[tuple[str, torch.Tensor | None]]) -> None:
    dims = set()
    for name, x in pairs:
        if x is None:
            continue
        if not torch.is_tensor(x) or x.ndim != 2:
            raise ValueError(
                f"{owner}: {name} must be a (n, D) tensor, got {getattr(x, 'shape', x)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{owner}: {name} holds NaN or Inf; check the features feeding it")
        dims.add(x.shape[1])
    if len(dims) > 1:
        shapes = {n: tuple(x.shape) for n, x in pairs if x is not None}
        raise ValueError(f"{owner}: every input must have the same width D, got {shapes}")


def structure_term(
    student: torch.Tensor, teacher: torch.Tensor, form: StructForm = "smooth_l1"
) -> torch.Tensor:
    """``Σ_{i<j} ρ(‖s_i − s_j‖ − ‖t_i − t_j‖)`` over the rows of two (n, D) matrices.

    ``form="smooth_l1"`` is ρ = smooth-L1 with β = 1 [code: ``F.smooth_l1_loss(pdist, pdist,
    reduction="sum")``], about half the paper's value while |Δd| < 1 and linear beyond;
    ``"squared"`` is ρ(x) = x² [paper: L_struct]. Fewer than two rows give 0. float32 at least.
    """
    if student.shape[0] < 2:
        return student.new_zeros((), dtype=torch.float32)
    ds, dt = F.pdist(student), F.pdist(teacher)  # (n(n-1)/2,)
    if form == "squared":
        return (ds - dt).square().sum()
    return F.smooth_l1_loss(ds, dt, reduction="sum", beta=1.0)


def _float(x: torch.Tensor | None) -> torch.Tensor | None:
    if x is None or x.dtype == torch.float64:
        return x
    return x.float()


def proclip_distill_terms(
    student_text: torch.Tensor,
    teacher_text: torch.Tensor,
    student_long: torch.Tensor | None = None,
    teacher_long: torch.Tensor | None = None,
    *,
    struct_form: StructForm = "smooth_l1",
) -> dict[str, torch.Tensor]:
    """Stage 1 terms, ``L_dis = ins + struct`` (spec §4 [paper], §8 [code]).

    Args:
        student_text: (n, D) adapter outputs ``t*`` of the short captions, L2-normalised.
        teacher_text: (n, D) frozen CLIP text embeddings ``e`` of the same captions, normalised.
        student_long: (m, D) adapter outputs of the long ("noise") captions, or ``None``.
        teacher_long: (m, D) CLIP embeddings of those long captions (77-token truncated).
        struct_form: ``"smooth_l1"`` [code, default] or ``"squared"`` [paper].

    Returns:
        ``{"ins": Σ‖s − t‖² over the short rows plus the long rows, "struct": Σ_{i<j}
        ρ(‖s_i − s_j‖ − ‖t_i − t_j‖) over the short rows only}``, scalar float32 sums
        (bf16/fp16 inputs are up-cast first).
    """
    owner = "proclip_distill_terms"
    require(
        struct_form in STRUCT_FORMS, owner, "struct_form", struct_form, "'smooth_l1' or 'squared'"
    )
    if (student_long is None) != (teacher_long is None):
        raise ValueError(f"{owner}: pass both student_long and teacher_long, or neither")
    _check_rows(
        owner,
        [("student_text", student_text), ("teacher_text", teacher_text),
         ("student_long", student_long), ("teacher_long", teacher_long)],
    )  # fmt: skip
    if student_text.shape != teacher_text.shape:
        raise ValueError(
            f"{owner}: student_text {tuple(student_text.shape)} and teacher_text "
            f"{tuple(teacher_text.shape)} must be the same rows"
        )
    s, t = _float(student_text), _float(teacher_text)
    ins = (s - t).square().sum()
    if student_long is not None:
        if student_long.shape != teacher_long.shape:
            raise ValueError(f"{owner}: student_long and teacher_long must be the same rows")
        ins = ins + (_float(student_long) - _float(teacher_long)).square().sum()
    return {"ins": ins, "struct": structure_term(s, t, struct_form)}


def proclip_reg_terms(
    image: torch.Tensor, teacher_image: torch.Tensor, *, struct_form: StructForm = "smooth_l1"
) -> dict[str, torch.Tensor]:
    """Stage 2 self-distillation terms, ``L_reg = ins + struct`` (spec §4, §8).

    Args:
        image: (n, D) student image embeddings ``v``, L2-normalised (this process's rows).
        teacher_image: (n, D) teacher image embeddings ``v*`` (EMA or frozen), normalised.
        struct_form: ``"smooth_l1"`` [code, default] or ``"squared"`` [paper].

    Returns:
        ``{"ins": Σ_i ‖v_i − v*_i‖², "struct": Σ_{i<j} ρ(‖v_i − v_j‖ − ‖v*_i − v*_j‖)}``,
        scalar float32 sums.
    """
    owner = "proclip_reg_terms"
    require(
        struct_form in STRUCT_FORMS, owner, "struct_form", struct_form, "'smooth_l1' or 'squared'"
    )
    _check_rows(owner, [("image", image), ("teacher_image", teacher_image)])
    if image.shape != teacher_image.shape:
        raise ValueError(
            f"{owner}: image {tuple(image.shape)} and teacher_image "
            f"{tuple(teacher_image.shape)} must be the same rows"
        )
    v, w = _float(image), _float(teacher_image)
    return {"ins": (v - w).square().sum(), "struct": structure_term(v, w, struct_form)}
