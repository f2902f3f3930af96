"""A small segmentation trainer for adapter methods (Earth-Adapter), built from ``workbench.train``
pieces, and the per-domain evaluation of what it trains.

Why not :func:`workbench.train.train`: that loop's step is contrastive — every step it runs the
text tower (MiniLM on ~40-token captions costs more than the image tower at 128 px), pools the
image map, and hands the method L2-normalised (B, D) features, while segmentation needs the
spatial maps, per-pixel labels, and for domain adaptation a second, unlabelled data stream with
a teacher. This trainer keeps what makes a run a ``workbench`` run: the run directory
(``config.json`` holds a :class:`~workbench.train.TrainConfig`, so ``load_encoder("run:<dir>")``
rebuilds the adapted encoder through :func:`~workbench.train.load_encoder_from_run`), the
checkpoint format (:func:`~workbench.train.checkpoint.save_checkpoint`), the trainable-parts
registry (``trainable="adapters+method"``: the attached adapters and the method's head), the
optimiser groups, the LR schedule, the seeding and the row order. It does not resume (runs take
minutes).

Speed: the blocks before the first adapter are frozen, so their outputs can be computed once per
image (:func:`build_prefix_cache`, checked against the full forward) and shared by every run
that starts its adapters at or after that block; a run then executes only the later blocks.

Domain adaptation (:func:`train_segmenter` with ``target=``) is a small stand-in for DACS
(Tranheden et al. 2021), which the Earth-Adapter paper uses: starting from a source-only run, each
step adds :func:`~workbench.methods.earth_adapter.self_training_loss` on unlabelled target images
against the confidence-thresholded pseudo-labels of an EMA teacher
(:class:`~workbench.methods.teachers.EMATeacher`) — without DACS's ClassMix mixing of source
and target images [our reading].
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.experiments.grid import call_on_step, check_on_step
from workbench.experiments.segtrain_config import SegTraining  # re-exported: its settings

__all__ = [
    "PrefixCache",
    "SegRun",
    "build_prefix_cache",
    "evaluate_domains",
    "load_segmenter",
    "predict_classes",
    "train_segmenter",
]


@dataclass
class SegRun:
    """A finished segmentation run.

    Attributes:
        run_dir: Its run directory (``load_encoder("run:<run_dir>")``, :func:`load_segmenter`).
        encoder: The trained encoder (adapters attached), eval mode.
        method: The method (its trained head).
        segmenter: ``method.segmenter(encoder)``.
        log: The step records (``loss``, ``terms``, ``lr``, ``time``).
        n_trainable: Trainable parameters (adapters, routers, scales and head).
        seconds: Wall time of the training steps.
    """

    run_dir: Path
    encoder: Any
    method: Any
    segmenter: Any
    log: list[dict[str, Any]] = field(repr=False)
    n_trainable: int
    seconds: float


def _pixels(encoder: Any, arrays: Any, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    pixels = encoder.preprocess(arrays.pil(rows)).to(device)
    if tuple(pixels.shape[-2:]) != tuple(arrays.labels.shape[-2:]):
        raise ValueError(
            f"the encoder preprocesses images to {tuple(pixels.shape[-2:])} px but the labels are "
            f"{tuple(arrays.labels.shape[-2:])}; render the domains at the encoder's resolution"
        )
    return pixels


@dataclass
class PrefixCache:
    """The frozen prefix of one image set: outputs of the blocks before ``start``.

    Attributes:
        start: First block a run executes (≤ every adapter layer of the runs that use it).
        outputs: ``{block: (N, ...) tensor}`` on the CPU, rows aligned with the arrays.
        encoder: ``(name, kwargs)`` of the encoder it was computed with.
        domain: The image set's domain name.
    """

    start: int
    outputs: dict[int, torch.Tensor]
    encoder: tuple[str, dict[str, Any]]
    domain: str

    def rows(self, rows: np.ndarray, device: torch.device) -> dict[int, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return {k: v[idx].to(device) for k, v in self.outputs.items()}


def build_prefix_cache(
    segmenter: Any,
    encoder: Any,
    arrays: Any,
    start: int,
    *,
    encoder_spec: tuple[str, dict[str, Any]],
    batch_size: int = 64,
) -> PrefixCache:
    """:class:`PrefixCache` of ``arrays`` (checked on the first batch against the full forward;
    ``ValueError`` for a tower whose blocks do not compose one after the other)."""
    device = next(segmenter.head.parameters()).device
    segmenter.eval()
    parts: list[dict[int, torch.Tensor]] = []
    for first in range(0, len(arrays), batch_size):
        rows = np.arange(first, min(first + batch_size, len(arrays)))
        pixels = _pixels(encoder, arrays, rows, device)
        if first == 0:
            segmenter.check_prefix(pixels[: min(4, len(rows))], start)
        parts.append({k: v.cpu() for k, v in segmenter.prefix(pixels, start).items()})
    outputs = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return PrefixCache(start, outputs, (encoder_spec[0], dict(encoder_spec[1])), arrays.domain)


def _autocast(device: torch.device, precision: str):
    import contextlib

    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Source:
    """Rows of one image set → logits, through the cache when there is one."""

    def __init__(self, arrays: Any, cache: PrefixCache | None, encoder: Any, spec: tuple,
                 device: torch.device) -> None:  # fmt: skip
        if cache is not None:
            if cache.encoder != (spec[0], dict(spec[1])):
                raise ValueError(
                    f"the prefix cache of {cache.domain!r} was computed with encoder "
                    f"{cache.encoder}, this run uses {spec}"
                )
            n = len(next(iter(cache.outputs.values())))
            if n != len(arrays):
                raise ValueError(
                    f"the prefix cache of {cache.domain!r} has {n} rows, the data {len(arrays)}"
                )
        self.arrays, self.cache, self.encoder, self.device = arrays, cache, encoder, device

    def logits(self, segmenter: Any, rows: np.ndarray) -> torch.Tensor:
        if self.cache is None:
            return segmenter(_pixels(self.encoder, self.arrays, rows, self.device))
        return segmenter(
            cached=self.cache.rows(rows, self.device), start=self.cache.start,
            out_hw=tuple(self.arrays.labels.shape[-2:]),
        )  # fmt: skip


def train_segmenter(
    method: str,
    method_config: Mapping[str, Any],
    source: Any,
    training: SegTraining,
    *,
    seed: int,
    run_root: str | Path,
    run_name: str | None = None,
    encoder: str = "default",
    encoder_kwargs: Mapping[str, Any] | None = None,
    target: Any = None,
    init_from: str | Path | None = None,
    source_cache: PrefixCache | None = None,
    target_cache: PrefixCache | None = None,
    on_step: Any = None,
) -> SegRun:
    """Train one segmentation run and write its run directory.

    Args:
        method: A segmentation method's registry name (``"earth_adapter"``, its variants).
        method_config: Its keyword arguments.
        source: Labelled :class:`~workbench.data.segworld.SegArrays` (the source domain).
        training: Optimisation settings.
        seed: Seeds the adapters' and head's initialisation (the head identically across
            variants) and the row order.
        run_root: Where the run directory goes.
        run_name: Its prefix (default: the method name).
        encoder: Encoder registry name (``"default"``: EfficientNet-Lite0 image tower).
        encoder_kwargs: Its keyword arguments (e.g. ``{"resolution": 128}``).
        target: Unlabelled :class:`~workbench.data.segworld.SegArrays` of the target domain(s):
            a domain-adaptation run of ``training.da_steps`` steps (its labels are never read).
        init_from: With ``target``, the source-only run directory to start from (its latest
            checkpoint); required then.
        source_cache: :func:`build_prefix_cache` of ``source`` (same encoder): run only the
            blocks from its ``start`` on.
        target_cache: The same for ``target``.
        on_step: Optional ``(step, encoder) -> {metric: value} | None``
            (:data:`~workbench.experiments.grid.StepCallback`), called before the
            first update (step 0) and after every optimiser step, the encoder (adapters
            attached) in eval mode under ``torch.no_grad``; the caller picks its cadence
            (``None`` skips a step). Returned metrics are written to the run's log as ``eval``
            records at that step (the loop's format). ``None`` (default): the run is unchanged.

    Returns:
        :class:`SegRun`.
    """
    from workbench import methods
    from workbench.encoders import load_encoder
    from workbench.methods.earth_adapter import (
        class_balance_weights,
        layer_scales,
        segmentation_loss,
        self_training_loss,
    )
    from workbench.methods.teachers import EMATeacher
    from workbench.train.checkpoint import (
        load_model_tensors,
        model_tensors,
        optimizer_payload,
        save_checkpoint,
    )
    from workbench.train.params import param_groups, prepare_model, select
    from workbench.train.rng import rng_state, seed_all
    from workbench.train.rundir import (
        CONFIG,
        LOG,
        SUMMARY,
        LogWriter,
        create_run_dir,
        write_json_atomic,
    )
    from workbench.train.schedules import lr_factor
    from workbench.train.source import global_rows

    check_on_step(on_step)
    da = target is not None
    if da and init_from is None:
        raise ValueError(
            "train_segmenter: a domain-adaptation run (target=) needs init_from=<source-only run>"
        )
    if not da and init_from is not None:
        raise ValueError("train_segmenter: init_from= is for domain-adaptation runs (pass target=)")
    if len(source) < training.batch_size:
        raise ValueError(
            f"train_segmenter: {len(source)} source images < batch_size {training.batch_size}"
        )
    kwargs = dict(encoder_kwargs or {})
    name = run_name or method.replace("/", "-")
    cfg = training.train_config(method, dict(method_config), encoder, kwargs, seed, str(run_root),
                                name, da=da)  # fmt: skip
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu")
        if training.device == "auto"
        else training.device
    )
    seed_all(seed)
    enc = load_encoder(encoder, **kwargs)
    m = methods.get(method, **dict(method_config))
    if getattr(m, "task", None) != "segmentation":
        raise ValueError(f"train_segmenter: {method!r} is not a segmentation method")
    method_params = prepare_model(enc, m, cfg)
    params = select(cfg.trainable_parts(), enc, method_params)
    if init_from is not None:
        from safetensors.torch import load_file

        from workbench.train.checkpoint import MODEL
        from workbench.train.rundir import RunDir

        load_model_tensors(enc, m, load_file(str(RunDir(init_from).checkpoint_path(None) / MODEL)))
    enc.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    enc.to(device)
    m.to(device)
    groups = param_groups(params, training.weight_decay)
    scales = {id(p) for p in layer_scales(enc)}  # the official code decays them (see layer_scales)
    groups[0]["params"] += [p for p in groups[1]["params"] if id(p) in scales]
    groups[1]["params"] = [p for p in groups[1]["params"] if id(p) not in scales]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    segmenter = m.segmenter(enc)
    teacher = EMATeacher(segmenter, decay=training.ema_decay) if da else None
    spec = (encoder, kwargs)
    src = _Source(source, source_cache, enc, spec, device)
    tgt = _Source(target, target_cache, enc, spec, device) if da else None

    loss_kw: dict[str, Any] = {}
    if training.loss == "balanced_ce":
        loss_kw["class_weights"] = class_balance_weights(source.labels, m.n_classes).to(device)
    elif training.loss == "ce+dice":
        loss_kw["dice_weight"] = float(training.dice_weight)
    run_dir = create_run_dir(run_root, name)
    n_trainable = int(sum(p.numel() for p in params))
    meta = {
        "task": "segmentation", "mode": "da" if da else "dg", "init_from": str(init_from or ""),
        "method": {"name": m.registry_name, "config": m.config}, "n_trainable": n_trainable,
        "source": source.config, "target": None if target is None else target.config,
        "device": str(device), "torch_version": torch.__version__,
        "loss": training.loss, "dice_weight": training.dice_weight,
    }  # fmt: skip
    write_json_atomic(run_dir / CONFIG, {"config": cfg.to_dict(), "meta": meta})
    writer = LogWriter(run_dir / LOG)
    log: list[dict[str, Any]] = []
    train_rows = np.arange(len(source))

    def snapshot(step: int) -> None:
        if on_step is not None and (metrics := call_on_step(on_step, step, enc)):
            writer.write({"kind": "eval", "step": step, "metrics": metrics})

    t0 = time.perf_counter()
    enc.train()
    m.train()
    snapshot(0)
    for step in range(cfg.steps):
        lr = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup, cfg.schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = global_rows(train_rows, cfg.batch_size, step, seed)
        labels = torch.as_tensor(source.labels[rows], dtype=torch.long, device=device)
        opt.zero_grad(set_to_none=True)
        with _autocast(device, cfg.precision):
            logits = src.logits(segmenter, rows)
        loss = segmentation_loss(logits, labels, **loss_kw)
        terms = {"source_ce": float(loss.detach())}
        logs: dict[str, float] = {}
        if da:
            t_rows = np.random.default_rng([seed, 1, step]).choice(
                len(target), cfg.batch_size, replace=False
            )
            with torch.no_grad(), _autocast(device, cfg.precision):
                t_teacher = tgt.logits(teacher, t_rows)
            with _autocast(device, cfg.precision):
                t_student = tgt.logits(segmenter, t_rows)
            st, confident = self_training_loss(t_student, t_teacher, training.threshold)
            loss = loss + training.da_weight * st
            terms["self_training"] = float(st.detach())
            logs["confident_fraction"] = float(confident)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"segmentation loss is not finite at step {step + 1}: {terms}")
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if teacher is not None:
            teacher.update(segmenter)
        rec = {"kind": "step", "step": step + 1, "stage": "da" if da else "train",
               "loss": float(loss.detach()), "lr": lr, "terms": terms, "logs": logs,
               "time": time.perf_counter() - t0}  # fmt: skip
        writer.write(rec)
        log.append(rec)
        snapshot(step + 1)
    seconds = time.perf_counter() - t0
    state = {
        "step": cfg.steps,
        "stage": "da" if da else "train",
        "rng": [rng_state()],
        "scaler": None,
    }
    save_checkpoint(
        run_dir, cfg.steps, model_tensors(enc, m, params), optimizer_payload(opt), state
    )
    writer.write({"kind": "event", "event": "end", "step": cfg.steps})
    writer.close()
    write_json_atomic(run_dir / SUMMARY, {"status": "finished", "step": cfg.steps,
                                          "metrics": {"final_loss": log[-1]["loss"]}})  # fmt: skip
    enc.eval()
    m.eval()
    return SegRun(run_dir, enc, m, segmenter, log, n_trainable, seconds)


def load_segmenter(run_dir: str | Path, device: str = "cpu") -> tuple[Any, Any, Any]:
    """``(encoder, method, segmenter)`` of a segmentation run, rebuilt from its ``config.json``
    and latest checkpoint (:func:`~workbench.train.load_encoder_from_run` gives the encoder
    alone; this also restores the method's head)."""
    from safetensors.torch import load_file

    from workbench import methods
    from workbench.encoders import load_encoder
    from workbench.train.checkpoint import MODEL, load_model_tensors
    from workbench.train.params import prepare_model
    from workbench.train.rundir import RunDir

    run = RunDir(run_dir)
    cfg = run.config
    encoder = load_encoder(cfg.encoder, **cfg.encoder_kwargs)
    method = methods.get(cfg.method, **cfg.method_config)
    prepare_model(encoder, method, cfg)
    load_model_tensors(encoder, method, load_file(str(run.checkpoint_path(None) / MODEL)))
    encoder.requires_grad_(False)
    method.requires_grad_(False)
    encoder.to(device).eval()
    method.to(device).eval()
    return encoder, method, method.segmenter(encoder)


@torch.no_grad()
def predict_classes(
    segmenter: Any, encoder: Any, arrays: Any, rows: Any, cache: PrefixCache | None = None
) -> torch.Tensor:
    """(b, H, W) int64 arg-max classes of ``arrays`` at ``rows`` (eval mode)."""
    device = next(segmenter.head.parameters()).device
    spec = cache.encoder if cache is not None else ("", {})
    source = _Source(arrays, cache, encoder, spec, device)
    return source.logits(segmenter, np.asarray(rows)).argmax(dim=1).cpu()


def evaluate_domains(
    segmenter: Any,
    encoder: Any,
    domains: Mapping[str, Any],
    batch_size: int = 32,
    caches: Mapping[str, PrefixCache] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per domain, :func:`~workbench.evals.segmentation.evaluate_segmentation` of the segmenter
    (``{"miou", "iou", "confusion", "pixel_accuracy"}``), through ``caches[domain]`` if given."""
    from workbench.evals.segmentation import evaluate_segmentation

    segmenter.eval()
    out = {}
    for name, arrays in domains.items():
        cache = (caches or {}).get(name)
        predict: Callable[[np.ndarray], Any] = lambda rows, a=arrays, c=cache: predict_classes(  # noqa: E731
            segmenter, encoder, a, rows, c
        )
        out[name] = evaluate_segmentation(
            predict, arrays.labels, len(arrays.class_names), batch_size=batch_size
        )
    return out
