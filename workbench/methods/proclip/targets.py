"""ProCLIP's per-caption distillation targets: the frozen CLIP text embeddings (and the long
captions' embedder features) computed once, as the official code precomputes its text features,
and looked up by caption during training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["DistillTargets", "write_distill_targets"]


def write_distill_targets(
    path: str | Path,
    captions: Sequence[str],
    teacher: torch.Tensor,
    long_input: torch.Tensor | None = None,
    teacher_long: torch.Tensor | None = None,
) -> Path:
    """Write the per-caption targets ProCLIP looks up (``ProCLIP(targets=path)``).

    Args:
        path: ``.safetensors`` file to write (parents created).
        captions: n distinct short captions (the training rows' ``BatchOutputs.captions``).
        teacher: (n, D) frozen CLIP text embeddings of ``captions`` (normalised here).
        long_input: (n, D_txt) embedder (text-tower) features of each caption's long caption,
            or ``None``; rows of NaN mark captions without one.
        teacher_long: (n, D) CLIP embeddings of the long captions (truncated as CLIP does).

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    owner = "write_distill_targets"
    caps = list(captions)
    if isinstance(captions, str) or not caps:
        raise ValueError(f"{owner}: captions must be a non-empty sequence of strings")
    if len(set(caps)) != len(caps):
        raise ValueError(f"{owner}: captions must be distinct (one target row per caption)")
    if teacher.ndim != 2 or teacher.shape[0] != len(caps):
        raise ValueError(f"{owner}: teacher must be (n={len(caps)}, D), got {tuple(teacher.shape)}")
    if (long_input is None) != (teacher_long is None):
        raise ValueError(f"{owner}: pass both long_input and teacher_long, or neither")
    tensors = {"teacher": F.normalize(teacher.detach().float().cpu(), dim=-1).contiguous()}
    if long_input is not None:
        has = torch.isfinite(long_input).all(-1) & torch.isfinite(teacher_long).all(-1)  # (n,)
        if long_input.shape[0] != len(caps) or teacher_long.shape != teacher.shape:
            raise ValueError(f"{owner}: long_input/teacher_long need one row per caption")
        tensors["long_input"] = torch.where(has[:, None], long_input, 0).float().cpu().contiguous()
        tensors["teacher_long"] = (
            F.normalize(torch.where(has[:, None], teacher_long, 0).float(), dim=-1)
            .cpu()
            .contiguous()
        )
        tensors["has_long"] = has.cpu().to(torch.uint8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"captions": json.dumps(caps)})
    return out


class DistillTargets:
    """Loaded :func:`write_distill_targets` file: per-caption rows on a device.

    Attributes:
        teacher: (n, D) normalised CLIP text embeddings of the short captions.
        long_input: (n, D_txt) embedder features of the long captions, or ``None``.
        teacher_long: (n, D) normalised CLIP embeddings of the long captions, or ``None``.
        has_long: (n,) bool, rows that have a long caption (``None`` without long captions).
    """

    def __init__(self, path: str | Path) -> None:

        from safetensors import safe_open

        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(
                f"proclip: targets file {p} does not exist; write it with "
                "workbench.methods.proclip.write_distill_targets (the study does)"
            )
        with safe_open(str(p), framework="pt") as f:
            self.captions = json.loads(f.metadata()["captions"])
            t = {k: f.get_tensor(k) for k in f.keys()}
        self.index = {c: i for i, c in enumerate(self.captions)}
        self.teacher = t["teacher"]
        self.long_input = t.get("long_input")
        self.teacher_long = t.get("teacher_long")
        self.has_long = t["has_long"].bool() if "has_long" in t else None
        self.path = p

    def rows(self, captions: Sequence[str], device: torch.device) -> torch.Tensor:
        """(b,) int64 target rows of ``captions`` (every caption must be in the file)."""
        try:
            idx = [self.index[c] for c in captions]
        except KeyError as err:
            raise ValueError(
                f"proclip: caption {err.args[0]!r} has no row in {self.path}; write the targets "
                "for the training set's captions"
            ) from None
        return torch.tensor(idx, dtype=torch.long, device=device)

    def to(self, device: torch.device) -> DistillTargets:
        for name in ("teacher", "long_input", "teacher_long", "has_long"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.to(device))
        return self
