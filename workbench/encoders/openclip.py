"""``"open_clip:<arch>[:<tag or file>]"``: any open_clip architecture behind the :class:`Encoder` API.

Towers and heads: the tower is open_clip's visual/text module *up to* the final linear
projection, and the head is that projection, moved out as an ``nn.Linear`` (bias-free where the
original was a bare matrix):

========================================  =============================  ======================
open_clip module                          projection moved to the head   tower output
========================================  =============================  ======================
``VisionTransformer`` (ViT archs)         ``visual.proj``                pooled, after ``ln_post``
``TimmModel`` (timm trunks)               ``visual.head``                trunk's pooled features
``ModifiedResNet`` (RN50...)              none: attention-pool output    already projected;
                                          is already in the shared       ``image_head`` is the
                                          space                          identity
``CLIP`` text transformer                 ``text_projection``            EOS/argmax pooled, after
                                                                         ``ln_final``
``CustomTextCLIP`` + ``TextTransformer``  ``text.text_projection``       as above
``CustomTextCLIP`` + ``HFTextEncoder``    ``text.proj``                  HF pooled output
========================================  =============================  ======================

Nothing is downloaded. A pretrained tag is served only from files already in ``cache_dir``
(open_clip's own cache layout: the Hugging Face hub cache for ``hf_hub`` entries, ``<cache_dir>``
or ``~/.cache/clip`` for URL entries); otherwise a :class:`FileNotFoundError` names the missing
file and how to pass a local checkpoint instead. Checkpoints are read with
``torch.load(weights_only=True)`` or safetensors, never by unpickling arbitrary objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from .base import Encoder, TowerTokens

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

# (owner attribute path, projection attribute, what replaces it in the tower); first match wins
# per modality. ``None`` where open_clip's forward skips a missing projection, Identity where it
# calls it unconditionally.
_IMAGE_PROJECTIONS: tuple[tuple[str, str, bool], ...] = (
    ("visual", "proj", False),
    ("visual", "head", True),
)
_TEXT_PROJECTIONS: tuple[tuple[str, str, bool], ...] = (
    ("", "text_projection", False),
    ("text", "text_projection", False),
    ("text", "proj", True),
)


# Where each open_clip family keeps its tower blocks (attribute paths, first match wins), as
# data: ViT and text transformers, timm trunks, ModifiedResNet stages, HF text encoders.
_BLOCK_PATHS: dict[str, tuple[str, ...]] = {
    "image": (
        "visual.transformer.resblocks",  # VisionTransformer
        "visual.trunk.blocks",  # TimmModel (ViT-like trunks)
        "visual.trunk.stages",  # TimmModel (ConvNeXt-like trunks)
    ),
    "text": (
        "transformer.resblocks",  # CLIP's built-in text transformer
        "text.transformer.resblocks",  # CustomTextCLIP + TextTransformer
        "text.transformer.encoder.layer",  # CustomTextCLIP + HFTextEncoder (BERT-like)
    ),
}
_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4", "attnpool")


def cached_pretrained_file(arch: str, tag: str, cache_dir: str | Path | None = None) -> Path | None:
    """Where open_clip would find ``arch``/``tag`` weights offline, or ``None`` if not cached.

    Mirrors ``open_clip.pretrained.download_pretrained``'s lookup (safetensors preferred) without
    opening a connection.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return Path(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(hub)
        names = [filename] if filename else list(_HF_WEIGHTS)
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            hit = try_to_load_from_cache(
                model_id, name, cache_dir=str(cache_dir) if cache_dir else None
            )
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    url = cfg.get("url", "")
    if url:
        root = Path(cache_dir) if cache_dir else Path("~/.cache/clip").expanduser()
        candidate = root / os.path.basename(url)
        if candidate.is_file():
            return candidate
    return None


def _describe_missing(arch: str, tag: str, cache_dir: str | Path | None) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    source = cfg.get("hf_hub") or cfg.get("url") or "?"
    where = (
        str(cache_dir) if cache_dir else "the default caches (~/.cache/huggingface, ~/.cache/clip)"
    )
    return (
        f"open_clip weights for {arch!r} tag {tag!r} (source {source}) are not in {where}, and "
        "workbench never downloads. Either copy the checkpoint to this machine and pass its path, "
        f"load_encoder('open_clip:{arch}:/path/to/open_clip_model.safetensors'), or pass "
        "cache_dir= pointing at an open_clip/Hugging Face cache that already holds it."
    )


def _check_hf_files(name: str, cache_dir: str | Path | None, what: str) -> None:
    """Fail fast when an arch needs a Hugging Face tokenizer/text model that is not cached."""
    if Path(name).is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(
        name, "config.json", cache_dir=str(cache_dir) if cache_dir else None
    )
    if not (isinstance(hit, str) and Path(hit).is_file()):
        hit = try_to_load_from_cache(
            name, "tokenizer_config.json", cache_dir=str(cache_dir) if cache_dir else None
        )
    if not (isinstance(hit, str) and Path(hit).is_file()):
        raise FileNotFoundError(
            f"this open_clip architecture needs the Hugging Face {what} {name!r}, which is not in "
            "the local cache, and workbench never downloads. Pre-populate the cache "
            "(HF_HOME / cache_dir=) on a machine with network access."
        )


class MatrixProjection(nn.Module):
    """``x @ weight`` with ``weight`` (D_in, D_out): open_clip's bare projection matrix as a module.

    Kept as a matrix (not an ``nn.Linear`` with the transpose) so outputs match open_clip bit for
    bit and the tensor round-trips to open_clip checkpoints unchanged.
    """

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D_in) → (B, D_out)."""
        return x @ self.weight


def _split_projection(model: nn.Module, table: tuple[tuple[str, str, bool], ...]) -> nn.Module:
    """Detach the final projection named in ``table`` from ``model`` and return it as a module."""
    for owner_path, attr, needs_identity in table:
        owner = model.get_submodule(owner_path) if owner_path else model
        proj = getattr(owner, attr, None) if owner is not None else None
        if proj is None:
            continue
        if isinstance(proj, nn.Parameter):
            head = MatrixProjection(proj)
        else:
            head = proj
        setattr(owner, attr, nn.Identity() if needs_identity else None)
        return head
    return nn.Identity()


class OpenClipEncoder(Encoder):
    """An open_clip model split into towers (pre-projection) and heads (the projections).

    Towers are frozen (``requires_grad=False``); heads and ``logit_scale`` are trainable.

    Attributes:
        model: the open_clip ``CLIP``/``CustomTextCLIP`` with its projections removed.
        image_head: (B, D_img) → (B, embed_dim), open_clip's image projection.
        text_head: (B, D_txt) → (B, embed_dim), open_clip's text projection.
    """

    def __init__(
        self, model: nn.Module, transform: Any, tokenizer: Any, name: str, embed_dim: int
    ) -> None:
        super().__init__()
        self.name = name
        self.embed_dim = embed_dim
        self.model = model
        self.image_head = _split_projection(model, _IMAGE_PROJECTIONS)
        self.text_head = _split_projection(model, _TEXT_PROJECTIONS)
        model.requires_grad_(False)  # towers frozen, heads trainable, as for every encoder
        self._transform = transform
        self._tokenizer = tokenizer
        with torch.no_grad():
            self.logit_scale.copy_(model.logit_scale.detach().reshape(()))
        self.train(False)

    @property
    def preprocess_config(self) -> dict[str, Any]:
        cfg = dict(getattr(self.model.visual, "preprocess_cfg", {}))
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
        cfg["context_length"] = int(getattr(self._tokenizer, "context_length", 0) or 0)
        cfg["tokenizer"] = type(self._tokenizer).__name__
        return cfg

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → (B, 3, H, W) pixels via open_clip's validation transform."""
        return torch.stack([self._transform(im.convert("RGB")) for im in images])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings → ``{"input_ids": (B, context_length)}`` with open_clip's tokenizer."""
        return {"input_ids": self._tokenizer(list(texts))}

    def image_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, D_img) pooled visual features before the projection."""
        return self.model.encode_image(pixels)

    def text_tower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens → (B, D_txt) pooled text features before the projection."""
        return self.model.encode_text(tokens["input_ids"])

    def tower_blocks(self, side: str) -> list[nn.Module]:
        """Transformer blocks (ViT / text transformer), timm trunk blocks, or ResNet stages."""
        if side not in _BLOCK_PATHS:
            raise ValueError(f"side must be 'image' or 'text', got {side!r}")
        for path in _BLOCK_PATHS[side]:
            try:
                found = self.model.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(found, (nn.ModuleList, nn.Sequential)):
                return list(found)
        if side == "image" and all(hasattr(self.model.visual, a) for a in _RESNET_STAGES[:4]):
            return [
                getattr(self.model.visual, a)
                for a in _RESNET_STAGES
                if hasattr(self.model.visual, a)
            ]
        raise ValueError(f"cannot find the {side} tower's blocks of {self.name}")

    def _image_tokens(self, pixels: torch.Tensor, layer: int) -> TowerTokens:
        """ViT patch tokens after block ``layer`` (``ln_post`` applied after the last block)."""
        visual = self.model.visual
        if not hasattr(visual, "forward_intermediates") or not hasattr(visual, "patch_size"):
            raise NotImplementedError(
                f"{self.name}: image tokens are implemented for open_clip VisionTransformer towers"
            )
        last = layer == len(self.tower_blocks("image")) - 1
        out = visual.forward_intermediates(
            pixels,
            indices=[layer],
            normalize_intermediates=last,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        tokens = out["image_intermediates"][0]  # (B, H·W, C)
        cls = out["image_intermediates_prefix"][0][:, 0]  # (B, C)
        grid = (pixels.shape[-2] // visual.patch_size[0], pixels.shape[-1] // visual.patch_size[1])
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TowerTokens(tokens, mask, grid=grid, cls=cls, layer=layer)

    def _text_tokens(self, tokens: dict[str, torch.Tensor], layer: int) -> TowerTokens:
        """Text-transformer token states after block ``layer`` (``ln_final`` after the last),
        masked to the positions up to and including the end-of-text token."""
        ids = tokens["input_ids"]
        last = layer == len(self.tower_blocks("text")) - 1
        text = getattr(self.model, "text", None)
        if text is not None and hasattr(text, "forward_intermediates"):
            out = text.forward_intermediates(
                ids, indices=[layer], normalize_intermediates=last, intermediates_only=True
            )
        elif hasattr(self.model, "forward_intermediates") and text is None:
            out = self.model.forward_intermediates(
                text=ids,
                text_indices=[layer],
                normalize_intermediates=last,
                intermediates_only=True,
            )
        else:
            raise NotImplementedError(
                f"{self.name}: text tokens need an open_clip text transformer"
            )
        hidden = out["text_intermediates"][0]  # (B, L, C)
        pos = torch.arange(ids.shape[1], device=ids.device)
        eos_id = getattr(self.model, "text_eos_id", None)
        if eos_id is not None and (ids == eos_id).any(dim=1).all():
            end = (ids == eos_id).int().argmax(dim=1)
        else:  # CLIP's tokenizer: the end-of-text token has the largest id (what argmax pooling uses)
            end = ids.argmax(dim=1)
        return TowerTokens(hidden, pos[None, :] <= end[:, None], layer=layer)


def build_open_clip(
    spec: str | None,
    *,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> OpenClipEncoder:
    """Registry factory for ``"open_clip:<arch>"``, ``":<arch>:<tag>"`` and ``":<arch>:<file>"``.

    Args:
        spec: ``"<arch>"`` (seeded random init), ``"<arch>:<pretrained tag>"`` (weights must
            already be cached) or ``"<arch>:<checkpoint path>"`` (``.safetensors``, or a
            state-dict ``.pt``/``.bin`` read with ``weights_only=True``).
        cache_dir: open_clip/Hugging Face cache to look for tagged weights in.
        seed: Seeds random initialisation (random-init arch, or parts a checkpoint lacks).
        **kwargs: Passed to ``open_clip.create_model_and_transforms`` (e.g. ``force_image_size``).

    Raises:
        ValueError: Missing arch, unknown arch or unknown tag.
        FileNotFoundError: Weights (or an HF tokenizer) not available offline, or a checkpoint
            path that does not exist.
    """
    import open_clip

    if not spec:
        raise ValueError("'open_clip:' needs an architecture, e.g. 'open_clip:ViT-B-32'")
    arch, _, source = spec.partition(":")
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ValueError(
            f"unknown open_clip architecture {arch!r}; see open_clip.list_models() or register a "
            "config with open_clip.add_model_config(path)"
        )
    create: dict[str, Any] = {"pretrained_image": False, "pretrained_text": False}
    name = f"open_clip:{arch}"
    if source:
        path = Path(source).expanduser()
        looks_like_file = path.suffix in _CHECKPOINT_SUFFIXES or os.sep in source
        if path.is_file() or looks_like_file:
            if not path.is_file():
                raise FileNotFoundError(f"open_clip checkpoint {str(path)!r} does not exist")
            create["pretrained"] = str(path.resolve())
            name = f"open_clip:{arch}:{path.resolve()}"
        else:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if source not in tags:
                raise ValueError(
                    f"{source!r} is neither a checkpoint file nor a pretrained tag of {arch!r} "
                    f"(known tags: {', '.join(tags) or 'none'})"
                )
            file = cached_pretrained_file(arch, source, cache_dir)
            if file is None:
                raise FileNotFoundError(_describe_missing(arch, source, cache_dir))
            tag_cfg = open_clip.get_pretrained_cfg(arch, source)
            create["pretrained"] = str(file)
            create["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
            for key, arg in (
                ("mean", "image_mean"),
                ("std", "image_std"),
                ("interpolation", "image_interpolation"),
                ("resize_mode", "image_resize_mode"),
            ):
                if key in tag_cfg:
                    create[arg] = tag_cfg[key]
            name = f"open_clip:{arch}:{source}"
    text_cfg = config.get("text_cfg", {})
    for key, what in (("hf_tokenizer_name", "tokenizer"), ("hf_model_name", "text model")):
        if text_cfg.get(key):
            _check_hf_files(text_cfg[key], cache_dir, what)
    create.update(kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, transform = open_clip.create_model_and_transforms(
            arch,
            cache_dir=str(cache_dir) if cache_dir else None,
            weights_only=True,
            **create,
        )
    tokenizer = open_clip.get_tokenizer(arch, cache_dir=str(cache_dir) if cache_dir else None)
    return OpenClipEncoder(model, transform, tokenizer, name, int(config["embed_dim"]))


__all__ = ["MatrixProjection", "OpenClipEncoder", "build_open_clip", "cached_pretrained_file"]
