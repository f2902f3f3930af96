"""The frozen caption language model that stands in for ReVision's LLM, and its prefix NLL.

ReVision (Yu et al., arXiv 2602.07026 v3, §5; spec ``methods-geometry.md`` §2.3) trains a projector
into a *frozen* Llama-3-8B-Instruct. Here the LLM is a tiny decoder of the same family — a
``transformers`` ``LlamaForCausalLM`` (RMSNorm, SwiGLU, rotary positions, tied embeddings) of a
few layers — trained once as a plain language model on the captions of the training mixture
(:func:`~workbench.methods.revision.lm_pretrain.pretrain_caption_lm`) and then frozen. It is
prompted by ``k`` soft tokens placed before ``[BOS]``::

    inputs  = [p_1 … p_k] [BOS] w_1 … w_n          (p = projector output, (B, k, d_model))
    targets =              w_1  w_2 … w_n [EOS]

Why rotary positions [our reading]: the plain LM never sees a prefix, so with learned absolute
positions its ``[BOS]`` would move from position 0 to position k; with RoPE, attention between
caption tokens depends only on their offsets, so a prefix changes nothing but what it adds.

Weights ship with the package (``weights/caption-lm.safetensors``, float16, with a card
``caption-lm.json``/``.md``: recipe, corpus counts, held-out NLL, versions, sha256). Another
:class:`CaptionLMRecipe` is trained into ``<cache>/caption_lm/lm-<key>/`` (key = its digest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench._validate import as_mixture, require
from workbench.methods.revision.tokenizer import CaptionTokenizer

__all__ = [
    "SHIPPED",
    "CaptionLM",
    "CaptionLMRecipe",
    "cache_path",
    "card_markdown",
    "load_caption_lm",
    "prefix_nll",
    "read_card",
    "save_caption_lm",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = WEIGHTS_DIR / "caption-lm.safetensors"


@dataclass(frozen=True)
class CaptionLMRecipe:
    """Everything that determines the caption LM's weights (its digest keys the cache).

    Attributes:
        mixture: ``(dataset, split, size)`` triples whose captions form the corpus
            (``size=None``: all items). The default is the pretrained default's training mixture
            (issue 21): openclipart, emoji and tuxpaint-stamps ``train`` splits, fashion-mnist
            ``train`` and synthetic-world ``train`` (capped; fashion-mnist has 8 templates per
            item and 10 classes, so 500 items give 4,000 captions); digits stays out.
        captions: ``"all"`` captions of each item (titles, keyword lists, templates) or only the
            ``"first"`` (canonical) one [our reading: more text for a small LM].
        min_count: A WordPiece piece is kept in the vocabulary if it occurs this often (2: a
            piece seen once cannot be learnt; halves the vocabulary and the output layer).
        max_length: Tokens per sequence, ``[BOS]``/``[EOS]`` included (40: the longest
            synthetic-world caption has 32 pieces).
        d_model: Width (128: the smallest width whose greedy captions of held-out
            synthetic-world text are fluent [our reading, measured in the card]).
        n_layers: Decoder layers ("a few").
        n_heads: Attention heads.
        d_ff: SwiGLU hidden width (3·d_model, ≈ Llama's 8/3 ratio rounded up).
        steps: Optimiser steps.
        batch_size: Captions per step.
        bucket: Batches per length-sorted pool (32: batches pad to similar lengths, which
            cuts the padded tokens per step ~3× on this mixture of 3- and 30-piece captions).
        lr: AdamW peak learning rate (small-LM practice).
        warmup: Linear warm-up steps, then cosine decay to 0.
        weight_decay: AdamW weight decay on matrices.
        heldout_size: Test-split captions per dataset scored for the card's held-out NLL.
        seed: Seeds initialisation and data order.
        threads: torch CPU threads (not part of :meth:`key`).
    """

    mixture: tuple[tuple[str, str, int | None], ...] = (
        ("synthetic-world", "train", 4000),
        ("openclipart", "train", None),
        ("emoji", "train", None),
        ("tuxpaint-stamps", "train", None),
        ("fashion-mnist", "train", 500),
    )
    captions: str = "all"
    min_count: int = 2
    max_length: int = 40
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 384
    steps: int = 1500
    batch_size: int = 64
    bucket: int = 32
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    heldout_size: int = 300
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        own = "CaptionLMRecipe"
        object.__setattr__(self, "mixture", as_mixture(self.mixture, own))
        require(
            self.captions in ("all", "first"), own, "captions", self.captions, "'all' or 'first'"
        )
        require(self.max_length >= 3, own, "max_length", self.max_length, ">= 3")
        require(
            self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0,
            own, "d_model", self.d_model, "a multiple of n_heads with an even head width (RoPE)",
        )  # fmt: skip
        for name in ("min_count", "n_layers", "n_heads", "d_ff", "steps", "batch_size",
                     "bucket", "heldout_size", "threads"):  # fmt: skip
            require(getattr(self, name) >= 1, own, name, getattr(self, name), ">= 1")
        require(self.lr > 0, own, "lr", self.lr, "> 0")
        require(0 <= self.warmup <= self.steps, own, "warmup", self.warmup, "in [0, steps]")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mixture"] = [list(m) for m in self.mixture]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptionLMRecipe:
        d = dict(d)
        d["mixture"] = tuple(tuple(m) for m in d["mixture"])
        return cls(**d)

    def key(self) -> str:
        """16-hex digest of the recipe without ``threads``: the cache key."""
        d = {k: v for k, v in self.to_dict().items() if k != "threads"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _llama(recipe: CaptionLMRecipe, vocab_size: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=recipe.d_model,
        intermediate_size=recipe.d_ff,
        num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.n_heads,
        num_key_value_heads=recipe.n_heads,
        max_position_embeddings=recipe.max_length + 64,  # room for a prefix
        tie_word_embeddings=True,
        pad_token_id=CaptionTokenizer.PAD,
        bos_token_id=CaptionTokenizer.BOS,
        eos_token_id=CaptionTokenizer.EOS,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return LlamaForCausalLM(cfg)


class CaptionLM(nn.Module):
    """A tiny Llama decoder with its :class:`CaptionTokenizer` (see the module docstring).

    Attributes:
        recipe: The :class:`CaptionLMRecipe` it was built from.
        tokenizer: The restricted WordPiece tokenizer.
        model: ``transformers.LlamaForCausalLM``.
        d_model: Width of a soft prefix token.
        card: The weights' card (``{}`` for an untrained model).
    """

    def __init__(self, recipe: CaptionLMRecipe, tokenizer: CaptionTokenizer) -> None:
        super().__init__()
        self.recipe, self.tokenizer = recipe, tokenizer
        self.model = _llama(recipe, tokenizer.vocab_size)
        self.d_model = recipe.d_model
        self.card: dict[str, Any] = {}

    def freeze(self) -> CaptionLM:
        """No gradients for any weight and eval mode, for good (``train()`` keeps it in eval)."""
        self.requires_grad_(False)
        self._frozen = True
        return super().train(False)

    def train(self, mode: bool = True) -> CaptionLM:
        return super().train(False if getattr(self, "_frozen", False) else mode)

    def encode(
        self, captions: Sequence[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions → ``(ids, mask)`` (B, T) on this model's device (see ``tokenizer.encode``),
        at most ``max_length`` (default the recipe's) tokens per row, ``[EOS]`` kept."""
        n = (
            self.recipe.max_length
            if max_length is None
            else min(max_length, self.recipe.max_length)
        )
        ids, mask = self.tokenizer.encode(captions, n)
        dev = self.model.get_input_embeddings().weight.device
        return ids.to(dev), mask.to(dev)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, d_model) input embeddings."""
        return self.model.get_input_embeddings()(ids)

    def logits(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) inputs → (B, L, V) next-token logits (causal; right padding needs no
        mask because no real position attends to a later one)."""
        return self.model(inputs_embeds=inputs_embeds, use_cache=False).logits

    @torch.no_grad()
    def generate(
        self,
        prefix: torch.Tensor | None,
        *,
        n: int | None = None,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        batch_size: int = 256,
    ) -> list[str]:
        """Decode captions after a soft prefix: greedy (``num_beams=1``) or beam search.

        Deterministic: no sampling, so the same prefix gives the same caption on a device.

        Args:
            prefix: (B, k, d_model) soft tokens, or ``None`` for the *blind* LM (``[BOS]`` only;
                then ``n`` says how many captions — all identical — to return).
            max_new_tokens: Default ``recipe.max_length - 1``.
            num_beams: 1 = greedy; > 1 = beam search with that many beams.
            batch_size: Prefixes decoded per ``generate`` call.
        """
        if prefix is None:
            require(
                isinstance(n, int) and n >= 1, "CaptionLM.generate", "n", n, ">= 1 with prefix=None"
            )
            return self.generate(
                torch.zeros(1, 0, self.d_model, device=self.embed_device),
                max_new_tokens=max_new_tokens, num_beams=num_beams,
            ) * n  # fmt: skip
        _check_prefix(prefix, self.d_model, allow_empty=True)
        require(num_beams >= 1, "CaptionLM.generate", "num_beams", num_beams, ">= 1")
        steps = max_new_tokens or self.recipe.max_length - 1
        bos = self.embed(
            torch.full((1, 1), CaptionTokenizer.BOS, device=prefix.device)
        )  # (1, 1, d)
        out: list[str] = []
        for s in range(0, prefix.shape[0], batch_size):
            p = prefix[s : s + batch_size].to(bos.dtype)
            h = torch.cat([p, bos.expand(p.shape[0], 1, -1)], 1)  # (b, k+1, d)
            ids = self.model.generate(
                inputs_embeds=h,
                attention_mask=torch.ones(h.shape[:2], dtype=torch.long, device=h.device),
                max_new_tokens=steps,
                do_sample=False,
                num_beams=num_beams,
                pad_token_id=CaptionTokenizer.PAD,
                eos_token_id=CaptionTokenizer.EOS,
                bos_token_id=CaptionTokenizer.BOS,
            )
            out.extend(self.tokenizer.decode(ids))
        return out

    @property
    def embed_device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device


def _check_prefix(prefix: torch.Tensor, d_model: int, allow_empty: bool = False) -> None:
    if not torch.is_tensor(prefix) or prefix.ndim != 3:
        raise ValueError(
            f"prefix must be a (B, k, d_model) tensor, got {getattr(prefix, 'shape', prefix)}"
        )
    if prefix.shape[1] == 0 and not allow_empty:
        raise ValueError(
            "prefix has length 0 (k = 0 soft tokens); pass prefix=None for the plain LM"
        )
    if prefix.shape[2] != d_model:
        raise ValueError(f"prefix tokens are {prefix.shape[2]}-d but the LM's width is {d_model}")
    if not torch.isfinite(prefix).all():
        raise ValueError("prefix holds NaN/Inf")


def prefix_nll(
    lm: CaptionLM, prefix: torch.Tensor | None, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """ReVision's Eq. 2: mean next-token NLL of each caption given its soft prefix.

    ``L = −(1/N) Σ_i Σ_{t=1}^{n_i+1} log p_LM(w_{i,t} | p_i, [BOS], w_{i,<t})`` over the N real
    target tokens of the batch (words and ``[EOS]``; ``[BOS]`` and padding are not targets).
    With ``prefix=None`` this is the plain LM loss used to pretrain the decoder.

    Args:
        lm: The caption LM (frozen in ReVision; gradients still flow *through* it to the prefix).
        prefix: (B, k, d_model) soft tokens with k ≥ 1, or ``None``.
        ids: (B, T) ``[BOS] w … [EOS] [PAD]…`` token ids (``lm.encode``).
        mask: (B, T) bool, True on real tokens.

    Returns:
        Scalar float32 loss (logits upcast before the log-softmax for bf16 autocast).
    """
    if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[1] < 2:
        raise ValueError(
            f"ids and mask must be the same (B, T ≥ 2) shape, got {tuple(ids.shape)}, {tuple(mask.shape)}"
        )
    k = 0
    h = lm.embed(ids)  # (B, T, d)
    if prefix is not None:
        _check_prefix(prefix, lm.d_model)
        if prefix.shape[0] != ids.shape[0]:
            raise ValueError(
                f"prefix has {prefix.shape[0]} rows but there are {ids.shape[0]} captions"
            )
        k = prefix.shape[1]
        h = torch.cat([prefix.to(h.dtype), h], 1)  # (B, k+T, d)
    logits = lm.logits(h)[:, k : k + ids.shape[1] - 1]  # (B, T-1, V): predicts ids[:, 1:]
    target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)  # (B, T-1)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
    )


# -- weights on disk --------------------------------------------------------------------------
def cache_path(recipe: CaptionLMRecipe, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/caption_lm/lm-<key>/caption-lm.safetensors`` for a recipe."""
    from workbench.encoders.cache import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "caption_lm" / f"lm-{recipe.key()}" / "caption-lm.safetensors"


def read_card(weights: str | Path) -> dict[str, Any]:
    """The card (``.json``) beside a weights file."""
    return json.loads(Path(weights).with_suffix(".json").read_text())


def save_caption_lm(lm: CaptionLM, card: dict[str, Any], path: str | Path) -> Path:
    """Write ``<path>.safetensors`` (float16 weights + the kept pieces), ``<path>.json`` (the card
    with the weights' sha256) and ``<path>.md``. Returns the weights path."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {
        f"model.{k}": v.detach().half().contiguous()
        for k, v in lm.model.state_dict().items()
        if k != "lm_head.weight"  # tied to the input embedding
    }
    sd["pieces"] = lm.tokenizer.state()
    weights = path.with_suffix(".safetensors")
    save_file(sd, str(weights))
    card = {**card, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    path.with_suffix(".md").write_text(card_markdown(card))
    return weights


def card_markdown(card: dict[str, Any]) -> str:
    """The human-readable card (markdown) of a caption-LM card dict."""
    r = card["recipe"]
    mix = ", ".join(f"{n} ({sp}, {'all' if sz is None else sz})" for n, sp, sz in r["mixture"])
    held = ", ".join(f"{k} {v:.3f}" for k, v in card["heldout_nll"].items())
    lines = [
        '# Caption language model (`load_caption_lm("default")`)',
        "",
        "The frozen decoder that stands in for ReVision's LLM (`workbench.methods.revision.lm`).",
        "",
        f"- Architecture: transformers `LlamaForCausalLM`, {r['n_layers']} layers, width "
        f"{r['d_model']}, {r['n_heads']} heads, SwiGLU {r['d_ff']}, rotary positions, tied "
        f"embeddings; {card['n_params']:,} parameters; float16 weights.",
        f"- Tokenizer: all-MiniLM-L6-v2's uncased WordPiece restricted to the {card['vocab_size'] - 4} "
        f"pieces seen ≥ {r['min_count']}× in the corpus (+ PAD/UNK/BOS/EOS).",
        f"- Corpus ({r['captions']} captions): {mix}; {card['corpus']['captions']} captions "
        f"({card['corpus']['distinct']} distinct), {card['corpus']['tokens']} tokens.",
        f"- Recipe: plain next-token LM, {r['steps']} steps, batch {r['batch_size']}, AdamW lr "
        f"{r['lr']} ({r['warmup']} warm-up, cosine), wd {r['weight_decay']}, seed {r['seed']}, "
        f"{r['threads']} thread(s).",
        f"- Training NLL (nats/token): first 50 steps {card['first_train_nll']:.3f}, last 100 "
        f"steps {card['final_train_nll']:.3f}.",
        f"- Held-out NLL of the shipped weights on test-split captions: {held}.",
        "- Greedy samples from [BOS] alone: " + "; ".join(f"“{s}”" for s in card["samples"]) + ".",
        f"- Wall time: corpus {card['wall_seconds']['corpus']:.0f} s, training "
        f"{card['wall_seconds']['train']:.0f} s (shared, loaded 2-core machine).",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items())}.",
        f"- sha256 of the weights: `{card['sha256']}` (checked on load).",
        "",
        "Retrain: `workbench.methods.revision.lm_pretrain.build_caption_lm()` (the shipped recipe).",
        "",
    ]
    return "\n".join(lines)


def _from_weights(weights: Path) -> CaptionLM:
    from safetensors.torch import load_file

    if not weights.is_file() or not weights.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"no caption LM at {weights} (+ .json card); train it once with "
            "workbench.methods.revision.lm_pretrain.build_caption_lm(recipe)"
        )
    card = read_card(weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise ValueError(
            f"caption LM weights {weights} have sha256 {digest[:12]}…, but their card says "
            f"{str(card.get('sha256'))[:12]}…: the file is corrupted or was edited; retrain it"
        )
    sd = load_file(str(weights))
    lm = CaptionLM(
        CaptionLMRecipe.from_dict(card["recipe"]), CaptionTokenizer(sd.pop("pieces").tolist())
    )
    lm.model.load_state_dict(
        {k.removeprefix("model."): v.float() for k, v in sd.items()}, strict=False
    )
    lm.model.tie_weights()
    lm.card = card
    return lm.freeze()


def load_caption_lm(
    spec: str = "default",
    *,
    recipe: CaptionLMRecipe | None = None,
    cache_dir: str | Path | None = None,
    weights: str | Path | None = None,
) -> CaptionLM:
    """The frozen caption LM.

    Args:
        spec: ``"default"`` — the shipped weights when ``recipe`` is the shipped recipe (or
            ``None``), else that recipe's cached weights; ``"random"`` — the shipped architecture
            and vocabulary at the recipe's seeded random init (never trained: tests, ablations).
        recipe: A non-default :class:`CaptionLMRecipe` (trained once into the cache).
        cache_dir: Cache root (default ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``).
        weights: An explicit ``.safetensors`` file with its card.

    Raises:
        FileNotFoundError: the recipe was never trained here (the message says how).
        ValueError: unknown ``spec``, or weights that do not match their card's sha256.
    """
    if spec not in ("default", "random"):
        raise ValueError(f"caption LM spec must be 'default' or 'random', got {spec!r}")
    if weights is not None:
        return _from_weights(Path(weights))
    shipped_key = (
        read_card(SHIPPED)["recipe_key"] if SHIPPED.with_suffix(".json").is_file() else None
    )
    key = (recipe or CaptionLMRecipe()).key()
    path = SHIPPED if key == shipped_key else cache_path(recipe or CaptionLMRecipe(), cache_dir)
    if spec == "random":
        from safetensors.torch import load_file

        if not path.is_file():
            raise FileNotFoundError(f"'random' reuses the vocabulary of {path}, which is missing")
        pieces = load_file(str(path))["pieces"].tolist()
        lm = CaptionLM(
            recipe or CaptionLMRecipe.from_dict(read_card(path)["recipe"]), CaptionTokenizer(pieces)
        )
        lm.card = {"name": "caption-lm:random", "trained": False}
        return lm.freeze()
    return _from_weights(path)
