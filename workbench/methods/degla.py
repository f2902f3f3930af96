"""DeGLA — Decoupled Global-Local Alignment (Hu, Yang, Wang, Xu, Feng, Wang; ACM MM 2025,
arXiv 2504.16801): hard-negative captions in the global loss, two local losses, EMA self-distillation.

Spec ``methods-geometry.md`` §5 and §8 (the official ``CLIPloss_DeGLA`` in ``src/open_clip/loss.py``
read line by line). Per step, with L2-normalised image ``v_i``, caption ``t_i`` and its K hard
negatives ``t̄_{i,k}`` from the student, and ``v*``, ``t*``, ``t̄*`` from the EMA teacher:

* ``base`` (Eq. 4–5, as the code): image→text softmax over the batch's B captions **and all
  B·K negatives**; text→image over the B images (positives only); mean of the two.
* ``igc`` (image-grounded contrast): each image against its own caption and its **own** K
  negatives, at the learned logit scale.
* ``tgc`` (text-grounded contrast): anchor ``t_i``, positive ``t*_i`` (the teacher's embedding of
  the same caption), negatives the student's ``t̄_{i,k}`` of caption ``i`` itself, at the fixed
  scale 10 [code]. The released code's mask picks *other* captions' negatives (it assumes a
  negative-major layout on caption-major data; §8): we follow the paper's intent,
  ``tgc_negatives="code"`` reproduces the release.
* ``distill``: ``Σ‖v − v*‖² + Σ‖t − t*‖² + Σ‖t̄ − t̄*‖²`` over every row and dimension
  (``mse_loss(reduction="sum")`` [code]).

``L = base + λ1·igc + λ2·tgc + λ3·distill`` with λ1 = λ2 = 0.1, λ3 = 0.005 and the teacher
``θ* ← αθ* + (1 − α)θ`` after every optimiser step, α = 0.9996 [paper, code]. The arithmetic is
:func:`degla_loss_terms`; :class:`DeGLA` wires the teacher, the switches of Table 7
(:data:`ABLATIONS`) and the hard negatives (:meth:`DeGLA.hard_negative_texts`, from a
:class:`~workbench.data.negative_bank.NegativeBank`) to it.

>>> import torch
>>> e = torch.eye(3)                                    # image = caption = teacher, orthogonal negatives
>>> t = degla_loss_terms(e[:2], e[:2], e[2].expand(2, 1, 3), e[:2], e[:2], e[2].expand(2, 1, 3), 1.0)
>>> round(float(t["igc"]), 4), round(float(t["distill"]), 4)   # log(1 + e^0 / e^1), and 0
(0.3133, 0.0)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench._validate import require
from workbench.distributed import DistInfo, gather_features
from workbench.methods.base import METHODS, BatchOutputs, LossOutput, Method, StepState
from workbench.methods.teachers import EMATeacher

__all__ = ["ABLATIONS", "TERMS", "DeGLA", "degla_loss_terms"]

#: The four terms :func:`degla_loss_terms` returns, in the order of the paper's total loss.
TERMS: tuple[str, ...] = ("base", "igc", "tgc", "distill")
#: Which negatives TGC contrasts: ``"own"`` (each caption's own K, the paper; default) or
#: ``"code"`` (the released mask: caption ``i`` gets flattened rows ``i + k·B``).
TGC_NEGATIVES: tuple[str, ...] = ("own", "code")
#: What the EMA teacher copies: ``"heads"`` (both projection heads; towers frozen — the tower
#: features are then shared with the student) or ``"encoder"`` (the whole encoder; any trainable
#: parts, teacher towers re-run on the step's pixels/tokens).
TEACHERS: tuple[str, ...] = ("heads", "encoder")

#: DeGLA Table 7's rows as switch settings ("CN" = composed negatives in the global loss).
ABLATIONS: dict[str, dict[str, bool]] = {
    "cn": {"igc": False, "tgc": False, "distill": False},
    "cn+igc": {"igc": True, "tgc": False, "distill": False},
    "cn+tgc": {"igc": False, "tgc": True, "distill": False},
    "cn+igc+tgc": {"igc": True, "tgc": True, "distill": False},
    "full": {"igc": True, "tgc": True, "distill": True},  # "+SD": DeGLA
}


def _check_inputs(
    image: torch.Tensor,
    text: torch.Tensor,
    negatives: torch.Tensor,
    teachers: dict[str, torch.Tensor | None],
) -> None:
    if image.ndim != 2 or text.shape != image.shape:
        raise ValueError(
            "degla_loss_terms: image and text must both be (B, D), got "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    b, d = image.shape
    if negatives.ndim != 3 or negatives.shape[0] != b or negatives.shape[2] != d:
        raise ValueError(
            f"degla_loss_terms: negatives must be (B, K, D) = ({b}, K, {d}), got "
            f"{tuple(negatives.shape)}; negatives[i, k] is the k-th negative of caption i"
        )
    if negatives.shape[1] < 1:
        raise ValueError("degla_loss_terms: negatives has K = 0 negatives per caption; need K ≥ 1")
    want = {"teacher_image": image.shape, "teacher_text": text.shape}
    want["teacher_negatives"] = negatives.shape
    for name, t in teachers.items():
        if t is not None and t.shape != want[name]:
            raise ValueError(
                f"degla_loss_terms: {name} must have the student's shape {tuple(want[name])}, "
                f"got {tuple(t.shape)}"
            )


def degla_loss_terms(
    image: torch.Tensor,
    text: torch.Tensor,
    negatives: torch.Tensor,
    teacher_image: torch.Tensor | None,
    teacher_text: torch.Tensor | None,
    teacher_negatives: torch.Tensor | None,
    logit_scale: torch.Tensor | float,
    tgc_scale: float = 10.0,
    *,
    terms: Collection[str] = TERMS,
    tgc_negatives: str = "own",
) -> dict[str, torch.Tensor]:
    """DeGLA's four loss terms, unweighted (spec ``methods-geometry.md`` §5, §8; Eqs. 4–5 + IGC,
    TGC and the distillation sum).

    Layout: ``negatives[i, k]`` (B, K, D) is the k-th negative of caption ``i``. The official
    code stacks text rows as ``[B captions; B·K negatives]`` caption-major, i.e. its text row
    ``B + i·K + k`` is our ``negatives[i, k]``; ``negatives.reshape(B·K, D)`` is exactly its
    negative block, so the global softmax's columns are the code's in the code's order.

    Args:
        image: (B, D) L2-normalised student image embeddings ``v``.
        text: (B, D) L2-normalised student caption embeddings ``t``.
        negatives: (B, K, D) L2-normalised student embeddings of the hard negatives ``t̄``.
        teacher_image: (B, D) EMA-teacher image embeddings ``v*`` (only ``distill`` uses them).
        teacher_text: (B, D) teacher caption embeddings ``t*`` (``tgc``'s positive, ``distill``).
        teacher_negatives: (B, K, D) teacher negative embeddings ``t̄*`` (``distill``).
        logit_scale: The learned multiplier ``1/τ`` (``exp`` of the encoder's log scale) used by
            ``base`` and ``igc``; a scalar tensor keeps it trainable.
        tgc_scale: TGC's fixed logit multiplier (10 [code]).
        terms: Which terms to compute (a subset of :data:`TERMS`); teacher inputs a requested
            term does not use may be ``None``.
        tgc_negatives: ``"own"`` (caption i's own negatives; the paper, default) or ``"code"``
            (the released mask: caption i gets flattened negative rows ``i + k·B``).

    Returns:
        ``{name: scalar float32 tensor}`` for each requested term. Inputs are up-cast to float32
        first, so bf16 features give float32 losses.
    """
    unknown = set(terms) - set(TERMS)
    if unknown:
        raise ValueError(f"degla_loss_terms: unknown terms {sorted(unknown)}; choose from {TERMS}")
    require(tgc_negatives in TGC_NEGATIVES, "degla_loss_terms", "tgc_negatives", tgc_negatives,
            "'own' or 'code'")  # fmt: skip
    require(float(tgc_scale) > 0, "degla_loss_terms", "tgc_scale", tgc_scale, "> 0")
    teachers = {
        "teacher_image": teacher_image,
        "teacher_text": teacher_text,
        "teacher_negatives": teacher_negatives,
    }
    needs = {"tgc": ("teacher_text",), "distill": tuple(teachers)}
    for term, names in needs.items():
        missing = [n for n in names if term in terms and teachers[n] is None]
        if missing:
            raise ValueError(f"degla_loss_terms: term {term!r} needs {missing} (got None)")
    _check_inputs(image, text, negatives, teachers)

    v, t, n = image.float(), text.float(), negatives.float()
    b, k, d = n.shape
    sv = logit_scale * v  # (B, D): scaling the B rows is cheaper than the B·(B + B·K) logits
    out: dict[str, torch.Tensor] = {}
    if "base" in terms or "igc" in terms:
        pos_block = sv @ t.T  # (B, B): logits_per_image over captions = logits_per_text.T
        neg_block = sv @ n.reshape(b * k, d).T  # (B, B·K): the code's negative columns, in order
        positive = pos_block.diagonal()  # (B,)
    if "base" in terms:
        # image→text: one softmax over [B captions; B·K negatives] (the columns are never
        # concatenated: log Σ over both blocks = logaddexp of the two logsumexps)
        i2t = torch.logaddexp(pos_block.logsumexp(1), neg_block.logsumexp(1)) - positive
        t2i = pos_block.logsumexp(0) - positive  # text→image over the B images only
        out["base"] = (i2t.mean() + t2i.mean()) / 2
    if "igc" in terms:
        own = neg_block.view(b, b, k)[torch.arange(b), torch.arange(b)]  # (B, K): v_i · t̄_{i,k}
        igc_logits = torch.cat([positive[:, None], own], 1)  # (B, 1 + K)
        out["igc"] = (igc_logits.logsumexp(1) - positive).mean()
    if "tgc" in terms:
        tn = n if tgc_negatives == "own" else n.reshape(k, b, d).transpose(0, 1)  # (B, K, D)
        pos = (t * teacher_text.float()).sum(-1, keepdim=True)  # (B, 1)
        own = torch.einsum("bd,bkd->bk", t, tn)  # (B, K)
        tgc_logits = tgc_scale * torch.cat([pos, own], 1)  # (B, 1 + K)
        out["tgc"] = (tgc_logits.logsumexp(1) - tgc_logits[:, 0]).mean()
    if "distill" in terms:
        out["distill"] = (
            F.mse_loss(v, teacher_image.float(), reduction="sum")
            + F.mse_loss(t, teacher_text.float(), reduction="sum")
            + F.mse_loss(n, teacher_negatives.float(), reduction="sum")
        )
    return out


class DeGLA(Method):
    """DeGLA fine-tuning: :func:`degla_loss_terms` with an EMA teacher and Table 7's switches.

    Args:
        lambda_igc: λ1, weight of IGC (0.1 [paper, code]).
        lambda_tgc: λ2, weight of TGC (0.1 [paper, code]).
        lambda_distill: λ3, weight of the distillation sum (0.005 [paper, code]).
        ema_decay: α of the EMA teacher (0.9996 [paper]).
        tgc_scale: TGC's fixed logit multiplier (10 [code]).
        igc: Add λ1·IGC (Table 7's "+IGC").
        tgc: Add λ2·TGC ("+TGC"; needs the teacher's caption embedding).
        distill: Add λ3·distill ("+SD", self-distillation).
        negatives: Path of a saved :class:`~workbench.data.negative_bank.NegativeBank`
            (``build_negative_bank(...).path``) covering every training caption; ``None``
            generates each caption's negatives on first use with the bank's default rules
            (synthetic-world factors where they apply, else the built-in word lists) —
            deterministic per caption, but blind to an item's *other* captions.
        k: Negatives per caption when ``negatives`` is ``None`` (4 [paper]); a bank fixes its own.
        negative_seed: Seed of the on-the-fly generator (``negatives=None``).
        teacher: ``"heads"`` (an EMA copy of both projection heads: exact while the towers are
            frozen, and cheap) or ``"encoder"`` (an EMA copy of the whole encoder, for runs
            whose tower layers or LoRA train). [our reading: the paper's teacher is the whole
            model; with frozen towers the two are the same function.]
        tgc_negatives: ``"own"`` (default, the paper's intent) or ``"code"`` (the release's mask).

    Terms logged: those switched on (``base`` always). Logs: ``temperature`` (τ of ``base``/IGC).
    Outside the loop (no :meth:`attach`) the teacher is the student itself, detached — what it
    is at step 0.
    """

    name = "degla"
    grad_probe = ("base", "igc")
    needs_hard_negatives = True

    def __init__(
        self,
        lambda_igc: float = 0.1,
        lambda_tgc: float = 0.1,
        lambda_distill: float = 0.005,
        ema_decay: float = 0.9996,
        tgc_scale: float = 10.0,
        igc: bool = True,
        tgc: bool = True,
        distill: bool = True,
        negatives: str | None = None,
        k: int = 4,
        negative_seed: int = 0,
        teacher: str = "heads",
        tgc_negatives: str = "own",
    ) -> None:
        super().__init__()
        for name, value in (
            ("lambda_igc", lambda_igc),
            ("lambda_tgc", lambda_tgc),
            ("lambda_distill", lambda_distill),
        ):
            require(value >= 0, self.name, name, value, "≥ 0")
        require(0.0 <= ema_decay <= 1.0, self.name, "ema_decay", ema_decay, "in [0, 1]")
        require(tgc_scale > 0, self.name, "tgc_scale", tgc_scale, "> 0")
        require(isinstance(k, int) and k >= 1, self.name, "k", k, "an int ≥ 1")
        require(teacher in TEACHERS, self.name, "teacher", teacher, "'heads' or 'encoder'")
        require(tgc_negatives in TGC_NEGATIVES, self.name, "tgc_negatives", tgc_negatives,
                "'own' or 'code'")  # fmt: skip
        require(negatives is None or isinstance(negatives, str), self.name, "negatives",
                negatives, "a NegativeBank path (str) or None")  # fmt: skip
        self.lambdas = {"igc": lambda_igc, "tgc": lambda_tgc, "distill": lambda_distill}
        self.switches = {"igc": bool(igc), "tgc": bool(tgc), "distill": bool(distill)}
        self.ema_decay, self.tgc_scale = ema_decay, tgc_scale
        self.negatives, self.k, self.negative_seed = negatives, k, negative_seed
        self.teacher_kind, self.tgc_negatives = teacher, tgc_negatives
        self.teacher: EMATeacher | None = None
        self._bank: Any = None

    @property
    def active_terms(self) -> tuple[str, ...]:
        """The terms this configuration computes (``base`` plus the switched-on ones)."""
        return ("base", *(t for t in TERMS[1:] if self.switches[t]))

    @property
    def uses_teacher(self) -> bool:
        """TGC and the distillation need the EMA teacher; CN and CN+IGC do not build one."""
        return self.switches["tgc"] or self.switches["distill"]

    # -- hooks ------------------------------------------------------------------------------
    def attach(self, encoder: nn.Module) -> None:
        """Copy the teacher from the (pretrained) encoder, frozen, in eval mode."""
        if self.uses_teacher:
            self.teacher = EMATeacher(self._student(encoder), decay=self.ema_decay)

    def on_step_end(self, encoder: nn.Module, state: StepState) -> None:
        """``θ* ← αθ* + (1 − α)θ`` after every optimiser step."""
        if self.teacher is not None:
            self.teacher.update(self._student(encoder))

    def hard_negative_texts(
        self, captions: Sequence[str], attributes: Sequence[dict[str, Any]]
    ) -> list[list[str]]:
        """K negatives per caption from the bank (``negatives``) or the on-the-fly generator."""
        return self.bank.lookup(captions, attributes)

    @property
    def bank(self) -> Any:
        """The :class:`~workbench.data.negative_bank.NegativeBank` in use (loaded lazily)."""
        if self._bank is None:
            from workbench.data.negative_bank import NegativeBank, NegativeConfig

            if self.negatives is not None:
                self._bank = NegativeBank.load(self.negatives)
            else:
                config = NegativeConfig(k=self.k, seed=self.negative_seed, text_rules="words")
                self._bank = NegativeBank(config)
        return self._bank

    # -- the loss ---------------------------------------------------------------------------
    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        if out.hard_negatives is None:
            raise ValueError(
                "degla needs hard negatives: BatchOutputs.hard_negatives (B, K, D) is None. "
                "Train it through workbench.train (which embeds DeGLA.hard_negative_texts), or "
                "pass hard_negatives= when building BatchOutputs yourself"
            )
        v, t, n = out.image_features, out.text_features, out.hard_negatives
        tv = tt = tn = None
        if self.uses_teacher:
            tv, tt, tn = self._teacher_features(out, state)
        parts = degla_loss_terms(
            v, t, n, tv, tt, tn, out.logit_scale, self.tgc_scale,
            terms=self.active_terms, tgc_negatives=self.tgc_negatives,
        )  # fmt: skip
        loss = parts["base"]
        for name in self.active_terms[1:]:
            loss = loss + self.lambdas[name] * parts[name]
        tau = float(1.0 / torch.as_tensor(out.logit_scale).detach().float())
        return LossOutput(loss, parts, {"temperature": tau})

    # -- the teacher ------------------------------------------------------------------------
    def _student(self, encoder: nn.Module) -> nn.Module:
        if self.teacher_kind == "encoder":
            return encoder
        return nn.ModuleDict({"image_head": encoder.image_head, "text_head": encoder.text_head})

    @torch.no_grad()
    def _teacher_features(
        self, out: BatchOutputs, state: StepState
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """(B, D), (B, D), (B, K, D) L2-normalised teacher embeddings of the step's images,
        captions and negatives, gathered like the student's; images and negatives only when
        the distillation is on (TGC needs the captions alone)."""
        if self.teacher is None:  # outside the loop: the teacher is the student at step 0
            v, t, n = out.image_features, out.text_features, out.hard_negatives
            return v.detach(), t.detach(), n.detach()
        full = self.switches["distill"]
        if self.teacher_kind == "heads":
            tv, tt, tn = self._heads_teacher(out, full)
        else:
            tv, tt, tn = self._encoder_teacher(out, full)
        info = DistInfo(state.rank, state.world_size)
        tt = F.normalize(gather_features(tt, info), dim=-1)  # (B, D)
        if not full:
            return None, tt, None
        b, k = tn.shape[:2]
        tn = gather_features(tn.reshape(b, k * tn.shape[-1]), info)  # (B, K·D)
        tn = tn.view(tn.shape[0], k, -1)  # (B, K, D)
        return F.normalize(gather_features(tv, info), dim=-1), tt, F.normalize(tn, dim=-1)

    def _heads_teacher(self, out: BatchOutputs, full: bool) -> tuple[Any, ...]:
        for name in ("image_tower", "text_tower", "hard_negative_tower"):
            x = getattr(out, name)
            if x is None:
                raise ValueError(
                    f"degla teacher='heads' needs BatchOutputs.{name} (the tower features the "
                    "heads project); the training loop provides it"
                )
            if x.requires_grad:
                raise ValueError(
                    f"degla teacher='heads' assumes frozen towers, but BatchOutputs.{name} "
                    "carries a gradient (tower parameters train); use teacher='encoder'"
                )
        heads = self.teacher.module
        tt = heads["text_head"](out.text_tower)  # (B_local, D)
        if not full:
            return None, tt, None
        tv = heads["image_head"](out.image_tower)  # (B_local, D)
        tn = heads["text_head"](out.hard_negative_tower)  # (B_local, K, D)
        return tv, tt, tn

    def _encoder_teacher(self, out: BatchOutputs, full: bool) -> tuple[Any, ...]:
        """The teacher's heads on its own towers. A tower whose features carry no gradient is
        frozen, so the teacher's copy of it equals the student's (the EMA leaves unchanged
        weights bit-identical) and those features are reused; a training tower runs again in
        the teacher, on the step's pixels, tokens or negative captions."""
        enc = self.teacher.module

        def tower(cached: Any, side: str, inputs: Any) -> torch.Tensor:
            if cached is not None and not cached.requires_grad:
                return cached
            if inputs is None:
                raise ValueError(
                    f"degla teacher='encoder': the {side} tower trains, so the teacher re-runs "
                    f"it and needs its inputs in BatchOutputs (pixels / tokens / negative_texts)"
                )
            return enc.image_tower(inputs) if side == "image" else enc.text_tower(inputs)

        tt = enc.text_head(tower(out.text_tower, "text", out.tokens))  # (B_local, D)
        if not full:
            return None, tt, None
        tv = enc.image_head(tower(out.image_tower, "image", out.pixels))  # (B_local, D)
        neg_tokens = None
        if out.negative_texts:
            flat = [s for negs in out.negative_texts for s in negs]
            neg_tokens = {key: v.to(tt.device) for key, v in enc.tokenize(flat).items()}
        cached = out.hard_negative_tower
        if cached is not None:
            cached = cached.reshape(-1, cached.shape[-1])  # (B_local·K, D_txt)
        tn = enc.text_head(tower(cached, "text", neg_tokens))  # (B_local·K, D)
        b = tv.shape[0]
        return tv, tt, tn.view(b, -1, tn.shape[-1])  # (B_local, K, D)


METHODS.register("degla")(DeGLA)
