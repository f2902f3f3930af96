"""``TrainConfig``: the single source of truth for one training run."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.train import parts as _parts

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
DATA_MODES = ("auto", "cached", "items")


@dataclass
class TrainConfig:
    """Everything that defines a run; written to ``config.json`` and read back on resume.

    Attributes:
        method: Method registry name (``workbench.methods.names()``).
        method_config: Keyword arguments of the method (its defaults fill the rest).
        encoder: Encoder registry name for ``workbench.load_encoder`` (recorded so the run's
            checkpoints can be reloaded; may be ``None`` when ``train(encoder=...)`` is given
            an encoder object — such runs reload with ``load_encoder_from_run(dir, encoder=...)``).
        encoder_kwargs: Keyword arguments of the encoder factory.
        dataset: Dataset registry name for ``workbench.load_dataset`` (unused when
            ``train(embeddings=...)`` or ``train(dataset=...)`` supplies the data).
        dataset_kwargs: Keyword arguments of the dataset factory.
        steps: Optimiser steps in total (all stages).
        batch_size: Global batch (split evenly across processes and accumulation micro-batches).
        lr: Peak learning rate (1e-3: heads-only CPU runs on a few thousand pairs move fast;
            VLM2Vec's tower/LoRA recipe uses 2e-5).
        weight_decay: AdamW decoupled weight decay on ≥2-D weights only (open_clip excludes
            biases, norms and the logit scale).
        betas: AdamW betas (CLIP: (0.9, 0.98) for stability at large batch).
        eps: AdamW epsilon (1e-6 as CLIP/open_clip).
        warmup: Linear warm-up steps at the start of each stage (VLM2Vec: 10% of steps).
        schedule: LR decay after warm-up: ``"cosine"`` (to 0), ``"linear"`` (to 0), ``"constant"``.
        grad_accum: Micro-batches per optimiser step. Each micro-batch is its own contrastive
            batch (its negatives only; no GradCache), gradients are averaged.
        grad_clip: Max global gradient norm (``None`` = no clipping).
        seed: Seeds initialisation, data order, the hold-out split and method noise. Every
            process uses the same seed, so stochastic methods draw the same noise for the
            (gathered) global batch on every rank.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast (with a grad scaler for fp16);
            applies on CUDA only, CPU runs are always fp32 (recorded in ``meta.amp``).
        trainable: Which parameters train: parts joined by ``+``, each an entry of
            :data:`workbench.train.parts.PARTS` (e.g. ``heads+lora:r=8,targets=query|value``)::

                ``heads``            both projection heads (= image_head+text_head)
                ``image_head``       the image projection head
                ``text_head``        the text projection head
                ``logit_scale``      the learnable temperature (log of the logit multiplier)
                ``method``           the method's own trainable modules (e.g. a projector)
                ``image_blocks:N``   the last N blocks of the image tower
                ``text_blocks:N``    the last N blocks of the text tower
                ``last_n_blocks:N``  the last N blocks of both towers
                ``lora:OPTIONS``     peft LoRA, e.g. lora:r=8,alpha=16,targets=query|value
                ``adapters``         modules the method attached to the encoder (mark_adapter)
                ``all``              every encoder parameter and the method's own

        data: ``"cached"`` trains on cached tower features (``Embeddings.image_tower`` /
            ``text_tower``; no tower forward), ``"items"`` runs the towers on dataset items,
            ``"auto"`` picks ``cached`` when no tower parameter trains and the method does not
            need pixels.
        holdout: Held-out pairs for the built-in evaluation (int count, or fraction in (0, 1)).
        holdout_by: ``"row"`` (a seeded random choice of rows) or ``"id"`` (rows whose item id
            hashes below ``holdout`` with salt ``"val"``: fixed whatever the order, subset or
            seed, several captions of one image kept together; ``holdout`` must be a fraction).
        eval_every: Evaluate (held-out InfoNCE/R@1 + hooks) every this many steps; 0 = only at
            step 0 and at the end.
        log_every: Write a ``step`` record every this many steps.
        snapshot_every: Spectral snapshot of the global batch's features every this many
            steps (0 = never).
        snapshot_max_sv: Singular values kept per snapshot (the largest ones).
        checkpoint_every: Checkpoint every this many steps (0 = only at the end).
        keep_checkpoints: Keep only the newest this many checkpoints (``None`` = keep all).
        grad_probe_every: Log the cosine between the gradients of the method's
            ``grad_probe`` terms every this many steps (0 = off; DCR Fig. 2).
        run_root: Directory holding run directories.
        run_name: Run directory prefix (default: the method name).
    """

    method: str = "infonce"
    method_config: dict[str, Any] = field(default_factory=dict)
    encoder: str | None = "default"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = "synthetic-world"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup: int = 20
    schedule: str = "cosine"
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    trainable: str = "heads+logit_scale+method"
    data: str = "auto"
    holdout: float = 256
    holdout_by: str = "row"
    eval_every: int = 0
    log_every: int = 1
    snapshot_every: int = 10
    snapshot_max_sv: int = 256
    checkpoint_every: int = 0
    keep_checkpoints: int | None = None
    grad_probe_every: int = 0
    run_root: str = "runs"
    run_name: str | None = None

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what would be valid."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")

        need(isinstance(self.method, str) and bool(self.method), "method must be a method name")
        if self.encoder is not None:  # names checked now, so a typo fails before any work
            from workbench.encoders.registry import check_encoder_name

            check_encoder_name(self.encoder, "encoder", owner="TrainConfig")
        if self.dataset is not None:
            from workbench.data import check_dataset_name

            check_dataset_name(self.dataset, "dataset", owner="TrainConfig")
        need(isinstance(self.method_config, dict), "method_config must be a dict")
        need(isinstance(self.encoder_kwargs, dict), "encoder_kwargs must be a dict")
        need(isinstance(self.dataset_kwargs, dict), "dataset_kwargs must be a dict")
        for name in ("steps", "batch_size", "grad_accum", "log_every"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 1, f"{name} must be an int ≥ 1, got {v!r}")
        for name in ("warmup", "eval_every", "snapshot_every", "checkpoint_every"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 0, f"{name} must be an int ≥ 0, got {v!r}")
        need(
            isinstance(self.grad_probe_every, int) and self.grad_probe_every >= 0,
            f"grad_probe_every must be an int ≥ 0, got {self.grad_probe_every!r}",
        )
        need(self.snapshot_max_sv >= 1, "snapshot_max_sv must be ≥ 1")
        need(
            self.batch_size % self.grad_accum == 0,
            f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})",
        )
        need(
            self.batch_size // self.grad_accum >= 2,
            "each micro-batch needs ≥ 2 pairs for a contrastive loss "
            f"(batch_size {self.batch_size} / grad_accum {self.grad_accum})",
        )
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas in [0, 1)")
        need(self.eps > 0, "eps must be > 0")
        need(
            self.schedule in SCHEDULES,
            f"schedule must be one of {SCHEDULES}, got {self.schedule!r}",
        )
        need(
            self.precision in PRECISIONS,
            f"precision must be one of {PRECISIONS}, got {self.precision!r}",
        )
        need(self.data in DATA_MODES, f"data must be one of {DATA_MODES}, got {self.data!r}")
        need(
            self.grad_clip is None or self.grad_clip > 0,
            f"grad_clip must be > 0 or None, got {self.grad_clip}",
        )
        need(
            self.keep_checkpoints is None or self.keep_checkpoints >= 1,
            "keep_checkpoints must be ≥ 1 or None",
        )
        need(
            self.holdout >= 0 and (self.holdout < 1 or float(self.holdout).is_integer()),
            f"holdout must be a count ≥ 0 or a fraction in (0, 1), got {self.holdout}",
        )
        need(
            self.holdout_by in ("row", "id"),
            f"holdout_by must be 'row' or 'id', got {self.holdout_by!r}",
        )
        need(
            self.holdout_by == "row" or 0 < self.holdout < 1,
            f"holdout_by='id' needs holdout as a fraction in (0, 1), got {self.holdout}",
        )
        need(
            self.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device) is not None,
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )
        parts = self.trainable_parts()
        need(bool(parts), "trainable must name at least one part, e.g. 'heads'")
        for part in parts:
            try:
                _parts.resolve(part)
            except ValueError as err:
                raise ValueError(f"TrainConfig: {err}") from None
        if self.run_name is not None:
            need(
                re.fullmatch(r"[A-Za-z0-9_.=,-]+", self.run_name) is not None,
                f"run_name may hold letters, digits and _.=,- only, got {self.run_name!r}",
            )

    def trainable_parts(self) -> list[str]:
        """``trainable`` split on ``+`` (whitespace stripped)."""
        return [p.strip() for p in self.trainable.split("+") if p.strip()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (round-trips through :meth:`from_dict`)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
