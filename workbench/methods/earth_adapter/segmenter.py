"""Segmentation on a (possibly adapted) tower: block outputs → a light head → per-pixel logits,
and the two losses the segmentation study trains with.

Frozen prefix. Blocks before the first adapter are frozen and deterministic (eval mode), so
their outputs depend on the image alone; :meth:`Segmenter.prefix` computes them once and
:meth:`Segmenter.forward` with ``cached=`` runs only the blocks from ``start`` on. That holds for
towers whose blocks compose one after the other (each block's input is the previous block's
output: EfficientNet, open_clip's ViT); :meth:`Segmenter.check_prefix` verifies it on a batch.

The head is SegFormer's all-MLP decoder at small width (Xie et al. 2021) [secondary]: each
chosen block's map goes through a 1 × 1 projection to ``width`` channels, is upsampled to the
finest of the maps, the maps are concatenated and fused (1 × 1 conv, BatchNorm, ReLU), and a
1 × 1 classifier gives class logits, bilinearly upsampled to the input's pixels. The official
Earth-Adapter uses Mask2Former on DINOv2-L; a light head is what a CPU budget allows, and every
row of the study shares it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.methods.earth_adapter.layers import to_tokens

__all__ = [
    "SegHead",
    "Segmenter",
    "capture_outputs",
    "class_balance_weights",
    "dice_loss",
    "hook_target",
    "output_map",
    "segmentation_loss",
    "self_training_loss",
]


def hook_target(block: nn.Module) -> nn.Module:
    """The module whose output is ``block``'s output: ``block`` itself, or the last member of a
    block given as an ``nn.ModuleList`` run in sequence (the default encoder's last image block
    groups its final inverted-residual block with ``conv_head`` and ``bn2``)."""
    return block[-1] if isinstance(block, nn.ModuleList) else block


@contextlib.contextmanager
def capture_outputs(modules: Sequence[nn.Module], *, before_hooks: bool = False) -> Iterator[list]:
    """Collect each module's forward output while the block runs: ``outs[i]`` is the last output
    of ``modules[i]`` (``None`` until it runs). ``before_hooks=True`` records the output before the
    module's other forward hooks (an adapter's) change it."""
    outs: list[Any] = [None] * len(modules)
    handles = []

    def keep(i: int):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            outs[i] = output

        return hook

    try:
        for i, m in enumerate(modules):
            handles.append(m.register_forward_hook(keep(i), prepend=before_hooks))
        yield outs
    finally:
        for h in handles:
            h.remove()


def output_map(output: Any, prefix_tokens: int) -> torch.Tensor:
    """A block output as a (B, C, H, W) map: feature maps as they are, token sequences without
    their ``prefix_tokens`` leading tokens reshaped onto their (square) grid."""
    if isinstance(output, tuple):
        output = output[0]
    if output.ndim == 4:
        return output
    tokens, (h, w), _ = to_tokens(output, prefix_tokens)
    return tokens.reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)  # (B, C, H, W)


class SegHead(nn.Module):
    """SegFormer-style all-MLP decoder (see the module docstring).

    Args:
        in_dims: Channels of each input map.
        n_classes: Output classes K.
        width: Channels of the projected and fused maps (64: light; SegFormer-B0 uses 256).
    """

    def __init__(self, in_dims: Sequence[int], n_classes: int, width: int = 64) -> None:
        super().__init__()
        self.in_dims, self.n_classes, self.width = tuple(in_dims), int(n_classes), int(width)
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1) for c in self.in_dims)
        self.fuse = nn.Sequential(
            nn.Conv2d(width * len(self.in_dims), width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.classify = nn.Conv2d(width, n_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, int]) -> torch.Tensor:
        """``len(in_dims)`` maps (B, C_i, H_i, W_i) → (B, K, *out_hw) logits."""
        if len(maps) != len(self.project):
            raise ValueError(f"SegHead expects {len(self.project)} maps, got {len(maps)}")
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        x = torch.cat(
            [
                F.interpolate(p(m), size=size, mode="bilinear", align_corners=False)
                for p, m in zip(self.project, maps)
            ],
            dim=1,
        )  # (B, width · n_maps, H_f, W_f)
        logits = self.classify(self.fuse(x))  # (B, K, H_f, W_f)
        return F.interpolate(logits, size=tuple(out_hw), mode="bilinear", align_corners=False)


class Segmenter(nn.Module):
    """An encoder's image tower (adapters included, as attached) + a :class:`SegHead`.

    Built by :meth:`EarthAdapter.segmenter <workbench.methods.earth_adapter.method.EarthAdapter.segmenter>`;
    not stored on the method (its ``state_dict`` would then hold the whole encoder).

    Args:
        encoder: The encoder; its ``tower_blocks("image")`` are read at each forward.
        head: The head (the method's).
        feature_layers: Indices into ``tower_blocks("image")`` whose outputs feed the head.
        prefix_tokens: Leading (CLS) tokens of token-sequence block outputs.
    """

    def __init__(
        self, encoder: nn.Module, head: SegHead, feature_layers: Sequence[int], prefix_tokens: int
    ) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.feature_layers, self.prefix_tokens = tuple(feature_layers), int(prefix_tokens)

    def features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The (B, C_i, H_i, W_i) maps of the feature layers for (B, 3, H, W) ``pixels``."""
        blocks = self.encoder.tower_blocks("image")
        targets = [hook_target(blocks[i]) for i in self.feature_layers]
        with capture_outputs(targets) as outs:
            self.encoder.image_tower(pixels)
        return [output_map(o, self.prefix_tokens) for o in outs]

    def prefix_layers(self, start: int) -> tuple[int, ...]:
        """Blocks whose outputs :meth:`prefix` keeps for a run from block ``start``: block
        ``start − 1`` (the input of ``start``) and the feature layers before ``start``."""
        keep = {f for f in self.feature_layers if f < start}
        if start > 0:
            keep.add(start - 1)
        return tuple(sorted(keep))

    @torch.no_grad()
    def prefix(self, pixels: torch.Tensor, start: int) -> dict[int, torch.Tensor]:
        """``{block: output}`` of :meth:`prefix_layers` for ``pixels`` (no gradient). Valid as
        long as no adapter sits before ``start``, which :meth:`forward` checks."""
        blocks = self.encoder.tower_blocks("image")
        if not 0 < start <= len(blocks):
            raise ValueError(f"Segmenter.prefix: start must be in [1, {len(blocks)}], got {start}")
        layers = self.prefix_layers(start)
        with capture_outputs([hook_target(blocks[i]) for i in layers]) as outs:
            self.encoder.image_tower(pixels)
        return {i: (o[0] if isinstance(o, tuple) else o) for i, o in zip(layers, outs)}

    def _run_from(self, cached: dict[int, torch.Tensor], start: int) -> list[torch.Tensor]:
        blocks = self.encoder.tower_blocks("image")
        adapted = getattr(self.encoder, "earth_adapter", None)
        if adapted is not None and min(int(k) for k in adapted) < start:
            raise ValueError(
                f"Segmenter: an adapter sits before block {start}; its input cannot be cached"
            )
        x, outs = cached[start - 1], dict(cached)
        for i in range(start, len(blocks)):
            block = blocks[i]
            members = list(block) if isinstance(block, nn.ModuleList) else [block]
            for member in members:
                x = member(x)
                if isinstance(x, tuple):
                    x = x[0]
            outs[i] = x
        return [output_map(outs[i], self.prefix_tokens) for i in self.feature_layers]

    def check_prefix(self, pixels: torch.Tensor, start: int, atol: float = 1e-4) -> None:
        """Raise ``ValueError`` unless running from :meth:`prefix` reproduces the full forward
        on ``pixels`` (the tower's blocks compose one after the other)."""
        with torch.no_grad():
            full = self.features(pixels)
            resumed = self._run_from(self.prefix(pixels, start), start)
        for i, (a, b) in enumerate(zip(full, resumed)):
            if a.shape != b.shape or not torch.allclose(a, b, atol=atol, rtol=1e-4):
                raise ValueError(
                    f"Segmenter: running the image blocks from block {start} does not reproduce "
                    f"feature layer {self.feature_layers[i]}; this tower's blocks do not compose "
                    "one after the other, so train without a cached prefix"
                )

    def forward(
        self,
        pixels: torch.Tensor | None = None,
        *,
        cached: dict[int, torch.Tensor] | None = None,
        start: int | None = None,
        out_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) pixels → (B, K, H, W) class logits; or, with ``cached`` (a
        :meth:`prefix` of block ``start``) and ``out_hw``, the same from the cached outputs."""
        if cached is None:
            if pixels is None:
                raise ValueError("Segmenter: pass pixels, or cached= with start= and out_hw=")
            return self.head(self.features(pixels), tuple(pixels.shape[-2:]))
        if start is None or out_hw is None:
            raise ValueError("Segmenter: cached= needs start= and out_hw=")
        return self.head(self._run_from(cached, start), tuple(out_hw))


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    *,
    class_weights: torch.Tensor | None = None,
    dice_weight: float = 0.0,
) -> torch.Tensor:
    """Per-pixel cross-entropy (optionally class-weighted) + ``dice_weight`` × soft Dice, in float32.

    ``class_weights=None, dice_weight=0`` (the defaults) is the plain cross-entropy, mean over
    labelled pixels, that mmseg's decode heads use. The other two terms are options for scenes
    where the background covers almost every pixel (synthetic-world: 97 %), so that plain CE
    first settles on "everything is background" [our reading]:

    * ``class_weights`` (K,): weighted cross-entropy, ``Σ w_{y_i} CE_i / Σ w_{y_i}`` (PyTorch's
      ``weight=``; :func:`class_balance_weights` gives ENet's weights);
    * ``dice_weight`` λ: adds λ · :func:`dice_loss` (CE + Dice, nnU-Net's default loss,
      Isensee et al. 2021) [secondary].

    Args:
        logits: (B, K, H, W) class logits.
        labels: (B, H, W) int64 class indices; ``ignore_index`` pixels are left out.
        ignore_index: Label of unlabelled pixels (255, mmseg's).
        class_weights: (K,) non-negative per-class weights of the cross-entropy, or ``None``.
        dice_weight: λ ≥ 0 of the soft-Dice term.
    """
    if logits.ndim != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"segmentation_loss: logits (B, K, H, W) and labels (B, H, W) must match, got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if class_weights is not None and tuple(class_weights.shape) != (logits.shape[1],):
        raise ValueError(
            f"segmentation_loss: class_weights must be ({logits.shape[1]},) for "
            f"{logits.shape[1]} classes, got {tuple(class_weights.shape)}"
        )
    if not dice_weight >= 0:
        raise ValueError(f"segmentation_loss: dice_weight must be ≥ 0, got {dice_weight!r}")
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    loss = F.cross_entropy(logits.float(), labels.long(), weight=weight, ignore_index=ignore_index)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, labels, ignore_index)
    return loss


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Soft multi-class Dice loss over the batch, in float32 (Milletari et al. 2016) [secondary].

    ``1 − mean_c (2 Σ_i p_ic y_ic + ε) / (Σ_i p_ic + Σ_i y_ic + ε)`` with p = softmax(logits) and
    y the one-hot labels, sums over every labelled pixel of the batch, the mean over the classes
    present in the batch's labels (a class absent from the batch would only reward predicting it
    nowhere) and ε = 1 [our reading].

    Args:
        logits: (B, K, H, W) class logits.
        labels: (B, H, W) int64 class indices; ``ignore_index`` pixels are left out.
        ignore_index: Label of unlabelled pixels.
    """
    k = logits.shape[1]
    prob = torch.softmax(logits.float(), dim=1)  # (B, K, H, W)
    valid = labels != ignore_index  # (B, H, W)
    onehot = F.one_hot(torch.where(valid, labels, 0).long(), k).permute(0, 3, 1, 2).float()
    mask = valid[:, None].float()  # (B, 1, H, W)
    inter = (prob * onehot * mask).sum(dim=(0, 2, 3))  # (K,)
    denom = (prob * mask).sum(dim=(0, 2, 3)) + (onehot * mask).sum(dim=(0, 2, 3))  # (K,)
    present = (onehot * mask).sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean()


def class_balance_weights(
    labels: Any, n_classes: int, c: float = 1.02, ignore_index: int = 255
) -> torch.Tensor:
    """ENet's class weights ``w_k = 1 / ln(c + p_k)`` from the label frequencies p_k (Paszke et
    al. 2016, c = 1.02) [secondary]: (K,) float32, bounded by 1 / ln(c) ≈ 50 for rare classes.

    Args:
        labels: Integer class indices of any shape (a training set's label maps).
        n_classes: K; classes that never occur get the bound.
        c: ENet's constant (> 1).
        ignore_index: Label of unlabelled pixels, not counted.

    >>> w = class_balance_weights(torch.tensor([0, 0, 0, 1]), 2)
    >>> bool(w[1] > w[0])
    True
    """
    if not c > 1:
        raise ValueError(f"class_balance_weights: c must be > 1, got {c!r}")
    flat = torch.as_tensor(labels).reshape(-1).long()
    flat = flat[flat != ignore_index]
    if flat.numel() == 0:
        raise ValueError("class_balance_weights: labels are empty")
    if int(flat.min()) < 0 or int(flat.max()) >= n_classes:
        raise ValueError(f"class_balance_weights: labels must be in [0, {n_classes}), got "
                         f"[{int(flat.min())}, {int(flat.max())}]")  # fmt: skip
    freq = torch.bincount(flat, minlength=n_classes).double() / flat.numel()
    return (1.0 / torch.log(c + freq)).float()


def self_training_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the student against the teacher's confident pseudo-labels, in float32.

    Pseudo-label = the teacher's arg-max class; pixels where its probability is below
    ``threshold`` are dropped, and the loss is averaged over **all** pixels, so a teacher that
    is confident on a fraction q of them weighs the loss by q — DACS's quality weight
    (Tranheden et al. 2021) [our reading; DACS's ClassMix mixing is left out].

    Args:
        student_logits: (B, K, H, W) logits with gradient (target-domain images).
        teacher_logits: (B, K, H, W) logits of the teacher (no gradient needed).
        threshold: Confidence in (0, 1) a pseudo-label needs (DACS: 0.968) [code: DACS].

    Returns:
        ``(loss, confident_fraction)``, both scalar tensors.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 4:
        raise ValueError(
            "self_training_loss: student and teacher logits must both be (B, K, H, W), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"self_training_loss: threshold must be in (0, 1), got {threshold!r}")
    with torch.no_grad():
        confidence, pseudo = torch.softmax(teacher_logits.detach().float(), dim=1).max(dim=1)
        keep = (confidence >= threshold).float()  # (B, H, W)
    ce = F.cross_entropy(student_logits.float(), pseudo, reduction="none")  # (B, H, W)
    return (ce * keep).sum() / keep.numel(), keep.mean()
