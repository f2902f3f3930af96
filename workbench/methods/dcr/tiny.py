"""The ``"tiny"`` denoiser: a conditioned pixel-space DDPM the workbench pretrains once.

It plays Stable Diffusion's part in DCR offline. A small ``diffusers.UNet2DConditionModel`` is
trained as a DDPM (DCR's schedule, :data:`SCHEDULER_CONFIG`) on the training mixture at 32 px and
then frozen. Its loader's interface is the registry's: ``predict(x_t, t, cond) -> ε̂``.

The condition (the shipped recipe, ``condition="joint"``) lives in the default encoder's shared
256-d embedding space, L2-normalised and scaled to norm √D (unit RMS per dimension):

* with probability ``image_condition`` the item's **own image embedding** (``image_head`` of the
  image tower) — what DCR feeds the denoiser, through its projector, in Stage 1 and 2;
* otherwise the embedding of one of its **captions** (``text_head`` of the text tower; the
  pretrained default aligned both heads contrastively, so both live in one space);
* with probability ``cond_dropout`` the **empty caption's** embedding, the "no condition" input
  (SD's ``uc_emb``): DCR's conditioning ``h_ω(z) + empty`` (spec §8) starts there.

Why not the caption's text-tower embedding alone (the first recipe, ``condition="text-tower"``):
a caption-only model barely used its condition (held-out ε-MSE 0.1193 with the true caption vs
0.1198 shuffled), because most captions are class-level ("a photo of a coat" for 800 coats),
and DCR's negatives are *other images*, which such a model cannot tell apart [our reading:
the tiny denoiser's own convention, documented on its card].

The condition reaches the UNet twice (the tiny denoiser's own convention [our reading]; SD has
only the first): through cross-attention (the condition tokens) and, with ``global_condition``,
through the timestep embedding (diffusers ``class_embed_type="projection"`` on the tokens' mean),
which with ``scale_shift`` scales and shifts every ResNet block's normalised features.

With ``unet_output="v"`` the UNet predicts v = √ᾱ·ε − √(1−ᾱ)·x₀ and the denoiser returns
ε̂ = √ᾱ·v̂ + √(1−ᾱ)·x_t (exact for v̂ = v): near t = 999 ε ≈ x_t, which an ε-output UNet of this
size learns poorly (the first recipe's ε-MSE at t = 999 was 8× that of ε̂ = x_t) [our reading].

The UNet runs on a 2× space-to-depth grid ((3, 32, 32) ↔ (12, 16, 16), lossless). A DCR Stage-2
step runs the denoiser B·(K+1)+B times forward and backward, so its cost scales with the UNet's
FLOPs: widths (16, 32, 64) with one transformer need 0.050 GFLOP per forward, 3.4× fewer than
the first recipe's (32, 64, 64) with five (0.168; ``torch.utils.flop_counter``). In a 300-step
A/B (batch 32) this layout used its condition more than a 4× grid of equal FLOPs (widths
(48, 64, 64)): held-out ε-MSE 1.1 % vs 0.4 % below a shuffled condition [measured, loaded
machine; the numbers are in the report of issue 14].

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


CONDITIONS = ("joint", "text-tower")
CROSS_ATTENTION = ("mid", "levels")
UNET_OUTPUTS = ("v", "eps")


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
        condition: ``"joint"`` (the default encoder's shared space: image and caption embeddings,
            see the module docstring) or ``"text-tower"`` (the first recipe's 384-d caption
            embedding of the text tower) [our reading]. 300-step A/B (batch 32, ε-loss, held-out
            cosine between predictions under the own and a shuffled condition): 0.9968 joint,
            0.9986 text-tower.
        image_condition: ``"joint"`` only: probability the condition is the item's own image
            embedding rather than a caption's (0.5: DCR feeds image embeddings; captions keep
            the model text-conditioned) [our reading].
        block_out_channels: UNet widths per level (one 2× down-sampling between levels).
        layers_per_block: ResNet blocks per down level (up levels have one more: diffusers).
        cross_attention: ``"mid"``: one cross-attention transformer, in the mid block (the
            condition tokens are one vector broadcast, so cross-attention adds a global
            vector; more layers cost FLOPs on every one of DCR's B·(K+1)+B passes);
            ``"levels"``: also in every level but the first (the first recipe).
        cross_attention_dim: Inner width of cross-attention (the condition is projected to it
            by the UNet's ``encoder_hid_proj``).
        attention_head_dim: Passed as diffusers' ``attention_head_dim``, which
            ``UNet2DConditionModel`` uses as the **number of heads** (its legacy naming).
        norm_num_groups: GroupNorm groups (must divide every width).
        global_condition: Also feed the condition (the mean of its tokens) into every ResNet
            block through the time embedding (diffusers ``class_embed_type="projection"``). The
            same A/B without it (and without ``scale_shift``): cosine 0.99994, held-out ε-MSE
            gap 0.005 % (with it 0.16 %): cross-attention alone leaves the model condition-blind.
        scale_shift: ResNet blocks take a scale and a shift from the (time + condition)
            embedding (diffusers ``resnet_time_scale_shift="scale_shift"``) instead of a shift.
        unet_output: ``"v"``: the UNet predicts v and the denoiser returns ε̂ from it (module
            docstring); ``"eps"``: the UNet predicts ε (the first recipe).
        loss: Training loss: ``"v"``, the MSE on v (the v-output UNet's own target; at high t it
            asks for x₀, which only the condition carries) or ``"eps"``, the ε-MSE (DDPM's
            simple loss, the first recipe's) [our reading]. The A/B: ε-MSE gap 0.46 % with v,
            0.16 % with ε; cosine 0.9920 vs 0.9968.
        cond_tokens: T, tokens the condition vector is broadcast over ("a few tokens").
        cond_dropout: Probability the condition is the empty caption's embedding [our reading:
            classifier-free-guidance-style training, so the empty prompt means "no condition"].
        steps: Optimiser steps (sized to the ≤ 20-minute, 2-core budget: 3000 at batch 64 took
            1064 s wall / 632 s CPU on one thread of the shared machine at load ≈ 4).
        batch_size: Images per step.
        lr: AdamW peak learning rate.
        warmup: Linear warm-up steps, then cosine decay to 0.
        ema_decay: EMA of the weights that ships (its horizon ≈ 1/(1 − decay) steps).
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
    condition: str = "joint"
    image_condition: float = 0.5
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    cross_attention: str = "mid"
    cross_attention_dim: int = 64
    attention_head_dim: int = 4
    norm_num_groups: int = 8
    global_condition: bool = True
    scale_shift: bool = True
    unet_output: str = "v"
    loss: str = "v"
    cond_tokens: int = 4
    cond_dropout: float = 0.1
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.995
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
            self.condition in CONDITIONS, own, "condition", self.condition, f"one of {CONDITIONS}"
        )
        require(0 <= self.image_condition <= 1, own, "image_condition", self.image_condition,
                "in [0, 1]")  # fmt: skip
        require(self.condition == "joint" or self.image_condition == 0, own, "image_condition",
                self.image_condition, "0 with condition='text-tower' (no image embeddings)")  # fmt: skip
        require(len(self.block_out_channels) >= 1, own, "block_out_channels",
                self.block_out_channels, "one width per level, at least one")  # fmt: skip
        require(
            all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
            own, "norm_num_groups", self.norm_num_groups, "a divisor of every block width",
        )  # fmt: skip
        require(self.cross_attention in CROSS_ATTENTION, own, "cross_attention",
                self.cross_attention, f"one of {CROSS_ATTENTION}")  # fmt: skip
        require(self.unet_output in UNET_OUTPUTS, own, "unet_output", self.unet_output,
                f"one of {UNET_OUTPUTS}")  # fmt: skip
        require(self.loss in UNET_OUTPUTS, own, "loss", self.loss, f"one of {UNET_OUTPUTS}")
        require(self.cond_tokens >= 1, own, "cond_tokens", self.cond_tokens, ">= 1")
        require(0 <= self.cond_dropout < 1, own, "cond_dropout", self.cond_dropout, "in [0, 1)")
        for name in ("steps", "batch_size", "threads", "layers_per_block"):
            require(getattr(self, name) >= 1, own, name, getattr(self, name), ">= 1")
        require(self.lr > 0, own, "lr", self.lr, "> 0")
        require(0 <= self.ema_decay < 1, own, "ema_decay", self.ema_decay, "in [0, 1)")

    @property
    def cond_dim(self) -> int:
        """D, the condition width: 256 (the default encoder's ``embed_dim``) or 384 (its text
        tower)."""
        return 256 if self.condition == "joint" else 384

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


def build_unet(recipe: TinyDenoiserRecipe, cond_dim: int | None = None):
    """The recipe's (untrained, seeded) ``UNet2DConditionModel`` on the space-to-depth grid.

    ``cond_dim`` (default :attr:`TinyDenoiserRecipe.cond_dim`) is the width of a condition token.
    """
    from diffusers import UNet2DConditionModel

    cond_dim = recipe.cond_dim if cond_dim is None else int(cond_dim)
    n = len(recipe.block_out_channels)
    ch = 3 * recipe.patch**2
    if recipe.cross_attention == "levels":  # the first recipe: every level but the first
        down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
        up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    else:  # "mid": the mid block's transformer only
        down, up = ("DownBlock2D",) * n, ("UpBlock2D",) * n
    extra: dict[str, Any] = {}
    if recipe.global_condition:
        extra = {
            "class_embed_type": "projection",
            "projection_class_embeddings_input_dim": cond_dim,
        }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return UNet2DConditionModel(
            sample_size=recipe.image_size // recipe.patch,
            in_channels=ch,
            out_channels=ch,
            block_out_channels=recipe.block_out_channels,
            layers_per_block=recipe.layers_per_block,
            down_block_types=down,
            up_block_types=up,
            cross_attention_dim=recipe.cross_attention_dim,
            encoder_hid_dim=cond_dim,
            attention_head_dim=recipe.attention_head_dim,
            norm_num_groups=recipe.norm_num_groups,
            resnet_time_scale_shift="scale_shift" if recipe.scale_shift else "default",
            **extra,
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
    attn = (
        "the mid block only" if r.get("cross_attention") == "mid" else "every level but the first"
    )
    by_t = card.get("heldout_by_t")
    wall, cpu = card["wall_seconds"], card.get("cpu_seconds", {})
    lines = [
        '# Tiny denoiser (`load_denoiser("tiny")`)',
        "",
        "A conditioned DDPM in pixel space that plays Stable Diffusion's part in DCR offline",
        "(`workbench.methods.dcr.tiny`). Frozen after pretraining; `predict(x_t, t, cond)` returns ε̂.",
        "",
        f"- Architecture: diffusers `UNet2DConditionModel`, widths {r['block_out_channels']}, "
        f"{r.get('layers_per_block', 1)} ResNet(s) per down level, cross-attention (dim "
        f"{r['cross_attention_dim']}) in {attn}"
        + (
            ', the condition also added to the time embedding (`class_embed_type="projection"`)'
            if r.get("global_condition")
            else ""
        )
        + (", scale-shift ResNets" if r.get("scale_shift") else "")
        + f"; on a {r['patch']}× space-to-depth grid of {r['image_size']}-px RGB; "
        f"{card['n_params']:,} parameters; float16 weights.",
        f"- Output: the UNet predicts {'v (returned as ε̂ = √ᾱ·v̂ + √(1−ᾱ)·x_t)' if r.get('unet_output') == 'v' else 'ε'}.",
        f"- Condition: {card['condition']}.",
        f"- Schedule: DDPM, {card['scheduler']['num_train_timesteps']} steps, "
        f"{card['scheduler']['beta_schedule']} β {card['scheduler']['beta_start']}→"
        f"{card['scheduler']['beta_end']} (DCR's), t ~ U{{0..999}}.",
        f"- Data: {mix}; counts {counts}; {card['data']['train_items']} trained on, "
        f"{card['data']['heldout_items']} held out by an id hash "
        f"({r['holdout']:.0%}); {card['data']['distinct_captions']} distinct captions.",
        f"- Recipe: {r['steps']} steps, batch {r['batch_size']}, AdamW lr {r['lr']} "
        f"({r['warmup']} warm-up, cosine), EMA {r['ema_decay']}, condition dropout "
        f"{r['cond_dropout']}, seed {r['seed']}, {r['threads']} thread(s).",
        f"- Training loss (ε-MSE): first 50 steps {card['first_train_loss']:.4f}, "
        f"last 100 steps {card['final_train_loss']:.4f}.",
        f"- Held-out ε-MSE of the shipped weights ({card.get('heldout_items', '?')} items, the same "
        "noise and t for each condition): "
        + ", ".join(f"{k} {v:.4f}" for k, v in held.items())
        + f". The true condition lowers it by {_gap(held):.2%} relative to a shuffled one "
        "(DCR relies on predictions that depend on the condition).",
    ]
    if by_t:
        bins = ", ".join(
            f"t ∈ [{lo}, {hi}): {a:.4f} vs {b:.4f}"
            for (lo, hi), a, b in zip(by_t["bins"], by_t["true"], by_t["shuffled"])
            if a is not None and b is not None
        )
        lines.append(f"- Held-out ε-MSE true vs shuffled by t: {bins}.")
    if "heldout_cos/true_vs_shuffled" in card:
        lines.append(
            "- Mean cosine between the predictions for one noisy input under its own and a "
            f"shuffled condition: {card['heldout_cos/true_vs_shuffled']:.4f} (DCR's logits are "
            "these cosines / τ)."
        )
    load = card.get("loadavg_1min")
    lines += [
        f"- Time: data {wall['data']:.0f} s wall"
        + (f" / {cpu['data']:.0f} s CPU" if cpu else "")
        + (" (read from the on-disk caches)" if card.get("data_from_cache") else "")
        + f", training {wall['train']:.0f} s wall"
        + (f" / {cpu['train']:.0f} s CPU" if cpu else "")
        + " on a shared 2-core machine"
        + (
            f" (1-min load average {load['start']} at the start, {load['end']} at the end)"
            if load
            else " under load"
        )
        + ".",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items())}.",
        f"- sha256 of the weights: `{card['sha256']}` (checked on load).",
        "- Samples: `figures/dcr/tiny_denoiser_samples.png` (DDIM, 50 steps, held-out items).",
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
        empty = torch.randn(r.cond_dim, generator=g) * 0.1
        den = UNetDenoiser(
            build_unet(r),
            ddpm_scheduler(),
            empty[None].expand(r.cond_tokens, -1),
            image_size=r.image_size,
            patch=r.patch,
            output=r.unet_output,
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
            "see its card for the time it took)"
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
        output=r.unet_output,
        name="tiny",
    )
    den.card = card
    return den


__all__ = [
    "CONDITIONS",
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
