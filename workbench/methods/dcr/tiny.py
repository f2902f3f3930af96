"""The ``"tiny"`` denoiser: a text-conditioned pixel-space DDPM the workbench pretrains once.

It plays Stable Diffusion's part in DCR offline. A small ``diffusers.UNet2DConditionModel`` with
cross-attention is trained as an ε-prediction DDPM (DCR's schedule, :data:`SCHEDULER_CONFIG`) on
the training mixture at 32 px, conditioned on each caption's embedding by the default encoder's
**text tower** (all-MiniLM-L6-v2, mean-pooled, 384-d) broadcast over ``cond_tokens`` tokens;
captions are replaced by the empty caption with probability ``cond_dropout`` so the empty-prompt
embedding is a meaningful "no condition" input (as SD's ``uc_emb`` is). It is then frozen.

Why the text tower and not the post-head caption embedding [our reading of "the default's caption
embeddings"]: the tower is frozen and shipped, the heads are retrained (issue 21), so a denoiser
keyed to the heads would go stale every time they change. DCR's projector maps image embeddings
into this 384-d condition space, as it maps CLIP image embeddings into SD's text space.

The UNet runs on a 2× space-to-depth grid ((3, 32, 32) ↔ (12, 16, 16), lossless), which keeps a
B×B DCR step on 2 CPU cores within seconds (measured in ``benchmarks/bench_step.py``).

Weights ship with the package (``weights/tiny-denoiser.safetensors``, float16, with a card
``tiny-denoiser.json``/``.md`` naming the recipe, data, steps, final losses and sha256). A
non-default :class:`TinyDenoiserRecipe` is trained by
:func:`~workbench.methods.dcr.tiny_pretrain.pretrain_tiny_denoiser` and cached
under ``<cache>/denoisers/tiny-<key>/`` (key = the recipe's digest).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from workbench._validate import as_mixture, require
from workbench.methods.dcr.denoiser import SCHEDULER_CONFIG, UNetDenoiser, ddpm_scheduler

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = WEIGHTS_DIR / "tiny-denoiser.safetensors"
SHIPPED_CARD = WEIGHTS_DIR / "tiny-denoiser.json"


@dataclass(frozen=True)
class TinyDenoiserRecipe:
    """Everything that determines the tiny denoiser's weights (its digest keys the cache).

    Attributes:
        mixture: ``(dataset, split, size)`` triples (``size=None``: all). The default mixes the
            real captioned sources available offline (openclipart, fashion-mnist train) with
            synthetic-world train; digits stays out, as in the pretrained default (issue 21).
        holdout: Fraction of items (by a hash of ``dataset/id``) never trained on; the card's
            held-out losses are measured on them.
        image_size: Side in pixels of the diffusion space (32: the issue's CPU budget).
        patch: Space-to-depth factor the UNet runs on (2: 4× fewer positions, lossless).
        block_out_channels: UNet widths per level (measured: the smallest of four sizes whose
            step fits the DCR step budget; see the module docstring).
        cross_attention_dim: Inner width of cross-attention (the 384-d condition is projected
            to it by the UNet's ``encoder_hid_proj``).
        attention_head_dim: Per-head width in the UNet's attention blocks.
        norm_num_groups: GroupNorm groups (must divide every width).
        global_condition: Also feed the condition (the mean of its tokens) into every ResNet
            block through the time embedding (diffusers ``class_embed_type="projection"``), not
            only through cross-attention. Off in the shipped recipe: the shipped weights use
            cross-attention only, and a 300-step A/B on 3k items did not make predictions
            caption-sensitive either way (cos(ε̂ | caption, ε̂ | another caption) 0.99986 with,
            0.99995 without; measured at t = 100, loaded 2-core machine) [our reading].
        cond_tokens: T, tokens the caption embedding is broadcast over ("a few tokens").
        cond_dropout: Probability a caption is replaced by the empty caption [our reading:
            classifier-free-guidance-style training, so the empty prompt means "no condition"].
        steps: Optimiser steps (sized to the ≤ 20-minute, 2-core budget).
        batch_size: Images per step.
        lr: AdamW peak learning rate (3e-4: small-UNet DDPM practice [our reading]).
        warmup: Linear warm-up steps, then cosine decay to 0.
        ema_decay: EMA of the weights that ships (DDPM practice; 0.999 ≈ last 1000 steps).
        seed: Seeds data order, noise, timesteps, dropout and initialisation.
        threads: torch CPU threads (1: on the shared, oversubscribed machine 2 threads ran
            2.7× slower than 1; not part of :meth:`key`).
    """

    mixture: tuple[tuple[str, str, int | None], ...] = (
        ("openclipart", "all", None),
        ("fashion-mnist", "train", 8000),
        ("synthetic-world", "train", 4000),
    )
    holdout: float = 0.05
    image_size: int = 32
    patch: int = 2
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    cross_attention_dim: int = 128
    attention_head_dim: int = 16
    norm_num_groups: int = 8
    global_condition: bool = False
    cond_tokens: int = 4
    cond_dropout: float = 0.1
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 100
    ema_decay: float = 0.999
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        own = "TinyDenoiserRecipe"
        object.__setattr__(self, "mixture", as_mixture(self.mixture, own))
        object.__setattr__(
            self, "block_out_channels", tuple(int(c) for c in self.block_out_channels)
        )
        require(0 <= self.holdout < 0.5, own, "holdout", self.holdout, "in [0, 0.5)")
        require(
            self.image_size % self.patch == 0,
            own,
            "image_size",
            self.image_size,
            "a multiple of patch",
        )
        require(
            all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
            own, "norm_num_groups", self.norm_num_groups, "a divisor of every block width",
        )  # fmt: skip
        require(self.cond_tokens >= 1, own, "cond_tokens", self.cond_tokens, ">= 1")
        require(0 <= self.cond_dropout < 1, own, "cond_dropout", self.cond_dropout, "in [0, 1)")
        for name in ("steps", "batch_size", "threads"):
            require(getattr(self, name) >= 1, own, name, getattr(self, name), ">= 1")
        require(self.lr > 0, own, "lr", self.lr, "> 0")
        require(0 <= self.ema_decay < 1, own, "ema_decay", self.ema_decay, "in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mixture"] = [list(m) for m in self.mixture]
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TinyDenoiserRecipe:
        d = dict(d)
        d["mixture"] = tuple(tuple(m) for m in d["mixture"])
        d["block_out_channels"] = tuple(d["block_out_channels"])
        return cls(**d)

    def key(self) -> str:
        """16-hex digest of the recipe (and the schedule) without ``threads``: the cache key."""
        d = {k: v for k, v in self.to_dict().items() if k != "threads"}
        blob = json.dumps({"recipe": d, "scheduler": SCHEDULER_CONFIG}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_unet(recipe: TinyDenoiserRecipe, cond_dim: int = 384):
    """The recipe's (untrained, seeded) ``UNet2DConditionModel`` on the space-to-depth grid."""
    from diffusers import UNet2DConditionModel

    n = len(recipe.block_out_channels)
    ch = 3 * recipe.patch**2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return UNet2DConditionModel(
            sample_size=recipe.image_size // recipe.patch,
            in_channels=ch,
            out_channels=ch,
            block_out_channels=recipe.block_out_channels,
            layers_per_block=1,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
            cross_attention_dim=recipe.cross_attention_dim,
            encoder_hid_dim=cond_dim,
            attention_head_dim=recipe.attention_head_dim,
            norm_num_groups=recipe.norm_num_groups,
            **(
                {
                    "class_embed_type": "projection",
                    "projection_class_embeddings_input_dim": cond_dim,
                }
                if recipe.global_condition
                else {}
            ),
        )


def in_holdout(dataset: str, item_id: str, fraction: float) -> bool:
    """Whether an item is held out: a stable hash of ``dataset/id`` (crc32), not a random split."""
    return (zlib.crc32(f"{dataset}/{item_id}".encode()) % 10_000) < fraction * 10_000


def save_tiny(result: Any, path: str | Path) -> Path:
    """Write a :class:`~workbench.methods.dcr.tiny_pretrain.PretrainResult` as
    ``<path>.safetensors`` (float16 UNet + the empty embedding) and ``<path>.json``
    (the card, with the weights' sha256). Returns the weights path."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {
        f"unet.{k}": v.detach().half().contiguous()
        for k, v in result.denoiser.unet.state_dict().items()
    }
    sd["empty"] = result.denoiser.empty[0].detach().float().contiguous()
    weights = path.with_suffix(".safetensors")
    save_file(sd, str(weights))
    card = {**result.card, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    path.with_suffix(".md").write_text(card_markdown(card))
    return weights


def card_markdown(card: dict[str, Any]) -> str:
    """The human-readable card (markdown) of a tiny-denoiser card dict."""
    r = card["recipe"]
    mix = ", ".join(f"{n} ({sp}, {'all' if sz is None else sz})" for n, sp, sz in r["mixture"])
    counts = ", ".join(f"{k}: {v}" for k, v in card["data"]["counts"].items())
    held = {k.split("/")[1]: v for k, v in card.items() if k.startswith("heldout_mse/")}
    lines = [
        '# Tiny denoiser (`load_denoiser("tiny")`)',
        "",
        "A text-conditioned ε-prediction DDPM in pixel space that plays Stable Diffusion's part in",
        "DCR offline (`workbench.methods.dcr.tiny`). Frozen after pretraining.",
        "",
        f"- Architecture: diffusers `UNet2DConditionModel`, widths {r['block_out_channels']}, "
        f"cross-attention (dim {r['cross_attention_dim']}), on a {r['patch']}× space-to-depth grid "
        f"of {r['image_size']}-px RGB; {card['n_params']:,} parameters; float16 weights.",
        f"- Condition: {card['condition']}.",
        f"- Schedule: DDPM, {card['scheduler']['num_train_timesteps']} steps, "
        f"{card['scheduler']['beta_schedule']} β {card['scheduler']['beta_start']}→"
        f"{card['scheduler']['beta_end']} (DCR's), t ~ U{{0..999}}.",
        f"- Data: {mix}; counts {counts}; {card['data']['train_items']} trained on, "
        f"{card['data']['heldout_items']} held out by an id hash "
        f"({r['holdout']:.0%}); {card['data']['distinct_captions']} distinct captions.",
        f"- Recipe: {r['steps']} steps, batch {r['batch_size']}, AdamW lr {r['lr']} "
        f"({r['warmup']} warm-up, cosine), EMA {r['ema_decay']}, caption dropout "
        f"{r['cond_dropout']}, seed {r['seed']}, {r['threads']} thread(s).",
        f"- Training loss (ε-MSE): first 50 steps {card['first_train_loss']:.4f}, "
        f"last 100 steps {card['final_train_loss']:.4f}.",
        "- Held-out ε-MSE of the shipped weights (same noise and t for each condition): "
        + ", ".join(f"{k} caption {v:.4f}" for k, v in held.items())
        + f"; the true caption lowers it by {_gap(held):.2%} relative to a shuffled one "
        "(DCR relies on predictions that depend on the condition; a small gap means a weak "
        "dependence).",
        f"- Wall time: data {card['wall_seconds']['data']:.0f} s, training "
        f"{card['wall_seconds']['train']:.0f} s on a shared, loaded 2-core machine.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items())}.",
        f"- sha256 of the weights: `{card['sha256']}` (checked on load).",
        "- Samples: `figures/dcr/tiny_denoiser_samples.png` (DDIM, 50 steps, held-out captions).",
        "",
        "Retrain: `workbench.experiments.dcr_denoiser.build_tiny_denoiser()` (the shipped recipe); another",
        "`TinyDenoiserRecipe` is trained into the cache and loaded by `load_tiny(recipe=...)`.",
        "",
    ]
    return "\n".join(lines)


def _gap(held: dict[str, float]) -> float:
    """Relative held-out ε-MSE drop of the true caption vs a shuffled one (0 if not measured)."""
    if "true" not in held or "shuffled" not in held:
        return 0.0
    return 1 - held["true"] / held["shuffled"]


def cache_path(recipe: TinyDenoiserRecipe, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/denoisers/tiny-<key>/tiny-denoiser.safetensors`` for a non-shipped recipe."""
    from workbench.encoders.cache import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "denoisers" / f"tiny-{recipe.key()}" / "tiny-denoiser.safetensors"


def read_card(weights: str | Path) -> dict[str, Any]:
    """The card beside a weights file (``.json``)."""
    return json.loads(Path(weights).with_suffix(".json").read_text())


def load_tiny(
    spec: str | None = None,
    *,
    recipe: TinyDenoiserRecipe | None = None,
    cache_dir: str | Path | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
) -> UNetDenoiser:
    """The frozen tiny denoiser: the shipped weights (default recipe), a cached recipe's, or an
    explicit ``weights`` file. A file whose sha256 differs from its card is refused.
    ``"tiny:random"`` (``spec="random"``) is the recipe's architecture at its seeded random init
    (never trained: for tests and as a "no pretraining" ablation).

    Raises:
        FileNotFoundError: the recipe was never trained here (the message says how to train it).
        ValueError: the weights do not match their card (corrupted or edited).
    """
    from safetensors.torch import load_file

    want = (recipe or TinyDenoiserRecipe()).image_size
    if image_size is not None and image_size != want:
        raise ValueError(
            f"the tiny denoiser works at its recipe's {want} px, got image_size={image_size}; "
            "train a recipe with that image_size instead"
        )
    if spec == "random":  # the recipe's architecture, seeded random init: tests, ablations
        r = recipe or TinyDenoiserRecipe()
        g = torch.Generator().manual_seed(r.seed)
        empty = torch.randn(384, generator=g) * 0.1
        den = UNetDenoiser(
            build_unet(r, 384),
            ddpm_scheduler(),
            empty[None].expand(r.cond_tokens, -1),
            image_size=r.image_size,
            patch=r.patch,
            name="tiny:random",
        )
        den.card = {"name": "tiny:random", "recipe": r.to_dict(), "trained": False}
        return den
    if spec:
        raise ValueError(f"denoiser 'tiny' takes only ':random' as argument, got 'tiny:{spec}'")
    if weights is None:
        shipped = (
            SHIPPED_CARD.is_file()
            and read_card(SHIPPED)["recipe_key"] == (recipe or TinyDenoiserRecipe()).key()
        )
        weights = SHIPPED if shipped else cache_path(recipe or TinyDenoiserRecipe(), cache_dir)
    weights = Path(weights)
    if not weights.is_file() or not weights.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"no tiny denoiser at {weights} (+ .json card); train it once with "
            "workbench.experiments.dcr_denoiser.build_tiny_denoiser(recipe) (the shipped recipe: "
            "≈ 110 min on a loaded 2-core machine)"
        )
    card = read_card(weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise ValueError(
            f"tiny denoiser weights {weights} have sha256 {digest[:12]}…, but their card says "
            f"{str(card.get('sha256'))[:12]}…: the file is corrupted or was edited; retrain it"
        )
    r = TinyDenoiserRecipe.from_dict(card["recipe"])
    sd = load_file(str(weights))
    empty = sd.pop("empty").float()
    unet = build_unet(r, int(empty.shape[0]))
    unet.load_state_dict({k.removeprefix("unet."): v.float() for k, v in sd.items()})
    den = UNetDenoiser(
        unet,
        ddpm_scheduler(),
        empty[None].expand(r.cond_tokens, -1),
        image_size=r.image_size,
        patch=r.patch,
        name="tiny",
    )
    den.card = card
    return den


__all__ = [
    "SHIPPED",
    "TinyDenoiserRecipe",
    "build_unet",
    "cache_path",
    "card_markdown",
    "in_holdout",
    "load_tiny",
    "read_card",
    "save_tiny",
]
