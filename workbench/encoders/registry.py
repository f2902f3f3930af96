"""The encoder registry: string ids → factories returning an :class:`~workbench.encoders.base.Encoder`.

=============================================  ==============================================
id                                             what it builds
=============================================  ==============================================
``"default"`` / ``"lit-effnet-minilm"``        EfficientNet-Lite0 + MiniLM-L6 with seeded heads
``"open_clip:<arch>"``                         open_clip architecture, seeded random init
``"open_clip:<arch>:<pretrained tag>"``        open_clip weights already in ``cache_dir``
``"open_clip:<arch>:<checkpoint file>"``       open_clip weights from a local file
``"hf-clip:<local directory>"``                transformers ``CLIPModel`` saved with
                                               ``save_pretrained``
``"tinyclip"`` / ``"tinyclip:<name>"``         default image side + a 77-token text
                                               transformer trained from scratch (cached
                                               weights written by its recipe)
``"run:<run directory>"``                      an encoder trained by :mod:`workbench.train`
=============================================  ==============================================

Heavy imports (timm, transformers, open_clip) happen inside the factories, so importing
:mod:`workbench` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._registry import Registry
from .base import Encoder

EncoderFactory = Callable[..., Encoder]

ENCODERS: Registry[EncoderFactory] = Registry("encoder")


@ENCODERS.register("default", aliases=("lit-effnet-minilm",))
def _default(**kwargs: Any) -> Encoder:
    from .default import build_default

    return build_default(**kwargs)


@ENCODERS.register("open_clip", takes_spec=True)
def _open_clip(spec: str | None = None, **kwargs: Any) -> Encoder:
    from .openclip import build_open_clip

    return build_open_clip(spec, **kwargs)


@ENCODERS.register("hf-clip", takes_spec=True)
def _hf_clip(spec: str | None = None, **kwargs: Any) -> Encoder:
    from .hfclip import build_hf_clip

    return build_hf_clip(spec, **kwargs)


@ENCODERS.register("tinyclip", takes_spec=True)
def _tinyclip(spec: str | None = None, **kwargs: Any) -> Encoder:
    from .tinyclip import build_tinyclip

    return build_tinyclip(spec, **kwargs)


# Rebuilt by the training package from a run's config.json: a lazy entry, so this floor never
# imports train/ (which imports encoders/).
ENCODERS.register_lazy("run", "workbench.train.checkpoint:load_encoder_from_run", takes_spec=True)


def load_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name`` (see the table in this module's docstring).

    Args:
        name: A registry id, optionally with a spec after the first ``:``
            (``"open_clip:ViT-B-32:/models/vitb32.safetensors"``).
        **kwargs: Passed to the factory, e.g. :class:`~workbench.encoders.default.DefaultEncoderConfig`
            fields for ``"default"``, or ``cache_dir=`` for ``"open_clip:..."``.

    Returns:
        An :class:`Encoder` in eval mode whose ``identity.name`` is the canonical id with its spec.

    Raises:
        KeyError: Unknown id (with close matches suggested).
    """
    canonical, factory, spec = ENCODERS.resolve(name)
    if spec is None:
        if canonical == "run":
            raise ValueError("'run:' needs a run directory, e.g. load_encoder('run:runs/sde-0')")
        return factory(**kwargs)
    if canonical == "run":
        if not spec:
            raise ValueError("'run:' needs a run directory, e.g. load_encoder('run:runs/sde-0')")
        return factory(spec, **kwargs)
    return factory(spec=spec, **kwargs)


def check_encoder_name(name: Any, field: str = "encoder", *, owner: str = "") -> str:
    """Validate an encoder name a config will load later: a registry id (with its spec) or a
    run directory. ``ValueError`` with the registry's suggestions; nothing is built or imported."""
    prefix = f"{owner}: " if owner else ""
    if isinstance(name, str) and not name:
        raise ValueError(f"{prefix}{field} is empty; name one (see the registry's names)")
    if not isinstance(name, str):
        raise TypeError(f"{prefix}{field} must be an encoder name (str), got {name!r}")
    if (Path(name) / "config.json").exists():  # a run directory
        return name
    try:
        ENCODERS.canonical(name)
    except KeyError as err:
        raise ValueError(f"{prefix}{field}: {err.args[0]}") from None
    return name


def resolve_encoder(encoder: Any) -> tuple[Any, str]:
    """``(Encoder, label)`` from an Encoder, a registry name, ``"run:<dir>"`` or a run directory."""
    if isinstance(encoder, Path):
        encoder = str(encoder)
    if isinstance(encoder, str):
        path = Path(encoder)
        if not encoder.startswith("run:") and path.is_dir() and (path / "config.json").exists():
            return load_encoder(f"run:{encoder}"), f"run:{encoder}"
        return load_encoder(encoder), encoder
    if hasattr(encoder, "encode_images") and hasattr(encoder, "encode_texts"):
        return encoder, str(getattr(encoder, "name", type(encoder).__name__))
    raise TypeError(
        f"encoder must be an Encoder, a registry name or a run directory, got {type(encoder).__name__}"
    )


__all__ = ["ENCODERS", "check_encoder_name", "load_encoder", "resolve_encoder"]
