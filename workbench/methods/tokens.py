"""Methods that train on token features (CDDS and its VSE baseline): their batch and contract.

The loop's :class:`~workbench.methods.base.BatchOutputs` carries pooled, projected features; a
token method instead owns its projections and reads patch and word tokens. It receives a
:class:`TokenBatch` — (B, P, C_img) patch tokens, (B, L, C_txt) word tokens and their masks,
plus which image each caption belongs to — and is called the same two ways as every method:
``method(token_batch, state) -> LossOutput``. Called with plain (image, text, scale) features it
raises ``ValueError`` naming the missing tokens (:attr:`TokenMethod.needs_tokens`).

A trained token method embeds like an encoder: :meth:`TokenMethod.embed_tokens` maps one side's
tokens to (B, E) retrieval embeddings whose cosine is the retrieval score, and
:class:`TokenMethodEncoder` wraps it with the towers it was trained on so
``workbench.embed``/``workbench.evals`` score it as any other encoder.

:func:`contrastive_loss` is the pair loss both use: InfoNCE or the VSE++ hinge with the hardest
negative, where captions of the same image are never counted as negatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.encoders.base import Encoder
from workbench.methods.base import BatchOutputs, LossOutput, Method, StepState

__all__ = [
    "LOSS_KINDS",
    "TokenBatch",
    "TokenMethod",
    "TokenMethodEncoder",
    "contrastive_loss",
    "masked_mean",
    "project_tokens",
]

LOSS_KINDS = ("infonce", "hinge")


@dataclass
class TokenBatch:
    """One step's token features, as a token method's :meth:`~TokenMethod.compute` reads them.

    Attributes:
        image_tokens: (B, P, C_img) patch tokens (float; any dtype, upcast where precision
            matters).
        image_mask: (B, P) bool, ``True`` at real tokens.
        text_tokens: (B, L, C_txt) word tokens of each row's caption (padding anywhere the
            mask is ``False``; its values are never read, NaN included). Real tokens are not
            checked for NaN per step (that would cost as much as a baseline step): check the
            token cache once (the trainer does).
        text_mask: (B, L) bool; every row needs ≥ 1 real token.
        image_ids: (B,) int64 image of each row (rows sharing an image — two captions of
            one picture — are not each other's negatives); ``None`` = all rows distinct.
    """

    image_tokens: torch.Tensor
    image_mask: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    image_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        b = self.image_tokens.shape[0] if self.image_tokens.ndim == 3 else -1
        checks = (
            (self.image_tokens.ndim == 3, "image_tokens", "(B, P, C_img)"),
            (self.text_tokens.ndim == 3 and self.text_tokens.shape[0] == b, "text_tokens", "(B, L, C_txt)"),
            (tuple(self.image_mask.shape) == tuple(self.image_tokens.shape[:2]), "image_mask", "(B, P)"),
            (tuple(self.text_mask.shape) == tuple(self.text_tokens.shape[:2]), "text_mask", "(B, L)"),
            (self.image_ids is None or tuple(self.image_ids.shape) == (b,), "image_ids", "(B,)"),
        )  # fmt: skip
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"TokenBatch.{name} must be {want} with one row per pair")
        for name in ("image_mask", "text_mask"):
            mask = getattr(self, name)
            if mask.dtype != torch.bool:
                raise TypeError(f"TokenBatch.{name} must be a bool tensor, got {mask.dtype}")
            if not bool(mask.any(1).all()):
                raise ValueError(f"TokenBatch.{name}: every row needs at least one real token")
        if b < 2:
            raise ValueError(f"TokenBatch needs ≥ 2 pairs (a contrastive batch), got {b}")
        for name in ("image_tokens", "text_tokens"):
            if not torch.is_floating_point(getattr(self, name)):
                raise TypeError(f"TokenBatch.{name} must be floating point")

    @property
    def batch_size(self) -> int:
        return int(self.image_tokens.shape[0])

    def positives(self) -> torch.Tensor:
        """(B, B) bool: ``True`` where row ``a``'s image is row ``b``'s (the diagonal included)."""
        if self.image_ids is None:
            return torch.eye(self.batch_size, dtype=torch.bool, device=self.image_tokens.device)
        return self.image_ids[:, None] == self.image_ids[None, :]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, L, D) ``x`` over the valid tokens of each row → (B, D); padding never enters.

    >>> x = torch.tensor([[[1.0], [3.0], [float("nan")]]])
    >>> masked_mean(x, torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    m = mask[..., None]
    return torch.where(m, x, 0.0).sum(1) / m.sum(1).clamp_min(1)


def project_tokens(layer: nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A per-token map of the valid tokens only: (B, L, C) → (B, L, d), zero at padding.

    Padding never enters — not even the backward pass, where a NaN padding row would turn the
    weight gradient ``xᵀ · grad`` into NaN although its own gradient is zero. With no padding
    (patch grids) the map runs on the whole tensor; otherwise the valid rows are gathered,
    mapped and scattered back, which also skips the padding's work.
    """
    if bool(mask.all()):
        return layer(tokens)
    b, l = mask.shape
    flat = mask.reshape(-1).nonzero().squeeze(1)  # (N,)
    valid = layer(tokens.reshape(b * l, -1).index_select(0, flat))  # (N, d)
    out = valid.new_zeros(b * l, valid.shape[-1]).index_copy(0, flat, valid)
    return out.view(b, l, -1)


def contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    kind: str = "infonce",
    temperature: float = 0.05,
    margin: float = 0.2,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric image↔text pair loss on L2-normalised (B, E) embeddings, in float32.

    ``kind="infonce"``: cross-entropy of ``a @ b.T / temperature`` both ways (CLIP).
    ``kind="hinge"``: VSE++'s max-violation triplet loss (Faghri et al. 2018), the LAPS/CDDS
    default: for each row the hardest negative in both directions,
    ``[margin − s(a,b⁺) + s(a,b⁻)]₊``, averaged over the batch [our reading: mean, not sum].

    Args:
        a, b: (B, E) L2-normalised embeddings; row ``i`` of ``a`` pairs row ``i`` of ``b``.
        kind: ``"infonce"`` or ``"hinge"``.
        temperature: InfoNCE τ (> 0).
        margin: Hinge margin (VSE++/LAPS: 0.2).
        positives: (B, B) bool, ``True`` where the pair (i, j) is also a match (captions of one
            image); such off-diagonal entries are excluded from the negatives. ``None``: only the
            diagonal matches.

    Returns:
        Scalar float32 loss.
    """
    sim = a.float() @ b.float().T  # (B, B)
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    others = (positives & ~eye) if positives is not None else torch.zeros_like(eye)
    if kind == "infonce":
        logits = (sim / temperature).masked_fill(others, float("-inf"))
        target = torch.arange(n, device=sim.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    if kind == "hinge":
        diag = sim.diagonal()
        blocked = others | eye
        cost_b = (margin + sim - diag[:, None]).clamp_min(0).masked_fill(blocked, 0)  # a → b
        cost_a = (margin + sim - diag[None, :]).clamp_min(0).masked_fill(blocked, 0)  # b → a
        return cost_b.max(1).values.mean() + cost_a.max(0).values.mean()
    raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {kind!r}")


class TokenMethod(Method):
    """A method that owns its projections and trains on :class:`TokenBatch` es.

    Subclasses implement :meth:`compute_tokens` and :meth:`embed_tokens`.
    """

    #: The registry-wide tests read this: plain (image, text, scale) features are not enough.
    needs_tokens: bool = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], TokenBatch):
            state = args[1] if len(args) > 1 else kwargs.get("state", StepState.standalone())
            return self.compute_tokens(args[0], state)
        return super().forward(*args, **kwargs)

    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        """Refuses pooled features: a token method needs a :class:`TokenBatch`."""
        raise ValueError(
            f"method {self.name!r} trains on token features: call it with a "
            "workbench.methods.tokens.TokenBatch (patch tokens, word tokens and their masks) — "
            "workbench.experiments.token_training.train_token_method does — not with pooled "
            "(image, text, scale) features"
        )

    def compute_tokens(self, batch: TokenBatch, state: StepState) -> LossOutput:
        """The loss for one step on token features."""
        raise NotImplementedError

    def embed_tokens(self, side: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, C) tokens of one side (``"image"``/``"text"``) → (B, E) L2-normalised
        retrieval embeddings; image·text cosine is the model's retrieval score."""
        raise NotImplementedError


class TokenMethodEncoder(Encoder):
    """An :class:`~workbench.encoders.base.Encoder` view of a trained token method.

    Runs ``base``'s towers to the token layers the method was trained on, then the method's
    :meth:`TokenMethod.embed_tokens`; the "heads" are identities. ``workbench.embed`` and the
    evals therefore score the method exactly as any encoder (its identity hashes the method's
    weights too, so cached embeddings never mix two trained models).

    Args:
        base: The encoder whose towers produced the training tokens.
        method: The trained :class:`TokenMethod` (put in eval mode here).
        image_layer: ``tower_tokens`` layer of the image tokens.
        text_layer: ``tower_tokens`` layer of the text tokens.
        max_text_tokens: Keep each caption's first this many tokens (as in training).
        name: Registry-style name recorded in the identity.
    """

    def __init__(
        self,
        base: Encoder,
        method: TokenMethod,
        *,
        image_layer: int = -1,
        text_layer: int = -1,
        max_text_tokens: int = 64,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(method, TokenMethod):
            raise TypeError(f"method must be a TokenMethod, got {type(method).__name__}")
        self.base, self.method = base, method.eval()
        self.image_layer, self.text_layer = image_layer, text_layer
        self.max_text_tokens = max_text_tokens
        self.name = name or f"{base.name}+{method.registry_name or method.name}"
        self.image_head, self.text_head = nn.Identity(), nn.Identity()
        self.embed_dim = int(getattr(method, "embed_dim", 0))
        self.logit_scale.requires_grad_(False)  # the method's score is the plain cosine

    @property
    def preprocess_config(self) -> dict[str, Any]:
        return {
            **self.base.preprocess_config,
            "token_layers": [self.image_layer, self.text_layer],
            "max_text_tokens": self.max_text_tokens,
        }

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        return self.base.preprocess(images)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.base.tokenize(texts)

    def tower_blocks(self, side: str) -> list[nn.Module]:
        return self.base.tower_blocks(side)

    @torch.no_grad()
    def image_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, E) normalised embeddings (the method's image side)."""
        t = self.base.tower_tokens("image", pixels, layer=self.image_layer)
        return self.method.embed_tokens("image", t.tokens.float(), t.mask)

    @torch.no_grad()
    def text_tower(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised batch → (B, E) normalised embeddings (the method's text side)."""
        t = self.base.tower_tokens("text", tokens, layer=self.text_layer)
        n = self.max_text_tokens
        return self.method.embed_tokens("text", t.tokens[:, :n].float(), t.mask[:, :n])
