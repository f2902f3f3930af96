"""Which parameters train: the ``TrainConfig.trainable`` spec → concrete parameters.

The parts themselves (what ``heads`` or ``image_blocks:N`` select) are the registry
:data:`workbench.train.parts.PARTS`. ``prepare_model`` is shared by the loop and
:func:`~workbench.train.checkpoint.load_encoder_from_run` so a checkpoint always loads into the
structure it was saved from (LoRA injected, method adapters attached).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from workbench.methods.base import Method, Stage
from workbench.train import parts
from workbench.train.config import TrainConfig


def prepare_model(encoder: nn.Module, method: Method, config: TrainConfig) -> list[nn.Parameter]:
    """Prepare the parts (inject LoRA), attach the method, and return the method's own
    trainable parameters.

    Must run once, before selecting parameters: ``method.attach`` may add adapter modules to
    the encoder or create frozen teachers (whose parameters do not require grad, so they are
    not among those returned).
    """
    for part in config.trainable_parts():
        parts.prepare(part, encoder)
    method.attach(encoder)
    return [p for p in method.parameters() if p.requires_grad]


def select(
    spec_parts: Sequence[str],
    encoder: nn.Module,
    method_params: Sequence[nn.Parameter],
) -> list[nn.Parameter]:
    """The parameters named by ``spec_parts`` (deduplicated, in a deterministic order: parts in
    spec order, each part's parameters in module order)."""
    chosen: list[nn.Parameter] = []
    seen: set[int] = set()
    for part in spec_parts:
        for p in parts.parameters(part.strip(), encoder, method_params):
            if id(p) not in seen:
                seen.add(id(p))
                chosen.append(p)
    return chosen


def stage_parameters(
    stages: Sequence[Stage],
    run_parts: Sequence[str],
    encoder: nn.Module,
    method_params: Sequence[nn.Parameter],
) -> tuple[list[list[nn.Parameter]], list[nn.Parameter]]:
    """``(parameters of each stage, their union)``: a stage's own ``trainable`` spec, else the
    run's parts. The optimiser holds the union; each stage sets ``requires_grad`` on its own."""
    per_stage = [
        select(s.trainable.split("+") if s.trainable else run_parts, encoder, method_params)
        for s in stages
    ]
    union: list[nn.Parameter] = []
    seen: set[int] = set()
    for params in per_stage:
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                union.append(p)
    return per_stage, union


def warn_frozen_temperature(
    method: Method, encoder: nn.Module, params: Sequence[nn.Parameter]
) -> None:
    """Say so when a method reads the encoder's learnable temperature (``temperature=None``) but
    ``logit_scale`` is not among the trained parameters (e.g. ``trainable="heads"``): it stays at
    its current value for the whole run."""
    scale = getattr(encoder, "logit_scale", None)
    if getattr(method, "temperature", 0.0) is not None or scale is None:
        return
    if any(p is scale for p in params):
        return
    import warnings

    warnings.warn(
        f"{method.name} uses the encoder's learnable temperature, but logit_scale does not train "
        f"(trainable parts exclude it): τ stays {float(1 / scale.detach().exp()):.4g} for the run; "
        "add '+logit_scale' to TrainConfig.trainable to learn it",
        UserWarning,
        stacklevel=3,
    )


def param_groups(params: Sequence[nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW groups: decay on ≥2-D weights only (open_clip excludes biases, norms, the scale)."""
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def tower_free(params: Sequence[nn.Parameter], encoder: nn.Module) -> bool:
    """True when no parameter in ``params`` lives in a tower (heads/logit scale/method only):
    the condition for training on cached tower features."""
    outside = [
        *encoder.image_head.parameters(),
        *encoder.text_head.parameters(),
        encoder.logit_scale,
    ]
    enc_params = list(encoder.parameters())
    for p in params:
        in_encoder = any(p is q for q in enc_params)
        if in_encoder and not any(p is q for q in outside):
            return False
    return True
