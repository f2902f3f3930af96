"""The DCR method and its two baselines as one :class:`Method` with three objectives.

================  =========================================================================
registry name     objective (spec §1)
================  =========================================================================
``"dcr"``         L_dcr: contrast noise predictions (§1.3; the official loss block, §8)
``"dcr/naive"``   λ_con·L_con + λ_rec·L_rec: feature InfoNCE between augmented views plus
                  reconstruction (§1.2); the loop's gradient probe logs cos(∇L_con, ∇L_rec)
``"dcr/recon"``   L_rec only: reconstruction through the frozen denoiser (DIVA/GenHancer-like)
================  =========================================================================

Per step (all objectives): the batch's images (``BatchOutputs.pixels``, un-normalised to
[0, 1]) are mapped into the denoiser's space, x₀; t ~ U{0..T−1} and ε ~ N(0, I) per image;
x_t = add_noise(x₀, ε, t). The condition of image j is ``denoiser.condition(h_ω(z_j))``: the
projector h_ω (LayerNorm → Linear → GELU → Linear [code]) of its raw post-head embedding z_j
(``image_raw``, CLIP's ``visual_projection`` output in the code) broadcast over the denoiser's
tokens and added to its empty-prompt embedding [code]. The positive view x⁺ is made by
:func:`~workbench.methods.dcr.augment.augment_view` and embedded by the encoder *with* gradient.

Protocol (``stages``): ``"two-stage"`` [paper, code] = Stage ``align`` (projector only,
``stage1_loss``) then Stage ``enhance`` (the encoder through ``encoder_trainable``; projector and
denoiser frozen); ``"joint"`` = one stage training both from the start (Tab. 4(b)'s
"end-to-end" arm). The run's ``TrainConfig.trainable`` must contain every stage's parts: use
:meth:`DCR.trainable_spec` (``"method+" + encoder_trainable``).

Footgun: the denoiser is held *outside* the module tree (``self._denoiser``), so
``state_dict()``/checkpoints hold only the projector, and ``.to(device)`` does not move it; it is
moved (and cast to bf16 on CUDA, as the code does) on first use.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from workbench.methods.base import METHODS, BatchOutputs, LossOutput, Method, Stage, StepState
from workbench.methods.dcr.augment import augment_view, normalisation, to_unit_range
from workbench.methods.dcr.denoiser import Denoiser, load_denoiser
from workbench.methods.dcr.loss import (
    dcr_contrastive_loss,
    dcr_logits,
    reconstruction_loss,
    view_info_nce,
)

OBJECTIVES = ("dcr", "naive", "recon")
PROTOCOLS = ("two-stage", "joint")

#: The default encoder's analogue of the code's ``target_modules="all-linear"`` LoRA (r = α = 16,
#: dropout 0.1 [code]): every 1×1 convolution of EfficientNet-Lite0 and the Linears of the
#: pretrained default's MLP image head (peft cannot wrap the head's ``Sequential``).
DEFAULT_LORA = (
    "lora:r=16,alpha=16,dropout=0.1,targets=conv_pw|conv_pwl|conv_head|image_head.0|image_head.2"
)


def sample_negatives(b: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """(B, 1+K) int64 condition indices: column 0 the row's own image (the anchor), then K
    distinct other images drawn uniformly (global torch RNG)."""
    if not 1 <= k <= b - 1:
        raise ValueError(f"negatives must be in [1, B−1] = [1, {b - 1}], got {k}")
    r = torch.rand(b, b, device=device)
    r.fill_diagonal_(2.0)  # never pick itself
    others = r.argsort(dim=1)[:, :k]  # (B, K)
    return torch.cat([torch.arange(b, device=device)[:, None], others], 1)


class DCR(Method):
    """DCR / the naive method / reconstruction only (see the module docstring).

    Args:
        objective: ``"dcr"``, ``"naive"`` or ``"recon"`` (the registered variants fix it).
        denoiser: Denoiser registry name (``"tiny"``, ``"tiny:random"``, ``"diffusers:<dir>"``).
        protocol: ``"two-stage"`` [paper, code] or ``"joint"`` (Tab. 4(b)).
        stage1_fraction: Share of the run's steps in Stage ``align`` [our reading: the code's
            100k + 4.6k steps do not scale down; 0.5 by default].
        stage1_loss: ``"dcr"`` (the code: the same contrastive block) or ``"mse"`` (the
            secondary source: L_rec); ``None`` = ``"dcr"`` for DCR, ``"mse"`` for the baselines.
        stage1_lr: Stage-1 learning rate [code: 1e-4].
        stage2_lr: Stage-2 learning rate [code: 1e-5].
        joint_lr: The joint protocol's single learning rate (``None`` = ``stage1_lr``: the
            projector must align from scratch) [our reading; the paper's is not recovered].
        encoder_trainable: ``TrainConfig.trainable`` parts of the encoder in Stage 2 (LoRA
            [code] or e.g. ``"image_blocks:2+image_head"``); default :data:`DEFAULT_LORA`.
        gt_target: ``"eps"`` (the paper, default) or ``"v"`` (the code's v-target).
        tau: DCR temperature [code: 0.1].
        negatives: ``"all"`` = the B−1 other images (the code's B×B pass) or an int K: K
            sampled per anchor (B·(K+1) + B denoiser passes instead of B² + B; for CPU budgets).
        augment_before_normalise: ``False`` = the code's quirk (x⁺'s colour jitter on the
            normalised tensor, which clamps it to [0, 1]); ``True`` = jitter the [0, 1] image.
        lambda_con: Naive method's weight of L_con [our reading: 1].
        lambda_rec: Naive method's weight of L_rec [our reading: 1].
        con_tau: Naive method's InfoNCE temperature [our reading: 0.1].
        projector_hidden: h_ω's hidden width (``None`` = the condition width, as the code's
            1024 → 1024).
        denoiser_image_size: Side in pixels images are resized to before a ``diffusers:``
            denoiser's VAE (``None`` = 224, the code's; the tiny denoiser's is its recipe's).

    Terms: ``dcr`` (DCR), ``con`` and ``rec`` (naive), ``rec`` (recon, Stage-1 "mse").
    Logs (DCR): ``sim_aug``, ``sim_gt``, ``sim_neg`` (mean cosines of the anchor),
    ``top1`` (share of anchors whose two positives beat every negative), ``rec_mse``.
    """

    name = "dcr"
    needs_towers = True

    def __init__(
        self,
        objective: str = "dcr",
        denoiser: str = "tiny",
        protocol: str = "two-stage",
        stage1_fraction: float = 0.5,
        stage1_loss: str | None = None,
        stage1_lr: float = 1e-4,
        stage2_lr: float = 1e-5,
        joint_lr: float | None = None,
        encoder_trainable: str = DEFAULT_LORA,
        gt_target: str = "eps",
        tau: float = 0.1,
        negatives: str | int = "all",
        augment_before_normalise: bool = False,
        lambda_con: float = 1.0,
        lambda_rec: float = 1.0,
        con_tau: float = 0.1,
        projector_hidden: int | None = None,
        denoiser_image_size: int | None = None,
    ) -> None:
        super().__init__()
        _check(objective in OBJECTIVES, "objective", objective, f"one of {OBJECTIVES}")
        _check(protocol in PROTOCOLS, "protocol", protocol, f"one of {PROTOCOLS}")
        _check(isinstance(denoiser, str) and denoiser, "denoiser", denoiser, "a registry name")
        _check(0 <= stage1_fraction <= 1, "stage1_fraction", stage1_fraction, "in [0, 1]")
        if stage1_loss is None:
            stage1_loss = "dcr" if objective == "dcr" else "mse"
        _check(stage1_loss in ("dcr", "mse"), "stage1_loss", stage1_loss, "'dcr' or 'mse'")
        _check(stage1_loss == "mse" or objective == "dcr", "stage1_loss", stage1_loss,
               "'mse' for the naive and recon objectives")  # fmt: skip
        joint_lr = stage1_lr if joint_lr is None else joint_lr
        for key, val in (("stage1_lr", stage1_lr), ("stage2_lr", stage2_lr), ("tau", tau),
                         ("con_tau", con_tau), ("joint_lr", joint_lr)):  # fmt: skip
            _check(isinstance(val, (int, float)) and val > 0, key, val, "a positive number")
        for key, val in (("lambda_con", lambda_con), ("lambda_rec", lambda_rec)):
            _check(isinstance(val, (int, float)) and val >= 0, key, val, "a number ≥ 0")
        _check(isinstance(encoder_trainable, str) and encoder_trainable
               and "method" not in encoder_trainable.split("+"), "encoder_trainable",
               encoder_trainable, "trainable parts of the encoder (without 'method')")  # fmt: skip
        _check(gt_target in ("eps", "v"), "gt_target", gt_target, "'eps' or 'v'")
        _check(negatives == "all" or (isinstance(negatives, int) and not isinstance(negatives, bool)
               and negatives >= 1), "negatives", negatives, "'all' or an int K ≥ 1")  # fmt: skip
        _check(projector_hidden is None or (isinstance(projector_hidden, int) and projector_hidden > 0),
               "projector_hidden", projector_hidden, "None or a positive int")  # fmt: skip
        self.objective, self.denoiser_name, self.protocol = objective, denoiser, protocol
        self.stage1_fraction, self.stage1_loss = float(stage1_fraction), stage1_loss
        self.stage1_lr, self.stage2_lr = float(stage1_lr), float(stage2_lr)
        self.joint_lr = float(joint_lr)
        self.encoder_trainable, self.gt_target, self.tau = encoder_trainable, gt_target, float(tau)
        self.negatives, self.augment_before_normalise = negatives, bool(augment_before_normalise)
        self.lambda_con, self.lambda_rec, self.con_tau = (
            float(lambda_con),
            float(lambda_rec),
            float(con_tau),
        )
        _check(denoiser_image_size is None or (isinstance(denoiser_image_size, int)
               and denoiser_image_size >= 8), "denoiser_image_size", denoiser_image_size,
               "None or an int ≥ 8")  # fmt: skip
        self.projector_hidden, self.denoiser_image_size = projector_hidden, denoiser_image_size
        self._stage: str | None = None
        self.projector: nn.Module | None = None
        object.__setattr__(self, "_denoiser", None)  # outside the module tree (see docstring)

    # -- wiring ---------------------------------------------------------------------------
    @property
    def grad_probe(self) -> tuple[str, str] | None:
        """``("con", "rec")`` for the naive method, in the stages that have both terms: Stage 1
        (projector only, L_rec) has no L_con, so the loop's probe skips it (Fig. 2 is about the
        encoder's two gradients). The loop reads this after :meth:`compute` set the stage."""
        if self.objective != "naive" or (self._stage == "align"):
            return None
        return ("con", "rec")

    def trainable_spec(self) -> str:
        """The ``TrainConfig.trainable`` a run of this method needs: ``"method+<encoder parts>"``."""
        return f"method+{self.encoder_trainable}"

    def stages(self, total_steps: int) -> list[Stage]:
        if self.protocol == "joint":
            return [Stage("joint", total_steps, self.trainable_spec(), self.joint_lr)]
        n1 = round(self.stage1_fraction * total_steps)
        out = []
        if n1 > 0:
            out.append(Stage("align", n1, "method", self.stage1_lr))
        if total_steps - n1 > 0:
            out.append(Stage("enhance", total_steps - n1, self.encoder_trainable, self.stage2_lr))
        return out

    def attach(self, encoder: nn.Module) -> None:
        """Load the frozen denoiser and build h_ω: embed_dim → hidden → the condition width."""
        kw = {} if self.denoiser_image_size is None else {"image_size": self.denoiser_image_size}
        den = load_denoiser(self.denoiser_name, **kw)
        object.__setattr__(self, "_denoiser", den)
        d_in = int(encoder.embed_dim)
        hidden = self.projector_hidden or den.cond_dim
        self.projector = nn.Sequential(
            nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, den.cond_dim)
        )

    @property
    def denoiser(self) -> Denoiser | None:
        """The frozen denoiser (after :meth:`attach`)."""
        return self._denoiser

    def _denoiser_on(self, device: torch.device) -> Denoiser:
        den = self._denoiser
        if next(den.parameters()).device != device:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            den.to(device=device, dtype=dtype)
            den.empty = den.empty.float()
        return den

    # -- the loss -------------------------------------------------------------------------
    def compute(self, out: BatchOutputs, state: StepState) -> LossOutput:
        missing = [n for n in ("pixels", "encoder", "image_raw") if getattr(out, n) is None]
        if missing:
            raise ValueError(
                f"method {self.registry_name or self.name!r} runs a denoiser on the batch's images "
                f"and needs BatchOutputs.{', '.join(missing)}: train it with data='items' "
                "(needs_towers=True), not on plain or cached features"
            )
        if self.projector is None or self._denoiser is None:
            raise ValueError(f"method {self.name!r}: call attach(encoder) first (the loop does)")
        stage = state.stage if state.stage in ("align", "enhance", "joint") else "joint"
        self._stage = stage
        enc = out.encoder
        if stage != "align" and not any(p.requires_grad for p in enc.parameters()):
            raise ValueError(
                f"stage {stage!r} trains the encoder, but no encoder parameter requires grad: "
                f"put {self.encoder_trainable!r} in TrainConfig.trainable (use trainable_spec())"
            )
        px = out.pixels
        b = px.shape[0]
        den = self._denoiser_on(px.device)
        mean, std = normalisation(enc, px)
        x0 = den.encode(to_unit_range(px.float(), mean.float(), std.float()))  # (B, C, h, w)
        t = torch.randint(0, den.num_timesteps, (b,), device=px.device)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype)
        x_t = den.add_noise(x0, noise, t)
        lo = b * state.rank if out.image_raw.shape[0] > b else 0  # local rows of gathered z
        z = out.image_raw[lo : lo + b]  # (B, D) raw post-head, as visual_projection's output
        cond = den.condition(self.projector(z).float())  # (B, T, D)

        mse_only = stage == "align" and self.stage1_loss == "mse"
        if mse_only or self.objective == "recon":
            rec = reconstruction_loss(
                den.predict(x_t, t, cond), den.target(x0, noise, t, _kind(den))
            )
            return LossOutput(rec, {"rec": rec})

        z_aug = self._embed_view(enc, px, mean, std)  # (B, D)
        if self.objective == "naive":
            con = view_info_nce(z, z_aug, self.con_tau)
            rec = reconstruction_loss(
                den.predict(x_t, t, cond), den.target(x0, noise, t, _kind(den))
            )
            loss = self.lambda_con * con + self.lambda_rec * rec
            return LossOutput(loss, {"con": con, "rec": rec})

        cond_aug = den.condition(self.projector(z_aug).float())  # (B, T, D)
        if self.negatives == "all":
            index = torch.arange(b, device=px.device).expand(b, b)  # (B, B): the code's layout
        else:
            index = sample_negatives(b, min(int(self.negatives), b - 1), px.device)  # (B, 1+K)
        c = index.shape[1]
        preds = den.predict(
            torch.cat([x_t.repeat_interleave(c, 0), x_t]),
            torch.cat([t.repeat_interleave(c), t]),
            torch.cat([cond[index.reshape(-1)], cond_aug]),
        )  # (B·C + B, C_x, h, w): one pass for the B·C grid and the B positives
        pred = preds[: b * c].reshape(b, c, -1)  # (B, C, P)
        pred_aug = preds[b * c :].reshape(b, -1)  # (B, P)
        target = den.target(x0, noise, t, self.gt_target).reshape(b, -1)  # (B, P)
        idx = None if self.negatives == "all" else index
        loss = dcr_contrastive_loss(pred, pred_aug, target, self.tau, idx)
        with torch.no_grad():
            s_aug, s_gt, s_neg = dcr_logits(pred, pred_aug, target, self.tau, idx)
            best_neg = s_neg.max(1).values
            anchor_col = 0 if idx is not None else torch.arange(b, device=px.device)
            anchor = pred[torch.arange(b, device=px.device), anchor_col].float()
            eps = den.target(x0, noise, t, _kind(den)).reshape(b, -1).float()
            logs = {
                "sim_aug": float(s_aug.mean() * self.tau),
                "sim_gt": float(s_gt.mean() * self.tau),
                "sim_neg": float(s_neg.mean() * self.tau),
                "top1": float(((s_aug > best_neg) & (s_gt > best_neg)).float().mean()),
                "rec_mse": float((anchor - eps).pow(2).mean()),
            }
        return LossOutput(loss, {"dcr": loss}, logs)

    def _embed_view(
        self, enc: nn.Module, px: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> torch.Tensor:
        """(B, D) raw post-head embedding of x⁺ (with gradient where the encoder trains)."""
        view = augment_view(px, mean, std, before_normalise=self.augment_before_normalise)
        return enc.image_head(enc.image_tower(view))

    def extra_repr(self) -> str:
        return f"objective={self.objective!r}, denoiser={self.denoiser_name!r}"


def _kind(den: Denoiser) -> str:
    """The reconstruction target of the denoiser's own parameterisation (ε for every model here;
    a v-prediction scheduler gets its v-target)."""
    return "v" if den.scheduler.config.prediction_type == "v_prediction" else "eps"


def _check(ok: Any, name: str, value: Any, want: str) -> None:
    if not ok:
        raise ValueError(f"dcr: {name} must be {want}, got {value!r}")


METHODS.register("dcr")(DCR)
METHODS.register("dcr/naive")(functools.partial(DCR, objective="naive"))
METHODS.register("dcr/recon", aliases=("dcr/reconstruction",))(
    functools.partial(DCR, objective="recon")
)

__all__ = ["DCR", "DEFAULT_LORA", "OBJECTIVES", "PROTOCOLS", "sample_negatives"]
