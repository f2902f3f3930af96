"""Frozen diffusion denoisers for DCR, one interface over diffusers models.

A :class:`Denoiser` plays Stable Diffusion's part in DCR (spec §1.3, §8): it maps images to its
diffusion space (``encode``), noises them with the shared DDPM schedule (``add_noise``), and
predicts the noise of a noisy input under a condition (``predict(x_t, t, cond)``). Variants are
registry entries (:data:`DENOISERS`), looked up by :func:`load_denoiser`:

=================================  ==============================================================
name                               what
=================================  ==============================================================
``"tiny"``                         the workbench's own text-conditioned pixel-space DDPM at 32 px
                                   (:mod:`~workbench.methods.dcr.tiny`), pretrained once and
                                   shipped with a card; the offline default
``"diffusers:<local dir>"``        a Stable-Diffusion-layout directory: ``unet/``, ``vae/``,
                                   ``text_encoder/`` + ``tokenizer/`` (for the empty-prompt
                                   embedding only), optional ``scheduler/``; latent space, bf16 on
                                   GPU. Nothing is downloaded.
=================================  ==============================================================

Conditioning convention (both variants, as DCR's code does for SD): a condition is a
``(N, T, D)`` token sequence; DCR's projector output ``h_ω(z)`` (N, D) is broadcast over the T
tokens and **added** to the denoiser's empty-prompt embedding (:attr:`Denoiser.empty`, (T, D)).

The footgun: a denoiser is an *auxiliary frozen model*, not a trainable part. Its parameters never
require grad, it runs in eval mode, and a method keeps it outside its ``state_dict`` so that
checkpoints do not carry gigabytes of frozen UNet (see ``DCR._denoiser``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench._registry import Registry

#: DCR's DDPM scheduler [code: ``train_*_stage2.py``]: 1000 steps, SD's scaled-linear β.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


def ddpm_scheduler(**overrides: Any):
    """A ``diffusers.DDPMScheduler`` with DCR's configuration (:data:`SCHEDULER_CONFIG`)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**{**SCHEDULER_CONFIG, **overrides})


class Denoiser(nn.Module):
    """A frozen conditional noise predictor ε_θ(x_t, t, c) and the space it works in.

    Subclasses set :attr:`space` and implement :meth:`encode` and :meth:`_predict`.

    Attributes:
        space: ``"pixel"`` or ``"latent"``.
        scheduler: The ``DDPMScheduler`` the model was trained with (``add_noise``,
            ``get_velocity``).
        empty: (T, D) float32 buffer, the embedding of the empty prompt (SD's ``uc_emb``).
        name: The registry name it was loaded as.
    """

    space: str = "pixel"

    def __init__(self, scheduler: Any, empty: torch.Tensor, name: str) -> None:
        super().__init__()
        if empty.ndim != 2:
            raise ValueError(f"empty-prompt embedding must be (T, D), got {tuple(empty.shape)}")
        self.scheduler = scheduler
        self.register_buffer("empty", empty.detach().float().clone(), persistent=False)
        self.name = name

    @property
    def cond_tokens(self) -> int:
        """T, the length of a condition sequence."""
        return int(self.empty.shape[0])

    @property
    def cond_dim(self) -> int:
        """D, the width of a condition token (DCR's projector output width)."""
        return int(self.empty.shape[1])

    @property
    def num_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def freeze(self) -> Denoiser:
        """Eval mode and ``requires_grad=False`` everywhere; returns ``self``."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> Denoiser:
        # Frozen auxiliary model: never leaves eval mode (no dropout, fixed norms).
        return super().train(False)

    # -- the diffusion space ----------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] → (B, C, h, w) clean diffusion inputs x₀."""
        raise NotImplementedError

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, all (B, C, h, w); ``t`` (B,) int64."""
        return self.scheduler.add_noise(x0, noise, t)

    def target(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, kind: str = "eps"
    ) -> torch.Tensor:
        """The ground-truth positive: ``"eps"`` → ε (the paper), ``"v"`` → the v-target
        √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (DCR's code, spec §8)."""
        if kind == "eps":
            return noise
        if kind == "v":
            return self.scheduler.get_velocity(x0, noise, t)
        raise ValueError(f"gt_target must be 'eps' or 'v', got {kind!r}")

    # -- conditions and predictions ---------------------------------------------------------
    def condition(self, vectors: torch.Tensor) -> torch.Tensor:
        """(N, D) condition vectors → (N, T, D): broadcast over the T tokens and added to the
        empty-prompt embedding (DCR's code: ``h_ω(z).unsqueeze(1).expand(-1, 77, -1) + uc_emb``)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.cond_dim:
            raise ValueError(
                f"condition vectors must be (N, {self.cond_dim}), got {tuple(vectors.shape)}"
            )
        empty = self.empty.to(device=vectors.device, dtype=vectors.dtype)
        return vectors[:, None, :] + empty[None]  # (N, T, D)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε_θ(x_t, t, cond): (N, C, h, w) noisy inputs, (N,) int64 timesteps, (N, T, D)
        conditions → (N, C, h, w) predictions (in the model's dtype; upcast for losses)."""
        if x_t.ndim != 4 or t.shape != (x_t.shape[0],) or cond.ndim != 3:
            raise ValueError(
                "predict expects x_t (N, C, h, w), t (N,), cond (N, T, D); got "
                f"{tuple(x_t.shape)}, {tuple(t.shape)}, {tuple(cond.shape)}"
            )
        if cond.shape[0] != x_t.shape[0] or cond.shape[2] != self.cond_dim:
            raise ValueError(
                f"cond must be ({x_t.shape[0]}, T, {self.cond_dim}), got {tuple(cond.shape)}"
            )
        return self._predict(x_t, t, cond)

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class UNetDenoiser(Denoiser):
    """A ``diffusers.UNet2DConditionModel`` in pixel space, optionally on a space-to-depth grid.

    ``patch`` > 1 runs the UNet on ``pixel_unshuffle(x, patch)`` (a lossless (3, H, W) →
    (3p², H/p, W/p) reshape, as patchified diffusion models do) and reshapes the prediction
    back, so noise, targets and predictions all live in plain (3, H, W) pixel space. A UNet
    built with a class-embedding path (``class_embed_type``) also receives the mean of the
    condition tokens there (the tiny denoiser's convention; SD has none).

    ``output="v"``: the UNet's output is read as v̂ and turned into the ε̂ that :meth:`predict`
    returns, ε̂ = √ᾱ_t·v̂ + √(1−ᾱ_t)·x_t (the identity ε = √ᾱ·v + √(1−ᾱ)·x_t for
    v = √ᾱ·ε − √(1−ᾱ)·x₀); ``"eps"``: the output is ε̂ itself.
    """

    space = "pixel"

    def __init__(
        self,
        unet: nn.Module,
        scheduler: Any,
        empty: torch.Tensor,
        *,
        image_size: int,
        patch: int = 1,
        output: str = "eps",
        name: str = "unet",
    ) -> None:
        super().__init__(scheduler, empty, name)
        if output not in ("eps", "v"):
            raise ValueError(f"UNetDenoiser: output must be 'eps' or 'v', got {output!r}")
        self.unet = unet
        self.image_size = int(image_size)
        self.patch = int(patch)
        self.output = output
        self.freeze()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 3, s, s) in [−1, 1] (bilinear, antialiased resize)."""
        s = self.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True)
        return images.clamp(0, 1) * 2 - 1

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        x = F.pixel_unshuffle(x_t, self.patch) if self.patch > 1 else x_t  # (N, 3p², s/p, s/p)
        cond = cond.to(dtype)
        # a UNet with a class-embedding path also gets the condition's token mean (N, D) there
        extra = {"class_labels": cond.mean(1)} if self.unet.config.class_embed_type else {}
        out = self.unet(x.to(dtype), t, encoder_hidden_states=cond, **extra).sample
        out = F.pixel_shuffle(out, self.patch) if self.patch > 1 else out  # (N, 3, s, s)
        if self.output == "eps":
            return out
        abar = self.scheduler.alphas_cumprod.to(x_t.device)[t.long()].float()  # (N,)
        a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
        return (a * out.float() + s * x_t.float()).to(out.dtype)  # ε̂ from v̂


class LatentDenoiser(Denoiser):
    """Stable Diffusion's parts: UNet + VAE (latent space) + DDPM scheduler.

    ``encode`` samples the VAE posterior and scales by ``vae.config.scaling_factor`` as DCR's
    code does (``latent_dist.sample() * scaling_factor``) at ``image_size`` px (224 in the code:
    28×28 latents).
    """

    space = "latent"

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        scheduler: Any,
        empty: torch.Tensor,
        *,
        image_size: int = 224,
        name: str = "diffusers",
    ) -> None:
        super().__init__(scheduler, empty, name)
        self.unet = unet
        self.vae = vae
        self.image_size = int(image_size)
        self.freeze()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True)
        dtype = next(self.vae.parameters()).dtype
        with torch.no_grad():
            dist = self.vae.encode((images.clamp(0, 1) * 2 - 1).to(dtype)).latent_dist
            return dist.sample() * self.vae.config.scaling_factor  # (B, 4, s/8, s/8)

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        return self.unet(x_t.to(dtype), t, encoder_hidden_states=cond.to(dtype)).sample


#: Name → factory ``(spec, *, device, dtype, **kwargs) -> Denoiser``; use :func:`load_denoiser`.
DENOISERS: Registry[Any] = Registry("denoiser")


def load_denoiser(
    name: str = "tiny",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> Denoiser:
    """A frozen denoiser by registry name (see the module docstring for the names).

    Args:
        name: ``"tiny"`` or ``"diffusers:<local dir>"``.
        device: Where its weights go.
        dtype: Weight dtype; default bf16 on CUDA (DCR's code), float32 on CPU.
        **kwargs: Passed to the variant's factory (``"tiny"``: ``recipe=``, ``cache_dir=``;
            ``"diffusers"``: ``image_size=``).

    Raises:
        KeyError: unknown name (with suggestions).
        FileNotFoundError: a ``diffusers:`` directory lacks files (all missing ones named).
    """
    _, factory, spec = DENOISERS.resolve(name)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    den = factory(spec, **kwargs)
    den.to(device=device, dtype=dtype)
    den.empty = den.empty.float()
    den.name = name
    return den.freeze()


# -- "diffusers:<dir>" ----------------------------------------------------------------------
#: Sub-directory → (files of which one must exist, what it is).
_REQUIRED = {
    "unet": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ),
    "vae": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ),
    "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    "tokenizer": (("vocab.json",), ("merges.txt",)),
}


def missing_files(root: str | Path) -> list[str]:
    """Paths (relative to ``root``) a ``diffusers:`` directory needs but lacks; ``[]`` if none.
    A group like ``unet/diffusion_pytorch_model.{safetensors|bin}`` needs one of its files."""
    root = Path(root)
    missing = []
    for sub, groups in _REQUIRED.items():
        for group in groups:
            if not any((root / sub / f).is_file() for f in group):
                missing.append(
                    f"{sub}/" + ("{" + "|".join(group) + "}" if len(group) > 1 else group[0])
                )
    return missing


@DENOISERS.register("diffusers", takes_spec=True)
def _diffusers(spec: str | None, *, image_size: int = 224) -> LatentDenoiser:
    """Stable Diffusion parts from a local directory in the ``StableDiffusionPipeline`` layout."""
    if not spec:
        raise ValueError("denoiser 'diffusers:<dir>' needs a local directory after the colon")
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"denoiser directory {str(root)!r} does not exist; save a pipeline there with "
            "StableDiffusionPipeline.save_pretrained (nothing is downloaded)"
        )
    missing = missing_files(root)
    if missing:
        raise FileNotFoundError(
            f"denoiser directory {str(root)!r} lacks {', '.join(missing)} (a Stable Diffusion "
            "pipeline saved with save_pretrained has them; text_encoder/ and tokenizer/ give "
            "the empty-prompt embedding)"
        )
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(root / "vae", local_files_only=True)
    sched_cfg = root / "scheduler" / "scheduler_config.json"
    if sched_cfg.is_file():  # the model's own schedule (SD-2.1-base: DCR's, ε-prediction)
        keep = set(SCHEDULER_CONFIG) | {"trained_betas", "steps_offset", "clip_sample"}
        cfg = {k: v for k, v in json.loads(sched_cfg.read_text()).items() if k in keep}
        scheduler = DDPMScheduler(**{**SCHEDULER_CONFIG, **cfg})
    else:
        scheduler = ddpm_scheduler()
    tok = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    text = CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True).eval()
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    with torch.no_grad():  # DCR's uc_emb: the text encoder's last hidden states of ""
        empty = text(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    return LatentDenoiser(unet, vae, scheduler, empty.last_hidden_state[0], image_size=image_size)


# "tiny" lives in its own module (recipe, pretraining, card); registered lazily to keep
# ``import workbench.methods`` light.
DENOISERS.register_lazy("tiny", "workbench.methods.dcr.tiny:load_tiny", takes_spec=True)


__all__ = [
    "DENOISERS",
    "SCHEDULER_CONFIG",
    "Denoiser",
    "LatentDenoiser",
    "UNetDenoiser",
    "ddpm_scheduler",
    "load_denoiser",
    "missing_files",
]
