"""Checkpoints: atomic safetensors + JSON state, exact RNG capture, and reloading encoders.

A checkpoint holds what an exact resume needs: the trainable encoder tensors, the method's full
state (EMA teachers included), the optimiser state, and the python/numpy/torch RNG states of
every rank (:mod:`workbench.train.rng`). Layout: see :mod:`workbench.train`.

Integrity: ``state.json`` records the sha256 of each tensor file (``"sha256": {file: hex}``);
every reader (:func:`read_checkpoint`, :func:`load_encoder_from_run`, resume) verifies it and
raises :class:`CheckpointCorruptError` naming the file, so a flipped bit never loads silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from workbench.distributed import DistInfo, barrier
from workbench.train.rng import rng_state, set_rng_state
from workbench.train.rundir import CHECKPOINTS, LATEST, RunDir, checkpoint_name

MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


class CheckpointCorruptError(ValueError):
    """A checkpoint file does not match the checksum recorded when it was written (or its
    ``state.json`` is unreadable). The message names the file and how to recover."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointCorruptError(
            f"{path / STATE} cannot be read ({err}); the checkpoint is damaged — resume from an "
            f"earlier one (delete {path} and point {path.parent / LATEST} at it)"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointCorruptError(
            f"{path / STATE} is not a JSON object; the checkpoint is damaged"
        )
    return state


def verify_checkpoint_file(path: Path, name: str, state: dict[str, Any]) -> None:
    """Raise :class:`CheckpointCorruptError` unless ``path/name`` has the recorded sha256.

    Checkpoints written before checksums existed (no ``"sha256"`` in ``state.json``) are
    loaded with a warning that they cannot be verified.
    """
    sums = state.get("sha256")
    if sums is None:
        warnings.warn(
            f"{path} has no checksums (written by an older workbench); it is not verified",
            stacklevel=3,
        )
        return
    want = sums.get(name)
    got = file_sha256(path / name)
    if want != got:
        raise CheckpointCorruptError(
            f"{path / name} is corrupted: its sha256 is {got[:16]}… but {STATE} recorded "
            f"{str(want)[:16]}… — the file changed after it was written (disk error, partial "
            f"copy). Resume from an earlier checkpoint (delete {path} and point "
            f"{path.parent / LATEST} at an older step_* directory) or retrain"
        )


# -- tensors -----------------------------------------------------------------------------------
def _detached(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors sharing storage (e.g. an adapter seen from two modules)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def model_tensors(
    encoder: nn.Module, method: nn.Module, trainable: list[nn.Parameter]
) -> dict[str, torch.Tensor]:
    """``encoder.<name>`` for every trainable encoder parameter, ``method.<name>`` for the method's
    whole state dict."""
    ids = {id(p) for p in trainable}
    out = {f"encoder.{n}": p for n, p in encoder.named_parameters() if id(p) in ids}
    out.update({f"method.{k}": v for k, v in method.state_dict().items()})
    return _detached(out)


def optimizer_payload(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into safetensors-able tensors and a JSON part."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return _detached(tensors), {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], js: dict) -> None:
    """Inverse of :func:`optimizer_payload` (tensors moved to each parameter's device)."""
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        idx, _, name = key.partition(".")
        state.setdefault(int(idx), {})[name] = val
    for idx, extra in js["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    opt.load_state_dict({"state": state, "param_groups": js["param_groups"]})


# -- write / read ------------------------------------------------------------------------------
def save_checkpoint(
    run_dir: Path,
    step: int,
    model: dict[str, torch.Tensor],
    optimizer: tuple[dict[str, torch.Tensor], dict[str, Any]],
    state: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``checkpoints/step_XXXXXXX`` atomically and point ``latest`` at it.

    Files go to a temporary sibling directory first, which is then renamed into place
    (``os.replace``); ``latest`` is replaced atomically afterwards. ``keep`` prunes older ones.
    """
    root = run_dir / CHECKPOINTS
    root.mkdir(exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model, str(tmp / MODEL))
    save_file(optimizer[0], str(tmp / OPTIMIZER))
    sums = {name: file_sha256(tmp / name) for name in (MODEL, OPTIMIZER)}
    (tmp / STATE).write_text(json.dumps({**state, "optimizer": optimizer[1], "sha256": sums}))
    if final.exists():  # re-written after a resume: move the old one aside first
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp-{os.getpid()}"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    if keep is not None:
        for old_step in RunDir(run_dir).checkpoint_steps()[:-keep]:
            shutil.rmtree(root / checkpoint_name(old_step))
    return final


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """``(model tensors, optimizer tensors, state json)`` of one checkpoint directory.

    Raises:
        CheckpointCorruptError: a file's sha256 differs from the one recorded in ``state.json``.
    """
    path = Path(path)
    state = _read_state(path)
    for name in (MODEL, OPTIMIZER):
        verify_checkpoint_file(path, name, state)
    return load_file(str(path / MODEL)), load_file(str(path / OPTIMIZER)), state


def load_model_tensors(
    encoder: nn.Module, method: nn.Module, tensors: dict[str, torch.Tensor]
) -> None:
    """Copy ``encoder.*`` into encoder parameters and ``method.*`` into the method's state."""
    enc_params = dict(encoder.named_parameters())
    missing = []
    with torch.no_grad():
        for key, val in tensors.items():
            if key.startswith("encoder."):
                name = key[len("encoder.") :]
                if name not in enc_params:
                    missing.append(name)
                    continue
                enc_params[name].copy_(val)
    if missing:
        raise ValueError(
            f"checkpoint has encoder tensors the encoder lacks: {missing[:5]} — was it built "
            "with the same encoder, trainable spec (LoRA) and method?"
        )
    method_sd = {k[len("method.") :]: v for k, v in tensors.items() if k.startswith("method.")}
    if method_sd or method.state_dict():
        method.load_state_dict(method_sd)


# -- a training process's whole state -------------------------------------------------------------
def save_training_state(
    run_dir: Path,
    step: int,
    stage: str,
    encoder: nn.Module,
    method: nn.Module,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    info: DistInfo,
    keep: int | None = None,
) -> None:
    """Checkpoint everything an exact resume needs after ``step`` optimiser steps: trainable
    encoder tensors, the method's state, the optimiser, the grad scaler and every rank's RNG
    states (gathered; rank 0 writes). All ranks must call it."""
    rngs = [rng_state()]
    if info.enabled:
        gathered: list[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, rngs[0])
        rngs = gathered
    if info.is_main:
        state = {
            "step": step,
            "stage": stage,
            "rng": rngs,
            "scaler": scaler.state_dict() if scaler else None,
        }
        save_checkpoint(
            run_dir,
            step,
            model_tensors(encoder, method, params),
            optimizer_payload(optimizer),
            state,
            keep=keep,
        )
    barrier(info)


def restore_training_state(
    run_dir: Path,
    encoder: nn.Module,
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    info: DistInfo,
    device: torch.device,
) -> int:
    """Inverse of :func:`save_training_state` from the latest checkpoint (this rank's RNG
    states included); returns the step it was written after."""
    model, opt_tensors, state = read_checkpoint(RunDir(run_dir).checkpoint_path(None))
    load_model_tensors(encoder, method, model)
    opt_tensors = {
        k: v.to(device) if not k.endswith(".step") else v for k, v in opt_tensors.items()
    }
    load_optimizer(optimizer, opt_tensors, state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    if len(rngs) != info.world_size:
        raise ValueError(
            f"checkpoint was written by {len(rngs)} processes; resume with the same number "
            f"(got {info.world_size}) for an exact continuation"
        )
    set_rng_state(rngs[info.rank])
    return int(state["step"])


def load_encoder_from_run(
    run_dir: str | os.PathLike,
    step: int | None = None,
    *,
    encoder: nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a run's encoder and load a checkpoint's trained weights.

    Args:
        run_dir: A run directory written by :func:`workbench.train.train`.
        step: Checkpoint step; ``None`` = the latest.
        encoder: An untrained encoder to load into, for runs whose ``config.encoder`` is
            ``None`` (trained on an encoder object); otherwise built with ``load_encoder``.
        device: Where to put the result.

    Returns:
        The encoder (eval mode, parameters frozen) with LoRA and method adapters in place, named
        ``"run:<run_dir>"`` so its identity (and hence embedding caches) differs from the base.
    """
    from workbench import methods

    run = RunDir(run_dir)
    config = run.config
    if encoder is None:
        if config.encoder is None:
            raise ValueError(
                f"{run.path} was trained on an encoder object (config.encoder is None); "
                "pass encoder=<an untrained encoder of the same kind>"
            )
        from workbench.encoders import load_encoder

        encoder = load_encoder(config.encoder, **config.encoder_kwargs)
    method = methods.get(config.method, **config.method_config)
    from workbench.train.params import prepare_model

    prepare_model(encoder, method, config)
    ckpt = run.checkpoint_path(step)
    verify_checkpoint_file(ckpt, MODEL, _read_state(ckpt))
    load_model_tensors(encoder, method, load_file(str(ckpt / MODEL)))
    encoder.requires_grad_(False)
    encoder.name = f"run:{run.path}"
    return encoder.to(device).eval()
