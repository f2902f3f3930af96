"""Teachers for self-distillation (ProCLIP, DeGLA): a frozen copy of a module that follows the
student by an exponential moving average, or stays where it started.

A method builds its teacher in :meth:`Method.attach` and keeps it as a sub-module, so the
teacher's parameters and buffers are part of ``method.state_dict()`` — checkpointed with the
run, so a resumed run continues with the very same teacher — while ``requires_grad=False``
keeps them out of the parameters the loop trains (it takes the method's parameters that
require grad). The EMA update goes in :meth:`Method.on_step_end`::

    class Distill(Method):
        def attach(self, encoder):
            self.teacher = EMATeacher(encoder, decay=0.999)       # or mode="frozen"
        def on_step_end(self, encoder, state):
            self.teacher.update(encoder)

The footgun: the teacher is a *deep copy* made when ``attach`` runs, after LoRA was injected
and before training, so the student passed to :meth:`EMATeacher.update` must have the same
parameter names as the module copied (the same tower, head or whole encoder). Checkpoints
hold the whole teacher, so a teacher of a whole encoder doubles their size.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import nn

from workbench._validate import require

TeacherMode = Literal["ema", "frozen"]
TEACHER_MODES: tuple[str, ...] = ("ema", "frozen")


class EMATeacher(nn.Module):
    """A frozen deep copy of ``module``, updated as ``θ* ← α·θ* + (1 − α)·θ`` (or never).

    Args:
        module: The student module to copy (a head, a tower or a whole encoder, LoRA or
            adapters included). It is deep-copied; the copy is put in eval mode and gets
            ``requires_grad_(False)``, so it neither trains nor drops out.
        decay: α, the weight of the teacher's own value per update (0.999: a ~1000-step
            horizon, the usual mean-teacher setting). Must lie in [0, 1]; 0 copies the student.
        mode: ``"ema"`` follows the student with :meth:`update`; ``"frozen"`` keeps the copy
            made at construction (``update`` does nothing).

    Attributes:
        module: The teacher (call it, or its towers/heads, like the student).
        updates: Scalar int64 buffer, the number of EMA updates applied (checkpointed).
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, mode: TeacherMode = "ema") -> None:
        super().__init__()
        require(0.0 <= decay <= 1.0, "EMATeacher", "decay", decay, "in [0, 1]")
        require(mode in TEACHER_MODES, "EMATeacher", "mode", mode, "'ema' or 'frozen'")
        self.decay, self.mode = decay, mode
        self.module = copy.deepcopy(module)
        self.module.requires_grad_(False)
        for p in self.module.parameters():
            p.grad = None  # a deep copy carries the student's .grad along
        self.module.eval()
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMATeacher:
        """The wrapper follows ``mode``; the teacher itself always stays in eval mode."""
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``self.module(*args, **kwargs)``. Wrap in ``torch.no_grad()`` when its outputs are
        targets only (the parameters get no gradient either way)."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, decay: float | None = None) -> None:
        """One EMA step towards ``student``: parameters ``θ* ← α·θ* + (1 − α)·θ``, buffers
        (e.g. BatchNorm statistics) copied. No-op in ``"frozen"`` mode.

        Computed as ``θ* + (1 − α)(θ − θ*)`` (``torch.lerp``), so a parameter the student
        never changed stays bit-identical to it instead of drifting by rounding.

        Args:
            student: Module with the same parameter and buffer names as the one copied.
            decay: This step's α (a schedule); ``None`` = :attr:`decay`.
        """
        if self.mode == "frozen":
            return
        alpha = self.decay if decay is None else decay
        require(0.0 <= alpha <= 1.0, "EMATeacher", "decay", alpha, "in [0, 1]")
        mine, theirs = dict(self.module.named_parameters()), dict(student.named_parameters())
        if mine.keys() != theirs.keys():
            diff = sorted(mine.keys() ^ theirs.keys())
            raise ValueError(
                f"EMATeacher.update: the student's parameters differ from the teacher's "
                f"({diff[:5]}); pass the module the teacher was copied from"
            )
        for name, param in mine.items():
            param.lerp_(theirs[name].detach(), 1.0 - alpha)
        their_buffers = dict(student.named_buffers())
        for name, buf in self.module.named_buffers():
            if name in their_buffers:
                buf.copy_(their_buffers[name])
        self.updates += 1

    def extra_repr(self) -> str:
        return f"decay={self.decay}, mode={self.mode!r}"
