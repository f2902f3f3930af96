"""Which parameters train: the ``TrainConfig.trainable`` spec → concrete parameters.

``prepare_model`` is shared by the loop and :func:`~workbench.train.checkpoint.load_encoder_from_run`
so a checkpoint always loads into the structure it was saved from (LoRA injected, method adapters
attached).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from workbench.methods.base import Method
from workbench.train.config import TrainConfig, parse_lora

# Where known encoders keep their tower blocks (attribute paths, tried in order). An encoder
# can instead define ``tower_blocks(side) -> list[nn.Module]`` (ordered input → output).
_BLOCK_PATHS = {
    "image": (
        "model.visual.transformer.resblocks",  # open_clip ViT
        "visual.transformer.resblocks",
        "model.vision_model.encoder.layers",  # HF CLIP
        "vision_model.encoder.layers",
    ),
    "text": (
        "text_net.encoder.layer",  # default encoder: MiniLM
        "model.transformer.resblocks",  # open_clip text transformer
        "transformer.resblocks",
        "model.text_model.encoder.layers",  # HF CLIP
        "text_model.encoder.layers",
    ),
}


def _getpath(obj: object, path: str) -> object | None:
    for attr in path.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def tower_blocks(encoder: nn.Module, side: str) -> list[nn.Module]:
    """Ordered blocks (input → output) of the ``side`` (``"image"``/``"text"``) tower.

    Uses ``encoder.tower_blocks(side)`` when the encoder defines it. The default encoder's
    EfficientNet yields its 16 inverted-residual blocks followed by ``conv_head``+``bn2`` folded
    into the last one (as its ``unfreeze_last`` does).
    """
    if hasattr(encoder, "tower_blocks"):
        return list(encoder.tower_blocks(side))
    if side == "image" and hasattr(encoder, "_image_blocks"):
        blocks = list(encoder._image_blocks())
        net = encoder.image_net
        blocks[-1] = nn.ModuleList([blocks[-1], net.conv_head, net.bn2])
        return blocks
    for path in _BLOCK_PATHS[side]:
        found = _getpath(encoder, path)
        if isinstance(found, (nn.ModuleList, nn.Sequential)):
            return list(found)
    raise ValueError(
        f"cannot find the {side} tower's blocks of {type(encoder).__name__}; give the encoder a "
        "tower_blocks(side) method returning its blocks in order, or train heads/LoRA only"
    )


def apply_lora(encoder: nn.Module, config: TrainConfig) -> None:
    """Inject peft LoRA adapters for every ``lora:...`` part of ``config.trainable`` (in place)."""
    for part in config.trainable_parts():
        if not part.startswith("lora:"):
            continue
        from peft import LoraConfig, inject_adapter_in_model

        opts = parse_lora(part)
        lora = LoraConfig(
            r=opts["r"],
            lora_alpha=opts["alpha"],
            lora_dropout=opts["dropout"],
            target_modules=opts["targets"],
        )
        try:
            inject_adapter_in_model(lora, encoder)
        except ValueError as err:
            raise ValueError(
                f"LoRA targets {opts['targets']} matched no module of "
                f"{type(encoder).__name__}: {err}"
            ) from None


def prepare_model(encoder: nn.Module, method: Method, config: TrainConfig) -> list[nn.Parameter]:
    """Inject LoRA, attach the method, and return the method's own trainable parameters.

    Must run once, before selecting parameters: ``method.attach`` may add adapter modules to
    the encoder or create frozen teachers.
    """
    apply_lora(encoder, config)
    method.attach(encoder)
    return [p for p in method.parameters() if p.requires_grad]


def select(
    spec_parts: Sequence[str],
    encoder: nn.Module,
    method_params: Sequence[nn.Parameter],
) -> list[nn.Parameter]:
    """The parameters named by ``spec_parts`` (deduplicated, in a deterministic order)."""
    chosen: list[nn.Parameter] = []

    def add(params) -> None:
        for p in params:
            if not any(p is q for q in chosen):
                chosen.append(p)

    for part in spec_parts:
        head, _, arg = part.partition(":")
        if part == "all":
            add(encoder.parameters())
            add(method_params)
        elif part in ("heads", "image_head"):
            add(encoder.image_head.parameters())
            if part == "heads":
                add(encoder.text_head.parameters())
        elif part == "text_head":
            add(encoder.text_head.parameters())
        elif part == "logit_scale":
            add([encoder.logit_scale])
        elif part == "method":
            add(method_params)
        elif head in ("image_blocks", "text_blocks", "last_n_blocks"):
            n = int(arg)
            sides = {"image_blocks": ["image"], "text_blocks": ["text"]}.get(
                head, ["image", "text"]
            )
            for side in sides:
                blocks = tower_blocks(encoder, side)
                if n > len(blocks):
                    raise ValueError(f"{part}: the {side} tower has only {len(blocks)} blocks")
                for block in blocks[len(blocks) - n :]:
                    add(block.parameters())
        elif head == "lora":
            add(p for name, p in encoder.named_parameters() if "lora_" in name)
        else:  # pragma: no cover - TrainConfig.validate rejects it first
            raise ValueError(f"unknown trainable part {part!r}")
    return chosen


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
