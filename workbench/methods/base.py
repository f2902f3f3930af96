"""The contract between a training method and the one training loop (:mod:`workbench.train`).

A *method* is a small ``nn.Module`` that turns one step's features into a loss. Everything a
method may need beyond a loss is an optional hook with a do-nothing default, so InfoNCE is a
dozen lines and DCR/ProCLIP/DeGLA/Earth-Adapter add only what they use:

============================  ==============================================================
hook                          used by
============================  ==============================================================
``compute(out, state)``       every method: the loss and its named terms (required)
own ``nn.Parameter`` s        trainable extra modules (DCR projector h_ω, ProCLIP adapter)
``attach(encoder)``           adapters inside a tower (Earth-Adapter), EMA/frozen teachers
                              (ProCLIP, DeGLA), auxiliary frozen models (DCR denoiser)
``on_step_end(encoder, s)``   EMA teacher updates after each optimiser step (``EMATeacher``)
``stages(total_steps)``       multi-stage schedules (ProCLIP distill→tune, DCR stage 1→2)
``hard_negative_texts(...)``  per-sample hard negatives (DeGLA): the loop embeds them
``schedule_values(state)``    logged schedules (SDE α(t), λ(t))
``spectral_snapshot(out, s)`` method-specific spectral numbers added to the log snapshots
``grad_probe``                two loss-term names whose gradient cosine the loop logs (DCR Fig. 2)
============================  ==============================================================

Calling convention. Every method is callable two ways:

* ``method(out: BatchOutputs, state: StepState) -> LossOutput`` — what the loop does;
* ``method(image_features, text_features, logit_scale, output_dict=False) -> Tensor`` — open_clip's
  ``ClipLoss`` signature (features already L2-normalised, ``logit_scale`` the *multiplier*
  ``exp(log_scale)``), evaluated at ``StepState.standalone()`` (step 0 of 1).

Feature conventions (the loop guarantees them): ``image_features``/``text_features`` are
post-head, **L2-normalised**, (B, D), and in a distributed run already all-gathered *with
gradients* so B is the global batch; ``image_raw``/``text_raw`` are the same rows before
normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workbench._registry import Registry


@dataclass(frozen=True)
class StepState:
    """Where training is, for schedules.

    Attributes:
        step: Optimiser steps completed before this one (0-based index of the current step).
        total_steps: Total optimiser steps of the run (all stages).
        stage: Name of the current stage (``"train"`` for single-stage methods).
        stage_step: Step index inside the current stage.
        stage_steps: Length of the current stage in steps.
        rank: Process rank (0 when not distributed).
        world_size: Number of processes (1 when not distributed).
    """

    step: int
    total_steps: int
    stage: str = "train"
    stage_step: int | None = None
    stage_steps: int | None = None
    rank: int = 0
    world_size: int = 1

    @property
    def progress(self) -> float:
        """``t / T`` in [0, 1) over the whole run (the curriculum clock for α(t), λ(t))."""
        return self.step / max(self.total_steps, 1)

    @property
    def stage_progress(self) -> float:
        """``t / T`` inside the current stage."""
        s = self.step if self.stage_step is None else self.stage_step
        n = self.total_steps if self.stage_steps is None else self.stage_steps
        return s / max(n, 1)

    @classmethod
    def standalone(cls) -> StepState:
        """The state used when a method is called outside the loop (open_clip-style call)."""
        return cls(step=0, total_steps=1)


@dataclass
class BatchOutputs:
    """One step's features, as the loop hands them to :meth:`Method.compute`.

    All (B, ·) tensors cover the *global* batch in a distributed run (gathered with gradients).

    Attributes:
        image_features: (B, D) post-head image embeddings, L2-normalised.
        text_features: (B, D) post-head text embeddings, L2-normalised.
        logit_scale: scalar tensor, the multiplier ``exp(encoder.logit_scale)`` (open_clip's
            convention); trainable when ``logit_scale`` is in ``TrainConfig.trainable``.
        image_raw: (B, D) image embeddings before L2 normalisation (post-head).
        text_raw: (B, D) text embeddings before L2 normalisation.
        hard_negatives: (B, K, D) L2-normalised text embeddings of each sample's K hard
            negatives, when the method defines :meth:`Method.hard_negative_texts`;
            ``hard_negatives[i, k]`` is the k-th negative of caption ``i``.
        hard_negative_tower: (B_local, K, D_txt) text-tower features of the local batch's
            negatives (the input of ``encoder.text_head``), as ``text_tower`` is for captions.
        negative_texts: The local batch's negative captions, ``negative_texts[i][k]``.
        image_tower: (B, D_img) pre-projection image features (local batch, not gathered);
            the input of ``encoder.image_head``.
        text_tower: (B, D_txt) pre-projection text features (local batch).
        pixels: (B, 3, H, W) preprocessed images when the towers run on images (local batch).
        tokens: Tokenised captions when the text tower runs (local batch).
        captions: The local batch's captions.
        attributes: The local batch's attribute dicts (may be empty).
        labels: (B_local,) int64 class labels, -1 where none.
        indices: (B_local,) dataset row indices of the local batch.
        encoder: The encoder being trained (for methods that run extra forwards, e.g. an
            augmented view for DCR's positive).
    """

    image_features: torch.Tensor
    text_features: torch.Tensor
    logit_scale: torch.Tensor
    image_raw: torch.Tensor | None = None
    text_raw: torch.Tensor | None = None
    hard_negatives: torch.Tensor | None = None
    hard_negative_tower: torch.Tensor | None = None
    negative_texts: Sequence[Sequence[str]] = ()
    image_tower: torch.Tensor | None = None
    text_tower: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    tokens: dict[str, torch.Tensor] | None = None
    captions: Sequence[str] = ()
    attributes: Sequence[dict[str, Any]] = ()
    labels: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    encoder: nn.Module | None = None

    @property
    def batch_size(self) -> int:
        return int(self.image_features.shape[0])


@dataclass
class LossOutput:
    """What :meth:`Method.compute` returns.

    Attributes:
        loss: Scalar tensor the loop back-propagates.
        terms: Named scalar loss terms (unweighted) — logged, and the inputs of the gradient
            probe (:attr:`Method.grad_probe`). Keep them attached to the graph.
        logs: Extra floats to log for this step (e.g. partition sizes, noise norms).
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    logs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage method (e.g. ProCLIP stage 1 distillation, stage 2 tuning).

    Attributes:
        name: Stage name, logged as ``stage`` and passed in :class:`StepState`.
        steps: Optimiser steps of this stage; a method's stages must sum to the run's steps.
        trainable: ``TrainConfig.trainable``-style spec restricting which parameters update in
            this stage (``None`` = the run's spec). Parameters outside it get no gradient.
        lr: Peak learning rate of this stage (``None`` = ``TrainConfig.lr``); warm-up and the
            schedule restart at each stage.
    """

    name: str
    steps: int
    trainable: str | None = None
    lr: float | None = None


class Method(nn.Module):
    """Base class of every training method. Subclasses implement :meth:`compute`.

    ``__init__`` stores hyper-parameters only (they are also recorded in ``self.config`` by
    :func:`workbench.methods.get` for the run's ``config.json``). Any ``nn.Parameter`` a method
    owns with ``requires_grad=True`` is trained with the encoder's trainable parameters; frozen
    teachers and auxiliary models must set ``requires_grad_(False)``. The whole
    ``state_dict()`` (EMA teachers included) is checkpointed so resuming is exact.
    """

    name: str = "method"
    #: Canonical registry name, set by :func:`workbench.methods.get`.
    registry_name: str | None = None
    #: Names of two :attr:`LossOutput.terms` whose gradient cosine the loop logs every
    #: ``TrainConfig.grad_probe_every`` steps as ``grad_cos/<a>~<b>`` (DCR Fig. 2).
    grad_probe: tuple[str, str] | None = None
    #: ``True`` when :meth:`compute` needs the towers to run on this step's images/tokens
    #: (e.g. DCR's augmented view): forbids the cached-features path.
    needs_towers: bool = False
    #: ``True`` when :meth:`compute` needs ``BatchOutputs.hard_negatives`` (DeGLA): the plain
    #: open_clip-style call then raises ``ValueError`` naming what is missing.
    needs_hard_negatives: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    # -- required -------------------------------------------------------------------------
    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        """The loss for one step. See :class:`BatchOutputs` for shapes and conventions."""
        raise NotImplementedError

    # -- optional hooks -------------------------------------------------------------------
    def attach(self, encoder: nn.Module) -> None:
        """Called once with the encoder before trainable parameters are chosen.

        Insert adapters into towers here (Earth-Adapter), copy the encoder into a frozen or EMA
        teacher (ProCLIP, DeGLA), or size extra modules from ``encoder.embed_dim``. Also called
        by :func:`workbench.train.load_encoder_from_run` so checkpoints load into the same
        structure; it must therefore be deterministic given the method's config.
        """

    def on_step_end(self, encoder: nn.Module, state: StepState) -> None:
        """Called after each optimiser step (EMA teacher updates go here)."""

    def stages(self, total_steps: int) -> list[Stage]:
        """Stages of a multi-stage method; default one stage ``"train"`` of ``total_steps``."""
        return [Stage("train", total_steps)]

    def hard_negative_texts(
        self, captions: Sequence[str], attributes: Sequence[dict[str, Any]]
    ) -> list[list[str]] | None:
        """K hard-negative captions per sample (DeGLA), or ``None`` (default: none).

        Every inner list must have the same length K. The loop embeds them with the text tower
        and head and passes them as ``BatchOutputs.hard_negatives`` (B, K, D).
        """
        return None

    def schedule_values(self, state: StepState) -> dict[str, float]:
        """Schedule values at ``state`` (e.g. ``{"alpha": α(t), "lambda": λ(t)}``), logged each step."""
        return {}

    def spectral_snapshot(self, out: BatchOutputs, state: StepState) -> dict[str, Any]:
        """Method-specific spectral numbers added to the loop's periodic snapshot (JSON-able)."""
        return {}

    # -- calling conventions --------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``(BatchOutputs, StepState) -> LossOutput`` or open_clip's
        ``(image_features, text_features, logit_scale, output_dict=False) -> Tensor``."""
        if args and isinstance(args[0], BatchOutputs):
            state = args[1] if len(args) > 1 else kwargs.get("state", StepState.standalone())
            return self.compute(args[0], state)
        return self._open_clip_call(*args, **kwargs)

    def _open_clip_call(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | None = None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        if logit_bias is not None:
            raise ValueError(f"method {self.name!r} has no logit bias (SigLIP-style) form")
        if image_features.ndim != 2 or image_features.shape != text_features.shape:
            raise ValueError(
                "expected image_features and text_features of the same shape (B, D), got "
                f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
            )
        scale = torch.as_tensor(
            logit_scale, dtype=image_features.dtype, device=image_features.device
        )
        out = BatchOutputs(image_features, text_features, scale, image_features, text_features)
        loss = self.compute(out, StepState.standalone()).loss
        return {"contrastive_loss": loss} if output_dict else loss

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


#: Attribute :func:`mark_adapter` sets on a module that the ``adapters`` trainable part trains.
ADAPTER_FLAG = "_workbench_adapter"


def mark_adapter(module: nn.Module) -> nn.Module:
    """Mark ``module`` — which a method's :meth:`Method.attach` inserts into the encoder — as an
    adapter, so ``TrainConfig(trainable="...+adapters")`` trains its parameters. Returns ``module``.

    Lives with the method contract (not in ``train``) because methods may not import the loop.
    """
    setattr(module, ADAPTER_FLAG, True)
    return module


#: Name → method factory (a ``Method`` subclass or a ``functools.partial`` of one for a preset
#: variant such as ``"infonce/vlm2vec"``). Use :func:`workbench.methods.get`.
METHODS: Registry[Callable[..., Method]] = Registry("method")
