"""The ``earth_adapter`` method: adapters inside a frozen image tower + a segmentation head.

``attach(encoder)`` hooks one :class:`~.layers.AdapterLayer` onto each chosen block of
``encoder.tower_blocks("image")`` (the modules are kept on the encoder as
``encoder.earth_adapter`` and marked with :func:`~workbench.methods.base.mark_adapter`, so
``TrainConfig(trainable="adapters+method")`` trains them) and builds the method's own
:class:`~.segmenter.SegHead` over the outputs of ``feature_layers``. The variants differ only in
what the experts of the mixture layers read (``experts``); see the registry entries in
:mod:`workbench.methods.earth_adapter`.

Earth-Adapter is a segmentation method: it has no loss over the contrastive ``BatchOutputs`` the
training loop hands a method (no pixels' labels are in it). Its loss is
:func:`~.segmenter.segmentation_loss` on :meth:`EarthAdapter.segmenter`'s logits, driven by the
segmentation trainer of :mod:`workbench.experiments.segtrain`; :meth:`EarthAdapter.compute`
says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench._validate import require
from workbench.methods.base import BatchOutputs, LossOutput, Method, StepState, mark_adapter
from workbench.methods.earth_adapter.frequency import low_pass_cutoff
from workbench.methods.earth_adapter.layers import EXPERT_INPUTS, AdapterLayer
from workbench.methods.earth_adapter.segmenter import (
    SegHead,
    Segmenter,
    capture_outputs,
    hook_target,
    output_map,
)

__all__ = ["ADAPTER_ATTR", "BlockInfo", "EarthAdapter", "layer_scales", "probe_blocks"]

#: Attribute of the encoder holding the attached ``nn.ModuleDict`` of adapter layers.
ADAPTER_ATTR = "earth_adapter"


@dataclass(frozen=True)
class BlockInfo:
    """The output of one tower block, as :func:`probe_blocks` read it.

    Attributes:
        channels: C.
        grid: ``(H, W)`` of its token grid.
        stride: Input pixels per token along the height.
        sequence: ``True`` for (B, N, C) token sequences, ``False`` for (B, C, H, W) maps.
    """

    channels: int
    grid: tuple[int, int]
    stride: float
    sequence: bool


@torch.no_grad()
def probe_blocks(encoder: nn.Module, prefix_tokens: int = 1) -> list[BlockInfo]:
    """Run one blank image through the image tower and read every block's output shape.

    The image is ``encoder.preprocess``-ed, so it has the encoder's own input resolution.
    """
    from PIL import Image

    blocks = encoder.tower_blocks("image")
    pixels = encoder.preprocess([Image.new("RGB", (64, 64), "white")]).to(_device(encoder))
    with capture_outputs([hook_target(b) for b in blocks], before_hooks=True) as outs:
        encoder.image_tower(pixels)
    info = []
    for i, out in enumerate(outs):
        if out is None:
            raise ValueError(f"Earth-Adapter: image block {i} did not run in image_tower()")
        seq = (out[0] if isinstance(out, tuple) else out).ndim == 3
        m = output_map(out, prefix_tokens)  # (1, C, H, W)
        grid = (int(m.shape[-2]), int(m.shape[-1]))
        info.append(BlockInfo(int(m.shape[1]), grid, pixels.shape[-2] / grid[0], seq))
    return info


def layer_scales(encoder: nn.Module) -> list[nn.Parameter]:
    """The per-layer scales s_l of the adapters attached to ``encoder`` (in layer order).

    The official code gives them AdamW weight decay (0.05) [code]: its no-decay key
    ``reins.scale`` matches nothing in ``earth_adapter``. The open_clip rule of
    :func:`workbench.train.params.param_groups` would not (they are 0-d), so the segmentation
    trainer adds them to the decayed group.
    """
    layers = getattr(encoder, ADAPTER_ATTR, None)
    return [] if layers is None else [layer.scale for layer in layers.values()]


class EarthAdapter(Method):
    """Earth-Adapter (Hu et al., AAAI 2026; spec ``methods-geometry.md`` §6, §8).

    Args:
        experts: What the experts of each *mixture layer* read (:data:`~.layers.EXPERT_INPUTS`):
            ``("spatial", "low", "high")`` = Earth-Adapter [code]; ``("spatial",) * 3`` = the
            paper's three-spatial-adapter ablation; ``("spatial",)`` = one spatial adapter per
            layer (Rein-like); ``()`` = no adapters (frozen tower, head only).
        adapter_layers: Indices into ``tower_blocks("image")`` that get an adapter; ``None`` =
            every block whose tokens have a stride ≥ ``min_stride`` px.
        fft_layers: The mixture layers (the official ``fft_layer``): an int n = the first n
            adapter layers (spec §8: "FFT on the first blocks", configs [0–2]) or explicit
            indices (a subset of ``adapter_layers``). Other adapter layers get one spatial
            expert (no router), as in the official code.
        bottleneck: Expert width r (32: the middle of the official 16–64) [code].
        ratio: ρ of the frequency split (0.3; 0.2 in 5 of the 12 official configs) [code].
        scale: Initial per-layer scale s_l (0.1) [code].
        min_stride: With ``adapter_layers=None``, the smallest token stride (input pixels per
            token) that gets adapters (16: a ViT-B/16's patch tokens, which is what the paper
            adapts; on EfficientNet-Lite0 that is stage 4 on, blocks 5–15) [our reading]. The
            official code adapts every block of its ViT: ``min_stride=1`` here. The cost of
            an adapter is the backward pass through every frozen block after it (input
            gradients only; measured per block by ``benchmarks/profile_segment.py``), so the
            earliest adapted block sets the step time; the segmentation study adapts blocks
            10–15 only (``EarthAdapterConfig.adapter_layers``).
        prefix_tokens: Leading tokens of (B, N, C) block outputs passed through unchanged (the
            CLS token: 1) [code].
        n_classes: Segmentation classes K (10: background, the 8 shapes of synthetic-world and
            its text glyph; ``workbench.data.segworld.SEG_CLASSES``).
        feature_layers: Blocks whose outputs feed the head; ``None`` = the last block of each of
            the (up to) three coarsest token grids (EfficientNet at 128 px: blocks 4, 10, 15 at
            strides 8, 16, 32; a ViT: its last block) [our reading].
        head_width: Channels of the head (64).

    After :meth:`attach`: ``adapter_layers_``, ``fft_layers_``, ``feature_layers_`` (resolved
    indices), ``blocks_`` (:class:`BlockInfo` per block) and ``head``.
    """

    name = "earth_adapter"
    #: Not a feature loss: trained by ``workbench.experiments.segtrain`` on pixels and dense labels.
    task = "segmentation"
    needs_towers = True

    def __init__(
        self,
        experts: Sequence[str] = ("spatial", "low", "high"),
        adapter_layers: Sequence[int] | None = None,
        fft_layers: int | Sequence[int] = 3,
        bottleneck: int = 32,
        ratio: float = 0.3,
        scale: float = 0.1,
        min_stride: float = 16,
        prefix_tokens: int = 1,
        n_classes: int = 10,
        feature_layers: Sequence[int] | None = None,
        head_width: int = 64,
    ) -> None:
        super().__init__()
        if isinstance(experts, str):
            raise ValueError(
                f"earth_adapter: experts must be a sequence of {EXPERT_INPUTS}, got the string "
                f"{experts!r}; write ({experts!r},)"
            )
        self.experts = tuple(experts)
        bad = [e for e in self.experts if e not in EXPERT_INPUTS]
        require(not bad, self.name, "experts", experts, f"a sequence of {EXPERT_INPUTS}")
        self.adapter_layers = _indices(adapter_layers, "adapter_layers")
        if isinstance(fft_layers, int) and not isinstance(fft_layers, bool):
            require(fft_layers >= 0, self.name, "fft_layers", fft_layers, "≥ 0 or indices")
            self.fft_layers: int | tuple[int, ...] = fft_layers
        else:
            self.fft_layers = _indices(fft_layers, "fft_layers")  # type: ignore[assignment]
        for name, value in (("bottleneck", bottleneck), ("n_classes", n_classes),
                            ("head_width", head_width)):  # fmt: skip
            require(isinstance(value, int) and value >= 1, self.name, name, value, "an int ≥ 1")
        require(isinstance(ratio, (int, float)) and 0 < ratio <= 1, self.name, "ratio", ratio,
                "in (0, 1]")  # fmt: skip
        require(isinstance(scale, (int, float)), self.name, "scale", scale, "a number")
        require(min_stride > 0, self.name, "min_stride", min_stride, "> 0")
        require(isinstance(prefix_tokens, int) and prefix_tokens >= 0, self.name,
                "prefix_tokens", prefix_tokens, "an int ≥ 0")  # fmt: skip
        self.bottleneck, self.ratio, self.scale = bottleneck, float(ratio), float(scale)
        self.min_stride, self.prefix_tokens = float(min_stride), prefix_tokens
        self.n_classes, self.head_width = n_classes, head_width
        self.feature_layers = _indices(feature_layers, "feature_layers")
        self.head: SegHead | None = None

    # -- attach -------------------------------------------------------------------------------
    def attach(self, encoder: nn.Module) -> None:
        """Hook the adapters onto the image tower and build the head (see the class docstring).

        Deterministic given the config and the global RNG state: the head is initialised first,
        so every variant trained from one seed starts from the same head.
        """
        if getattr(encoder, ADAPTER_ATTR, None) is not None:
            raise ValueError("earth_adapter: this encoder already has adapters attached")
        blocks = encoder.tower_blocks("image")
        self.blocks_ = probe_blocks(encoder, self.prefix_tokens)
        n = len(blocks)
        self.feature_layers_ = self._resolve_features(n)
        self.head = SegHead(
            [self.blocks_[i].channels for i in self.feature_layers_], self.n_classes,
            self.head_width,
        ).to(_device(encoder))  # fmt: skip
        self.adapter_layers_, self.fft_layers_ = self._resolve_layers(n)
        layers = nn.ModuleDict()
        for i in self.adapter_layers_:
            inputs = self.experts if i in self.fft_layers_ else ("spatial",)
            layers[str(i)] = AdapterLayer(
                self.blocks_[i].channels, inputs, self.bottleneck, self.ratio, self.scale,
                self.prefix_tokens if self.blocks_[i].sequence else 0,
            )  # fmt: skip
        if not layers:
            return
        setattr(encoder, ADAPTER_ATTR, mark_adapter(layers.to(_device(encoder))))
        for i in self.adapter_layers_:
            hook_target(blocks[i]).register_forward_hook(layers[str(i)].block_hook)

    def _resolve_features(self, n: int) -> tuple[int, ...]:
        if self.feature_layers is not None:
            _check_range(self.feature_layers, n, "feature_layers")
            return self.feature_layers
        last_of_grid: dict[tuple[int, int], int] = {}
        for i, info in enumerate(self.blocks_):
            last_of_grid[info.grid] = i
        coarsest = sorted(last_of_grid, key=lambda g: g[0] * g[1])[:3]
        return tuple(sorted(last_of_grid[g] for g in coarsest))

    def _resolve_layers(self, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not self.experts:
            return (), ()
        if self.adapter_layers is not None:
            _check_range(self.adapter_layers, n, "adapter_layers")
            adapted = self.adapter_layers
        else:
            adapted = tuple(i for i, b in enumerate(self.blocks_) if b.stride >= self.min_stride)
            if not adapted:
                strides = sorted({b.stride for b in self.blocks_})
                raise ValueError(
                    f"earth_adapter: no image block has a token stride ≥ min_stride="
                    f"{self.min_stride} (strides: {strides}); lower min_stride or pass "
                    "adapter_layers="
                )
        if isinstance(self.fft_layers, int):
            mixture = adapted[: self.fft_layers]
        else:
            missing = sorted(set(self.fft_layers) - set(adapted))
            if missing:
                raise ValueError(
                    f"earth_adapter: fft_layers {missing} are not adapter layers {list(adapted)}"
                )
            mixture = self.fft_layers
        if any(e != "spatial" for e in self.experts):
            for i in mixture:
                grid = self.blocks_[i].grid
                if low_pass_cutoff(grid, self.ratio) < 1:
                    raise ValueError(
                        f"earth_adapter: block {i}'s {grid[0]}×{grid[1]} token grid gives the "
                        f"frequency split no low band at ratio={self.ratio} (k = 0); use a "
                        f"ratio ≥ {2 / min(grid):.3g}, a higher input resolution, or fft_layers "
                        "on blocks with finer grids"
                    )
        return adapted, tuple(mixture)

    # -- use ----------------------------------------------------------------------------------
    def segmenter(self, encoder: nn.Module) -> Segmenter:
        """The encoder's adapted image tower + this method's head, as one module."""
        if self.head is None:
            raise ValueError("earth_adapter: call attach(encoder) before segmenter(encoder)")
        return Segmenter(encoder, self.head, self.feature_layers_, self.prefix_tokens)

    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        """Refused: Earth-Adapter's loss needs pixels and dense labels, not contrastive features."""
        raise ValueError(
            "earth_adapter is a segmentation method: its loss needs images and per-pixel labels, "
            "which the contrastive BatchOutputs do not carry. Train it with "
            "workbench.experiments.segtrain.train_segmenter (notebooks/earth_adapter.ipynb)"
        )


def _indices(value: Any, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(
            f"earth_adapter: {name} must be a sequence of block indices, got {value!r}"
        )
    out = tuple(value)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in out):
        raise ValueError(f"earth_adapter: {name} must hold block indices ≥ 0, got {value!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"earth_adapter: {name} has repeated indices: {value!r}")
    return tuple(sorted(out))


def _check_range(indices: Sequence[int], n: int, name: str) -> None:
    bad = [i for i in indices if i >= n]
    if bad:
        raise ValueError(f"earth_adapter: {name} {bad} out of range; the tower has {n} blocks")


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
