"""ProCLIP — progressive alignment of a CLIP image encoder with a stronger text embedder
(Hu, Yang, …, Yang; arXiv 2510.18795). Spec: ``methods-geometry.md`` §4 and §8.

CLIP's text encoder (77 tokens, captions only) is replaced by a frozen pretrained embedder G_T
followed by an adapter, ``t* = Adapter(G_T(T))``. Aligning directly with InfoNCE (LLM2CLIP)
damages what the image encoder knew, so ProCLIP aligns in two stages (:meth:`ProCLIP.stages`):

1. ``"distill"`` (text only): the adapter inherits CLIP's text space, ``L_dis = L_ins + L_struct``
   between the adapter output ``s`` and the frozen CLIP text embedding ``t`` — see
   :func:`proclip_distill_terms`. Only the adapter trains (image side bit-identical).
2. ``"tune"``: image side + adapter (+ temperature) with ``L_info + λ_reg·L_reg``: symmetric
   InfoNCE with a learnable temperature, and the same two terms between the image embeddings
   and those of an :class:`~workbench.methods.teachers.EMATeacher` of the image encoder
   (α = 0.999 [paper]; ``teacher="frozen"`` is the released code, which has no EMA [code]) —
   :func:`proclip_reg_terms`.

Wiring in the workbench. The student encoder's *text tower* is the embedder G_T (its features
are cached, as ProCLIP caches G_T's) and :meth:`ProCLIP.attach` replaces its ``text_head`` by the
adapter, so ``BatchOutputs.text_features`` are ``t*`` and the trained encoder is the ProCLIP model.
The frozen CLIP text embeddings (and the long captions' G_T features) are per-caption
*distillation targets* computed once (:func:`write_distill_targets`, the analogue of the official
code's precomputed feature files) and looked up by caption.

Batch rows (§8): InfoNCE runs on the gathered global batch; the distillation and regulariser
terms run on each process's **local** rows with sum reductions, as the released code does, so
their scale grows with the per-process batch (paper: 4096 / 8 GPUs = 512 rows per GPU).

Modules: :mod:`.terms` (the pure functions), :mod:`.adapter`, :mod:`.targets`; this one holds
the :class:`ProCLIP` method that wires state (stages, teacher, targets) to them.

>>> from workbench import methods
>>> full = methods.get("proclip", targets=None)              # both stages, λ_reg = 4e-4, EMA
>>> [s.name for s in full.stages(100)]
['distill', 'tune']
>>> [s.name for s in methods.get("proclip/direct").stages(100)]   # LLM2CLIP-style baseline
['tune']
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench._validate import require
from workbench.distributed import DistInfo, gather_features
from workbench.methods.base import METHODS, BatchOutputs, LossOutput, Stage, StepState, mark_adapter
from workbench.methods.feature_loss import FeatureLoss
from workbench.methods.proclip.adapter import ProCLIPAdapter
from workbench.methods.proclip.targets import DistillTargets, write_distill_targets
from workbench.methods.proclip.terms import (
    STRUCT_FORMS,
    StructForm,
    proclip_distill_terms,
    proclip_reg_terms,
    structure_term,
)
from workbench.methods.teachers import TEACHER_MODES, EMATeacher

__all__ = [
    "ABLATIONS",
    "DistillTargets",
    "ProCLIP",
    "ProCLIPAdapter",
    "proclip_distill_terms",
    "proclip_reg_terms",
    "structure_term",
    "write_distill_targets",
]

TEACHER_SCOPES: tuple[str, ...] = ("image_head", "encoder")
STAGES: tuple[str, ...] = ("distill", "tune")

#: Table 5 rows (and the LLM2CLIP-style baseline) as constructor overrides; ``{}`` = full.
ABLATIONS: dict[str, dict[str, Any]] = {
    "direct": {"stage1_fraction": 0.0, "lambda_reg": 0.0},
    "ins": {"stage1_fraction": 1.0, "struct": False},
    "ins+struct": {"stage1_fraction": 1.0},
    "ins+struct+info": {"lambda_reg": 0.0},
    "full": {},
}


class ProCLIP(FeatureLoss):
    """ProCLIP's two stages on one run of :func:`workbench.train.train` (module docstring).

    Args:
        targets: :func:`write_distill_targets` file of the training captions (needed by the
            ``"distill"`` stage and by long captions in ``"tune"``; ``None`` → neither).
        stage1_fraction: Share of the run's steps in ``"distill"`` (0.5: the paper trains both
            stages for 4 epochs [paper Tab. 8]); 0 = no stage 1 (LLM2CLIP-style direct
            replacement), 1 = stage 1 only (Table 5's L_ins / + L_struct rows).
        struct: Add ``L_struct`` to ``L_ins`` in stage 1 (``False``: Table 5's first row).
        struct_form: ``"smooth_l1"`` [code, default] or ``"squared"`` [paper], both stages.
        long_captions: Use the targets' long captions: their ``L_ins`` rows in stage 1 [code],
            and a per-row random choice between short and long caption in stage 2 [code].
        long_prob: Chance a row's long caption is its stage 2 text (0.5: ``random.choice`` of
            the two [code]).
        lambda_reg: λ_reg, weight of ``L_reg`` (4e-4 [paper Tab. 7]); 0 = no teacher at all.
        teacher: ``"ema"`` (α-EMA of the image side [paper]) or ``"frozen"`` [code].
        ema_decay: α (0.999 [paper]).
        teacher_scope: What the teacher copies: ``"image_head"`` (the trainable image side when
            the image tower is frozen; targets = teacher head on this step's tower features)
            or ``"encoder"`` (the whole encoder, run on ``BatchOutputs.pixels``, when tower
            blocks train).
        linear_layers, expansion, dropout: :class:`ProCLIPAdapter` shape (4 [paper], 8, 0 [code]).
        distill_trainable: ``TrainConfig.trainable`` spec of stage 1 (the adapter only).
        tune_trainable: Spec of stage 2 (image side + adapter + temperature [paper §3.3]).
        distill_lr, tune_lr: Peak LR per stage (``None`` = ``TrainConfig.lr``).

    Loss terms: ``"distill"`` → ``ins``, ``struct`` (``struct`` logged even when off);
    ``"tune"`` → ``info`` and, when λ_reg > 0, ``reg_ins``, ``reg_struct``. Logs: ``long_rows``.
    """

    name = "proclip"
    #: A plain ``method(image, text, scale)`` call raises: each stage needs the loop's state.
    standalone: bool = False

    def __init__(
        self,
        targets: str | None = None,
        stage1_fraction: float = 0.5,
        struct: bool = True,
        struct_form: StructForm = "smooth_l1",
        long_captions: bool = True,
        long_prob: float = 0.5,
        lambda_reg: float = 4e-4,
        teacher: str = "ema",
        ema_decay: float = 0.999,
        teacher_scope: str = "image_head",
        linear_layers: int = 4,
        expansion: int = 8,
        dropout: float = 0.0,
        distill_trainable: str = "text_head",
        tune_trainable: str = "image_head+text_head+logit_scale",
        distill_lr: float | None = None,
        tune_lr: float | None = None,
    ) -> None:
        super().__init__(temperature=None, symmetric=True)
        n = self.name
        require(0.0 <= stage1_fraction <= 1.0, n, "stage1_fraction", stage1_fraction, "in [0, 1]")
        require(
            struct_form in STRUCT_FORMS, n, "struct_form", struct_form, "'smooth_l1' or 'squared'"
        )
        require(0.0 <= long_prob <= 1.0, n, "long_prob", long_prob, "in [0, 1]")
        require(lambda_reg >= 0.0, n, "lambda_reg", lambda_reg, "≥ 0 (0 = no regulariser)")
        require(teacher in TEACHER_MODES, n, "teacher", teacher, "'ema' or 'frozen'")
        require(0.0 <= ema_decay <= 1.0, n, "ema_decay", ema_decay, "in [0, 1]")
        require(teacher_scope in TEACHER_SCOPES, n, "teacher_scope", teacher_scope,
                "'image_head' or 'encoder'")  # fmt: skip
        for name, lr in (("distill_lr", distill_lr), ("tune_lr", tune_lr)):
            require(lr is None or lr > 0, n, name, lr, "> 0 or None")
        if targets is not None and not isinstance(targets, (str, Path)):
            raise TypeError(f"proclip: targets must be a file path or None, got {type(targets)}")
        self.targets_path = None if targets is None else str(targets)
        self.stage1_fraction, self.struct, self.struct_form = stage1_fraction, struct, struct_form
        self.long_captions, self.long_prob = long_captions, long_prob
        self.lambda_reg, self.teacher_mode, self.ema_decay = lambda_reg, teacher, ema_decay
        self.teacher_scope = teacher_scope
        self.adapter_shape = {"linear_layers": linear_layers, "expansion": expansion,
                              "dropout": dropout}  # fmt: skip
        ProCLIPAdapter(4, 4, **self.adapter_shape)  # validates the shape before any run
        self.distill_trainable, self.tune_trainable = distill_trainable, tune_trainable
        self.distill_lr, self.tune_lr = distill_lr, tune_lr
        self.teacher: EMATeacher | None = None
        self._targets: DistillTargets | None = None

    # -- hooks -------------------------------------------------------------------------------
    def stages(self, total_steps: int) -> list[Stage]:
        """``"distill"`` for ``round(stage1_fraction · T)`` steps, then ``"tune"``; a stage with
        no steps is left out (direct replacement, stage-1-only rows)."""
        n1 = round(self.stage1_fraction * total_steps)
        stages = [
            Stage("distill", n1, self.distill_trainable, self.distill_lr),
            Stage("tune", total_steps - n1, self.tune_trainable, self.tune_lr),
        ]
        return [s for s in stages if s.steps > 0]

    def attach(self, encoder: nn.Module) -> None:
        """Replace ``encoder.text_head`` by the adapter (sized from its input width and
        ``embed_dim``) and build the image teacher when λ_reg > 0. Idempotent on an encoder
        that already carries a ProCLIP adapter (a reloaded run)."""
        head = encoder.text_head
        if not isinstance(head, ProCLIPAdapter):
            d_in = getattr(head, "in_features", None)
            if d_in is None:
                raise ValueError(
                    "proclip: cannot size the adapter, encoder.text_head has no in_features; "
                    "give the student a linear text head on the embedder's features"
                )
            encoder.text_head = mark_adapter(
                ProCLIPAdapter(int(d_in), int(encoder.embed_dim), **self.adapter_shape)
            )
        if self.lambda_reg > 0:
            student = encoder.image_head if self.teacher_scope == "image_head" else encoder
            self.teacher = EMATeacher(student, self.ema_decay, self.teacher_mode)

    def on_step_end(self, encoder: nn.Module, state: StepState) -> None:
        if self.teacher is not None and state.stage == "tune":
            self.teacher.update(
                encoder.image_head if self.teacher_scope == "image_head" else encoder
            )

    # -- pieces ------------------------------------------------------------------------------
    def distill_targets(self, device: torch.device) -> DistillTargets:
        """The targets file, loaded once (on first use) onto ``device``."""
        if self.targets_path is None:
            raise ValueError(
                "proclip: the 'distill' stage (and long captions) need targets=<file> written by "
                "write_distill_targets: the frozen CLIP text embedding of every training caption"
            )
        if self._targets is None:
            self._targets = DistillTargets(self.targets_path)
        return self._targets.to(device)

    @staticmethod
    def _local(x: torch.Tensor, out: BatchOutputs, state: StepState) -> torch.Tensor:
        """This process's rows of a gathered (B, ·) tensor (rank r holds ``[r·b, (r+1)·b)``)."""
        b = len(out.captions) if out.captions else x.shape[0] // max(state.world_size, 1)
        return x[state.rank * b : (state.rank + 1) * b]

    def _long(self, out: BatchOutputs, rows: torch.Tensor, t: DistillTargets):
        """(mask (b,), adapter outputs of the masked rows' long captions, normalised)."""
        if out.encoder is None:
            raise ValueError("proclip: long captions need BatchOutputs.encoder (the adapter)")
        mask = t.has_long[rows]
        z = out.encoder.text_head(t.long_input[rows[mask]].to(out.text_features.dtype))
        return mask, F.normalize(z, dim=-1)

    def _distill(self, out: BatchOutputs, state: StepState) -> LossOutput:
        s = self._local(out.text_features, out, state)  # (b, D)
        t = self.distill_targets(s.device)
        rows = t.rows(out.captions, s.device)
        long_s = long_t = None
        if self.long_captions and t.long_input is not None:
            mask, long_s = self._long(out, rows, t)
            long_t = t.teacher_long[rows[mask]]
        terms = proclip_distill_terms(
            s, t.teacher[rows], long_s, long_t, struct_form=self.struct_form
        )
        loss = terms["ins"] + terms["struct"] if self.struct else terms["ins"]
        n_long = 0.0 if long_s is None else float(long_s.shape[0])
        return LossOutput(loss, terms, {"long_rows": n_long})

    def _tune_text(self, out: BatchOutputs, state: StepState) -> tuple[torch.Tensor, float]:
        """(B, D) stage 2 texts: each local row's short or (with ``long_prob``) long caption."""
        if not (self.long_captions and self.long_prob > 0 and self.targets_path is not None):
            return out.text_features, 0.0
        t = self.distill_targets(out.text_features.device)
        if t.long_input is None:
            return out.text_features, 0.0
        local = self._local(out.text_features, out, state)
        rows = t.rows(out.captions, local.device)
        pick = torch.rand(len(rows)) < self.long_prob  # global RNG: seeded and checkpointed
        mask, z = self._long(out, rows[pick.to(rows.device)], t)
        chosen = torch.zeros(len(rows), dtype=torch.bool, device=local.device)
        chosen[pick.nonzero().squeeze(1)[mask.cpu()]] = True
        text = local.clone()
        text[chosen] = z.to(text.dtype)
        info = DistInfo(state.rank, state.world_size)
        return gather_features(text, info), float(chosen.sum())

    def teacher_image(self, out: BatchOutputs, state: StepState) -> torch.Tensor:
        """(b, D) normalised teacher image embeddings of this process's rows (no grad)."""
        if self.teacher is None:
            raise ValueError("proclip: no teacher; attach(encoder) first (the loop does)")
        with torch.no_grad():
            if self.teacher_scope == "image_head":
                if out.image_tower is None:
                    raise ValueError(
                        "proclip: teacher_scope='image_head' needs image_tower features"
                    )
                z = self.teacher(out.image_tower)
            else:
                if out.pixels is None:
                    raise ValueError(
                        "proclip: teacher_scope='encoder' runs the teacher on pixels; train with "
                        "data='items' (tower blocks trainable)"
                    )
                m = self.teacher.module
                z = m.image_head(m.image_tower(out.pixels))
        return F.normalize(z, dim=-1)

    def _tune(self, out: BatchOutputs, state: StepState) -> LossOutput:
        text, n_long = self._tune_text(out, state)
        info = self.contrastive(out.image_features, text, out)
        terms = {"info": info}
        loss = info
        if self.lambda_reg > 0:
            v = self._local(out.image_features, out, state)
            reg = proclip_reg_terms(v, self.teacher_image(out, state), struct_form=self.struct_form)
            terms["reg_ins"], terms["reg_struct"] = reg["ins"], reg["struct"]
            loss = info + self.lambda_reg * (reg["ins"] + reg["struct"])
        return LossOutput(loss, terms, {"long_rows": n_long})

    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        if state.stage == "distill":
            return self._distill(out, state)
        if state.stage == "tune":
            return self._tune(out, state)
        raise ValueError(
            f"proclip: StepState.stage must be one of {STAGES}, got {state.stage!r}; ProCLIP runs "
            "in the loop's stages (workbench.train.train), or pass StepState(stage='tune', ...)"
        )


METHODS.register("proclip")(ProCLIP)
METHODS.register("proclip/direct", aliases=("llm2clip",))(
    functools.partial(ProCLIP, **ABLATIONS["direct"])
)
