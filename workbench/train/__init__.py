"""One short fine-tuning loop shared by every method (InfoNCE, SDE, FANoise, DCR, ProCLIP, ...).

Modules, one concern each: ``loop`` (the driver: ``train``) · ``results`` (``Run``,
``NonFiniteLossError``) · ``config`` (``TrainConfig``) ·
``parts`` (the trainable-parts registry) · ``params`` (spec → parameters, optimiser groups) ·
``source`` (cached or item rows, hold-out split, row order) · ``batch`` (micro-batch →
``BatchOutputs``) · ``heldout`` (built-in evaluation) · ``snapshot`` (spectral snapshots) ·
``grad_probe`` · ``schedules`` (LR, stages) · ``rng`` (seeding, RNG capture) · ``checkpoint`` ·
``rundir`` (the run directory) · ``hooks`` (evaluation hooks).

Public API
----------
``train(config=None, *, resume=None, embeddings=None, encoder=None, dataset=None,
eval_hooks=(), progress=None) -> Run``
    Run (or resume) one training run described by a :class:`TrainConfig`. ``embeddings``
    (with ``image_tower``/``text_tower``) selects the fast heads-only path on cached tower
    features; otherwise a dataset's items run through the towers. ``eval_hooks`` are callables
    ``(encoder, step) -> dict[str, float]`` run every ``eval_every`` steps and at the end (D/P
    probes, retrieval suites). ``resume=<run dir>`` continues from its latest checkpoint exactly
    as the uninterrupted run would have (bit-identical on CPU).
``TrainConfig``
    The single source of truth for a run (encoder, data, method + config, steps, optimiser,
    schedule, precision, which parameters train, logging cadence); ``to_dict``/``from_dict``.
``Run``
    Result: ``run_dir``, ``log_path``, final ``metrics``, the trained ``encoder`` and ``method``.
``RunDir(path)``
    Reader for a run directory: ``.config``, ``.meta``, ``.log()``, ``.snapshots()``,
    ``.evals()``, ``.summary``, ``.checkpoint_steps()``.
``load_encoder_from_run(run_dir, step=None) -> Encoder``
    Rebuild the encoder from ``config.json`` (including LoRA / method adapters) and load the
    trained weights of a checkpoint (latest by default). Backs the ``"run:<dir>"`` encoder name.
``NonFiniteLossError``
    Raised when a loss is NaN/Inf; names the step and the loss terms. The last good
    checkpoint is kept.
``workbench.evals.hooks.suite_hook(suite, tower_source=None, metrics=None)``
    An eval hook scoring the D/P/retrieval suite (:mod:`workbench.evals.dp_suite`) per eval step.
``gather_features`` (in :mod:`workbench.distributed`)
    All-gather (B, D) features across processes *with gradients*; the one distributed op.

Which parameters train (``TrainConfig.trainable``, parts joined by ``+``; :mod:`.parts`)
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
    Default ``heads+logit_scale+method``.

Distributed
    The same ``train`` runs under ``torchrun`` (``gloo`` on CPU, ``nccl`` on GPU). The global
    batch is split across ranks; features are all-gathered with gradients before the loss and
    before every spectral operation, so losses and SVDs see the global batch; gradients are
    averaged across ranks (DDP semantics). Only rank 0 writes the run directory. Launch a
    script that calls ``train(config)`` with ``torchrun --nproc_per_node 2 script.py``; every
    process uses the same seed, so stochastic methods draw identical noise for the global batch.

Run directory format
--------------------
``<run_root>/<run_name>-<YYYYmmdd-HHMMSS>-<n>/`` (``n`` = 0, 1, ... so a directory is never
reused; ``run_name`` defaults to the method name)::

    config.json        {"config": TrainConfig.to_dict(), "meta": {"workbench_version",
                        "torch_version", "created", "world_size", "device", "amp",
                        "method": method.config (all hyper-parameters, defaults filled),
                        "encoder_identity": {...} (before training), "data": {...},
                        "stages": [{"name", "steps", "trainable", "lr"}]}}
    log.jsonl          one JSON object per line, in order; ``kind`` says which:
        {"kind": "step", "step": s, "stage": str, "loss": float, "lr": float,
         "terms": {name: float}, "logs": {name: float}, "schedule": {name: float},
         "grad_norm": float, "time": seconds since start}        every log_every steps
         (``step`` = optimiser steps completed, 1-based; optional
         "grad_cos": {"<a>~<b>": float} on gradient-probe steps)
        {"kind": "snapshot", "step": s, "schedule": {...}, "method": {...},
         "image": {"singular_values": [...], "partition": {"strong", "weak", "noise"},
                   "counts": {...}, "energy": {...}, "thresholds": {...}},
         "text": {...same...}}          at step 1, every snapshot_every steps and at
                                         the end (global batch, L2-normalised post-head
                                         features; partition = workbench.probes.partitions
                                         "iqr-mp": proportions, counts, energy shares)
        {"kind": "eval", "step": s, "metrics": {"heldout/infonce": float,
         "heldout/i2t_r1": float, "heldout/t2i_r1": float, ...hook metrics}}
                                         at step 0, every eval_every steps, and at the end
                                         (always before that step's checkpoint)
        {"kind": "event", "event": "start"|"resume"|"end"|"error", "step": s, ...}
    checkpoints/
        step_0000100/   model.safetensors      trainable encoder tensors ("encoder.<name>")
                                                and the method's full state ("method.<name>")
                        optimizer.safetensors  optimiser tensors ("<param index>.<key>")
                        state.json             step, stage, optimiser param groups and
                                                scalars, LR-scheduler state, the python /
                                                numpy / torch (+CUDA) RNG states per rank, and
                                                "sha256": {file: hex} of the two tensor files
        latest          text file naming the newest complete checkpoint directory
    summary.json       written at the end: status, steps, final loss, final eval metrics
                       (always valid JSON: a NaN is written as null)

Checkpoint directories are written to a temporary sibling and moved into place with
``os.replace``; ``latest`` is replaced atomically after that, so a crash never leaves a
half-written checkpoint behind the pointer. Each checkpoint's tensor files are checksummed and
verified on every load (resume, ``load_encoder_from_run``, ``"run:<dir>"``):
``CheckpointCorruptError`` names a file that changed. On resume, ``log.jsonl`` is truncated to
the checkpoint's step so the log matches the uninterrupted run — the evaluation of a step runs
before its checkpoint, so nothing a crash interrupted is lost — and a torn last line (power
cut, full disk) is dropped and reported; ``RunDir`` readers skip it with a warning. Resuming a
finished run is a no-op with a warning.
"""

from __future__ import annotations

__all__ = [
    "NonFiniteLossError",
    "Run",
    "RunDir",
    "TrainConfig",
    "load_encoder_from_run",
    "train",
]


def __getattr__(name: str):
    # Lazy: importing workbench.train must not pull in torch before it is needed.
    if name in ("TrainConfig",):
        from workbench.train import config

        return getattr(config, name)
    if name in ("train", "Run", "NonFiniteLossError"):
        from workbench.train import loop

        return getattr(loop, name)
    if name == "RunDir":
        from workbench.train.rundir import RunDir

        return RunDir
    if name == "load_encoder_from_run":
        from workbench.train.checkpoint import load_encoder_from_run

        return load_encoder_from_run
    raise AttributeError(f"module 'workbench.train' has no attribute {name!r}")
