"""DCR — Diffusion Contrastive Reconstruction (Han et al., CVPR 2026; spec §1 and §8).

A frozen diffusion denoiser is conditioned on the image embedding through a projector h_ω; DCR
contrasts the *noise predictions* conditioned on an image, on its augmented view, on the true
noise and on the other images of the batch, instead of adding a feature-space contrastive loss
to the reconstruction loss (the naive method, whose two gradients conflict).

Modules, one concern each:

* :mod:`~workbench.methods.dcr.loss` — ``dcr_contrastive_loss`` (the arithmetic),
  ``reconstruction_loss``, ``view_info_nce``;
* :mod:`~workbench.methods.dcr.denoiser` — the denoiser interface ``predict(x_t, t, cond)`` and
  registry (``load_denoiser("tiny" | "diffusers:<dir>")``);
* :mod:`~workbench.methods.dcr.tiny` — the tiny pixel-space DDPM: recipe, pretraining, card;
* :mod:`~workbench.methods.dcr.augment` — the code's x⁺ augmentation (and its quirk);
* :mod:`~workbench.methods.dcr.method` — the ``Method`` registered as ``"dcr"``, ``"dcr/naive"``,
  ``"dcr/recon"``.

>>> from workbench import methods
>>> m = methods.get("dcr", negatives=7)
>>> [s.name for s in m.stages(10)], m.trainable_spec().split("+")[0]
(['align', 'enhance'], 'method')
>>> methods.get("dcr/naive").grad_probe
('con', 'rec')
"""

from workbench.methods.dcr.denoiser import DENOISERS, Denoiser, load_denoiser
from workbench.methods.dcr.loss import (
    dcr_contrastive_loss,
    dcr_logits,
    reconstruction_loss,
    view_info_nce,
)
from workbench.methods.dcr.method import DCR, DEFAULT_LORA, sample_negatives

__all__ = [
    "DCR",
    "DEFAULT_LORA",
    "DENOISERS",
    "Denoiser",
    "dcr_contrastive_loss",
    "dcr_logits",
    "load_denoiser",
    "reconstruction_loss",
    "sample_negatives",
    "view_info_nce",
]
