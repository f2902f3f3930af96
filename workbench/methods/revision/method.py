"""ReVision as a method of the one training loop: a projector into a frozen caption LM.

ReVision (Yu et al., arXiv 2602.07026 v3, §5, App. H; spec ``methods-geometry.md`` §2.3):

* **Stage 1** trains a 2-layer GELU MLP projector from the shared embedding space into ``k`` soft
  prefix tokens of a frozen LM on *text embeddings only* — each caption's own embedding,
  transformed by ``none`` / ``c3`` / ReAlign's step prefixes — with the next-token NLL of the same
  caption (Eq. 2, :func:`~workbench.methods.revision.lm.prefix_nll`). ``source="text"``.
* **Stage 2** fine-tunes that projector on real image–caption pairs (the paper fine-tunes the whole
  model on SFT data; here the LM stays frozen). ``source="image"``, ``init_projector=`` Stage 1's.
* The **paired upper bound** is Stage 1 with ``source="image"`` from a fresh projector.

At test time images go through the same projector in the row's image frame
(:func:`~workbench.methods.revision.align.aligned`) and the LM decodes (:meth:`ReVision.caption`).

Why a loop method and not a study-only loop: each stage is an ordinary run of
:func:`workbench.train.train` on cached tower features with ``trainable="method"`` — the heads stay
frozen, only the projector trains, and the loop's bf16 autocast, checkpoints, exact resume and DDP
apply unchanged. The fitted alignment statistics are a JSON hyper-parameter (``alignment=``) and
Stage 2's starting projector a file (``init_projector=``), so ``attach`` is deterministic given
the config, as the contract requires. The loop hands every row's image features too; a text-stage
loss never reads them (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench._validate import require
from workbench.methods.base import METHODS, BatchOutputs, LossOutput, Method, Stage, StepState
from workbench.methods.revision.align import aligned, check_alignment, check_kind
from workbench.methods.revision.lm import CaptionLM, load_caption_lm, prefix_nll

__all__ = ["Projector", "ReVision"]


class Projector(nn.Module):
    """ReVision's 2-layer GELU MLP: (B, D) embedding → (B, k, d_model) soft prefix.

    ``Linear(D, hidden) → GELU → Linear(hidden, k·d_model)`` [paper: "2-layer GELU MLP"; one
    embedding fans out to k tokens as in ClipCap's MLP mapper — our reading, since LLaVA's maps
    one visual token to one LM token].
    """

    def __init__(self, embed_dim: int, prefix_len: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.prefix_len, self.d_model = prefix_len, d_model
        self.net = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, prefix_len * d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0], self.prefix_len, self.d_model)  # (B, k, d_model)


class ReVision(Method):
    """The ReVision projector objective (see the module docstring).

    Args:
        source: Which features feed the projector while training: ``"text"`` (Stage 1) or
            ``"image"`` (Stage 2, and the paired upper bound).
        align: The frame (:data:`~workbench.methods.revision.align.ALIGNMENTS`): ``"none"``
            (No-Align), ``"c3"``, ``"anchor"``, ``"anchor+trace"``, ``"full"`` (ReAlign).
        alignment: Its fitted statistics (:func:`~workbench.methods.revision.align.fit_alignment`
            on unpaired sets); ``None`` for ``"none"``.
        prefix_len: k, soft prefix tokens (4 [our reading]: the paper's projector emits one LM
            token per visual token; ours fans one embedding out to k).
        hidden: Projector hidden width (``None`` = k·d_model, ClipCap's MLP mapper scale).
        lm: Caption LM: ``"default"`` (shipped), ``"random"`` (untrained, tests) or a path to
            weights with a card.
        init_projector: ``.safetensors`` of a projector to start from (Stage 2 starts from Stage
            1's, written by :meth:`save_projector`); ``None`` = fresh seeded init.
        max_caption_tokens: Truncate target captions to this many tokens (``None`` = the LM's).
    """

    name = "revision"
    #: The loss is the NLL of the batch's captions: plain (image, text, scale) calls are refused.
    needs_captions = True

    def __init__(
        self,
        source: str = "text",
        align: str = "none",
        alignment: dict[str, Any] | None = None,
        prefix_len: int = 4,
        hidden: int | None = None,
        lm: str = "default",
        init_projector: str | None = None,
        max_caption_tokens: int | None = None,
    ) -> None:
        super().__init__()
        own = "revision"
        require(source in ("text", "image"), own, "source", source, "'text' or 'image'")
        check_kind(align)
        check_alignment(align, alignment)
        require(
            isinstance(prefix_len, int) and prefix_len >= 1, own, "prefix_len", prefix_len,
            "an int >= 1 (k soft prefix tokens; the blind LM is CaptionLM.generate(None))",
        )  # fmt: skip
        require(
            hidden is None or (isinstance(hidden, int) and hidden >= 1),
            own,
            "hidden",
            hidden,
            "None or an int >= 1",
        )
        require(
            isinstance(lm, str) and bool(lm), own, "lm", lm, "'default', 'random' or a weights path"
        )
        require(
            max_caption_tokens is None or (isinstance(max_caption_tokens, int) and max_caption_tokens >= 3),
            own, "max_caption_tokens", max_caption_tokens, "None or an int >= 3",
        )  # fmt: skip
        self.source, self.align, self.prefix_len = source, align, prefix_len
        self.hidden, self.lm_spec, self.init_projector = hidden, lm, init_projector
        self.max_caption_tokens = max_caption_tokens
        self._stats_dict = alignment
        self.lm: CaptionLM | None = None
        self.projector: Projector | None = None
        d = len(alignment["mu_x"]) if alignment else 0
        for key in ("mu_x", "mu_y", "mu_y_prime"):
            vec = alignment.get(key) if alignment else None
            self.register_buffer(key, torch.tensor(vec if vec else [0.0] * d, dtype=torch.float32))
        scale = alignment.get("scale", 1.0) if alignment else 1.0
        sigma = alignment.get("c3_sigma", 0.0) if alignment else 0.0
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    # -- set-up ----------------------------------------------------------------------------
    def attach(self, encoder: nn.Module) -> None:
        """Load the frozen LM and build the projector for ``encoder.embed_dim``-d features."""
        embed_dim = int(encoder.embed_dim)
        if self._stats_dict and len(self._stats_dict["mu_x"]) != embed_dim:
            raise ValueError(
                f"alignment statistics are {len(self._stats_dict['mu_x'])}-d but the encoder "
                f"embeds in {embed_dim}-d; fit them on this encoder's embeddings"
            )
        if self.lm_spec in ("default", "random"):
            self.lm = load_caption_lm(self.lm_spec)
        else:
            self.lm = load_caption_lm(weights=self.lm_spec)
        d = self.lm.d_model
        self.projector = Projector(
            embed_dim, self.prefix_len, d, self.hidden or self.prefix_len * d
        )
        if self.init_projector is not None:
            from safetensors.torch import load_file

            path = Path(self.init_projector)
            if not path.is_file():
                raise FileNotFoundError(f"init_projector {path} does not exist")
            self.projector.load_state_dict(load_file(str(path)))
        dev = self.mu_x.device
        self.lm.to(dev)
        self.projector.to(dev)

    def stages(self, total_steps: int) -> list[Stage]:
        return [Stage(f"{self.source}", total_steps)]

    def _require_ready(self) -> tuple[CaptionLM, Projector]:
        if self.lm is None or self.projector is None:
            raise ValueError("revision is not attached: call method.attach(encoder) first")
        return self.lm, self.projector

    def _stats(self) -> dict[str, torch.Tensor]:
        return {
            "mu_x": self.mu_x, "mu_y": self.mu_y, "mu_y_prime": self.mu_y_prime,
            "scale": self.scale, "sigma": self.sigma,
        }  # fmt: skip

    # -- the objective ---------------------------------------------------------------------
    def prefixes(self, x: torch.Tensor, side: str, *, noise: bool = False) -> torch.Tensor:
        """(B, D) L2-normalised ``side`` features → (B, k, d_model) soft prefixes in this row's
        frame (C3 noise only when ``noise``)."""
        _, projector = self._require_ready()
        return projector(aligned(x.float(), side, self.align, self._stats(), noise=noise))

    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        if not out.captions:
            raise ValueError(
                "revision needs the batch's captions (BatchOutputs.captions): its loss is the "
                "next-token NLL of each caption, so plain (image, text, logit_scale) calls "
                "cannot be scored"
            )
        lm, _ = self._require_ready()
        x = out.text_features if self.source == "text" else out.image_features  # (B, D)
        if x.shape[0] != len(out.captions):
            raise ValueError(f"{x.shape[0]} feature rows but {len(out.captions)} captions")
        noise = self.training and self.source == "text" and self.align == "c3"
        prefix = self.prefixes(x, self.source, noise=noise)  # (B, k, d_model)
        ids, mask = lm.encode(list(out.captions), self.max_caption_tokens)
        nll = prefix_nll(lm, prefix, ids, mask)
        logs = {"prefix_rms": float(prefix.detach().float().pow(2).mean().sqrt())}
        return LossOutput(nll, {"nll": nll}, logs)

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def caption(
        self,
        x: torch.Tensor,
        side: str = "image",
        *,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Captions of (B, D) L2-normalised ``side`` features: projector → frozen LM, greedy
        (``num_beams=1``) or beam search. Deterministic for given weights."""
        lm, _ = self._require_ready()
        require(side in ("text", "image"), "revision.caption", "side", side, "'text' or 'image'")
        was = self.training
        self.eval()
        try:
            return lm.generate(
                self.prefixes(x, side), num_beams=num_beams, max_new_tokens=max_new_tokens
            )
        finally:
            self.train(was)

    def save_projector(self, path: str | Path) -> Path:
        """Write the projector's weights (``init_projector=`` of a later stage)."""
        from safetensors.torch import save_file

        _, projector = self._require_ready()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()}, str(path)
        )
        return path


METHODS.register("revision")(ReVision)
