"""The tiny denoiser's training data (:mod:`~workbench.methods.dcr.tiny`): the recipe's mixture at
32 px with its caption embeddings, and (``condition="joint"``) every image's and caption's vector
in the default encoder's shared space. Both are cached on disk (decoding openclipart's PNGs and
the image tower's pass are most of the cost).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from workbench.methods.dcr.tiny import TinyDenoiserRecipe, in_holdout

__all__ = ["MixtureData", "joint_conditions", "mixture_key", "prepare_mixture"]


@dataclass
class MixtureData:
    """The recipe's data at ``image_size`` px, with caption embeddings.

    Attributes:
        images: (N, 3, s, s) uint8 images.
        caption_ids: Per item, indices into ``caption_emb`` of its captions.
        caption_emb: (U, D) float32 condition vectors of the U distinct captions (D = 384, the
            text tower, as prepared; 256 after :func:`joint_conditions`).
        captions: The U distinct captions.
        empty: (D,) the empty caption's condition vector.
        holdout: (N,) bool, held-out items.
        source: (N,) index into the recipe's mixture.
        image_emb: (N, D) condition vectors of the images themselves (``condition="joint"``),
            else ``None``.
        from_cache: Whether :func:`prepare_mixture` read everything from its on-disk caches.
    """

    images: torch.Tensor
    caption_ids: list[list[int]]
    caption_emb: torch.Tensor
    captions: list[str]
    empty: torch.Tensor
    holdout: torch.Tensor
    source: torch.Tensor
    counts: dict[str, int] = field(default_factory=dict)
    image_emb: torch.Tensor | None = None
    from_cache: bool = False


def mixture_key(recipe: TinyDenoiserRecipe, encoder) -> str:
    """16-hex digest of what the prepared data depends on: mixture, hold-out fraction, image
    size and the encoder's towers (their fingerprint covers preprocessing too)."""
    import hashlib
    import json

    from workbench.encoders.heads import tower_fingerprint

    d = {"mixture": recipe.to_dict()["mixture"], "holdout": recipe.holdout,
         "image_size": recipe.image_size, "towers": tower_fingerprint(encoder)}  # fmt: skip
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def prepare_mixture(
    recipe: TinyDenoiserRecipe, encoder=None, batch: int = 256, cache_dir=None
) -> MixtureData:
    """Load the recipe's datasets, preprocess as the encoder does (then resize to ``image_size``)
    and embed every distinct caption with the encoder's text tower (default: ``"default"``).

    The result is cached as ``<cache>/denoisers/mixture-<key>.safetensors`` (+ ``.json``; key
    :func:`mixture_key`): decoding openclipart's PNGs is most of the cost.
    """
    import json
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from workbench.encoders import load_encoder
    from workbench.encoders.cache import default_cache_dir

    enc = encoder if encoder is not None else load_encoder("default")
    enc.eval()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "denoisers" / f"mixture-{mixture_key(recipe, enc)}.safetensors"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        t, js = load_file(str(path)), json.loads(meta.read_text())
        data = MixtureData(t["images"], js["caption_ids"], t["caption_emb"], js["captions"],
                           t["empty"], t["holdout"], t["source"], js["counts"],
                           from_cache=True)  # fmt: skip
    else:
        data = _prepare(recipe, enc, batch)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"images": data.images, "caption_emb": data.caption_emb, "empty": data.empty,
                   "holdout": data.holdout, "source": data.source}  # fmt: skip
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        meta.write_text(json.dumps({"caption_ids": data.caption_ids, "captions": data.captions,
                                    "counts": data.counts}))  # fmt: skip
    if recipe.condition != "joint":
        return data
    from workbench.encoders.base import hash_state_dict

    heads = hash_state_dict(enc, include=("image_head", "text_head"))[:16]
    jpath = path.with_name(f"{path.stem}-joint-{heads}.safetensors")
    if jpath.is_file():
        t = load_file(str(jpath))
    else:
        t = joint_conditions(data, enc, batch)
        data.from_cache = False
        save_file({k: v.contiguous() for k, v in t.items()}, str(jpath))
    data.caption_emb, data.empty, data.image_emb = t["caption_emb"], t["empty"], t["image_emb"]
    return data


def joint_conditions(data: MixtureData, enc, batch: int = 256) -> dict[str, torch.Tensor]:
    """The ``condition="joint"`` vectors of a prepared (text-tower) mixture: captions and the
    empty caption through ``enc.text_head``, images through ``enc.image_tower`` (the stored
    32-px crops, bilinearly up-sampled to the encoder's resolution and normalised as its
    preprocessing does) and ``enc.image_head``; each L2-normalised and scaled to norm √D.

    Returns ``{"caption_emb": (U, D), "empty": (D,), "image_emb": (N, D)}``.
    """
    cfg = enc.preprocess_config
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    side = int(cfg["resolution"])
    with torch.no_grad():
        caps = _scaled(enc.text_head(data.caption_emb.float()))  # (U, D)
        empty = _scaled(enc.text_head(data.empty.float()[None]))[0]  # (D,)
        ims = []
        for i in range(0, len(data.images), batch):
            px = data.images[i : i + batch].float() / 255  # (b, 3, s, s) in [0, 1]
            px = F.interpolate(px, size=(side, side), mode="bilinear", align_corners=False)
            ims.append(_scaled(enc.image_head(enc.image_tower((px - mean) / std))))
    return {"caption_emb": caps, "empty": empty, "image_emb": torch.cat(ims)}


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """(n, D) rows L2-normalised and scaled to norm √D (unit RMS per dimension)."""
    return F.normalize(x.float(), dim=-1) * math.sqrt(x.shape[-1])


def _prepare(recipe: TinyDenoiserRecipe, enc, batch: int) -> MixtureData:
    from workbench.data import load_dataset

    mean = torch.tensor(enc.preprocess_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(enc.preprocess_config["std"]).view(1, 3, 1, 1)
    images, caption_ids, holdout, source = [], [], [], []
    index: dict[str, int] = {}
    counts: dict[str, int] = {}
    skipped: list[str] = []
    for si, (name, split, size) in enumerate(recipe.mixture):
        kw: dict[str, Any] = {"split": split}
        if size is not None:
            kw["size"] = size
        ds = load_dataset(name, **kw)
        counts[f"{name}/{split}"] = len(ds)
        for start in range(0, len(ds), batch):
            items = _load_items(ds, range(start, min(start + batch, len(ds))), skipped)
            if not items:
                continue
            with torch.no_grad():
                px = enc.preprocess([it.image for it in items]) * std + mean  # (b, 3, H, W) [0,1]
                px = F.interpolate(
                    px, size=(recipe.image_size,) * 2, mode="bilinear", antialias=True
                )
            images.append((px.clamp(0, 1) * 255).round().to(torch.uint8))
            for it in items:
                caption_ids.append([index.setdefault(c, len(index)) for c in it.captions])
                holdout.append(in_holdout(name, it.id, recipe.holdout))
                source.append(si)
    if skipped:
        counts["skipped"] = len(skipped)
    captions = list(index)
    with torch.no_grad():
        embs = [
            enc.text_tower(enc.tokenize(captions[i : i + batch])).float()
            for i in range(0, len(captions), batch)
        ]
        empty = enc.text_tower(enc.tokenize([""])).float()[0]
    return MixtureData(
        torch.cat(images),
        caption_ids,
        torch.cat(embs),
        captions,
        empty,
        torch.tensor(holdout),
        torch.tensor(source),
        counts,
    )


def _load_items(ds, indices, skipped: list[str]) -> list:
    """Items at ``indices``; images PIL refuses as decompression bombs (three openclipart PNGs
    of up to 21k × 30k px) are skipped with a warning naming them."""
    from PIL import Image

    out = []
    for i in indices:
        try:
            out.append(ds[i])
        except Image.DecompressionBombError as err:
            skipped.append(f"{ds.name}[{i}]")
            warnings.warn(f"tiny denoiser data: skipping {ds.name}[{i}]: {err}", stacklevel=2)
    return out
