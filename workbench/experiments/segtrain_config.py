"""The optimisation settings of a segmentation run (:class:`SegTraining`), apart from the
trainer in :mod:`workbench.experiments.segtrain` that reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SOURCE_LOSSES", "SegTraining"]

#: The source losses :class:`SegTraining` offers.
SOURCE_LOSSES: tuple[str, ...] = ("ce", "balanced_ce", "ce+dice")


@dataclass
class SegTraining:
    """Optimisation of one segmentation run (a :class:`~workbench.train.TrainConfig` subset).

    Attributes:
        steps: Source-only optimiser steps (300: the head and adapters converge on ~1000 scenes
            in ~5 epochs at batch 16).
        batch_size: Labelled images per step (16: a CPU budget; the official runs use 2 per GPU
            at 512 px).
        lr: Peak AdamW learning rate (1e-3: the head starts from random init; the official 1e-4
            suits a 20k-step schedule).
        weight_decay: AdamW weight decay on ≥ 2-D weights and the layer scales (0.05) [code].
        betas: AdamW betas ((0.9, 0.999)) [code].
        eps: AdamW epsilon (1e-8) [code].
        warmup: Linear warm-up steps (10: a head from random init).
        schedule: LR decay after warm-up (``"linear"``: closest to the official PolyLR with
            power 0.9 among ``workbench.train``'s schedules).
        grad_clip: Max gradient norm (``None``: the official runs do not clip).
        da_steps: Self-training steps of a domain-adaptation run, after the source-only run.
        da_lr: Peak LR of those steps (3e-4: fine-tuning a trained model).
        threshold: Confidence a pseudo-label needs (0.968) [code: DACS].
        ema_decay: EMA teacher decay α (0.99) [code: DACS].
        da_weight: Weight of the self-training term (1.0, DACS).
        eval_batch_size: Images per evaluation forward.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        precision: ``"fp32"`` or ``"bf16"`` (autocast, on CUDA only; losses and the frequency
            split run in float32).
        loss: The source loss (:func:`~workbench.methods.earth_adapter.segmentation_loss`):
            ``"ce"`` (plain per-pixel cross-entropy, mmseg's) [code], ``"balanced_ce"``
            (cross-entropy with ENet class weights from the source labels'
            frequencies) or ``"ce+dice"`` (cross-entropy + ``dice_weight`` × soft Dice) [our
            reading: for label maps that are almost all background].
        dice_weight: λ of the Dice term with ``loss="ce+dice"`` (1.0, nnU-Net's) [secondary].
    """

    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup: int = 10
    schedule: str = "linear"
    grad_clip: float | None = None
    da_steps: int = 150
    da_lr: float = 3e-4
    threshold: float = 0.968
    ema_decay: float = 0.99
    da_weight: float = 1.0
    eval_batch_size: int = 32
    device: str = "cpu"
    precision: str = "fp32"
    loss: str = "ce"
    dice_weight: float = 1.0

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        for name in ("steps", "batch_size", "da_steps", "eval_batch_size"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"SegTraining: {name} must be an int ≥ 1, got {v!r}")
        if not (isinstance(self.warmup, int) and 0 <= self.warmup <= self.steps):
            raise ValueError(
                f"SegTraining: warmup must be an int in [0, steps], got {self.warmup!r}"
            )
        if not (self.lr > 0 and self.da_lr > 0):
            raise ValueError(f"SegTraining: lr and da_lr must be > 0, got {self.lr}, {self.da_lr}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"SegTraining: threshold must be in (0, 1), got {self.threshold!r}")
        if not 0 <= self.ema_decay <= 1:
            raise ValueError(f"SegTraining: ema_decay must be in [0, 1], got {self.ema_decay!r}")
        if self.da_weight < 0:
            raise ValueError(f"SegTraining: da_weight must be ≥ 0, got {self.da_weight!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(
                f"SegTraining: precision must be 'fp32' or 'bf16', got {self.precision!r}"
            )
        if self.loss not in SOURCE_LOSSES:
            raise ValueError(f"SegTraining: loss must be one of {SOURCE_LOSSES}, got {self.loss!r}")
        if not (isinstance(self.dice_weight, (int, float)) and self.dice_weight >= 0):
            raise ValueError(f"SegTraining: dice_weight must be ≥ 0, got {self.dice_weight!r}")
        self.train_config("earth_adapter", {}, "default", {}, 0, "runs", "x", da=False)  # validates

    def train_config(
        self,
        method: str,
        method_config: dict[str, Any],
        encoder: str,
        encoder_kwargs: dict[str, Any],
        seed: int,
        run_root: str,
        run_name: str,
        *,
        da: bool,
    ) -> Any:
        """The :class:`~workbench.train.TrainConfig` recorded in the run's ``config.json``."""
        from workbench.train import TrainConfig

        return TrainConfig(
            method=method, method_config=dict(method_config), encoder=encoder,
            encoder_kwargs=dict(encoder_kwargs), dataset=None,
            steps=self.da_steps if da else self.steps, batch_size=self.batch_size,
            lr=self.da_lr if da else self.lr, weight_decay=self.weight_decay, betas=self.betas,
            eps=self.eps, warmup=0 if da else self.warmup, schedule=self.schedule,
            grad_clip=self.grad_clip, seed=seed, device=self.device, precision=self.precision,
            trainable="adapters+method", data="items", holdout=0, snapshot_every=0,
            run_root=run_root, run_name=run_name,
        )  # fmt: skip
