"""The training loop: one ``train()`` for every method, single process or under ``torchrun``.

Per step: pick the stage and learning rate from the step; for each micro-batch, build
:class:`~workbench.methods.base.BatchOutputs` (heads on cached tower features, or towers on
images/tokens), gather features across ranks with gradients, call the method, check the loss is
finite, back-propagate; average gradients across ranks; clip; step; let the method update its
teachers; then log, snapshot, checkpoint and evaluate on their cadences. Everything stochastic
is seeded from ``TrainConfig.seed`` and the step, and checkpoints carry the RNG states, so a
resumed run repeats the uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench import __version__
from workbench import distributed as D
from workbench.encoders.text_cache import TextTowerCache
from workbench.methods.base import BatchOutputs, Stage, StepState
from workbench.train.batch import batch_outputs
from workbench.train.checkpoint import restore_training_state, save_training_state
from workbench.train.config import TrainConfig
from workbench.train.grad_probe import gradient_cosine
from workbench.train.heldout import heldout_metrics
from workbench.train.params import (
    param_groups,
    prepare_model,
    stage_parameters,
    tower_free,
    warn_frozen_temperature,
)
from workbench.train.results import NonFiniteLossError, Run
from workbench.train.rng import isolated_rng, seed_all
from workbench.train.rundir import (
    CONFIG,
    LOG,
    SUMMARY,
    LogWriter,
    RunDir,
    create_run_dir,
    identity_record,
    truncate_log,
    write_json_atomic,
)
from workbench.train.schedules import check_stages, lr_factor, stage_at
from workbench.train.snapshot import spectral_snapshot
from workbench.train.source import global_rows, holdout_split, make_source

EvalHook = Callable[[nn.Module, int], dict[str, float]]

# Config fields that may change when resuming: they do not change the numbers computed.
_RESUMABLE_CHANGES = {"steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"}


# -- helpers -----------------------------------------------------------------------------------
def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    return dev


def _interactive() -> bool:
    return hasattr(sys, "ps1") or "ipykernel" in sys.modules or sys.stderr.isatty()


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in d.items()}


# -- the loop ----------------------------------------------------------------------------------
class _Trainer:
    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: Path | None,
        embeddings,
        encoder: nn.Module | None,
        dataset,
        eval_hooks: Sequence[EvalHook],
        progress: bool | None,
    ) -> None:
        from workbench import methods

        self.config = c = config
        self.device = _resolve_device(c.device)
        self.info = D.setup(self.device)
        self.amp_dtype = None
        if self.device.type == "cuda" and c.precision != "fp32":
            self.amp_dtype = torch.bfloat16 if c.precision == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.eval_hooks = list(eval_hooks)
        self.progress = (progress if progress is not None else _interactive()) and self.info.is_main

        seed_all(c.seed)
        if encoder is None:
            if c.encoder is None:
                raise ValueError("TrainConfig.encoder is None: pass train(..., encoder=<Encoder>)")
            from workbench.encoders import load_encoder

            encoder = load_encoder(c.encoder, **c.encoder_kwargs)
        self.encoder = encoder
        self.method = methods.get(c.method, **c.method_config)
        method_params = prepare_model(encoder, self.method, c)
        self.stages: list[Stage] = list(self.method.stages(c.steps))
        check_stages(self.stages, c.steps)

        # Which parameters each stage trains; the optimiser holds their union.
        encoder.requires_grad_(False)
        for p in method_params:
            p.requires_grad_(True)
        self.stage_params, union = stage_parameters(
            self.stages, c.trainable_parts(), encoder, method_params
        )
        if not union:
            raise ValueError(f"trainable={c.trainable!r} selects no parameters")
        warn_frozen_temperature(self.method, encoder, union)
        self.params = union
        for p in method_params:
            p.requires_grad_(False)

        self.tower_trains = not tower_free(union, encoder)
        # frozen text tower: each distinct hard-negative string runs through it once (batch.py)
        self.text_cache = None if self.tower_trains else TextTowerCache(encoder)
        cached_ok = not self.tower_trains and not self.method.needs_towers
        if c.data == "cached" and not cached_ok:
            raise ValueError(
                "data='cached' trains on cached tower features, but tower parameters train "
                f"(trainable={c.trainable!r}) or the method needs the towers; use data='items'"
            )
        self.cached = c.data == "cached" or (c.data == "auto" and cached_ok)
        if self.cached and embeddings is None and dataset is None and c.dataset is None:
            raise ValueError("no data: pass embeddings=, dataset=, or set TrainConfig.dataset")
        if not self.cached and embeddings is not None and dataset is None and c.dataset is None:
            raise ValueError(
                "tower parameters train, so the towers must run on images: pass dataset= or set "
                "TrainConfig.dataset (cached embeddings only serve heads-only training)"
            )

        encoder.to(self.device)
        self.method.to(self.device)
        D.broadcast_parameters(encoder, self.info)
        D.broadcast_parameters(self.method, self.info)

        self.source = make_source(self.cached, embeddings, dataset, c, encoder, self.device)
        self.train_rows, self.holdout_rows = holdout_split(self.source, c)
        if c.batch_size % (c.grad_accum * self.info.world_size):
            raise ValueError(
                f"batch_size {c.batch_size} must divide into grad_accum ({c.grad_accum}) × "
                f"world size ({self.info.world_size}) equal micro-batches"
            )
        self.micro = c.batch_size // c.grad_accum

        self.optimizer = torch.optim.AdamW(
            param_groups(union, c.weight_decay), lr=c.lr, betas=c.betas, eps=c.eps
        )

        self.start_step = 0
        self.finished = False
        self.torn_line = None
        if resume is not None:
            self.run_dir = Path(resume)
            self._load_resume()
        else:
            self.run_dir = D.broadcast_object(
                self._new_run_dir(embeddings) if self.info.is_main else None, self.info
            )
        self.log = LogWriter(self.run_dir / LOG) if self.info.is_main else None
        self.t0 = time.perf_counter()

    # -- setup pieces ------------------------------------------------------------------------
    def _new_run_dir(self, embeddings) -> Path:
        c = self.config
        path = create_run_dir(c.run_root, c.run_name or self.method.name.replace("/", "-"))
        meta = {
            "workbench_version": __version__,
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "world_size": self.info.world_size,
            "device": str(self.device),
            "amp": None if self.amp_dtype is None else str(self.amp_dtype),
            "method": {"name": self.method.registry_name, "config": self.method.config},
            "encoder_identity": identity_record(self.encoder),
            "data": {
                "mode": "cached" if self.cached else "items",
                "n": self.source.n,
                "train": len(self.train_rows),
                "holdout": len(self.holdout_rows),
                "embeddings_provenance": getattr(embeddings, "provenance", None),
            },
            "stages": [vars(s) for s in self.stages],
            "n_trainable": int(sum(p.numel() for p in self.params)),
        }
        write_json_atomic(path / CONFIG, {"config": c.to_dict(), "meta": meta})
        return path

    def _load_resume(self) -> None:
        self.start_step = restore_training_state(
            self.run_dir, self.encoder, self.method, self.optimizer, self.scaler, self.info,
            self.device,
        )  # fmt: skip
        steps = self.config.steps
        self.finished = self.start_step == steps and RunDir(self.run_dir).finished(steps)
        self.torn_line = None
        if self.info.is_main and not self.finished:  # a finished run's log stays as it is
            self.torn_line = truncate_log(self.run_dir / LOG, self.start_step)
        D.barrier(self.info)

    # -- one step ----------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _outputs(self, step: int, micro_idx: int) -> BatchOutputs:
        c, info = self.config, self.info
        rows = global_rows(self.train_rows, self.micro, step * c.grad_accum + micro_idx, c.seed)
        local = self.micro // info.world_size
        batch = self.source.batch(rows[info.rank * local : (info.rank + 1) * local])
        return batch_outputs(
            self.encoder, self.method, self.source, batch, info, self.device, self.tower_trains,
            self.text_cache,
        )  # fmt: skip

    def _set_stage(self, si: int) -> None:
        ids = {id(p) for p in self.stage_params[si]}
        for p in self.params:
            p.requires_grad_(id(p) in ids)

    def _step(self, step: int, state: StepState, probe: bool) -> dict[str, Any]:
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = {}
        logs: dict[str, float] = {}
        loss_sum, grad_cos, last_out = 0.0, None, None
        for m in range(c.grad_accum):
            with self._autocast():
                out = self._outputs(step, m)
                lo = self.method(out, state)
            t = _floats(lo.terms)
            loss_val = float(lo.loss.detach())
            if not math.isfinite(loss_val) or not all(math.isfinite(v) for v in t.values()):
                raise NonFiniteLossError(step + 1, "loss", {"loss": loss_val, **t}, self.run_dir)
            if probe and m == 0 and self.method.grad_probe is not None:
                params = [p for p in self.params if p.requires_grad]
                grad_cos = gradient_cosine(lo.terms, self.method.grad_probe, params, self.info)
            loss = lo.loss / c.grad_accum
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss_val / c.grad_accum
            for k, v in t.items():
                terms[k] = terms.get(k, 0.0) + v / c.grad_accum
            for k, v in _floats(lo.logs).items():
                logs[k] = logs.get(k, 0.0) + v / c.grad_accum
            last_out = out
        D.average_gradients(self.params, self.info)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        active = [p for p in self.params if p.grad is not None]
        clip = c.grad_clip if c.grad_clip is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(active, clip)) if active else 0.0
        if self.scaler is None and not math.isfinite(grad_norm):
            raise NonFiniteLossError(
                step + 1, "gradient norm", {"loss": loss_sum, **terms}, self.run_dir
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        with torch.no_grad():  # CLIP clamps the learned temperature at 1/100
            self.encoder.logit_scale.clamp_(0, math.log(100))
        self.method.on_step_end(self.encoder, state)
        return {
            "loss": loss_sum,
            "terms": terms,
            "logs": logs,
            "grad_norm": grad_norm,
            "grad_cos": grad_cos,
            "out": last_out,
        }

    # -- evaluation / snapshots / checkpoints ------------------------------------------------
    def _evaluate(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.info.is_main:
            with isolated_rng(self.device):
                self.encoder.eval()
                metrics.update(
                    heldout_metrics(
                        self.encoder, self.source, self.holdout_rows, self.device, self._autocast
                    )
                )
                for hook in self.eval_hooks:
                    metrics.update(_floats(hook(self.encoder, step)))
                self.encoder.train()
            self.log.write({"kind": "eval", "step": step, "metrics": metrics})
        D.barrier(self.info)
        return metrics

    def _snapshot(self, step: int, out: BatchOutputs, state: StepState, schedule: dict) -> None:
        if not self.info.is_main:
            return
        with isolated_rng(self.device):
            rec = {
                "kind": "snapshot",
                "step": step,
                "stage": state.stage,
                "schedule": schedule,
                "method": self.method.spectral_snapshot(out, state),
                "image": spectral_snapshot(out.image_features, self.config.snapshot_max_sv),
                "text": spectral_snapshot(out.text_features, self.config.snapshot_max_sv),
            }
        self.log.write(rec)

    def _checkpoint(self, step: int, stage: str) -> None:
        save_training_state(
            self.run_dir, step, stage, self.encoder, self.method, self.params, self.optimizer,
            self.scaler, self.info, keep=self.config.keep_checkpoints,
        )  # fmt: skip

    # -- driver ------------------------------------------------------------------------------
    def _finished_run(self) -> Run:
        """Resuming a run that already finished: nothing is run or written, a warning says so."""
        import warnings

        warnings.warn(
            f"{self.run_dir} already finished ({self.config.steps} steps); nothing to resume — "
            f"its log and summary.json are unchanged (pass a larger steps= to train further)",
            stacklevel=3,
        )
        metrics = RunDir(self.run_dir).summary.get("metrics", {})
        metrics = {k: float("nan") if v is None else v for k, v in metrics.items()}
        self.encoder.eval()
        c = self.config
        return Run(self.run_dir, self.run_dir / LOG, metrics, self.encoder, self.method, c)

    def run(self) -> Run:
        c, total = self.config, self.config.steps
        if self.finished:
            return self._finished_run()
        extra = {"dropped_torn_log_line": self.torn_line} if self.torn_line else {}
        self._event("resume" if self.start_step else "start", self.start_step, **extra)
        self.encoder.train()
        if self.start_step == 0:
            self._evaluate(0)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.start_step, desc=self.method.name, leave=False)
        current_stage = -1
        last: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        try:
            for step in range(self.start_step, total):
                si, stage, stage_step = stage_at(self.stages, step)
                if si != current_stage:
                    self._set_stage(si)
                    current_stage = si
                lr = (stage.lr or c.lr) * lr_factor(stage_step, stage.steps, c.warmup, c.schedule)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                state = StepState(
                    step,
                    total,
                    stage.name,
                    stage_step,
                    stage.steps,
                    self.info.rank,
                    self.info.world_size,
                )
                probe = c.grad_probe_every > 0 and step % c.grad_probe_every == 0
                last = self._step(step, state, probe)
                s = step + 1
                schedule = _floats(self.method.schedule_values(state))
                if self.info.is_main and (s % c.log_every == 0 or s == total):
                    rec = {
                        "kind": "step",
                        "step": s,
                        "stage": stage.name,
                        "loss": last["loss"],
                        "lr": lr,
                        "terms": last["terms"],
                        "logs": last["logs"],
                        "schedule": schedule,
                        "grad_norm": last["grad_norm"],
                        "time": time.perf_counter() - self.t0,
                    }
                    if last["grad_cos"] is not None:
                        rec["grad_cos"] = last["grad_cos"]
                    self.log.write(rec)
                if c.snapshot_every and (s == 1 or s % c.snapshot_every == 0 or s == total):
                    self._snapshot(s, last["out"], state, schedule)
                # evaluate *before* checkpointing: a checkpoint at s means every record of
                # step s is in the log, so a resume from it never loses one
                if (c.eval_every and s % c.eval_every == 0) or s == total:
                    metrics = self._evaluate(s)
                if (c.checkpoint_every and s % c.checkpoint_every == 0) or s == total:
                    self._checkpoint(s, stage.name)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", stage=stage.name)
            if self.start_step == total:  # resumed from the final checkpoint: its eval is logged
                logged, final_loss = RunDir(self.run_dir).final_record(total)
                metrics = logged if logged is not None else self._evaluate(total)
            else:
                final_loss = last["loss"]
        except NonFiniteLossError as err:
            self._event("error", err.step, error=str(err))
            self._summary("failed", err.step, {}, error=str(err))
            raise
        finally:
            if bar is not None:
                bar.close()
        metrics = {**metrics, "final_loss": final_loss}
        self._event("end", total)
        self._summary("finished", total, metrics)
        if self.log is not None:
            self.log.close()
        self.encoder.eval()
        return Run(self.run_dir, self.run_dir / LOG, metrics, self.encoder, self.method, c)

    def _event(self, event: str, step: int, **extra: Any) -> None:
        if self.log is not None:
            self.log.write({"kind": "event", "event": event, "step": step, **extra})

    def _summary(self, status: str, step: int, metrics: dict, **extra: Any) -> None:
        if self.info.is_main:
            write_json_atomic(
                self.run_dir / SUMMARY,
                {"status": status, "step": step, "metrics": metrics, **extra},
            )


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    embeddings=None,
    encoder: nn.Module | None = None,
    dataset=None,
    eval_hooks: Sequence[EvalHook] = (),
    progress: bool | None = None,
) -> Run:
    """Train (or resume) one run; see :mod:`workbench.train` for the run directory format.

    Args:
        config: The run's configuration. With ``resume``, may be omitted (read from the run's
            ``config.json``); if given it must match it except for ``steps``, ``log_every``,
            ``eval_every``, ``checkpoint_every`` and ``keep_checkpoints``.
        resume: A run directory to continue from its latest checkpoint. The continuation is
            exact (bit-identical on CPU): weights, optimiser, RNG states and data order resume
            where they stopped, and ``log.jsonl`` is truncated to the checkpoint's step (a torn
            last line is dropped and reported in the ``resume`` event). Every record the
            uninterrupted run writes is there after any crash: a step's evaluation runs before
            its checkpoint, so a crash in between re-runs it. Resuming a run that already
            finished is a no-op with a warning (log and ``summary.json`` untouched). Pass the
            same ``embeddings``/``dataset``/``encoder`` objects as the first call (those named
            in the config are rebuilt from it), and the same number of processes.
        embeddings: :class:`~workbench.encoders.embeddings.Embeddings` with ``image_tower`` /
            ``text_tower`` for heads-only training on cached features (they must come from
            ``encoder``'s towers). Otherwise they are computed from the dataset.
        encoder: An encoder object to train (default: ``load_encoder(config.encoder, ...)``).
        dataset: A dataset object (default: ``load_dataset(config.dataset, ...)``).
        eval_hooks: Callables ``(encoder, step) -> dict[str, float]`` run on rank 0 at step 0,
            every ``eval_every`` steps and at the end (encoder in eval mode, RNG isolated).
        progress: Show a tqdm progress bar (default: when interactive).

    Returns:
        :class:`Run` with the run directory, final metrics and the trained encoder.

    Raises:
        NonFiniteLossError: a loss or gradient norm became NaN/Inf (the last good checkpoint is
            kept; ``summary.json`` says ``failed``).
    """
    if resume is not None:
        stored = RunDir(resume).config
        if config is not None:
            changed = {
                k for k, v in config.to_dict().items() if stored.to_dict()[k] != v
            } - _RESUMABLE_CHANGES
            if changed:
                raise ValueError(
                    f"resume config differs from {resume}/config.json in {sorted(changed)}; only "
                    f"{sorted(_RESUMABLE_CHANGES)} may change"
                )
        config = config or stored
    if config is None:
        raise ValueError("train() needs a TrainConfig (or resume=<run dir>)")
    trainer = _Trainer(
        config,
        resume=Path(resume) if resume is not None else None,
        embeddings=embeddings,
        encoder=encoder,
        dataset=dataset,
        eval_hooks=eval_hooks,
        progress=progress,
    )
    return trainer.run()
