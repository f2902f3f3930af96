"""The trainable parts of a run: ``TrainConfig.trainable`` names them, joined by ``+``.

Each part is a registry entry (:data:`PARTS`) holding its syntax, a one-line doc, the
parameters it selects and, optionally, a step that prepares the encoder (LoRA injection).
:meth:`TrainConfig.validate <workbench.train.config.TrainConfig.validate>`, the selection in
:func:`workbench.train.params.select` and the docs tables (in :mod:`workbench.train` and
``TrainConfig``; a test checks they equal :func:`table`) are all derived from it, so a new part
is one :func:`part` entry here.

Adapters: a method that inserts modules into the encoder in ``attach`` (Earth-Adapter) marks
them with :func:`workbench.methods.base.mark_adapter`; the ``adapters`` part then trains their parameters.

This module imports no torch: ``TrainConfig`` validates specs without it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench._registry import Registry

if TYPE_CHECKING:
    from torch import nn


#: ``(encoder, method_params, value) -> parameters`` of one part.
Selector = Callable[[Any, Sequence[Any], Any], Iterable[Any]]


@dataclass(frozen=True)
class Part:
    """One kind of trainable part.

    Attributes:
        syntax: How it is written in a spec (``"image_blocks:N"``); shown in docs and errors.
        doc: One line for the docs table.
        select: ``(encoder, method_params, value) -> parameters`` where ``value`` is what
            :attr:`parse` made of the text after ``:`` (``None`` for parts without one).
        parse: Turns the text after ``:`` into ``value`` (raising ``ValueError`` when it is
            bad); ``None`` for parts that take no argument.
        prepare: ``(encoder, value) -> None`` run once before parameters are selected (LoRA
            injects its adapters); ``None`` when the part only selects.
    """

    syntax: str
    doc: str
    select: Selector
    parse: Callable[[str], Any] | None = None
    prepare: Callable[[Any, Any], None] | None = None


PARTS: Registry[Part] = Registry("trainable part")
_DOC_ORDER: list[str] = []  # registration order, which the docs table follows


def part(
    name: str,
    syntax: str,
    doc: str,
    *,
    parse: Callable[[str], Any] | None = None,
    prepare: Callable[[Any, Any], None] | None = None,
) -> Callable[[Selector], Selector]:
    """Decorator registering a selector function as the part ``name`` (see :class:`Part`)."""

    def deco(select: Selector) -> Selector:
        PARTS.register(name, takes_spec=parse is not None)(
            Part(syntax, doc, select, parse, prepare)
        )
        _DOC_ORDER.append(name)
        return select

    return deco


# -- parsing ----------------------------------------------------------------------------------
def resolve(spec_part: str) -> tuple[str, Part, Any]:
    """``(name, Part, value)`` of one ``+``-separated item, or ``ValueError`` naming the valid ones."""
    try:
        name, entry, arg = PARTS.resolve(spec_part)
    except KeyError:
        known = [PARTS.get(n).syntax for n in _DOC_ORDER]
        close = difflib.get_close_matches(spec_part, [*PARTS.names(), *known], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown trainable part {spec_part!r}{hint}; use {', '.join(known)} (joined by '+')"
        ) from None
    if entry.parse is None:
        return name, entry, None
    if arg is None:
        raise ValueError(f"trainable part {name!r} needs an argument: {entry.syntax}")
    try:
        return name, entry, entry.parse(arg)
    except ValueError as err:
        raise ValueError(f"trainable part {spec_part!r}: {err}") from None


def parameters(
    spec_part: str, encoder: nn.Module, method_params: Sequence[nn.Parameter]
) -> Iterable[nn.Parameter]:
    """The parameters one spec item selects (may repeat across items; :func:`select` dedups)."""
    _, entry, value = resolve(spec_part)
    return entry.select(encoder, method_params, value)


def prepare(spec_part: str, encoder: nn.Module) -> None:
    """Run the part's preparation of the encoder (LoRA injection), if it has one."""
    _, entry, value = resolve(spec_part)
    if entry.prepare is not None:
        entry.prepare(encoder, value)


def table(indent: str = "") -> str:
    """The docs table: one line per part, ``syntax`` then its doc, in registration order."""
    entries = [PARTS.get(n) for n in _DOC_ORDER]
    width = max(len(e.syntax) for e in entries) + 4
    return "\n".join(f"{indent}{'``' + e.syntax + '``':<{width + 2}}{e.doc}" for e in entries)


def _count(arg: str) -> int:
    if not arg.isdigit():
        raise ValueError(f"expected a block count N ≥ 0 after ':', got {arg!r}")
    return int(arg)


def parse_lora(part: str) -> dict[str, Any]:
    """``"lora:r=8,alpha=16,dropout=0.1,targets=query|value"`` → LoRA keyword arguments.

    ``targets`` are module-name suffixes separated by ``|`` (peft ``target_modules``);
    default ``r=8, alpha=16, dropout=0.0``, targets are required. The ``lora:`` prefix is
    optional.
    """
    spec = part.partition(":")[2] if part.startswith("lora:") else part
    out: dict[str, Any] = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": None}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in out:
            raise ValueError(
                f"bad LoRA option {item!r} in {part!r}; use r=, alpha=, dropout=, targets=a|b"
            )
        out[key] = value.split("|") if key == "targets" else float(value)
    if not out["targets"]:
        raise ValueError(
            f"LoRA needs targets=<module suffixes>, e.g. 'lora:r=8,targets=query|value', got {part!r}"
        )
    out["r"] = int(out["r"])
    if out["r"] < 1:
        raise ValueError(f"LoRA rank r must be ≥ 1, got {out['r']}")
    return out


# -- tower blocks -------------------------------------------------------------------------------
def tower_blocks(encoder: nn.Module, side: str) -> list[nn.Module]:
    """Ordered blocks (input → output) of the ``side`` (``"image"``/``"text"``) tower, from the
    encoder's ``tower_blocks(side)`` (part of the :class:`~workbench.encoders.base.Encoder`
    contract)."""
    if not hasattr(encoder, "tower_blocks"):
        raise ValueError(
            f"cannot find the {side} tower's blocks of {type(encoder).__name__}; give the encoder "
            "a tower_blocks(side) method returning its blocks in order, or train heads/LoRA only"
        )
    try:
        return list(encoder.tower_blocks(side))
    except NotImplementedError:
        raise ValueError(
            f"{type(encoder).__name__} does not expose its {side} tower's blocks "
            "(tower_blocks); train heads, LoRA or adapters instead"
        ) from None


def _last_blocks(sides: tuple[str, ...]) -> Selector:
    def select(encoder, method_params, n: int):
        for side in sides:
            blocks = tower_blocks(encoder, side)
            if n > len(blocks):
                raise ValueError(f"{side} tower has only {len(blocks)} blocks, asked for {n}")
            for block in blocks[len(blocks) - n :]:
                yield from block.parameters()

    return select


# -- LoRA and adapters --------------------------------------------------------------------------
def _inject_lora(encoder: nn.Module, opts: dict[str, Any]) -> None:
    from peft import LoraConfig, inject_adapter_in_model

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
            f"LoRA targets {opts['targets']} matched no module of {type(encoder).__name__}: {err}"
        ) from None


# -- the parts, in the order the docs list them -------------------------------------------------
@part("heads", "heads", "both projection heads (= image_head+text_head)")
def _heads(encoder, method_params, _):
    return [*encoder.image_head.parameters(), *encoder.text_head.parameters()]


@part("image_head", "image_head", "the image projection head")
def _image_head(encoder, method_params, _):
    return encoder.image_head.parameters()


@part("text_head", "text_head", "the text projection head")
def _text_head(encoder, method_params, _):
    return encoder.text_head.parameters()


@part("logit_scale", "logit_scale", "the learnable temperature (log of the logit multiplier)")
def _logit_scale(encoder, method_params, _):
    return [encoder.logit_scale]


@part("method", "method", "the method's own trainable modules (e.g. a projector)")
def _method(encoder, method_params, _):
    return method_params


part("image_blocks", "image_blocks:N", "the last N blocks of the image tower", parse=_count)(
    _last_blocks(("image",))
)
part("text_blocks", "text_blocks:N", "the last N blocks of the text tower", parse=_count)(
    _last_blocks(("text",))
)
part("last_n_blocks", "last_n_blocks:N", "the last N blocks of both towers", parse=_count)(
    _last_blocks(("image", "text"))
)


@part(
    "lora",
    "lora:OPTIONS",
    "peft LoRA, e.g. lora:r=8,alpha=16,targets=query|value",
    parse=parse_lora,
    prepare=_inject_lora,
)
def _lora(encoder, method_params, _):
    return (p for name, p in encoder.named_parameters() if "lora_" in name)


@part("adapters", "adapters", "modules the method attached to the encoder (mark_adapter)")
def _adapters(encoder, method_params, _):
    from workbench.methods.base import ADAPTER_FLAG

    for module in encoder.modules():
        if getattr(module, ADAPTER_FLAG, False):  # set by methods.base.mark_adapter
            yield from module.parameters()


@part("all", "all", "every encoder parameter and the method's own")
def _all(encoder, method_params, _):
    return [*encoder.parameters(), *method_params]
